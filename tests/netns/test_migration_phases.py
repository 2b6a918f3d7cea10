"""The netns runtime's migration driver, stopped between its phases (prepare, activate,
complete) to check the state in between, and its node agents read directly: the extras to the
scenario tests of tests/integration/test_migration.py and test_canary.py, which make the same
migrations whole on every runtime.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from labfiles import lab_data, write_lab_data

from harness import checks, netlink, tcpcheck
from harness.lab import Lab
from harness.topology import WORKLOAD_GATEWAY, WORKLOAD_HOST_MAC
from harness.wait import eventually

VM_PREFIX = "203.0.113.10/32"
TAG = "65000:100"

pytestmark = [
    pytest.mark.migration,
    pytest.mark.netns_only(
        "stops the netns runtime's own migration between its phases (prepare, activate, complete), "
        "sets interfaces by netlink in its namespaces and reads its node agents"
    ),
]


def test_across_racks_the_target_routes_nothing_until_the_vm_runs_there(migration_lab: Lab) -> None:
    lab, source, target = migration_lab, "r1-n1", "r2-n1"
    assert lab.vm("vm1").node == source
    checks.steady_vm_route(lab, "vm1", source, ("tor1", "tor2", "spine1"), community=TAG)
    m = lab.runtime.migration("vm1", target)
    m.prepare()
    # Target state: the target pod exists, the target installs nothing.
    checks.no_kernel_route(lab, target, VM_PREFIX)
    checks.no_route(lab, "tor2", VM_PREFIX)
    m.activate()
    # Live, before the migration completes: the same elevated state as in its convergence time.
    checks.elevated_toward(lab, "vm1", source, target, community=TAG)
    record = m.complete()
    assert record.status == "completed"
    assert lab.vm("vm1").node == target


def test_within_rack_the_source_goes_back_to_base_and_forwards_to_the_target(migration_lab: Lab) -> None:
    """vm1's IP is outside both r2 nodes' blocks: once the target pod exists the source is
    reset to Base (normal priority) and still announces its /32; once the VM runs on the target,
    the lingering source forwards its traffic there."""
    lab = migration_lab
    if lab.vm("vm1").node != "r2-n1":
        lab.migrate("vm1", "r2-n1")
    ip = lab.vm("vm1").ip
    m = lab.runtime.migration("vm1", "r2-n2")
    m.prepare()
    checks.kernel_route(lab, "r2-n1", VM_PREFIX, metric=1024)  # the source was reset to Base
    eventually(
        lambda: checks.best_via_node(lab, "tor2", VM_PREFIX, "r2-n1", without_community=TAG),
        timeout=5,
        what="tor2 to hold the source's untagged /32",
    )
    m.activate()
    eventually(
        lambda: checks.best_via_node(lab, "tor2", VM_PREFIX, "r2-n2", community=TAG),
        timeout=5,
        what="tor2 to prefer the target",
    )
    eventually(
        lambda: checks.delivered_to(lab, "r2-n1", ip, "r2-n2"),
        timeout=5,
        what="the lingering source to forward vm1's traffic to the target",
    )
    record = m.complete()
    events = record.to_json()["events"]
    assert any(e["source"] == "agent:r2-n2" and e.get("state") == "Live" for e in events), events


def test_a_failed_migration_leaves_the_route_with_the_source_agent(migration_lab: Lab) -> None:
    lab = migration_lab
    source = lab.vm("vm1").node
    target = next(n for n in ("r2-n2", "r1-n2") if n != source)
    record = lab.migrate("vm1", target, fail="target pod failed")
    assert record.status == "failed"
    assert lab.runtime.agent(source).call("status")["workloads"]["vm1"]["metric"] is not None
    assert "vm1" not in lab.runtime.agent(target).call("status")["workloads"]


def test_without_the_tor_community_preference_the_split_brain_is_detected(  # type: ignore[no-untyped-def]
    kvlab_labs, tmp_path: Path
) -> None:
    """Negative control: a ToR that ignores the community keeps the source (lower router ID): detected."""
    data = lab_data("default")
    data["name"] = "nopref"
    for r in data["routers"]:
        r["community_preference"] = False
    data["timers"] = {"migration_source_cleanup": 5}
    lab: Lab = kvlab_labs(write_lab_data(data, tmp_path / "nopref.yml"), private=True)
    lab.migrate("vm1", "r2-n1")
    m = lab.runtime.migration("vm1", "r2-n2")
    m.prepare()
    m.activate()
    eventually(lambda: len(lab.router("tor2").routes(VM_PREFIX)) == 2, timeout=5, what="both /32s at tor2")
    # Equal preference: the ToR keeps the source (lower router ID), traffic goes to the old host.
    with pytest.raises(AssertionError, match=r"best via 198\.18\.2\.11, expected r2-n2"):
        checks.best_via_node(lab, "tor2", VM_PREFIX, "r2-n2", community=TAG)
    with pytest.raises(AssertionError, match="ends at r2-n1, not r2-n2"):
        checks.delivered_to(lab, "ext1", lab.vm("vm1").ip, "r2-n2")
    m.complete()
    # The scenario tests' check of the record (tests/integration/test_migration.py) sees it too:
    # a whole migration to r2-n2 (the higher router ID) shows tor2 keeping the source.
    lab.migrate("vm1", "r2-n1")
    record = lab.migrate("vm1", "r2-n2")
    with pytest.raises(
        AssertionError, match=r"tor2 preferred another route to r2-n2's .* best via 198\.18\.2\.11"
    ):
        checks.target_preferred(lab, record, "tor2", "r2-n2")
    kvlab_labs.release(lab)


def test_negative_control_a_stale_gateway_mac_stalls_the_canary(migration_lab: Lab) -> None:
    """The target's host side gets a MAC other than ee:ee:ee:ee:ee:ee; the guest keeps the gateway MAC
    it had. Traffic must stall (until the guest's ARP entry would expire): the canary has to say so."""
    lab = migration_lab
    target = "r1-n1" if lab.vm("vm1").node.startswith("r2-") else "r2-n1"
    host_if = lab.topo.workload("vm1").host_ifname
    with lab.canary("ext1", "vm1") as c:
        c.wait_sent(20)
        m = lab.runtime.migration("vm1", target)
        m.prepare()
        netlink.link_up(lab.runtime.ns(target), host_if, mac="ee:ee:ee:ee:ee:01")
        m.activate()
        # A real guest's NIC survives the migration with its ARP cache; the mock guest resumes on a
        # fresh interface that would just ARP again. Give it the cache a real guest keeps.
        res = lab.run(
            "vm1",
            ["ip", "neigh", "replace", str(WORKLOAD_GATEWAY), "lladdr", WORKLOAD_HOST_MAC,
             "dev", m.target_if, "nud", "reachable"],
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        m.complete()
        c.wait_gap(1000, timeout=15)
    report = c.stop()  # stopped on leaving the block; this is its report
    assert report.max_gap_ms > 1000, report.summary()
    assert report.gaps_over(1000), report.summary()
    assert report.lost > 0, report.summary()
    assert (report.resets, report.same_connection) == (0, True)  # TCP just retransmits, no reset
    assert report.fresh_connection_ok is False  # a new connection is stuck behind the same ARP entry
    # Heal: once the guest re-resolves its gateway, traffic flows to the target again.
    assert lab.run("vm1", ["ip", "neigh", "flush", "dev", m.target_if]).returncode == 0
    tcpcheck.assert_reachable(lab, "ext1", lab.vm("vm1").ip)
