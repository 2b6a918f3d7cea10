"""QEMU's own account of live migration on the netns runtime: QMP events and status, its
process, its tap. The extras to tests/integration/test_qemu_migration.py, whose migrations of
the same lab's QEMU guest (vm1, TCG) check the data plane on every runtime.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from labfiles import lab_data, write_lab_data

from harness import checks, netlink
from harness.errors import LabError
from harness.lab import Lab
from harness.record import MigrationFailed

VM_PREFIX = "203.0.113.10/32"

pytestmark = [
    pytest.mark.migration,
    pytest.mark.netns_only("reads QEMU's own state (QMP events and status, its process, the tap by netlink)"),
]


def events(record, **match):  # type: ignore[no-untyped-def]
    return [e for e in record.to_json()["events"] if all(e.get(k) == v for k, v in match.items())]


def test_qemu_pauses_on_the_source_and_resumes_on_the_target_in_a_second(
    guest_migration_lab: Lab,
) -> None:
    """There and back: each time QEMU paused on the source and resumed on the target within a
    second, and the target saw QEMU's RARP. (The VM ends where it started, for the tests after.)"""
    lab = guest_migration_lab
    home = lab.vm("vm1").node
    away = "r2-n1" if home.startswith("r1-") else "r1-n1"
    for source, target in ((home, away), (away, home)):
        record = lab.migrate("vm1", target)
        assert record.status == "completed", record.reason
        stop = events(record, kind="qmp", event="STOP", source=f"qemu:{source}")
        resume = events(record, kind="qmp", event="RESUME", source=f"qemu:{target}")
        assert stop
        assert resume
        assert 0 < resume[0]["t"] - stop[0]["t"] < 1.0
        assert events(record, source=f"agent:{target}", kind="seen", what="RARP")


def test_target_dying_mid_migration_leaves_the_vm_on_the_source(guest_migration_lab: Lab) -> None:
    qlab = guest_migration_lab
    source = qlab.vm("vm1").node
    target = "r2-n2" if source != "r2-n2" else "r1-n2"
    with qlab.canary("ext1", "vm1") as probe:
        m = qlab.runtime.migration("vm1", target)
        m.prepare()
        pid = qlab.runtime.qemu.pid("vm1", m.journal.target_guest)  # type: ignore[attr-defined]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the target QEMU dies before the VM ever runs there
        with pytest.raises(LabError, match="migration failed"):
            m.activate()
        record = m.fail("target QEMU killed")
        report = probe.stop()
    assert record.status == "failed"
    assert not events(record, source=f"agent:{target}", kind="route"), "a target route was installed"
    checks.no_kernel_route(qlab, target, VM_PREFIX)
    assert qlab.vm("vm1").node == source
    assert (report.resets, report.lost, report.same_connection) == (0, 0, True), report.summary()
    with qlab.runtime.qemu.qmp("vm1", qlab.vm_location("vm1")["guest"]) as q:  # type: ignore[attr-defined]
        assert q.status() == "running"


def test_a_different_host_mac_on_the_target_stalls_the_guest(guest_migration_lab: Lab) -> None:
    """Negative control: the guest keeps its gateway's MAC across the migration; if the target's
    host side has another MAC than ee:ee:ee:ee:ee:ee, the canary must show the stall."""
    qlab = guest_migration_lab
    source = qlab.vm("vm1").node
    target = "r2-n1" if source != "r2-n1" else "r1-n2"
    wl = qlab.topo.workload("vm1")
    with qlab.canary("ext1", "vm1") as probe:
        m = qlab.runtime.migration("vm1", target)
        m.prepare()
        netlink.link_up(qlab.runtime.ns(target), wl.host_ifname, mac="ee:ee:ee:ee:ee:01")  # type: ignore[attr-defined]
        m.activate()
        m.complete()
        gap = probe.wait_gap(1000, timeout=15)
        report = probe.stop()
    assert gap is not None
    assert report.max_gap_ms > 1000, report.summary()


def test_a_migration_that_times_out_is_cancelled_and_the_vm_stays(kvlab_labs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """timers.migration shorter than QEMU needs (~0.4 s for 128 MiB): cancelled, the VM keeps
    running on the source, no target route ever, and the record says why."""
    data = lab_data("default")
    data["name"] = "qtimeout"
    data["timers"] = {"migration": 0.1}
    lab: Lab = kvlab_labs(write_lab_data(data, tmp_path / "qtimeout.yml"), private=True)
    timed_out = pytest.raises(MigrationFailed, match="QEMU migration to complete")
    with lab.canary("ext1", "vm1") as probe, timed_out as failed:
        lab.migrate("vm1", "r2-n1")
    assert failed.value.record.status == "failed"
    report = probe.report
    assert report is not None
    assert (report.resets, report.lost, report.same_connection) == (0, 0, True), report.summary()
    assert lab.vm("vm1").node == "r1-n1"
    checks.no_kernel_route(lab, "r2-n1", VM_PREFIX)
    with lab.runtime.qemu.qmp("vm1", lab.vm_location("vm1")["guest"]) as q:  # type: ignore[attr-defined]
        assert q.status() == "running"
        assert q.execute("query-migrate")["status"] == "cancelled"
