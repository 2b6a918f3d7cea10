"""Lab lifecycle on the netns runtime: nothing leaks, on success, failure, crash or bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from footprint import assert_no_footprint

from harness import netlink
from harness.errors import WaitTimeout
from harness.generate import fabric_lab, write_lab
from harness.lab import Lab
from harness.runtime.netns import NetnsRuntime
from harness.state import lab_dir
from harness.wait import eventually

pytestmark = [
    pytest.mark.netns,
    pytest.mark.netns_only("checks the netns runtime's namespaces, BIRD processes and crash reaping"),
]
KVLAB = [sys.executable, "-m", "harness.cli"]
REPO = Path(__file__).resolve().parents[2]


def lab_namespaces(name: str) -> list[str]:
    return [ns for ns in netlink.list_namespaces() if ns.startswith(f"kvlab.{name}.")]


def lab_pids(name: str) -> list[int]:
    return [pid for ns in lab_namespaces(name) for pid in netlink.namespace_pids(ns)]


def bird_pids_of(name: str) -> list[int]:
    """BIRD processes whose control socket lives in this lab's run directory."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"bird") and str(lab_dir(name)).encode() in b" ".join(cmdline):
            out.append(int(entry.name))
    return out


def assert_gone(name: str) -> None:
    assert lab_namespaces(name) == []
    assert bird_pids_of(name) == []
    assert not lab_dir(name).exists()


@pytest.fixture
def small_lab_file(tmp_path: Path) -> Path:
    return write_lab(fabric_lab(2, 1, name="small"), tmp_path / "small.yml")


def test_context_manager_brings_up_and_removes_everything(small_lab_file: Path) -> None:
    name = Lab.unique_name("lc")
    with Lab.from_file(small_lab_file, name=name) as lab:
        assert all(s.established for s in lab.sessions())
        assert len(lab_namespaces(name)) == len(lab.topo.entities)
        assert len(bird_pids_of(name)) == 5  # spine, 2 ToRs, 2 nodes
    assert_gone(name)


def test_up_is_idempotent_and_reuses_the_running_lab(small_lab_file: Path) -> None:
    name = Lab.unique_name("idem")
    first = Lab.from_file(small_lab_file, name=name).up()
    try:
        pids = sorted(bird_pids_of(name))
        again = Lab.from_file(small_lab_file, name=name).up()
        assert again.reused
        assert sorted(bird_pids_of(name)) == pids
        assert len(lab_namespaces(name)) == len(first.topo.entities)
    finally:
        first.down()
    assert_gone(name)


def test_two_labs_run_side_by_side(small_lab_file: Path) -> None:
    a, b = Lab.unique_name("para"), Lab.unique_name("parb")
    with Lab.from_file(small_lab_file, name=a) as lab_a, Lab.from_file(small_lab_file, name=b) as lab_b:
        for lab in (lab_a, lab_b):
            assert all(s.established for s in lab.sessions())
            assert lab.router("spine1").best_route(str(lab.topo.node_blocks["r2-n1"][0])) is not None
        lab_a.down()
        assert lab_namespaces(a) == []
        assert all(s.established for s in lab_b.sessions()), "tearing down one lab disturbed the other"
    assert_gone(a)
    assert_gone(b)


