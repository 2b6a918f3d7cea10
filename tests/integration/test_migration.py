"""Live migration of a (mock) VM on real BIRD: what a passing lab proves (calico-semantics.md, 1-5 and 7).

Each scenario runs in a private instance of its lab, so the shared `lab` stays untouched.
The tests that stop a migration between its phases (prepare, activate, complete) to look at
the state in between, or inject a failure and read a node agent, need the netns runtime's own
migration (`netns_only`); a migration there and back runs on every runtime.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from labfiles import lab_data, write_lab_data

from harness import checks
from harness.lab import Lab
from harness.runtime.containerlab.ipam import block_owner
from harness.tcpcheck import assert_reachable
from harness.topology import GUEST_PORT
from harness.wait import eventually

REPO = Path(__file__).resolve().parents[2]
VM_IP = "203.0.113.10"
VM_PREFIX = f"{VM_IP}/32"
TAG = "65000:100"
PHASES = (
    "stops the migration between its phases (prepare, activate, complete) to check the state in "
    "between; only the netns runtime's migration can be driven phase by phase"
)




def converge_timeout(lab: Lab, node: str) -> float:
    return lab.priorities(node).convergence + 10


@pytest.mark.migration
@pytest.mark.netns_only(PHASES)
def test_across_racks_priority_follows_the_vm_then_reverts(migration_lab: Lab) -> None:
    lab, target = migration_lab, "r2-n1"
    wl = lab.topo.workload("vm1")
    # 1. Before: the VM is only inside r1-n1's block.
    for router in ("tor1", "tor2", "spine1"):
        checks.no_route(lab, router, VM_PREFIX)
    m = lab.runtime.migration("vm1", target)
    m.prepare()
    # 2. Target state: the target installs nothing.
    checks.no_kernel_route(lab, target, VM_PREFIX)
    checks.no_route(lab, "tor2", VM_PREFIX)
    m.activate()
    # 3. Live: target /32 at 512; the ToRs and the spine have exactly one best, tagged, via rack 2.
    checks.kernel_route(lab, target, VM_PREFIX, metric=512, dev=wl.host_ifname)
    best = eventually(
        lambda: checks.best_via_node(lab, "tor2", VM_PREFIX, target, community=TAG),
        timeout=5,
        what="tor2 to prefer the target's tagged /32",
    )
    assert best.preference == 200, checks.describe([best])
    eventually(
        lambda: checks.best_via_node(lab, "spine1", VM_PREFIX, target, community=TAG),
        timeout=5,
        what="spine1 to prefer rack 2",
    )
    eventually(
        lambda: checks.best_via_node(lab, "tor1", VM_PREFIX, target, community=TAG),
        timeout=5,
        what="tor1 to send vm1 to rack 2",
    )
    # 4. Other nodes install the /32 via their ToR at the elevated metric (community -> setPriority 512).
    for node, tor in (("r1-n2", "tor1"), ("r2-n2", "tor2")):
        eventually(
            lambda n=node, t=tor: checks.kernel_route(
                lab, n, VM_PREFIX, metric=512, gateway=str(lab.topo.tor_address[t].ip)
            ),
            timeout=5,
            what=f"{node} to install vm1's /32 at metric 512",
        )
    record = m.complete()
    assert record.status == "completed"
    # The source no longer routes vm1 locally; like every other node it follows the elevated route.
    assert [r.dev for r in lab.runtime.kernel_routes("r1-n1", VM_PREFIX)] != [wl.host_ifname]
    assert lab.vm("vm1").node == target
    # 5. After the convergence time: normal priority, no community, still via rack 2.
    eventually(
        lambda: checks.kernel_route(lab, target, VM_PREFIX, metric=1024),
        timeout=converge_timeout(lab, target),
        interval=0.5,
        what="the target's route to return to metric 1024",
    )
    eventually(
        lambda: checks.best_via_node(lab, "spine1", VM_PREFIX, target, without_community=TAG),
        timeout=5,
        what="spine1's route to lose the community and stay on rack 2",
    )
    # Other nodes: no longer elevated. Over eBGP LOCAL_PREF is reset to 100, so calico-node's
    # kernel mapping gives 2147483647 - 100; what matters is that it is not 512 any more.
    eventually(
        lambda: checks.kernel_route(lab, "r1-n2", VM_PREFIX, metric=2147483647 - 100),
        timeout=5,
        what="other nodes to drop the elevated metric",
    )
    checks.delivered_to(lab, "ext1", wl.ip.exploded, target)


@pytest.mark.migration
@pytest.mark.netns_only(PHASES)
def test_within_rack_the_tor_prefers_the_target_over_the_lingering_source(migration_lab: Lab) -> None:
    """vm1's IP is outside both r2 nodes' blocks: the source announces its own /32 until it learns better."""
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
    # The ToR picks the tagged target, once, not ECMP; the source learns it back and follows.
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
    checks.delivered_to(lab, "ext1", ip, "r2-n2")
    record = m.complete()
    events = record.to_json()["events"]
    assert any(e["source"] == "agent:r2-n2" and e.get("state") == "Live" for e in events)
    assert [e for e in events if e["source"] == "bird:tor2" and e["ecmp"]] == [], "tor2 installed ECMP"
    eventually(
        lambda: checks.single_best(lab, "tor2", VM_PREFIX).via == str(lab.topo.node_address["r2-n2"].ip),
        timeout=5,
        what="tor2 to keep only the target once the source is gone",
    )


@pytest.mark.migration
def test_each_node_resolves_the_vm_to_the_guest_mac(migration_lab: Lab) -> None:
    """Before a migration on the source node, after it on the target: the node's neighbour entry
    for the VM is the guest's MAC (on the real stack every launcher pod carries it as
    cni.projectcalico.org/hwAddr, and the node learns it by ARP)."""
    lab = migration_lab
    mac = lab.topo.workload("vm1").mac
    source = lab.vm("vm1").node
    target = next(n for n in ("r2-n1", "r1-n1") if n != source)
    assert_reachable(lab, "ext1", VM_IP, GUEST_PORT)
    assert checks.neighbour_mac(lab, source, VM_IP) == mac
    assert lab.migrate("vm1", target).status == "completed"
    assert_reachable(lab, "ext1", VM_IP, GUEST_PORT)
    assert checks.neighbour_mac(lab, target, VM_IP) == mac
    # (the next test migrates it back and waits for the priorities to settle)


@pytest.mark.migration
def test_back_to_the_original_node_and_everything_returns_to_normal(migration_lab: Lab) -> None:
    lab = migration_lab
    if lab.vm("vm1").node == "r1-n1":
        lab.migrate("vm1", "r2-n1")
    record = lab.migrate("vm1", "r1-n1")
    assert record.status == "completed"
    # An elevated /32 (inside r1-n1's own block or not) bypasses aggregation while Live/TimeWait...
    eventually(
        lambda: checks.best_via_node(lab, "tor1", VM_PREFIX, "r1-n1", community=TAG),
        timeout=5,
        what="tor1 to see r1-n1's elevated /32",
    )
    blocks = lab.node_blocks()
    if block_owner(blocks, VM_IP) == "r1-n1":
        # ...and once the priority drops back to normal it is aggregated into the /26 again.
        eventually(
            lambda: checks.no_route(lab, "spine1", VM_PREFIX),
            timeout=converge_timeout(lab, "r1-n1"),
            interval=0.5,
            what="the /32 to disappear into r1-n1's /26 again",
        )
    else:
        # ...and an address from another node's block (the real stack's IPAM may lend one)
        # stays a /32, back at normal priority.
        eventually(
            lambda: checks.best_via_node(lab, "spine1", VM_PREFIX, "r1-n1", without_community=TAG),
            timeout=converge_timeout(lab, "r1-n1"),
            interval=0.5,
            what="spine1's /32 via r1-n1 back at normal priority",
        )
    checks.kernel_route(lab, "r1-n1", VM_PREFIX, metric=1024)
    for block in blocks["r1-n1"]:
        assert checks.single_best(lab, "spine1", str(block)).as_path == (65001, 64512)


@pytest.mark.migration
@pytest.mark.netns_only(
    "injects the failure through the netns runtime's migration (fail=) and reads the source node agent"
)
def test_failed_migration_never_installs_a_target_route(migration_lab: Lab) -> None:
    lab = migration_lab
    source = lab.vm("vm1").node
    target = next(n for n in ("r2-n2", "r1-n2") if n != source)
    record = lab.migrate("vm1", target, fail="target pod failed")
    assert record.status == "failed"
    assert record.reason == "target pod failed"
    events = record.to_json()["events"]
    assert not [e for e in events if e["source"] == f"agent:{target}" and e["kind"] == "route"], events
    target_ip = str(lab.topo.node_address[target].ip)
    assert not [e for e in events if e["kind"] == "route" and e.get("best_via") == target_ip]
    checks.no_kernel_route(lab, target, VM_PREFIX)
    assert lab.vm("vm1").node == source
    assert lab.runtime.agent(source).call("status")["workloads"]["vm1"]["metric"] is not None


@pytest.mark.migration
@pytest.mark.netns_only(PHASES)
def test_single_rack_mesh_carries_priority_as_local_pref(kvlab_labs) -> None:  # type: ignore[no-untyped-def]
    lab: Lab = kvlab_labs(REPO / "labs" / "single-rack.yml", private=True)
    assert {s.name for s in lab.node("r1-n3").sessions()} >= {"Mesh_198_18_1_11", "Mesh_198_18_1_12"}
    ip = lab.vm("vm1").ip
    m = lab.runtime.migration("vm1", "r1-n2")
    m.prepare()
    m.activate()
    # iBGP: r1-n3 learns the target's /32 with local_pref 2147483647-512 and installs it at 512.
    eventually(
        lambda: checks.kernel_route(
            lab, "r1-n3", VM_PREFIX, metric=512, gateway=str(lab.topo.node_address["r1-n2"].ip)
        ),
        timeout=5,
        what="r1-n3 to install the /32 at metric 512 over the mesh",
    )
    mesh_route = checks.single_best(lab, "r1-n3", VM_PREFIX)
    assert mesh_route.local_pref == 2147483647 - 512
    # The ToR prefers a tagged /32; every node re-announces the mesh route to it (calico exports
    # all pool routes), so the best path may hop through another node, but it ends at the target.
    eventually(
        lambda: TAG in checks.single_best(lab, "tor1", VM_PREFIX).community_strings(),
        timeout=5,
        what="tor1's best /32 to carry the community",
    )
    eventually(
        lambda: checks.delivered_to(lab, "ext1", ip, "r1-n2"),
        timeout=5,
        what="ext1's traffic to reach the target",
    )
    m.complete()
    eventually(
        lambda: checks.kernel_route(lab, "r1-n3", VM_PREFIX, metric=1024),
        timeout=converge_timeout(lab, "r1-n2"),
        interval=0.5,
        what="r1-n3 back to metric 1024 after convergence",
    )


@pytest.mark.migration
@pytest.mark.netns_only(PHASES)
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
