"""Issue 10's hostile-input corpus, through the real CLI.

One table of cases: each writes a lab (the default lab under a unique name, with one hostile
change to the lab file or its Calico resources), then runs `python -m harness.cli validate
FILE` and `... up FILE --name <unique>` as subprocesses. Each must exit 2 within 2 s of CPU time
(a bomb or a parser that expands burns CPU; wall time on a machine loaded by other jobs says
little, so it is only bounded against hangs) with a one-line message naming the file, the
field and the reason, create nothing (no namespace,
process, run directory or lock file of either name; no file in the lab's directory or
anywhere an injection points), and no injected action may happen.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from footprint import assert_no_footprint
from labfiles import resources

from harness.lab import Lab

pytestmark = pytest.mark.netns_only(
    "runs `kvlab up` of the netns runtime and checks it left no namespace, process or file"
)
REPO = Path(__file__).resolve().parents[2]
KVLAB = [sys.executable, "-m", "harness.cli"]
LAB = "lab/default.yml"
RES = "lab/calico/default.yaml"
CPU = 2.0  # seconds of the command's own CPU time (user + system)
WALL = 15.0  # seconds: no command may hang, however loaded the machine

BILLION_LAUGHS = "laughs:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
MERGE_BOMB = "merges:\n  m0: &m0 {k0: v, k1: v}\n" + "".join(
    f"  m{i}: &m{i}\n    <<: [{', '.join([f'*m{i - 1}'] * 8)}]\n    x{i}: v\n" for i in range(1, 12)
)


@dataclass(frozen=True)
class Work:
    """A case's directory: the lab in `lab/`, anything an injection aims at under `out/`."""

    root: Path
    name: str  # the lab's name (the file's `name:`)

    @property
    def pwned(self) -> Path:
        """Where injected BIRD statements or commands would write, if they ran."""
        return self.root / "out" / "pwned"


Maker = Callable[[Work], str]  # writes the case's files, returns the lab argument for the CLI


def _base(work: Work) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    lab = work.root / "lab"
    (lab / "calico").mkdir(parents=True)
    (work.root / "out").mkdir()
    data = yaml.safe_load((REPO / "labs" / "default.yml").read_text())
    data["name"] = work.name
    docs = resources("calico/default.yaml")
    return lab, data, docs


def _write(lab: Path, data: dict[str, Any], docs: list[dict[str, Any]]) -> str:
    (lab / "default.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    (lab / "calico" / "default.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(lab / "default.yml")


def lab_edit(edit: Callable[[dict[str, Any], Work], None]) -> Maker:
    """A case that changes the lab file's data."""

    def make(work: Work) -> str:
        lab, data, docs = _base(work)
        edit(data, work)
        return _write(lab, data, docs)

    return make


def res_edit(index: int, edit: Callable[[dict[str, Any], Work], None]) -> Maker:
    """A case that changes resource document `index` of calico/default.yaml (0 BGPConfiguration,
    1 IPPool, 2 and 3 BGPPeers, 4 the BGPFilter, 5 FelixConfiguration, 6 IPAMConfiguration)."""

    def make(work: Work) -> str:
        lab, data, docs = _base(work)
        edit(docs[index], work)
        return _write(lab, data, docs)

    return make


def raw(
    lab_text: Callable[[str, Work], str] | None = None, res_text: Callable[[str, Work], str] | None = None
) -> Maker:
    """A case that rewrites the lab file's or the resource file's text."""

    def make(work: Work) -> str:
        lab, data, docs = _base(work)
        path = _write(lab, data, docs)
        for rel, fn in ((LAB, lab_text), (RES, res_text)):
            if fn is not None:
                p = work.root / rel
                p.write_text(fn(p.read_text(), work))
        return path

    return make


def resources_named(value: str, prepare: Callable[[Work], None] = lambda w: None) -> Maker:
    """A case whose `resources:` names `value` (after `prepare` made what it points at)."""

    def edit(data: dict[str, Any], work: Work) -> None:
        prepare(work)
        data["clusters"][0]["resources"] = value

    return lab_edit(edit)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any], Work], None]:
    def edit(doc: dict[str, Any], work: Work) -> None:
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value(work) if callable(value) else value

    return edit


