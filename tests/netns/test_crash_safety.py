"""No interrupt, crash or failure loses a VM: `kvlab migrate` of the QEMU VM killed (SIGKILL) or
interrupted (SIGINT, Ctrl-C) at every step of a migration, terminated (SIGTERM) at two, and the
target QEMU killed at five of them. After each, the next `kvlab status` reports where the VM
really runs (the one QEMU process of the VM, in that node's namespace), the VM answers on its
echo port through the fabric, no half-done migration is left, and a further migration succeeds.

The strikes come from fail points (harness.failpoints): the real process really dies there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from labfiles import lab_data, write_lab_data

from harness import netlink, tcpcheck
from harness.lab import Lab
from harness.procs import mentioning
from harness.runtime.netns.journal import MigrationJournal
from harness.state import lab_dir, namespace_name
from harness.wait import eventually

pytestmark = [
    pytest.mark.migration,
    pytest.mark.netns_only("kills the netns runtime's own migration process and QEMU at chosen steps"),
]
REPO = Path(__file__).resolve().parents[2]
KVLAB = [sys.executable, "-m", "harness.cli"]

# Every step of a QEMU migration, in order (the fail points of harness.migration and qemuvm).
STEPS = [
    "migrate.prepare.begin",
    "migrate.prepare.target-started",
    "migrate.prepare.done",
    "migrate.cutover.begin",
    "migrate.cutover.migrating@0.1",  # 0.1 s into copying memory
    "migrate.cutover.migrated",
    "migrate.cutover.resumed",
    "migrate.activate.live",
    "migrate.complete.begin",
    "migrate.complete.source-released",
]
TARGET_KILLS = [
    "migrate.prepare.target-started",
    "migrate.cutover.migrating@0.1",
    "migrate.cutover.migrated",
    "migrate.activate.live",
    "migrate.complete.begin",
]


@pytest.fixture(scope="module")
def crash_lab(kvlab_labs, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The default lab (vm1 a QEMU guest) with a short source-pod linger, for this module alone."""
    data = lab_data("default")
    data["name"] = "crash"
    data["timers"] = {**data.get("timers", {}), "migration_source_cleanup": 0.2}
    path = write_lab_data(data, tmp_path_factory.mktemp("crash") / "crash.yml")
    lab: Lab = kvlab_labs(path, private=True)
    assert lab.topo.workload("vm1").backend == "qemu"
    yield lab
    kvlab_labs.release(lab)


def failpoint(step: str, action: str) -> str:
    name, _, delay = step.partition("@")
    return f"{name}={action}" + (f"@{delay}" if delay else "")


def kvlab(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVLAB, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        check=False,
    )


def qemu_processes(lab: Lab, vm: str) -> list[int]:
    """Every QEMU process of `vm` in this lab (its command line names the VM's run directory)."""
    return mentioning(lab_dir(lab.name) / vm, program="qemu-system-x86_64")


def node_of(lab: Lab, pid: int) -> str:
    """The lab node whose network namespace process `pid` runs in."""
    inode = os.stat(f"/proc/{pid}/ns/net").st_ino
    for node in lab.topo.node_address:
        if os.stat(netlink.ns_path(namespace_name(lab.name, node))).st_ino == inode:
            return node
    raise AssertionError(f"QEMU {pid} runs in no node namespace of lab {lab.name}")


def other_node(lab: Lab, node: str) -> str:
    """A node of vm1's cluster other than `node`, alternating racks."""
    return {"r1-n1": "r2-n1", "r2-n1": "r1-n2", "r1-n2": "r2-n2", "r2-n2": "r1-n1"}[node]


def assert_vm_whole(lab: Lab) -> str:
    """`kvlab status` settles and reports where vm1 runs; that is the one QEMU of vm1, it answers
    through the fabric, and nothing half-done is left. Returns the node."""
    res = kvlab("status", lab.name, "--json")
    assert res.returncode == 0, res.stderr
    reported = {v["name"]: v["node"] for v in json.loads(res.stdout)["vms"]}["vm1"]
    pids = qemu_processes(lab, "vm1")
    assert len(pids) == 1, f"vm1 has {len(pids)} QEMU processes: {pids}"
    assert node_of(lab, pids[0]) == reported, f"status says {reported}, QEMU runs elsewhere"
    assert MigrationJournal.pending(lab_dir(lab.name)) == [], "a migration journal was left"
    tcpcheck.assert_reachable(lab, "ext1", lab.vm("vm1").ip, timeout=15)
    assert lab.is_running(), lab.runtime.problems()
    return reported