def test_failure_halfway_removes_what_was_created(
    small_lab_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = Lab.unique_name("half")

    def boom(self: NetnsRuntime, topo: object) -> None:
        raise RuntimeError("injected failure while wiring links")

    monkeypatch.setattr(NetnsRuntime, "_wire_links", boom)
    with pytest.raises(RuntimeError, match="injected"):
        Lab.from_file(small_lab_file, name=name).up()
    assert_gone(name)


def test_sessions_that_never_establish_are_named_and_the_lab_removed(tmp_path: Path) -> None:
    data = fabric_lab(2, 1, name="stuck")
    data["timers"] = {"bgp_established": 4}
    # The rack-2 BGPPeer selects no node: tor2's session to r2-n1 can never come up.
    peer = next(r for r in data["clusters"][0]["resources"] if r["metadata"]["name"] == "rack-r2-tor")
    peer["spec"]["nodeSelector"] = "rack == 'nowhere'"
    path = write_lab(data, tmp_path / "stuck.yml")
    name = Lab.unique_name("stuck")
    with pytest.raises(WaitTimeout) as err:
        Lab.from_file(path, name=name).up()
    assert "tor2/bgp_r2_n1" in str(err.value)
    assert_gone(name)


def test_killed_owner_is_reaped_by_kvlab_down(small_lab_file: Path) -> None:
    """A pytest (or any owner) killed with SIGKILL leaves a lab; the next `kvlab down` removes it."""
    name = Lab.unique_name("crash")
    script = textwrap.dedent(f"""
        import os, signal
        from harness.lab import Lab
        Lab.from_file({str(small_lab_file)!r}, name={name!r}, owner_pid=os.getpid()).up()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert lab_namespaces(name), "the crashed owner should have left its lab behind"
    assert bird_pids_of(name)
    # Any `kvlab down` reaps labs whose owner is gone; name an unrelated lab so other labs on
    # this machine (a developer's `make lab-up`) are left alone.
    res = subprocess.run(
        [*KVLAB, "down", Lab.unique_name("unrelated")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert f"reaped leftovers of crashed lab '{name}'" in res.stderr
    eventually(lambda: bird_pids_of(name) == [], timeout=5, what="crashed lab's BIRDs to exit")
    assert_gone(name)


def test_leftover_namespaces_without_state_are_reaped(small_lab_file: Path) -> None:
    name = Lab.unique_name("orphan")
    Lab.from_file(small_lab_file, name=name).up()
    (lab_dir(name) / "state.json").unlink()
    res = subprocess.run([*KVLAB, "down", name], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert_gone(name)


def test_bad_lab_file_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    data = fabric_lab(2, 1, name="bad")
    data["clusters"][0]["pools"] = ["10.0.0.0/24"]
    path = write_lab(data, tmp_path / "bad.yml")
    before = netlink.list_namespaces()
    res = subprocess.run([*KVLAB, "up", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2
    assert "clusters[0].pools[0]" in res.stderr
    assert str(path) in res.stderr
    assert netlink.list_namespaces() == before
    assert not lab_dir("bad").exists()


def test_interrupt_during_up_cleans_up(small_lab_file: Path) -> None:
    """Ctrl-C (SIGINT) while `kvlab up` runs leaves nothing behind."""
    name = Lab.unique_name("sigint")
    proc = subprocess.Popen(
        [*KVLAB, "up", str(small_lab_file), "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    eventually(
        lambda: len(lab_namespaces(name)) > 0, timeout=30, what="kvlab up to start creating namespaces"
    )
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, 0), err
    if proc.returncode == 0:  # it finished before the signal landed: then a down must clean up
        subprocess.run([*KVLAB, "down", name], check=True, capture_output=True, timeout=60)
    assert_gone(name)


def _kvlab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVLAB, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO
    )


def test_nested_lab_from_the_command_line() -> None:
    """The acceptance check of nested clusters, as a user runs it: up, routes, status, down."""
    name = Lab.unique_name("nested")
    try:
        assert _kvlab("up", "labs/nested.yml", "--name", name).returncode == 0
        res = _kvlab("routes", "tor1", "--lab", name, "--json")
        assert res.returncode == 0, res.stderr
        routes = {r["prefix"]: r for r in json.loads(res.stdout) if r["best"]}
        for pool, asn in (("198.51.100.0/26", 65101), ("198.51.100.64/26", 65102)):
            assert routes[pool]["via"] == "198.18.1.11"  # p1-n1, where vm-red and vm-blue run
            assert routes[pool]["as_path"] == [64512, asn]
        status = json.loads(_kvlab("status", name, "--json").stdout)
        assert {c["name"]: c["parent"] for c in status["clusters"]}["red"] == "parent"
        local = {s["peer"] for s in status["sessions"] if s["name"].startswith("Local_Workload_")}
        assert local == {"203.0.113.10", "203.0.113.11"}  # vm-green is selected by no BGPPeer
        assert all(s["state"] == "Established" for s in status["sessions"])
    finally:
        _kvlab("down", name)
    assert_gone(name)


def test_nested_node_in_a_qemu_vm_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    """The guest image has no BIRD: a nested node needs a mock VM on the netns runtime (exit 2)."""
    data = yaml.safe_load((REPO / "labs" / "nested.yml").read_text())
    for vm in data["vms"]:
        if vm["name"] == "vm-red":
            vm["backend"] = "qemu"
    for cluster in data["clusters"]:
        cluster["resources"] = [
            d for d in yaml.safe_load_all((REPO / "labs" / cluster["resources"]).read_text()) if d
        ]
    path = tmp_path / "nested-qemu.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    name = Lab.unique_name("nestedq")
    res = _kvlab("up", str(path), "--name", name, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "nested nodes red-n1 run in QEMU VMs" in res.stderr
    # Only what this lab could have created (other labs come and go meanwhile); the refusal
    # comes after `up` took the lab's lock, whose file stays until issue 10's lock clean-up.
    assert_no_footprint(name, locks=False)
