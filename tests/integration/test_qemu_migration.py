"""Live migration of the runtime's real guest (QEMU under TCG on netns, KubeVirt's VM on the
real stack), with the TCP canary running through it, on every runtime.

The data-plane facts of a KubeVirt live migration: the VM keeps its IP and its TCP session, and
traffic follows it, across racks and back within one boot. What only QEMU's own state shows on
the netns runtime (QMP events, its process, its tap) is in tests/netns/test_qemu_internals.py.
"""

from __future__ import annotations

import pytest

from harness import checks
from harness.lab import Lab
from harness.wait import eventually

VM_PREFIX = "203.0.113.10/32"
TAG = "65000:100"

pytestmark = pytest.mark.migration


def test_across_racks_the_session_survives_and_traffic_follows(guest_migration_lab: Lab) -> None:
    lab = guest_migration_lab
    record = lab.migrate("vm1", "r2-n1", canary="ext1")
    assert record.status == "completed", record.reason
    c = record.canary
    assert c is not None
    assert (c.resets, c.lost, c.same_connection) == (0, 0, True), c
    assert c.max_gap_ms < 1000, c
    assert c.fresh_connection_ok, c
    checks.kernel_route(lab, "r2-n1", VM_PREFIX, metric=512)
    eventually(
        lambda: checks.best_via_node(lab, "spine1", VM_PREFIX, "r2-n1", community=TAG),
        timeout=5,
        what="spine1 to prefer rack 2",
    )
    checks.delivered_to(lab, "ext1", lab.vm("vm1").ip, "r2-n1")


def test_back_and_forth_in_one_boot(guest_migration_lab: Lab) -> None:
    """Within rack 2 and back to rack 1 while one canary connection stays up: no reboot, no reset."""
    lab = guest_migration_lab
    with lab.canary("ext1", "vm1") as probe:
        first = lab.migrate("vm1", "r2-n2" if lab.vm("vm1").node != "r2-n2" else "r2-n1")
        second = lab.migrate("vm1", "r1-n1")
        report = probe.stop()
    assert (first.status, second.status) == ("completed", "completed")
    assert (report.resets, report.lost, report.same_connection) == (0, 0, True), report.summary()
    assert report.max_gap_ms < 1000, report.summary()
    eventually(
        lambda: checks.delivered_to(lab, "ext1", lab.vm("vm1").ip, "r1-n1"),
        timeout=5,
        what="traffic to follow vm1 home",
    )
