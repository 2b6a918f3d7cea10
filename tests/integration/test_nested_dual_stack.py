"""Nested clusters over IPv6: labs/nested-dual-stack.yml, the v6 half of Calico's nested-cluster
guide next to the v4 half (tests/integration/test_nested_clusters.py), through the Lab interface.

- `nested6`: red and blue in vm-red and vm-blue on p1-n1 (mock VMs, each with an ip6), vm-green
  on p1-n2 selected by no BGPPeer; the parent's localWorkloadPeeringIPV6 is the seeds' ULA
  fdc9:9723:09bc::1, the nested nodes' bird6 peers with it from their VM's IPv6 address;
- `changed`: a copy whose resources differ in IPv6 rules only: red and blue each add an IPv6
  pool the parent never agreed to, blue's importV6 loses its trailing Reject (the guide's
  filter as written), and export-to-tor loses blue's exportV6 rule; the v4 rules stay as shipped;
- a private copy of `nested6` for the live migration of a nested node's VM, both families.

The containerlab runtime refuses dual-stack nested labs (exit 2), so these run on netns only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from labfiles import cluster_of, lab_data, resource, write_lab_data
from nestedlab import add_pool, addresses, assert_canary_clean, best, session_errors, sessions

from harness.birdc import Route
from harness.lab import Lab
from harness.wait import eventually

pytestmark = pytest.mark.netns_only(
    "the containerlab runtime refuses dual-stack nested labs (exit 2): its nested nodes' guests "
    "run IPv4 BIRD only"
)

LAB = Path(__file__).resolve().parents[2] / "labs" / "nested-dual-stack.yml"
PEERING_IP6 = "fdc9:9723:9bc::1"  # the seeds' fdc9:9723:09bc::1
PARENT_AS, TOR_AS = 64512, 65001
TOR_IP6 = "2001:db8::c612:101"
NESTED_AS = {"red": 65101, "blue": 65102}
POOLS4 = {"red": "198.51.100.0/26", "blue": "198.51.100.64/26"}
POOLS6 = {"red": "2001:db8:51:100::/120", "blue": "2001:db8:51:140::/120"}
ROGUE6 = {"red": "2001:db8:51:180::/120", "blue": "2001:db8:51:1c0::/120"}  # never agreed to
NODE_IP6 = {"p1-n1": "2001:db8::c612:10b", "p1-n2": "2001:db8::c612:10c"}
NODE_IP4 = {"p1-n1": "198.18.1.11", "p1-n2": "198.18.1.12"}
VM_PEER6 = {"red": "Local_Workload_2001_db8_203_113__10", "blue": "Local_Workload_2001_db8_203_113__11"}
NESTED_PEER6 = "Global_fdc9_9723_9bc__1"
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def nested6(kvlab_labs) -> Lab:  # type: ignore[no-untyped-def]
    return kvlab_labs(LAB)


def _best(lab: Lab, speaker: str, prefix: str, family: int = 6) -> Route:
    return best(lab, speaker, prefix, family)


def _sessions(lab: Lab, speaker: str, family: int = 6) -> dict[str, str]:
    return sessions(lab, speaker, family)


# ---- sessions -----------------------------------------------------------------------------


def test_v6_local_workload_sessions_are_established_for_selected_vms_only(nested6: Lab) -> None:
    assert _sessions(nested6, "p1-n1") == {
        "Global_2001_db8__c612_101": "Established",
        VM_PEER6["red"]: "Established",  # vm-red's ip6, color == 'red'
        VM_PEER6["blue"]: "Established",
    }
    assert _sessions(nested6, "p1-n2") == {"Global_2001_db8__c612_101": "Established"}  # vm-green: none
    for node in ("red-n1", "blue-n1"):
        assert _sessions(nested6, node) == {NESTED_PEER6: "Established"}
        assert _sessions(nested6, node, 4) == {"Global_169_254_0_179": "Established"}  # v4 half still


def test_v6_peering_ip_is_on_the_host_side_of_selected_workloads_only(nested6: Lab) -> None:
    for vm in ("vm-red", "vm-blue"):
        assert f"{PEERING_IP6}/128" in addresses(nested6, "p1-n1", nested6.workload_interface(vm), 6), vm
    assert f"{PEERING_IP6}/128" not in addresses(nested6, "p1-n2", nested6.workload_interface("vm-green"), 6)


# ---- routes -------------------------------------------------------------------------------


@pytest.mark.parametrize("cluster", ["red", "blue"])
def test_tor_learns_each_nested_v6_pool_via_the_parent_node(nested6: Lab, cluster: str) -> None:
    route = _best(nested6, "tor1", POOLS6[cluster])
    assert route.via == NODE_IP6["p1-n1"]
    assert route.as_path == (PARENT_AS, NESTED_AS[cluster])
    alternatives = nested6.router("tor1", 6).routes(POOLS6[cluster])
    assert len(alternatives) == 1, f"one path only, got {alternatives}"
    # the v4 half of the same cluster, unchanged
    assert _best(nested6, "tor1", POOLS4[cluster], 4).as_path == (PARENT_AS, NESTED_AS[cluster])


@pytest.mark.parametrize("cluster", ["red", "blue"])
def test_the_other_parent_node_learns_each_nested_v6_pool_back_from_the_tor(
    nested6: Lab, cluster: str
) -> None:
    route = _best(nested6, "p1-n2", POOLS6[cluster])
    assert route.via == TOR_IP6
    assert route.as_path == (TOR_AS, PARENT_AS, NESTED_AS[cluster])


@pytest.mark.parametrize("cluster", ["red", "blue"])
def test_nested_v6_pod_is_reachable_from_the_external_host(nested6: Lab, cluster: str) -> None:
    assert_canary_clean(nested6, "ext1", f"{cluster}-n1", 6)


def test_parent_exports_nothing_to_nested_clusters_over_v6(nested6: Lab) -> None:
    """no-export's exportV6 Reject: the nested nodes' bird6 learns nothing from the parent."""
    for node in ("red-n1", "blue-n1"):
        learned = [r for r in nested6.speaker(node, 6).routes() if r.protocol == NESTED_PEER6]
        assert learned == [], f"{node} learned {[r.prefix for r in learned]} from its parent"
    # ... while the parent does hold IPv6 routes it could have sent (the other node's block)
    assert _best(nested6, "p1-n1", "2001:db8:203:113::40/122").protocol == "Global_2001_db8__c612_101"


def test_nested_v6_pools_stay_with_their_own_cluster(nested6: Lab) -> None:
    assert nested6.speaker("blue-n1", 6).best_route(POOLS6["red"]) is None
    assert nested6.speaker("red-n1", 6).best_route(POOLS6["blue"]) is None


# ---- the v6 rules changed in a copy -----------------------------------------------------------


def _changed_spec(tmp: Path) -> Path:
    """labs/nested-dual-stack.yml with inline resources whose IPv6 rules differ: red and blue
    each add an IPv6 pool, blue's importV6 has no trailing Reject, export-to-tor's exportV6
    keeps red's rule only. The v4 rules are as shipped."""
    data = lab_data("nested-dual-stack")
    data["name"] = "nested6-changed"
    for cluster, cidr in ROGUE6.items():
        add_pool(data, cluster, cidr)
    parent = cluster_of(data, "parent")
    blue = resource(parent, "BGPFilter", "accept-nested-blue-pool")["spec"]
    blue["importV6"] = [r for r in blue["importV6"] if r["action"] != "Reject"]
    tor = resource(parent, "BGPFilter", "export-to-tor")["spec"]
    tor["exportV6"] = [r for r in tor["exportV6"] if r["cidr"] == POOLS6["red"]]
    return write_lab_data(data, tmp / "nested6-changed.yml")


