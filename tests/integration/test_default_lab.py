"""The default lab on real BIRD: sessions, fabric routes, aggregation, workload wiring, data plane.

Scenario tests: they run on every runtime (`--runtime`); the one that runs this machine's
Python inside the VM is `netns_only`. Which block each node owns comes from `lab.node_blocks()`:
the topology's plan on netns, Calico's BlockAffinities on the real stack (where IPAM does not
hand out blocks in node order)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from harness import checks
from harness.lab import Lab
from harness.tcpcheck import assert_reachable, echo_server
from harness.topology import GUEST_PORT

MOCK_VM = (
    "runs this machine's Python client inside the VM: a mock VM (the netns runtime's namespace "
    "backend) has it, a KubeVirt guest does not"
)

RACK1 = ("r1-n1", "r1-n2")
RACK2 = ("r2-n1", "r2-n2")
RTPROT_BIRD = "bird"


def blocks_of(lab: Lab, nodes: tuple[str, ...]) -> dict[str, list[str]]:
    """The blocks each of `nodes` owns (every node owns at least one: it runs pods)."""
    blocks = lab.node_blocks()
    out = {node: [str(b) for b in blocks.get(node, [])] for node in nodes}
    assert all(out.values()), f"nodes without an affine block: {out}"
    return out


def test_every_session_established_and_status_contract(lab: Lab, pytestconfig: pytest.Config) -> None:
    status = lab.status()
    assert set(status) >= {"lab", "runtime", "routers", "clusters", "nodes", "vms", "sessions"}
    assert status["runtime"] == pytestconfig.getoption("--runtime")
    assert {r["name"]: r["asn"] for r in status["routers"]} == {"spine1": 65100, "tor1": 65001, "tor2": 65002}
    assert status["clusters"] == [{"name": "kv", "asn": 64512, "pools": ["203.0.113.0/24"], "parent": None}]
    assert {n["name"]: (n["rack"], n["asn"]) for n in status["nodes"]} == {
        "r1-n1": ("r1", 64512),
        "r1-n2": ("r1", 64512),
        "r2-n1": ("r2", 64512),
        "r2-n2": ("r2", 64512),
    }
    assert status["vms"] == [{"name": "vm1", "ip": "203.0.113.10", "node": "r1-n1"}]
    sessions = status["sessions"]
    # 2 spine + 3 per ToR on the router side, 1 per node on the node side.
    assert len(sessions) == 12
    assert all(set(s) == {"router", "name", "peer", "state"} for s in sessions)
    not_up = [s for s in sessions if s["state"] != "Established"]
    assert not not_up, not_up
    node_sessions = {s["router"]: s["name"] for s in sessions if s["router"].startswith("r")}
    assert node_sessions == {
        "r1-n1": "Node_198_18_1_1",
        "r1-n2": "Node_198_18_1_1",
        "r2-n1": "Node_198_18_2_1",
        "r2-n2": "Node_198_18_2_1",
    }


@pytest.mark.parametrize("node", RACK1)
def test_tor_learns_each_rack_node_block_directly(lab: Lab, node: str) -> None:
    for block in blocks_of(lab, (node,))[node]:
        routes = lab.router("tor1").routes(block)
        best = [r for r in routes if r.best]
        assert len(best) == 1, routes
        assert best[0].as_path == (64512,)
        assert best[0].via == str(lab.topo.node_address[node].ip)
        assert best[0].protocol == f"bgp_{node.replace('-', '_')}"


def test_tor_learns_other_rack_through_spine(lab: Lab) -> None:
    for block in (b for blocks in blocks_of(lab, RACK2).values() for b in blocks):
        best = lab.router("tor1").best_route(block)
        assert best is not None, f"tor1 has no route for {block}"
        assert best.as_path == (65100, 65002, 64512)


def test_spine_sees_both_racks_blocks_via_their_tor(lab: Lab) -> None:
    spine = lab.router("spine1")
    for rack, tor, tor_as in ((RACK1, "tor1", 65001), (RACK2, "tor2", 65002)):
        for block in (b for blocks in blocks_of(lab, rack).values() for b in blocks):
            best = spine.best_route(block)
            assert best is not None, f"spine1 has no route for {block}"
            assert best.as_path == (tor_as, 64512)
            assert best.via == checks.link_address(lab, tor, "spine1")


def test_vm_is_announced_only_inside_its_nodes_block(lab: Lab) -> None:
    """Aggregation: before any migration nobody outside the node sees vm1's /32, when its address
    lies in the node's own block. When it lies in another node's block (Calico lends addresses
    across blocks; on the real stack which block a node owns is Calico's choice), the node
    announces it as a /32 from the start, at normal priority."""
    if checks.steady_vm_route(lab, "vm1", "r1-n1", ("tor1", "tor2", "spine1"), community="65000:100"):
        for node in ("r1-n2", "r2-n1"):
            assert lab.node(node).routes("203.0.113.10/32") == []


def test_node_kernel_tables(lab: Lab) -> None:
    (own_block,) = blocks_of(lab, ("r1-n1",))["r1-n1"]
    own = lab.node("r1-n1").kernel_routes(own_block)
    assert [r.route_type for r in own] == ["blackhole"]
    remote = lab.node("r2-n1").kernel_routes(own_block)
    assert len(remote) == 1
    assert remote[0].protocol == RTPROT_BIRD
    assert remote[0].gateway == str(lab.topo.tor_address["tor2"].ip)


@pytest.mark.calico_3_32("Felix's route priorities (FelixConfiguration ipv4NormalRoutePriority)")
def test_vm_route_has_the_normal_priority(lab: Lab) -> None:
    vm_route = lab.node("r1-n1").kernel_routes("203.0.113.10/32")
    assert [(r.dev, r.metric) for r in vm_route] == [(lab.workload_interface("vm1", "r1-n1"), 1024)]


def test_workload_interface_is_calico_style(lab: Lab) -> None:
    wl = lab.topo.workload("vm1")
    host_if = lab.workload_interface("vm1", "r1-n1")
    (link,) = _ip_json(lab, "r1-n1", "link", "show", "dev", host_if)
    assert link["address"] == "ee:ee:ee:ee:ee:ee"
    # The node resolves the VM to the guest's MAC: a permanent entry (netns, as Felix writes one
    # when it knows the MAC) or one learnt by ARP (Calico's Kubernetes datastore gives Felix none):
    # traffic first, so there is an entry either way.
    assert_reachable(lab, "ext1", str(wl.ip), GUEST_PORT)
    assert checks.neighbour_mac(lab, "r1-n1", str(wl.ip)) == wl.mac
    proxy = lab.run("r1-n1", ["cat", f"/proc/sys/net/ipv4/conf/{host_if}/proxy_arp"])
    assert proxy.stdout.strip() == "1"


def test_vm_routes_through_the_workload_gateway(guest_lab: Lab) -> None:
    """Inside the guest: the default route via Calico's workload gateway 169.254.1.1, reached
    on-link through the guest's interface."""
    vm_routes = checks.routes_in(guest_lab, "vm1")
    assert vm_routes["0.0.0.0/0"].get("via") == "169.254.1.1", vm_routes
    assert vm_routes["169.254.1.1/32"].get("dev") == "eth0", vm_routes


def test_external_host_reaches_vm_over_the_fabric(lab: Lab) -> None:
    """Data plane: ext1 -> spine1 -> tor1 -> r1-n1 -> vm1's guest and back, over the routes BGP installed."""
    assert_reachable(lab, "ext1", "203.0.113.10", GUEST_PORT)


@pytest.mark.netns_only(MOCK_VM)
def test_vm_reaches_an_external_host(guest_lab: Lab) -> None:
    """From inside a (mock) VM's namespace out to the external host: the workload gateway works."""
    with echo_server(guest_lab, "ext1", port=7100):
        assert_reachable(guest_lab, "vm1", str(guest_lab.topo.host_link("ext1").b.address.ip), 7100)


def test_lab_addresses_stay_in_lab_ranges(lab: Lab) -> None:
    fabric = ipaddress.IPv4Network("198.18.0.0/15")
    for addr in [*lab.topo.node_address.values(), *lab.topo.tor_address.values()]:
        assert addr.ip in fabric
    for link in lab.topo.links + lab.topo.host_links:
        assert link.a.address.ip in fabric
        assert link.b.address.ip in fabric


def _ip_json(lab: Lab, entity: str, *args: str) -> list[dict]:
    """`ip -j ARGS` inside a lab entity, parsed."""
    res = lab.run(entity, ["ip", "-j", *args])
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout or "[]")