def _log(work: Work) -> str:
    return f'log "{work.pwned}" all;'


def _rule(**rule: Any) -> Callable[[dict[str, Any], Work], None]:
    """Add a rule to the BGPFilter's exportV4 (values may be callables of the Work)."""

    def edit(doc: dict[str, Any], work: Work) -> None:
        doc["spec"]["exportV4"].insert(0, {k: v(work) if callable(v) else v for k, v in rule.items()})

    return edit


def _fifo(work: Work) -> None:
    os.mkfifo(work.root / "lab" / "calico" / "fifo.yaml")


def _sparse(rel: str, size: int) -> Callable[[Work], None]:
    def make(work: Work) -> None:
        with (work.root / rel).open("ab") as fh:
            fh.truncate(size)

    return make


def _outside(work: Work) -> None:
    (work.root / "outside.yaml").write_text((REPO / "labs" / "calico" / "default.yaml").read_text())


def _symlink_out(work: Work) -> None:
    (work.root / "lab" / "calico" / "evil.yaml").symlink_to("/etc/hostname")


def _huge_lab(work: Work) -> str:
    path = raw()(work)
    _sparse(LAB, 5 * 1024 * 1024)(work)
    return path


def _big_resources(work: Work) -> str:
    path = raw()(work)
    _sparse(RES, 5 * 1024 * 1024)(work)
    return path


def _non_utf8(work: Work) -> str:
    path = raw()(work)
    with (work.root / LAB).open("ab") as fh:
        fh.write(b"# caf\xe9\n")
    return path


def _proc_file(work: Work) -> str:
    raw()(work)
    return "/proc/self/status"


@dataclass(frozen=True)
class Case:
    id: str
    make: Maker
    file: str  # how the file named in the message ends
    field: str  # the field path in the message ("" for a file refused as a whole)
    reason: str  # a fragment of the reason