@pytest.fixture(scope="module")
def changed(kvlab_labs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    lab = kvlab_labs(_changed_spec(tmp_path_factory.mktemp("nested6")), private=True)
    yield lab
    kvlab_labs.release(lab)


def test_v6_route_outside_the_nested_pool_is_refused_by_the_parent(changed: Lab) -> None:
    eventually(lambda: _best(changed, "red-n1", ROGUE6["red"]), timeout=TIMEOUT, what="red-n1 to route it")
    eventually(
        lambda: _best(changed, "p1-n1", POOLS6["red"]), timeout=TIMEOUT, what="p1-n1 to learn red's pool"
    )
    eventually(
        lambda: _best(changed, "p1-n1", ROGUE6["blue"]),
        timeout=TIMEOUT,
        what="p1-n1 to learn blue's rogue pool",
    )
    assert changed.speaker("p1-n1", 6).routes(ROGUE6["red"]) == []
    assert changed.speaker("p1-n1", 6).kernel_routes(ROGUE6["red"]) == []
    assert changed.router("tor1", 6).routes(ROGUE6["red"]) == []


def test_guide_v6_filter_without_a_final_reject_lets_any_route_in(changed: Lab) -> None:
    route = eventually(
        lambda: _best(changed, "p1-n1", ROGUE6["blue"]),
        timeout=TIMEOUT,
        what="p1-n1 to import blue's unapproved IPv6 route",
    )
    assert route.protocol == VM_PEER6["blue"]
    assert route.as_path == (NESTED_AS["blue"],)
    assert changed.speaker("p1-n1", 6).kernel_routes(ROGUE6["blue"]), "installed in the parent's kernel"
    assert changed.router("tor1", 6).routes(ROGUE6["blue"]) == []


def test_export_to_tor_v6_rule_removed_keeps_the_pool_from_the_tor(changed: Lab) -> None:
    """export-to-tor without blue's exportV6 rule: blue's v6 pool stops at the parent node, while
    red's v6 pool and blue's v4 pool (rules unchanged) reach the ToR."""
    eventually(
        lambda: _best(changed, "tor1", POOLS6["red"]), timeout=TIMEOUT, what="tor1 to learn red's v6 pool"
    )
    eventually(
        lambda: _best(changed, "tor1", POOLS4["blue"], 4),
        timeout=TIMEOUT,
        what="tor1 to learn blue's v4 pool",
    )
    assert _best(changed, "p1-n1", POOLS6["blue"]).protocol == VM_PEER6["blue"]  # imported ...
    assert changed.router("tor1", 6).routes(POOLS6["blue"]) == []  # ... not exported


# ---- live migration of a nested node's VM, both families -------------------------------------


@pytest.mark.migration
def test_migrating_a_dual_stack_nested_nodes_vm_keeps_both_sessions(kvlab_labs) -> None:  # type: ignore[no-untyped-def]
    lab = kvlab_labs(LAB, private=True)
    hold = 240.0
    try:
        with lab.canary("ext1", "red-n1", family=6) as probe, session_errors(lab, "red-n1", 6) as errors:
            probe.wait_sent(5)
            record = lab.migrate("vm-red", "p1-n2")
            assert record.status == "completed", record.reason
            # lab.migrate follows both families' sessions and pools (one phase for both)
            assert record.first(kind="phase", phase="nested session back on p1-n2"), record.reason
            assert record.first(kind="phase", phase="tor1: nested pool via p1-n2"), record.reason
            echoed = probe.progress["echoed"]
            probe.wait_for(
                lambda p: p["echoed"] > echoed + 5 and p["outstanding"] <= 2,
                timeout=hold / 4,
                what="the IPv6 canary's echoes to catch up through p1-n2",
            )
            report = probe.stop()
        assert _sessions(lab, "p1-n2")[VM_PEER6["red"]] == "Established"
        assert VM_PEER6["red"] not in _sessions(lab, "p1-n1")
        assert _best(lab, "tor1", POOLS6["red"]).via == NODE_IP6["p1-n2"]
        assert _best(lab, "tor1", POOLS4["red"], 4).via == NODE_IP4["p1-n2"]
        assert _sessions(lab, "red-n1") == {NESTED_PEER6: "Established"}
        assert f"{PEERING_IP6}/128" in addresses(lab, "p1-n2", lab.workload_interface("vm-red"), 6)
        assert report.same_connection, report.summary()
        assert report.resets == 0, report.summary()
        assert report.lost == 0, report.summary()
        assert _sessions(lab, "p1-n1")[VM_PEER6["blue"]] == "Established"  # blue never disturbed
        # Unlike IPv4 (test_nested_clusters.py), the old parent node's NOTIFICATION reaches red-n1
        # over IPv6: the new parent node forwards a packet whose source is its own
        # localWorkloadPeeringIPV6 (IPv6 has no martian-source drop), so bird6 reconnects at once.
        assert [e for e in errors if e.startswith("Received:")], f"no NOTIFICATION over IPv6: {errors}"
    finally:
        kvlab_labs.release(lab)