def migrate_once_more(lab: Lab, node: str) -> None:
    target = other_node(lab, node)
    record = lab.migrate("vm1", target)
    assert record.status == "completed", record.reason
    done = record.first(kind="qmp", event="completed")
    assert done is not None
    assert done["total_ms"] > 0, done  # QEMU's statistics, not a placeholder
    assert done["downtime_ms"] is not None, done
    assert assert_vm_whole(lab) == target


STRIKES = [(step, sig) for step in STEPS for sig in ("kill", "int")] + [
    (step, "term") for step in ("migrate.cutover.migrating@0.1", "migrate.cutover.resumed")
]


@pytest.mark.parametrize(("step", "signal_name"), STRIKES)
def test_migrate_killed_at_any_step_loses_nothing(crash_lab: Lab, step: str, signal_name: str) -> None:
    source = assert_vm_whole(crash_lab)
    target = other_node(crash_lab, source)
    res = kvlab(
        "migrate", "vm1", "--to", target, "--lab", crash_lab.name, "--json",
        env={"KVLAB_FAILPOINTS": failpoint(step, signal_name)},
    )  # fmt: skip
    expected = {"kill": -9, "int": 130, "term": 143}[signal_name]
    assert res.returncode == expected, (res.returncode, res.stderr[-2000:])
    # SIGKILL leaves the journal for the next command to settle; Ctrl-C and SIGTERM settle first.
    left = MigrationJournal.pending(lab_dir(crash_lab.name))
    assert left == (["vm1"] if signal_name == "kill" else []), left
    node = assert_vm_whole(crash_lab)
    assert node in (source, target)
    migrate_once_more(crash_lab, node)


@pytest.mark.parametrize("step", TARGET_KILLS)
def test_target_qemu_killed_at_any_step_leaves_the_vm_running(crash_lab: Lab, step: str) -> None:
    source = assert_vm_whole(crash_lab)
    target = other_node(crash_lab, source)
    res = kvlab(
        "migrate", "vm1", "--to", target, "--lab", crash_lab.name, "--json",
        env={"KVLAB_FAILPOINTS": failpoint(step, "kill-target")},
    )  # fmt: skip
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    record = json.loads(res.stdout)  # the record is printed even though the migration failed
    assert record["status"] == "failed", record["reason"]
    assert any(e.get("phase") == "recovery" for e in record["events"]), record["events"]
    assert assert_vm_whole(crash_lab) == source
    migrate_once_more(crash_lab, source)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nosuchvm", "--to", "r2-n1"], "no VM 'nosuchvm'"),
        (["vm1", "--to", "nosuchnode"], "no node 'nosuchnode'"),
        (["vm1", "--to", "HERE"], "vm1 already runs on"),
        (["vm1", "--to", "r2-n1", "--canary", "nosuchhost"], "no external host 'nosuchhost'"),
    ],
)
def test_a_migration_nobody_can_do_is_bad_input(crash_lab: Lab, argv: list[str], message: str) -> None:
    here = crash_lab.vm("vm1").node
    there = other_node(crash_lab, here)
    argv = [{"HERE": here, "r2-n1": there}.get(a, a) for a in argv]
    res = kvlab("migrate", *argv, "--lab", crash_lab.name)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert crash_lab.vm("vm1").node == here


def test_an_aborted_migration_exits_1_with_its_record_and_the_vm_stays(crash_lab: Lab) -> None:
    here = crash_lab.vm("vm1").node
    res = kvlab(
        "migrate", "vm1", "--to", other_node(crash_lab, here), "--lab", crash_lab.name, "--json",
        "--fail", "target pod failed",
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    record = json.loads(res.stdout)
    assert (record["status"], record["reason"]) == ("failed", "target pod failed")
    assert assert_vm_whole(crash_lab) == here


def test_when_both_copies_are_gone_the_vm_is_booted_again_on_the_source(crash_lab: Lab) -> None:
    """The worst case: the migrating process and both QEMUs killed mid-migration. The VM's memory
    is lost; the next command boots it again where it was, and says so."""
    source = assert_vm_whole(crash_lab)
    res = kvlab(
        "migrate", "vm1", "--to", other_node(crash_lab, source), "--lab", crash_lab.name,
        env={"KVLAB_FAILPOINTS": "migrate.cutover.migrating=kill@0.1"},
    )  # fmt: skip
    assert res.returncode == -9, res.stderr
    for pid in qemu_processes(crash_lab, "vm1"):
        os.kill(pid, signal.SIGKILL)
    eventually(lambda: qemu_processes(crash_lab, "vm1") == [], timeout=10, what="vm1's QEMUs to exit")
    status = kvlab("status", crash_lab.name, "--json")
    assert status.returncode == 0, status.stderr
    assert "was restarted: vm1 runs on " + source in status.stderr, status.stderr
    assert assert_vm_whole(crash_lab) == source
    migrate_once_more(crash_lab, source)
