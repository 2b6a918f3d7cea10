"""Real QEMU live migration on the netns runtime, with the TCP canary running through it.

The default lab's vm1 is a QEMU guest (TCG). These are the data-plane facts of a KubeVirt
live migration: the VM keeps its IP and its TCP session, traffic follows it, and a failed
migration leaves it running where it was. The tests that look into QEMU are `netns_only`;
the migration there and back runs on every runtime (`--runtime`, e.g. KubeVirt's VMs).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from labfiles import lab_data, write_lab_data

from harness import checks, netlink
from harness.errors import LabError
from harness.lab import Lab
from harness.record import MigrationFailed
from harness.wait import eventually

REPO = Path(__file__).resolve().parents[2]
VM_PREFIX = "203.0.113.10/32"
TAG = "65000:100"

QEMU = "reads QEMU's own state (QMP events and status, its process, the tap by netlink)"


@pytest.fixture(scope="module")
def qlab(kvlab_labs) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    lab: Lab = kvlab_labs(REPO / "labs" / "default.yml", private=True)
    assert lab.topo.workload("vm1").backend == "qemu"
    yield lab
    kvlab_labs.release(lab)


def events(record, **match):  # type: ignore[no-untyped-def]
    return [e for e in record.to_json()["events"] if all(e.get(k) == v for k, v in match.items())]


@pytest.mark.migration
@pytest.mark.netns_only(QEMU)
def test_across_racks_the_session_survives_and_traffic_follows(qlab: Lab) -> None:
    record = qlab.migrate("vm1", "r2-n1", canary="ext1")
    assert record.status == "completed", record.reason
    c = record.canary
    assert c is not None
    assert (c["resets"], c["lost"], c["same_connection"]) == (0, 0, True), c
    assert c["max_gap_ms"] < 1000, c
    assert c["fresh_connection_ok"], c
    # QEMU paused on the source and resumed on the target; the target saw QEMU's RARP.
    stop = events(record, kind="qmp", event="STOP", source="qemu:r1-n1")
    resume = events(record, kind="qmp", event="RESUME", source="qemu:r2-n1")
    assert stop
    assert resume
    assert 0 < resume[0]["t"] - stop[0]["t"] < 1.0
    assert events(record, source="agent:r2-n1", kind="seen", what="RARP")
    checks.kernel_route(qlab, "r2-n1", VM_PREFIX, metric=512)
    eventually(
        lambda: checks.best_via_node(qlab, "spine1", VM_PREFIX, "r2-n1", community=TAG),
        timeout=5,
        what="spine1 to prefer rack 2",
    )
    checks.delivered_to(qlab, "ext1", qlab.vm("vm1").ip, "r2-n1")


@pytest.mark.migration
def test_back_and_forth_in_one_boot(qlab: Lab) -> None:
    """Within rack 2 and back to rack 1 while one canary connection stays up: no reboot, no reset."""
    with qlab.canary("ext1", "vm1") as probe:
        first = qlab.migrate("vm1", "r2-n2" if qlab.vm("vm1").node != "r2-n2" else "r2-n1")
        second = qlab.migrate("vm1", "r1-n1")
        report = probe.stop()
    assert (first.status, second.status) == ("completed", "completed")
    assert (report.resets, report.lost, report.same_connection) == (0, 0, True), report.summary()
    assert report.max_gap_ms < 1000, report.summary()
    eventually(
        lambda: checks.delivered_to(qlab, "ext1", qlab.vm("vm1").ip, "r1-n1"),
        timeout=5,
        what="traffic to follow vm1 home",
    )


@pytest.mark.migration
@pytest.mark.netns_only(QEMU)
def test_target_dying_mid_migration_leaves_the_vm_on_the_source(qlab: Lab) -> None:
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


@pytest.mark.migration
@pytest.mark.netns_only(QEMU)
def test_a_different_host_mac_on_the_target_stalls_the_guest(qlab: Lab) -> None:
    """Negative control: the guest keeps its gateway's MAC across the migration; if the target's
    host side has another MAC than ee:ee:ee:ee:ee:ee, the canary must show the stall."""
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


@pytest.mark.migration
@pytest.mark.netns_only(QEMU)
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
