"""Lab lifecycle on the netns runtime: nothing leaks, on success, failure, crash or bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import netlink
from harness.errors import WaitTimeout
from harness.generate import fabric_lab, write_lab
from harness.instances import present_labs, reap_stale
from harness.lab import Lab
from harness.procs import mentioning
from harness.runtime.netns.runtime import NetnsRuntime
from harness.state import LabState, lab_dir, lock_path
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
    return mentioning(lab_dir(name), program="bird")


def assert_gone(name: str) -> None:
    assert lab_namespaces(name) == []
    assert bird_pids_of(name) == []
    assert not lab_dir(name).exists()
    assert not lock_path(name).exists()


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
    reaped_by_down(name)
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
    name = Lab.unique_name("bad")
    data = fabric_lab(2, 1, name=name)
    data["clusters"][0]["pools"] = ["10.0.0.0/24"]
    path = write_lab(data, tmp_path / "bad.yml")
    res = subprocess.run([*KVLAB, "up", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2
    assert "clusters[0].pools[0]" in res.stderr
    assert str(path) in res.stderr
    assert_gone(name)  # only what this lab would have made: other labs may come and go meanwhile


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


@pytest.mark.parametrize("lab_file", ["labs/nested.yml", "labs/nested-qemu.yml"])
def test_nested_lab_from_the_command_line(lab_file: str) -> None:
    """The acceptance check of nested clusters, as a user runs it: up, routes, status, down
    (labs/nested-qemu.yml: red-n1's BIRD in a QEMU guest, its control socket a relay on the
    host; down leaves neither behind)."""
    name = Lab.unique_name("nested")
    try:
        up = _kvlab("up", lab_file, "--name", name, timeout=600)
        assert up.returncode == 0, up.stderr
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


def test_dual_stack_nested_lab_from_the_command_line() -> None:
    """labs/nested-dual-stack.yml as a user runs it: up, bird6 routes at the ToR (each nested v6
    pool via p1-n1's IPv6 address, both AS numbers), status (v6 workload sessions), down."""
    name = Lab.unique_name("nested6")
    try:
        up = _kvlab("up", "labs/nested-dual-stack.yml", "--name", name, timeout=600)
        assert up.returncode == 0, up.stderr
        res = _kvlab("routes", "tor1", "--lab", name, "--family", "6", "--json")
        assert res.returncode == 0, res.stderr
        routes = {r["prefix"]: r for r in json.loads(res.stdout) if r["best"]}
        for pool, asn in (("2001:db8:51:100::/120", 65101), ("2001:db8:51:140::/120", 65102)):
            assert routes[pool]["via"] == "2001:db8::c612:10b"  # p1-n1's IPv6 address
            assert routes[pool]["as_path"] == [64512, asn]
        status = json.loads(_kvlab("status", name, "--json").stdout)
        local6 = {s["peer"] for s in status["sessions"] if s["name"].startswith("Local_Workload_2001")}
        assert local6 == {"2001:db8:203:113::10", "2001:db8:203:113::11"}
        nested = {
            (s["router"], s["name"]) for s in status["sessions"] if s["router"] in ("red-n1", "blue-n1")
        }
        assert nested == {  # each nested node's bird and bird6
            (node, peer)
            for node in ("red-n1", "blue-n1")
            for peer in ("Global_169_254_0_179", "Global_fdc9_9723_9bc__1")
        }
        assert all(s["state"] == "Established" for s in status["sessions"])
    finally:
        _kvlab("down", name)
    assert_gone(name)


# -- builders killed half-way, labs in progress, kept labs --------------------------------


def start_up(path: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*KVLAB, "up", str(path), "--name", name, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def reaped_by_down(name: str) -> None:
    """The next `kvlab down` (of another lab) reaps lab `name` and says so, unless another
    reaper on this machine (a concurrent `kvlab down`, another test session) got there first:
    then that one finishes it."""
    out = down_another_lab()
    if f"reaped leftovers of crashed lab '{name}'" not in out:
        _reaped_elsewhere(name)


def reaped_by_session(name: str) -> None:
    """The session reaper (reap_stale) reaps lab `name`, unless another reaper got there first."""
    if name not in reap_stale():
        _reaped_elsewhere(name)


def _reaped_elsewhere(name: str) -> None:
    what = f"another reaper on this machine to remove '{name}'"
    eventually(lambda: name not in present_labs(), timeout=30, what=what)


def down_another_lab() -> str:
    """`kvlab down` of a lab that does not exist: it reaps stale labs on the way. Its stderr."""
    res = _kvlab("down", Lab.unique_name("unrelated"))
    assert res.returncode == 0, res.stderr
    return res.stderr


def stuck_lab(tmp_path: Path, name: str, bgp_established: float) -> Path:
    """A lab whose tor2 session never establishes (the rack-2 BGPPeer selects no node)."""
    data = fabric_lab(2, 1, name=name)
    data["timers"] = {"bgp_established": bgp_established}
    peer = next(r for r in data["clusters"][0]["resources"] if r["metadata"]["name"] == "rack-r2-tor")
    peer["spec"]["nodeSelector"] = "rack == 'nowhere'"
    return write_lab(data, tmp_path / f"{name}.yml")


@pytest.mark.parametrize("reaper", ["kvlab down", "session reaper"])
@pytest.mark.parametrize("moment", ["state file written", "first BIRD running"])
def test_up_killed_early_is_reaped(small_lab_file: Path, moment: str, reaper: str) -> None:
    """`kvlab up` SIGKILLed before its lab is ready: no owner was recorded (a CLI lab), but its
    builder is gone and its lock free, so the next `kvlab down` of any lab (or the pytest
    session's reaper) removes it."""
    name = Lab.unique_name("killed")
    started = time.monotonic()
    proc = start_up(small_lab_file, name)
    try:
        if moment == "state file written":
            eventually(
                lambda: (lab_dir(name) / "state.json").exists(), timeout=30, interval=0.01, what=moment
            )
        else:
            eventually(lambda: bird_pids_of(name), timeout=30, interval=0.02, what=moment)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    print(f"kvlab up killed {time.monotonic() - started:.2f} s after its start ({moment})")
    state = LabState.load(lab_dir(name))
    assert state is not None
    assert not state.ready
    assert state.owner_pid is None
    if reaper == "kvlab down":
        reaped_by_down(name)
    else:
        reaped_by_session(name)
    eventually(lambda: bird_pids_of(name) == [], timeout=5, what="the killed lab's BIRDs to exit")
    assert_gone(name)


def test_up_in_progress_is_never_reaped_and_reaped_once_killed(tmp_path: Path) -> None:
    name = Lab.unique_name("inprog")
    proc = start_up(stuck_lab(tmp_path, name, bgp_established=60), name)
    try:
        # Every BIRD runs: `up` now waits for sessions that never come (state not ready).
        eventually(lambda: len(bird_pids_of(name)) == 5, timeout=30, what="every BIRD of the lab")
        namespaces = lab_namespaces(name)
        assert f"'{name}'" not in down_another_lab()
        assert name not in reap_stale()
        assert proc.poll() is None, "the reaper must not disturb an `up` in progress"
        assert lab_namespaces(name) == namespaces
        assert len(bird_pids_of(name)) == 5
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    reaped_by_down(name)
    eventually(lambda: bird_pids_of(name) == [], timeout=5, what="the killed lab's BIRDs to exit")
    assert_gone(name)


def test_a_lab_kept_on_failure_is_not_reaped(tmp_path: Path) -> None:
    name = Lab.unique_name("kept")
    path = stuck_lab(tmp_path, name, bgp_established=2)
    try:
        res = _kvlab("up", str(path), "--name", name, "--keep-on-failure", "--diag-dir", str(tmp_path / "d"))
        assert res.returncode == 1, res.stderr
        assert "lab kept for inspection" in res.stderr
        assert f"'{name}'" not in down_another_lab()
        assert len(bird_pids_of(name)) == 5
    finally:
        res = _kvlab("down", name)
    assert res.returncode == 0, res.stderr
    assert_gone(name)


def test_down_of_an_unknown_lab_creates_nothing() -> None:
    name = Lab.unique_name("nosuch")
    res = _kvlab("down", name)
    assert res.returncode == 0, res.stderr
    assert f"lab '{name}' was not running" in res.stderr
    assert_gone(name)


def test_cli_errors_against_a_running_lab(small_lab_file: Path) -> None:
    """Bad input names the argument (exit 2); BIRD unreachable is the lab failing (exit 1);
    one line each, never a traceback."""
    name = Lab.unique_name("clierr")
    with Lab.from_file(small_lab_file, name=name) as lab:
        cases = [
            (["routes", "nosuch", "--lab", name], 2, "'nosuch' is no router or node of lab"),
            (["routes", "tor1", "not-a-prefix", "--lab", name], 2, "PREFIX: not an IP prefix"),
            (["routes", "tor1", "198.18.1.0/24", "--lab", name, "--json"], 0, ""),
            (["status", name, "--json"], 0, ""),
        ]
        for argv, code, text in cases:
            res = _kvlab(*argv)
            assert res.returncode == code, (argv, res.stderr)
            assert "Traceback" not in res.stderr
            assert text in res.stderr
            if code:
                assert res.stderr.count("\n") == 1, res.stderr
        # BIRD of spine1 gone: the lab does not do what was asked (exit 1), one line.
        pid = int((lab_dir(name) / "spine1" / "bird.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        eventually(lambda: pid not in bird_pids_of(name), timeout=5, what="spine1's BIRD to exit")
        res = _kvlab("routes", "spine1", "--lab", name)
        assert res.returncode == 1, res.stderr
        assert res.stderr.startswith("kvlab: BIRD error")
        assert "bird.ctl" in res.stderr
        assert res.stderr.count("\n") == 1, res.stderr
        assert "Traceback" not in res.stderr
        lab.down()
    assert_gone(name)


def test_a_lab_of_another_run_directory_is_not_a_leftover(small_lab_file: Path, tmp_path: Path) -> None:
    """A lab brought up with another KVLAB_RUN_DIR has no state file in ours, but it is no
    leftover: the reaper of this run directory leaves it running."""
    name = Lab.unique_name("otherroot")
    env = {**os.environ, "KVLAB_RUN_DIR": str(tmp_path / "run")}
    up = subprocess.run(
        [*KVLAB, "up", str(small_lab_file), "--name", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert name not in reap_stale()
        assert lab_namespaces(name)
    finally:
        subprocess.run([*KVLAB, "down", name], env=env, capture_output=True, timeout=120, check=False)
    assert lab_namespaces(name) == []


_HOLD_UP = """
import sys
from harness import netlink
from harness.state import lab_lock, namespace_name
with lab_lock(sys.argv[1]):
    netlink.create_namespace(namespace_name(sys.argv[1], "tor1"))
    print("holding", flush=True)
    sys.stdin.readline()
"""


def test_a_lab_coming_up_in_another_run_directory_is_not_reaped(tmp_path: Path) -> None:
    """Namespace names are machine-wide: while another run directory's `up` holds a lab (its
    namespaces exist, no process runs in them yet), our reaper leaves it alone; once that `up`
    is gone without a trace of ownership, what it left is a leftover."""
    name = Lab.unique_name("comingup")
    env = {**os.environ, "KVLAB_RUN_DIR": str(tmp_path / "run")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_UP, name],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "holding"
        assert lab_namespaces(name)
        assert name not in reap_stale()
        assert f"'{name}'" not in down_another_lab()
        assert lab_namespaces(name), "the reaper took a lab another run directory is bringing up"
    finally:
        proc.communicate("\n", timeout=30)
    reaped_by_session(name)
    assert_gone(name)
