"""harness.spec: lab files are validated into a LabSpec, or rejected with every issue named.

Golden tests in netlab's style: each `tests/data/bad-labs/<case>.yml` is a complete lab with
one mistake, and `<case>.err` holds the exact `str(issue)` lines `load_lab` must report.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from labfiles import resources

from harness.calico import resources as cr
from harness.errors import SpecError, SpecIssue
from harness.labfile import load_lab
from harness.spec import LabSpec, cluster_resources

REPO = Path(__file__).resolve().parents[2]
BAD_DIR = "tests/data/bad-labs"  # relative to REPO: issue messages carry the path as given
BAD = REPO / BAD_DIR
LAB_FILES = sorted(p for p in (REPO / "labs").glob("*.y*ml") if p.is_file())

# Cases whose check is missing or whose message is unclear today. The .err file holds the
# message the lab author should get; remove the entry once harness/spec.py produces it.
XFAIL: dict[str, str] = {}  # case -> reason, for checks known to be missing


def _cases() -> list:
    out = []
    for p in sorted(BAD.glob("*.yml")):
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[p.stem])] if p.stem in XFAIL else []
        out.append(pytest.param(p.stem, id=p.stem, marks=marks))
    return out


def _issues(rel: str) -> list[SpecIssue]:
    with pytest.raises(SpecError) as ei:
        load_lab(rel)
    return ei.value.issues


@pytest.fixture
def at_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO)
    return REPO


# -- golden bad labs -------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases())
def test_bad_lab_reports_golden_issues(case: str, at_repo: Path) -> None:
    expected = (BAD / f"{case}.err").read_text().splitlines()
    got = [str(i) for i in _issues(f"{BAD_DIR}/{case}.yml")]
    assert got == expected


def test_every_bad_lab_has_a_golden_file() -> None:
    labs = {p.stem for p in BAD.glob("*.yml")}
    errs = {p.stem for p in BAD.glob("*.err")}
    assert labs, "no bad labs found"
    assert labs == errs
    for stem in errs:
        assert (BAD / f"{stem}.err").read_text().strip(), f"{stem}.err is empty"


def test_xfail_list_names_existing_cases() -> None:
    assert set(XFAIL) <= {p.stem for p in BAD.glob("*.yml")}


def test_bad_lab_resource_files_are_all_used() -> None:
    """Every companion resource file is referenced by a bad lab (no stale data)."""
    used = set()
    for p in BAD.glob("*.yml"):
        used.update(
            line.split(":", 1)[1].strip()
            for line in p.read_text().splitlines()
            if "resources: calico/" in line
        )
    present = {f"calico/{p.name}" for p in (BAD / "calico").glob("*.yaml")}
    assert present <= used


def test_issue_fields(at_repo: Path) -> None:
    """Each issue carries file, field path, message and line, not just a string."""
    (missing, unknown) = _issues(f"{BAD_DIR}/unknown-field-nested.yml")
    assert unknown == SpecIssue(
        f"{BAD_DIR}/unknown-field-nested.yml", "routers[0].asnn", "unknown field 'asnn'", 4
    )
    assert missing.path == "routers[0].asn"
    assert "missing" in missing.message
    assert missing.line == 4


def test_resource_file_issue_names_the_resource_file(at_repo: Path) -> None:
    (issue,) = _issues(f"{BAD_DIR}/calico-unknown-field.yml")
    assert issue.file == f"{BAD_DIR}/calico/calico-unknown-field.yaml"
    assert issue.path == "spec.peerIp"
    lines = (BAD / "calico" / "calico-unknown-field.yaml").read_text().splitlines()
    assert lines[issue.line - 1].strip().startswith("peerIp:")


def test_issue_without_line_prints_file_and_message() -> None:
    assert str(SpecIssue("lab.yml", "", "broken")) == "lab.yml: broken"
    assert str(SpecIssue("lab.yml", "a.b", "broken", 3)) == "lab.yml:3: a.b: broken"


def test_all_issues_are_collected_not_just_the_first(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "labs" / "default.yml").read_text())
    data["clusters"][0]["resources"] = []
    data["racks"][0]["tor"] = "tor9"  # unknown ToR
    data["vms"][0]["node"] = "r9-n9"  # unknown node
    data["clusters"][0]["pools"] = ["203.0.113.0/24", "203.0.113.0/25"]  # overlap
    path = tmp_path / "many.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    issues = _issues(str(path))
    assert {i.path for i in issues} >= {"racks[0].tor", "vms[0].node", "clusters[0].pools[1]"}
    assert all(i.file == str(path) and i.line for i in issues)


def test_spec_error_message_lists_every_issue(at_repo: Path) -> None:
    with pytest.raises(SpecError) as ei:
        load_lab(f"{BAD_DIR}/node-ip-outside.yml")
    assert str(ei.value).splitlines() == [str(i) for i in ei.value.issues]
    assert len(ei.value.issues) == 2


def test_missing_lab_file_is_a_spec_error(tmp_path: Path) -> None:
    (issue,) = _issues(str(tmp_path / "nope.yml"))
    assert "cannot read file" in issue.message


# -- good labs -------------------------------------------------------------------------


def test_default_lab_loads() -> None:
    spec = load_lab(REPO / "labs" / "default.yml")
    assert isinstance(spec, LabSpec)
    assert spec.name == "default"
    assert [(r.name, r.role, r.asn) for r in spec.routers] == [
        ("spine1", "spine", 65100),
        ("tor1", "tor", 65001),
        ("tor2", "tor", 65002),
    ]
    cluster = spec.cluster("kv")
    assert cluster.asn == 64512
    assert cluster.pools == [ipaddress.IPv4Network("203.0.113.0/24")]
    assert [n.name for n in cluster.nodes] == ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]
    assert spec.node("r2-n1")[1].rack == "r2"
    assert spec.rack_of_tor("tor2").name == "r2"
    assert spec.vms[0].ip == ipaddress.IPv4Address("203.0.113.10")
    assert spec.source == str((REPO / "labs" / "default.yml").resolve())


def test_default_lab_resources_are_typed() -> None:
    spec = load_lab(REPO / "labs" / "default.yml")
    items = cluster_resources(spec)["kv"]
    docs = resources("calico/default.yaml")
    assert [(r.kind, r.metadata.name) for r in items] == [(d["kind"], d["metadata"]["name"]) for d in docs]
    bgpconf = next(r for r in items if r.kind == "BGPConfiguration")
    assert isinstance(bgpconf, cr.BGPConfiguration)
    assert bgpconf.spec.asNumber in (None, 64512)
    assert bgpconf.spec.nodeToNodeMeshEnabled is False
    peers = {p.metadata.name: p.spec for p in items if isinstance(p, cr.BGPPeer)}
    assert peers["rack-r1-tor"].peerIP == "198.18.1.1"
    assert peers["rack-r1-tor"].asNumber == 65001
    assert peers["rack-r2-tor"].nodeSelector == "rack == 'r2'"


@pytest.mark.parametrize("path", LAB_FILES, ids=[p.name for p in LAB_FILES])
def test_every_shipped_lab_loads(path: Path) -> None:
    spec = load_lab(path)
    assert spec.name


def test_resource_file_with_trailing_document_marker_loads(tmp_path: Path) -> None:
    shutil.copy(REPO / "labs" / "default.yml", tmp_path / "default.yml")
    (tmp_path / "calico").mkdir()
    text = (REPO / "labs" / "calico" / "default.yaml").read_text()
    (tmp_path / "calico" / "default.yaml").write_text(text + "---\n")
    spec = load_lab(tmp_path / "default.yml")
    expected = load_lab(REPO / "labs" / "default.yml")
    assert len(cluster_resources(spec)["kv"]) == len(cluster_resources(expected)["kv"])


def test_spec_defaults() -> None:
    spec = load_lab(REPO / "labs" / "default.yml")
    assert spec.router("tor1").elevated_community == "65000:100"
    assert spec.router("tor1").community_preference is True
    assert spec.cluster("kv").block_size == 26
    assert spec.timers.bgp_established > 0


def test_spec_is_frozen() -> None:
    spec = load_lab(REPO / "labs" / "default.yml")
    with pytest.raises(ValueError, match="frozen"):
        spec.routers[0].asn = 1  # type: ignore[misc]


def test_load_lab_creates_nothing(tmp_path: Path) -> None:
    """Validation has no side effects: nothing of the loaded labs' names appears (namespaces,
    run directory, lock files, processes), no file is written. Other labs may come and go."""
    from footprint import assert_no_footprint, footprint

    from harness.lab import Lab

    src = tmp_path / "lab"
    shutil.copytree(REPO / "labs", src)
    name = Lab.unique_name("loadonly")
    lab_file = src / "default.yml"
    lab_file.write_text(lab_file.read_text().replace("name: default", f"name: {name}", 1))
    before_files = sorted(p.relative_to(src) for p in src.rglob("*"))
    bad_before = footprint("bad")  # the bad lab's name: compared, another test may use it
    assert load_lab(lab_file).name == name
    with pytest.raises(SpecError):
        load_lab(BAD / "node-ip-outside.yml")
    assert_no_footprint(name)
    assert footprint("bad") == bad_before
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before_files


# -- CLI -------------------------------------------------------------------------------


def _kvlab() -> str:
    exe = Path(sys.executable).parent / "kvlab"
    if exe.is_file():
        return str(exe)
    found = shutil.which("kvlab")
    if found is None:
        pytest.skip("the kvlab console script is not installed (pip install -e .)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([_kvlab(), *args], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)


def test_cli_validate_bad_lab_exits_2_with_one_line_per_issue() -> None:
    case = "node-ip-outside"
    res = _run("validate", f"{BAD_DIR}/{case}.yml")
    assert res.returncode == 2, res.stderr
    expected = (BAD / f"{case}.err").read_text().splitlines()
    lines = res.stderr.splitlines()
    assert len(lines) == len(expected) == 2
    for line, want in zip(lines, expected, strict=True):
        assert want in line
        assert f"{BAD_DIR}/{case}.yml:16: clusters[0].nodes[1].ip:" in line


def test_cli_validate_resource_issue_names_resource_file() -> None:
    res = _run("validate", f"{BAD_DIR}/bgppeer-unknown-ip.yml")
    assert res.returncode == 2
    assert f"{BAD_DIR}/calico/bgppeer-unknown-ip.yaml:16: spec.peerIP:" in res.stderr


def test_cli_validate_default_lab_exits_0() -> None:
    res = _run("validate", "labs/default.yml")
    assert res.returncode == 0, res.stderr
    assert "valid lab 'default'" in res.stderr + res.stdout
