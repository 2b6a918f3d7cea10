"""The GitHub workflows agree with the Makefile and the version matrix they run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.runtime.containerlab import matrix_cli
from harness.runtime.containerlab.versions import CONTAINERLAB, DEFAULT, MATRIX

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean
        doc["on"] = doc.pop(True)
    return doc


def runs(doc: dict[str, Any]) -> list[str]:
    return [step["run"] for job in doc["jobs"].values() for step in job["steps"] if "run" in step]


def makefile_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.$()/ -]+?)\s*:(?!=)", line)
        if m and not line.startswith(("\t", "#")):
            targets.update(m.group(1).split())
    return targets


def make_goals(script: str) -> list[str]:
    """The goals of every `make ...` command of a shell script (through sudo; options and
    VAR=value arguments skipped)."""
    goals = []
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        commands: list[list[str]] = [[]]
        for token in tokens:
            if token in ("&&", "||", ";", "|", "(", ")"):
                commands.append([])
            else:
                commands[-1].append(token)
        for words in commands:
            while words and (words[0] == "sudo" or words[0].startswith("-") or "=" in words[0]):
                words.pop(0)
            if words[:1] == ["make"]:
                args = iter(words[1:])
                for w in args:
                    if w in ("-C", "-f", "-I", "-o", "-W"):
                        next(args, None)  # the option's value
                    elif not w.startswith("-") and "=" not in w:
                        goals.append(w)
    return goals


def makefile_default(var: str) -> str:
    m = re.search(rf"^{var} \?= (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert m, f"Makefile sets no default for {var}"
    return m.group(1)


@pytest.fixture(scope="module")
def nightly() -> dict[str, Any]:
    return load("nightly.yml")


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load("ci.yml")


def test_nightly_runs_on_schedule_and_by_hand(nightly: dict[str, Any]) -> None:
    assert nightly["on"]["schedule"][0]["cron"]
    assert "workflow_dispatch" in nightly["on"]


def test_nightly_matrix_is_the_version_matrix(nightly: dict[str, Any]) -> None:
    (job,) = nightly["jobs"].values()
    matrix = job["strategy"]["matrix"]
    assert matrix["stack"] == list(MATRIX)
    assert matrix["lab"] == ["default"]
    extra = matrix.get("include", [])
    baseline = [s.name for s in MATRIX.values() if not s.live_migration]
    assert baseline  # the Calico 3.31 entry
    assert [(e["stack"], e["lab"], e["experimental"]) for e in extra] == [
        (name, "default", True) for name in baseline
    ]
    assert matrix["exclude"] == [{"stack": name} for name in baseline]
    # the jobs GitHub runs (excludes first, then includes: an include that would change an
    # original value of a combination is a job of its own)
    jobs = [
        {"stack": s, "lab": lab, "experimental": x}
        for s in matrix["stack"]
        for lab in matrix["lab"]
        for x in matrix["experimental"]
        if not any(
            all({"stack": s, "lab": lab, "experimental": x}[k] == v for k, v in e.items())
            for e in matrix["exclude"]
        )
    ]
    jobs += extra
    assert sorted((j["stack"], j["lab"], j["experimental"]) for j in jobs) == sorted(
        [(s.name, "default", not s.live_migration) for s in MATRIX.values()]
    )
    assert job["continue-on-error"] == "${{ matrix.experimental }}"
    assert job["strategy"]["fail-fast"] is False
    for lab in {*matrix["lab"], *(e["lab"] for e in extra)}:
        assert (REPO / "labs" / f"{lab}.yml").is_file()


def test_every_nightly_lab_is_one_the_containerlab_runtime_builds(nightly: dict[str, Any]) -> None:
    """No job whose lab the runtime refuses before it creates anything: nested clusters
    (ContainerlabRuntime.up, until issue 17) or what render.plan_lab refuses."""
    from harness.labfile import load_lab
    from harness.runtime.containerlab.render import plan_lab
    from harness.topology import resolve

    (job,) = nightly["jobs"].values()
    matrix = job["strategy"]["matrix"]
    for lab in {*matrix["lab"], *(e["lab"] for e in matrix.get("include", []))}:
        topo = resolve(load_lab(REPO / "labs" / f"{lab}.yml"))
        assert not topo.nested_vm, f"lab {lab}: nested nodes {dict(topo.nested_vm)} are refused"
        plan_lab(topo)
    assert resolve(load_lab(REPO / "labs" / "nested.yml")).nested_vm  # what the check looks at


def test_every_job_and_long_step_has_a_timeout(nightly: dict[str, Any], ci: dict[str, Any]) -> None:
    for doc in (nightly, ci):
        for job in doc["jobs"].values():
            assert 0 < job["timeout-minutes"] <= 360
    (job,) = nightly["jobs"].values()
    for step in job["steps"]:
        if "lab-up" in step.get("run", "") or "nightly-test" in step.get("run", ""):
            assert step["timeout-minutes"] < job["timeout-minutes"]


def test_make_goals_in_workflows_exist() -> None:
    targets = makefile_targets()
    scripts = [*runs(load("nightly.yml")), *runs(load("ci.yml")), (REPO / ".ci" / "run").read_text()]
    goals = [g for s in scripts for g in make_goals(s)]
    assert {"setup-containerlab", "lab-up", "nightly-test", "nightly-diag", "lab-down", "test"} <= set(goals)
    assert not set(goals) - targets, f"make goals missing in the Makefile: {set(goals) - targets}"


def test_nightly_job_is_make_nightly_step_by_step(nightly: dict[str, Any]) -> None:
    """The workflow runs the make targets `make nightly` chains, in the same order, and the
    diagnostics and lab-down always."""
    (job,) = nightly["jobs"].values()
    steps = [(s.get("if"), make_goals(s["run"])) for s in job["steps"] if "run" in s and "make " in s["run"]]
    assert [g for _, gs in steps for g in gs] == [
        "setup-containerlab",
        "lab-up",
        "nightly-test",
        "nightly-diag",
        "lab-down",
    ]
    assert [cond for cond, gs in steps if gs[0] in ("nightly-diag", "lab-down")] == ["always()", "always()"]
    lab_up = next(s["run"] for s in job["steps"] if "make lab-up" in s.get("run", ""))
    assert "RUNTIME=containerlab" in lab_up
    assert 'STACK="$STACK"' in lab_up
    recipe = (REPO / "Makefile").read_text().split("\nnightly:", 1)[1].split("\n\n", 1)[0]
    chained = re.findall(r"--no-print-directory ([a-z-]+)", recipe)
    assert chained == ["lab-up", "nightly-test", "nightly-diag", "lab-down"]


def test_nightly_uploads_results_always(nightly: dict[str, Any]) -> None:
    (job,) = nightly["jobs"].values()
    (upload,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == "test-results/"
    makefile = (REPO / "Makefile").read_text()
    assert "NIGHTLY_OUT = test-results/" in makefile  # junit, diagnostics, kvlab diag
    assert "--junitxml $(NIGHTLY_OUT)/junit.xml" in makefile


def test_nightly_pins_its_tools(nightly: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", nightly["env"]["CONTAINERLAB_VERSION"])
    (job,) = nightly["jobs"].values()
    tools = next(s["run"] for s in job["steps"] if "containerlab_${CONTAINERLAB_VERSION}" in s.get("run", ""))
    # kind and kubectl come from the stack's matrix entry, each checked against its checksum
    assert 'matrix_cli field "$STACK" kind)' in tools
    assert 'matrix_cli field "$STACK" kubernetes)' in tools
    assert tools.count("sha256sum -c -") == 3
    for stack in MATRIX.values():
        assert matrix_cli.main(["field", stack.name, "kind"]) == 0
        assert re.fullmatch(r"v\d+\.\d+\.\d+", stack.kind)
        assert re.fullmatch(r"v\d+\.\d+\.\d+", stack.kubernetes)


def test_makefile_stack_default_is_the_matrix_default() -> None:
    assert makefile_default("STACK") == DEFAULT.name


def test_ci_runs_the_netns_suite_in_a_privileged_container_with_docker(ci: dict[str, Any]) -> None:
    (job,) = ci["jobs"].values()
    options = job["container"]["options"].split()
    assert "--privileged" in options
    assert options[options.index("-v") + 1] == "/var/lib/docker"  # dockerd inside: overlay2
    entry = [s for s in job["steps"] if "run" in s and (".ci/run" in s["run"] or "make test" in s["run"])]
    assert entry
    assert entry[0]["env"]["CI"] == "true"


def test_readme_shows_the_matrix() -> None:
    assert matrix_cli.table() in (REPO / "README.md").read_text()


def test_nightly_checks_every_pin_before_installing_anything(nightly: dict[str, Any]) -> None:
    (job,) = nightly["jobs"].values()
    steps = job["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@")
    assert steps[1]["run"] == 'python3 -m harness.runtime.containerlab.pins check "$STACK" --tools'
    later = " ".join(s.get("run", "") for s in steps[2:])
    assert "curl" in later  # the installs come after it
    assert "make " in later  # and the deploy
    assert nightly["env"]["CONTAINERLAB_VERSION"] == CONTAINERLAB


def test_nightly_frees_the_disk_and_measures_it(nightly: dict[str, Any]) -> None:
    (job,) = nightly["jobs"].values()
    runs = [s.get("run", "") for s in job["steps"]]
    lab_up = next(i for i, r in enumerate(runs) if "make lab-up" in r)
    free = next(i for i, r in enumerate(runs) if "rm -rf /usr/share/dotnet" in r)
    measured = [i for i, r in enumerate(runs) if "docker system df" in r]
    assert free < lab_up < measured[0]
    assert len(measured) == 2
    for i in measured:
        assert job["steps"][i]["if"] == "always()"
        assert '"$RESULTS/disk.txt"' in runs[i]
    recipe_out = re.search(r"^NIGHTLY_OUT = (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert recipe_out is not None
    assert job["env"]["RESULTS"].startswith("test-results/nightly/")
    assert recipe_out.group(1) == "test-results/nightly/$(LAB)-$(STACK)"