RULE0 = "spec.exportV4[0]"
CASES = [
    # -- injection into every field that reaches a BIRD config --
    Case("bgppeer-name-log",
         res_edit(2, _set(("metadata", "name"), lambda w: f"rack-r1\n{_log(w)}\n#")),
         RES, "metadata.name", "DNS-1123 subdomain"),
    Case("bgppeer-name-static-blackhole",
         res_edit(2, _set(("metadata", "name"), "x\nprotocol static { route 203.0.113.0/24 blackhole; }\n#")),
         RES, "metadata.name", "DNS-1123 subdomain"),
    Case("bgpfilter-name-newline",
         res_edit(4, _set(("metadata", "name"), lambda w: f"f\n{_log(w)}")),
         RES, "metadata.name", "DNS-1123 subdomain"),
    Case("bgpfilter-name-quote",
         res_edit(4, _set(("metadata", "name"), "kubevirt'live")),
         RES, "metadata.name", "DNS-1123 subdomain"),
    Case("bgppeer-filters-entry",
         res_edit(2, _set(("spec", "filters"), lambda w: [f"x'(); {_log(w)} #"])),
         RES, "spec.filters[0]", "filter name"),
    Case("filter-interface",
         res_edit(4, _rule(action="Reject", interface=lambda w: f'eth0"; {_log(w)} #')),
         RES, f"{RULE0}.interface", "interface name or pattern"),
    Case("filter-interface-newline",
         res_edit(4, _rule(action="Reject", interface="eth0\n")),
         RES, f"{RULE0}.interface", "interface name or pattern"),
    Case("filter-community-match",
         res_edit(4, _rule(action="Reject", communities={"values": ["65000:100\n"]})),
         RES, f"{RULE0}.communities.values[0]", "not a BGP community"),
    Case("filter-add-community",
         res_edit(4, _rule(action="Accept", operations=[{"addCommunity": {"value": "1:1); reject; #"}}])),
         RES, f"{RULE0}.operations[0].addCommunity.value", "not a BGP community"),
    Case("filter-cidr",
         res_edit(4, _rule(action="Reject", matchOperator="In", cidr=lambda w: f"10.0.0.0/8 ]; {_log(w)}")),
         RES, f"{RULE0}.cidr", "does not appear to be"),
    Case("filter-cidr-ipv6-in-v4",
         res_edit(4, _rule(action="Reject", matchOperator="In", cidr="2001:db8::/32")),
         RES, f"{RULE0}.cidr", "needs an IPv4 prefix"),
    Case("filter-prefix-length",
         res_edit(4, _rule(action="Reject", matchOperator="In", cidr="10.0.0.0/8", prefixLength={"max": 99})),
         RES, RULE0, "above /32"),
    Case("filter-set-priority",
         res_edit(4, _rule(action="Accept", operations=[{"setPriority": {"value": 0}}])),
         RES, f"{RULE0}.operations[0].setPriority.value", "greater than or equal to 1"),
    Case("peerip-injection",
         res_edit(2, _set(("spec", "peerIP"), lambda w: f"198.18.1.1 as 65001; {_log(w)} #")),
         RES, "spec.peerIP", "is not an IP address"),
    Case("peerip-port",
         res_edit(2, _set(("spec", "peerIP"), "198.18.1.1:179")),
         RES, "spec.peerIP", "has a port"),
    Case("peerip-ipv6",
         res_edit(2, _set(("spec", "peerIP"), "2001:db8::1")),
         RES, "spec.peerIP", "IPv6"),
    Case("keepalive-99999999h",
         res_edit(2, _set(("spec", "keepaliveTime"), "99999999h")),
         RES, "spec.keepaliveTime", "out of range"),
    Case("keepalive-injection",
         res_edit(2, _set(("spec", "keepaliveTime"), lambda w: f"10; {_log(w)}")),
         RES, "spec.keepaliveTime", "is not a duration"),
    Case("num-allowed-local-as",
         res_edit(2, _set(("spec", "numAllowedLocalASNumbers"), 99999999999)),
         RES, "spec.numAllowedLocalASNumbers", "less than or equal to 255"),
    Case("local-as-number-as-trans",
         res_edit(2, _set(("spec", "localASNumber"), 23456)),
         RES, "spec.localASNumber", "AS_TRANS"),
    Case("peer-as-number-above-32-bit",
         res_edit(2, _set(("spec", "asNumber"), 4294967296)),
         RES, "spec.asNumber", "less than or equal to 4294967295"),
    Case("bgpconfiguration-as-zero",
         res_edit(0, _set(("spec", "asNumber"), 0)),
         RES, "spec.asNumber", "greater than or equal to 1"),
    Case("selector-too-long",
         res_edit(2, _set(("spec", "nodeSelector"), "rack == 'r1'" + " || has(x)" * 120)),
         RES, "spec.nodeSelector", "at most 1024"),
    Case("selector-nesting",
         res_edit(2, _set(("spec", "nodeSelector"), "(" * 500 + "all()" + ")" * 500)),
         RES, "spec.nodeSelector", "nests too deeply"),
    Case("ippool-cidr",
         res_edit(1, _set(("spec", "cidr"), "203.0.113.0/24; reject")),
         RES, "spec.cidr", "is not an IP network"),
    Case("convergence-time",
         res_edit(5, _set(("spec", "liveMigrationRouteConvergenceTime"), "99999999h")),
         RES, "spec.liveMigrationRouteConvergenceTime", "at most 1h"),
    Case("workload-peering-ip",
         res_edit(0, _set(("spec", "localWorkloadPeeringIPV4"), "8.8.8.8")),
         RES, "spec.localWorkloadPeeringIPV4", "outside the lab's address plan"),
    Case("resource-label",
         res_edit(2, _set(("metadata", "labels"), {"team": "a\nb"})),
         RES, "metadata.labels", "label value"),
    Case("resource-namespace",
         res_edit(2, _set(("metadata", "namespace"), "../kube-system")),
         RES, "metadata.namespace", "DNS-1123 label"),
    Case("router-template-traversal",
         lab_edit(_set(("routers", 0, "template"), "../../../../etc/passwd")),
         LAB, "routers[0].template", "is a path"),
    Case("router-template-absolute",
         lab_edit(_set(("routers", 0, "template"), "/etc/passwd")),
         LAB, "routers[0].template", "is a path"),
    Case("router-template-unknown",
         lab_edit(_set(("routers", 0, "template"), "evil.conf.j2")),
         LAB, "routers[0].template", "not a router template"),
    Case("router-template-node",
         lab_edit(_set(("routers", 1, "template"), "node.conf.j2")),
         LAB, "routers[1].template", "not a router template"),
    Case("elevated-community-injection",
         lab_edit(_set(("routers", 1, "elevated_community"), lambda w: f"1:1) ~ x) then {{ }} {_log(w)}")),
         LAB, "routers[1].elevated_community", "not a BGP community"),
    Case("elevated-community-large",
         lab_edit(_set(("routers", 1, "elevated_community"), "65000:100:1")),
         LAB, "routers[1].elevated_community", "large community"),
    Case("router-asn-as-trans",
         lab_edit(_set(("routers", 0, "asn"), 23456)),
         LAB, "routers[0].asn", "AS_TRANS"),
    Case("router-asn-reserved-top",
         lab_edit(_set(("routers", 0, "asn"), 4294967295)),
         LAB, "routers[0].asn", "reserved"),
    Case("node-asn-65535",
         lab_edit(_set(("clusters", 0, "nodes", 0, "asn"), 65535)),
         LAB, "clusters[0].nodes[0].asn", "reserved"),
    Case("block-size",
         lab_edit(_set(("clusters", 0, "block_size"), 99)),
         LAB, "clusters[0].block_size", "less than or equal to 32"),
    Case("node-label",
         lab_edit(_set(("clusters", 0, "nodes", 0, "labels"), {"zone": "a b"})),
         LAB, "clusters[0].nodes[0].labels", "label value"),
    Case("vm-label-key",
         lab_edit(_set(("vms", 0, "labels"), {"bad key": "x"})),
         LAB, "vms[0].labels", "qualified name"),
    Case("vm-mac-newline",
         lab_edit(_set(("vms", 0, "mac"), "52:54:00:12:34:56\n")),
         LAB, "vms[0].mac", "pattern"),
    Case("lab-name-path",
         lab_edit(_set(("name",), "../../tmp/x")),
         LAB, "name", "invalid name"),
    Case("description-newline",
         lab_edit(_set(("description",), lambda w: f"x\n{_log(w)}")),
         LAB, "description", "one line"),
    # -- timers --
    Case("timer-inf",
         raw(lambda t, w: t + "timers: {bgp_established: .inf}\n"),
         LAB, "timers.bgp_established", "finite number"),
    Case("timer-nan",
         raw(lambda t, w: t + "timers: {migration: .nan}\n"),
         LAB, "timers.migration", "finite number"),
    Case("timer-negative",
         raw(lambda t, w: t + "timers: {migration_source_cleanup: -1}\n"),
         LAB, "timers.migration_source_cleanup", "greater than or equal to 0"),
    Case("timer-huge",
         raw(lambda t, w: t + "timers: {bgp_established: 1e12}\n"),
         LAB, "timers.bgp_established", "less than or equal to 3600"),
    # -- the resources path --
    Case("resources-absolute", resources_named("/etc/passwd"),
         LAB, "clusters[0].resources", "absolute path"),
    Case("resources-dev-zero", resources_named("/dev/zero"),
         LAB, "clusters[0].resources", "absolute path"),
    Case("resources-dotdot", resources_named("../outside.yaml", _outside),
         LAB, "clusters[0].resources", "leads outside the lab file's directory"),
    Case("resources-symlink-out", resources_named("calico/evil.yaml", _symlink_out),
         LAB, "clusters[0].resources", "leads outside the lab file's directory"),
    Case("resources-fifo", resources_named("calico/fifo.yaml", _fifo),
         "lab/calico/fifo.yaml", "", "is a FIFO"),
    Case("resources-directory", resources_named("calico"),
         "lab/calico", "", "is a directory"),
    # -- bombs, huge and special files --
    Case("lab-billion-laughs", raw(lambda t, w: t + BILLION_LAUGHS),
         LAB, "", "alias or merge-key bomb"),
    Case("resources-billion-laughs", raw(res_text=lambda t, w: t + "---\n" + BILLION_LAUGHS),
         RES, "", "alias or merge-key bomb"),
    Case("lab-merge-bomb", raw(lambda t, w: t + MERGE_BOMB),
         LAB, "", "alias or merge-key bomb"),
    Case("resources-merge-bomb", raw(res_text=lambda t, w: t + "---\n" + MERGE_BOMB),
         RES, "", "alias or merge-key bomb"),
    Case("recursive-alias", raw(lambda t, w: t + "loop: &loop [1, *loop]\n"),
         LAB, "", "recursive alias"),
    Case("deep-nesting", raw(lambda t, w: t + "deep: " + "[" * 100_000 + "]" * 100_000 + "\n"),
         LAB, "", "nest"),
    Case("huge-lab-file", _huge_lab, LAB, "", "larger than 4 MiB"),
    Case("huge-resources-file", _big_resources, RES, "", "larger than 4 MiB"),
    Case("proc-file-as-lab", _proc_file, "/proc/self/status", "", "does not match its size"),
    Case("non-utf8-lab", _non_utf8, LAB, "", "not UTF-8"),
    Case("python-tag",
         raw(lambda t, w: t + f'timers: !!python/object/apply:os.system ["touch {w.pwned}"]\n'),
         LAB, "timers", "unsupported YAML tag"),
    Case("control-character-key", raw(lambda t, w: t + '"routers\\n": []\n'),
         LAB, "", "is not a field name"),
]  # fmt: skip


