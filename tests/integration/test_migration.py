"""Live migration on real BIRD: what a passing lab proves (calico-semantics.md, 1-5 and 7), on
every runtime. The claims are read from the migration record every runtime's driver produces
(the routers' views of the VM's /32 while it moved, the record's status and reason) and from
probes (BIRD routes, kernel routes, forwarding).

Each scenario runs in a private instance of its lab (the shared lab, restored, on a runtime
without parallel instances). The checks between a migration's phases (prepare, activate,
complete), which only the netns runtime's own driver can stop at, are in
tests/netns/test_migration_phases.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from labfiles import lab_data

from harness import checks
from harness.lab import Lab
from harness.runtime.containerlab.ipam import block_owner
from harness.tcpcheck import assert_reachable
from harness.topology import GUEST_PORT
from harness.wait import eventually

VM_IP = "203.0.113.10"
VM_PREFIX = f"{VM_IP}/32"
TAG = "65000:100"
ROUTERS = ("tor1", "tor2", "spine1")

pytestmark = pytest.mark.migration


def converge_timeout(lab: Lab, node: str) -> float:
    return lab.priorities(node).convergence + 10


def test_across_racks_priority_follows_the_vm_then_reverts(migration_lab: Lab) -> None:
    lab, source, target = migration_lab, "r1-n1", "r2-n1"
    assert lab.vm("vm1").node == source
    source_if = lab.workload_interface("vm1", source)
    # 1. Before: the VM is only inside r1-n1's block (or, lent from another block, a normal /32).
    checks.steady_vm_route(lab, "vm1", source, ROUTERS, community=TAG)
    record = lab.migrate("vm1", target)
    assert record.status == "completed", record.reason
    # 2. While it moved: no router ever split the /32 (ECMP); each ended with one best route
    # toward rack 2, tagged.
    checks.never_ecmp(record)
    for router in ROUTERS:
        checks.target_preferred(lab, record, router, target)
        checks.ended_via(lab, record, router, target, community=TAG)
    # 3. Elevated for the convergence time: the target's /32 at 512, the fabric prefers it,
    # other nodes install it at 512 via their ToR (community -> setPriority 512).
    checks.elevated_toward(lab, "vm1", source, target, community=TAG)
    # The source no longer routes vm1 locally; like every other node it follows the elevated route.
    assert [r.dev for r in lab.node(source).kernel_routes(VM_PREFIX)] != [source_if]
    assert lab.vm("vm1").node == target
    # 4. After the convergence time: normal priority, no community, still via rack 2.
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
    checks.delivered_to(lab, "ext1", VM_IP, target)


def test_within_rack_the_tor_prefers_the_target_over_the_lingering_source(migration_lab: Lab) -> None:
    """vm1's IP is outside both r2 nodes' blocks: the source announces its own /32 until it
    learns better, and the ToR switches from it to the tagged target once, never splitting."""
    lab, source, target = migration_lab, "r2-n1", "r2-n2"
    if lab.vm("vm1").node != source:
        lab.migrate("vm1", source)
    eventually(
        lambda: checks.best_via_node(lab, "tor2", VM_PREFIX, source),
        timeout=5,
        what="tor2 to route vm1 to the source",
    )
    record = lab.migrate("vm1", target)
    assert record.status == "completed", record.reason
    checks.never_ecmp(record)
    checks.moved_once(lab, record, "tor2", source, target)
    checks.target_preferred(lab, record, "tor2", target)  # never the lingering source (split brain)
    checks.ended_via(lab, record, "tor2", target, community=TAG)
    # The former source learns the target's route and forwards vm1's traffic there.
    eventually(
        lambda: checks.delivered_to(lab, source, VM_IP, target),
        timeout=5,
        what="the former source to forward vm1's traffic to the target",
    )
    checks.delivered_to(lab, "ext1", VM_IP, target)
    eventually(
        lambda: checks.single_best(lab, "tor2", VM_PREFIX).via == str(lab.topo.node_address[target].ip),
        timeout=5,
        what="tor2 to keep only the target once the source is gone",
    )


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


def test_failed_migration_never_installs_a_target_route(migration_lab: Lab) -> None:
    lab = migration_lab
    source = lab.vm("vm1").node
    target = next(n for n in ("r2-n2", "r1-n2") if n != source)
    record = lab.migrate("vm1", target, fail="target pod failed")
    assert record.status == "failed"
    assert record.reason == "target pod failed"
    events = record.to_json()["events"]
    # No node agent's route operation on the target (where the runtime records agents)...
    assert not [e for e in events if e["source"] == f"agent:{target}" and e["kind"] == "route"], events
    # ...and no router ever saw the VM's /32 via the target.
    target_ip = str(lab.topo.node_address[target].ip)
    assert not [e for e in events if e["kind"] == "route" and e.get("best_via") == target_ip]
    checks.no_kernel_route(lab, target, VM_PREFIX)
    assert lab.vm("vm1").node == source
    eventually(
        lambda: checks.kernel_route(lab, source, VM_PREFIX, metric=lab.priorities(source).normal),
        timeout=converge_timeout(lab, source),
        interval=0.5,
        what=f"the source {source} to keep vm1's route at the normal priority",
    )


def single_rack_mesh() -> dict[str, Any]:
    """labs/single-rack.yml, its cluster named after it (a lab of its own: on the real stack its
    kind cluster runs beside the default lab's, and kind cluster names are machine-wide)."""
    data = lab_data("single-rack")
    data["clusters"][0]["name"] = "single-rack"
    return data


def test_single_rack_mesh_carries_priority_as_local_pref(own_lab: Callable[[dict[str, Any]], Lab]) -> None:
    lab = own_lab(single_rack_mesh())
    assert {s.name for s in lab.node("r1-n3").sessions()} >= {"Mesh_198_18_1_11", "Mesh_198_18_1_12"}
    record = lab.migrate("vm1", "r1-n2")
    assert record.status == "completed", record.reason
    checks.never_ecmp(record)
    # The ToR prefers a tagged /32; every node re-announces the mesh route to it (calico exports
    # all pool routes), so the best path may hop through another node, but it ends at the target.
    assert TAG in checks.route_views(record, "tor1")[-1]["communities"], record.to_json()["events"]
    # iBGP: r1-n3 learns the target's /32 with local_pref 2147483647-512 and installs it at 512
    # (the convergence time is not over yet).
    eventually(
        lambda: checks.kernel_route(
            lab, "r1-n3", VM_PREFIX, metric=512, gateway=str(lab.topo.node_address["r1-n2"].ip)
        ),
        timeout=5,
        what="r1-n3 to install the /32 at metric 512 over the mesh",
    )
    mesh_route = checks.single_best(lab, "r1-n3", VM_PREFIX)
    assert mesh_route.local_pref == 2147483647 - 512
    eventually(
        lambda: TAG in checks.single_best(lab, "tor1", VM_PREFIX).community_strings(),
        timeout=5,
        what="tor1's best /32 to carry the community",
    )
    eventually(
        lambda: checks.delivered_to(lab, "ext1", VM_IP, "r1-n2"),
        timeout=5,
        what="ext1's traffic to reach the target",
    )
    eventually(
        lambda: checks.kernel_route(lab, "r1-n3", VM_PREFIX, metric=1024),
        timeout=converge_timeout(lab, "r1-n2"),
        interval=0.5,
        what="r1-n3 back to metric 1024 after convergence",
    )