@dataclass(frozen=True)
class Run:
    """A finished command: exit code, stderr, wall and CPU seconds."""

    returncode: int
    stderr: str
    wall: float
    cpu: float


def _run(args: list[str]) -> Run:
    """Run kvlab; its CPU time comes from wait4, so a loaded machine does not inflate it."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*KVLAB, *args], cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        killer = threading.Timer(60, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return Run(proc.returncode, stderr, time.monotonic() - t0, usage.ru_utime + usage.ru_stime)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_corpus_is_large_and_named_uniquely() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_creating_nothing(case: Case, tmp_path: Path) -> None:
    work = Work(tmp_path, Lab.unique_name("hostile"))
    instance = Lab.unique_name("hostile-up")
    lab_arg = case.make(work)
    before = _files(tmp_path)
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(_run, [["validate", lab_arg], ["up", lab_arg, "--name", instance]]))
    for res, command in zip(runs, ("validate", "up"), strict=True):
        where = f"{command}: {res.stderr!r}"
        assert res.returncode == 2, where
        assert res.cpu < CPU, f"{command} took {res.cpu:.2f}s of CPU"
        assert res.wall < WALL, f"{command} took {res.wall:.2f}s"
        lines = res.stderr.splitlines()
        assert lines, where
        assert all(line.startswith("kvlab: ") for line in lines), where
        assert "Traceback" not in res.stderr, where
        field = f" {case.field}:" if case.field else ""
        assert any(f"{case.file}:" in line and field in line and case.reason in line for line in lines), where
    for name in (work.name, instance):
        assert_no_footprint(name)
    assert not work.pwned.exists()
    assert _files(tmp_path) == before


def test_up_runs_bird_p_before_creating_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were a config to get past validation and BIRD refuse it, `Lab.up()` stops before the
    netns runtime creates a namespace or starts a process (exit 2 from the CLI: a SpecError)."""
    from harness.errors import SpecError
    from harness.render import bird
    from harness.runtime.netns import runtime as netns

    real = bird.rendered_configs
    monkeypatch.setattr(
        netns,
        "rendered_configs",
        lambda spec, *a, **kw: [
            (e, p, t + "garbage;\n" if e == "tor1" else t) for e, p, t in real(spec, *a, **kw)
        ],
    )
    name = Lab.unique_name("birdp")
    lab = Lab.from_file(REPO / "labs" / "default.yml", name=name)
    with pytest.raises(SpecError, match="BIRD rejects the config rendered for 'tor1'"):
        lab.up()
    assert_no_footprint(name)


def test_render_writes_nothing_bird_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import cli
    from harness.render import bird
    from harness.runtime.netns import runtime as netns

    real = bird.rendered_configs
    monkeypatch.setattr(
        netns,
        "rendered_configs",
        lambda spec, *a, **kw: [(e, p, t + "garbage;\n") for e, p, t in real(spec, *a, **kw)],
    )
    assert cli.main(["render", str(REPO / "labs" / "default.yml"), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
