"""harness.topology.resolve: every address, block and BGP session derived from a spec."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from harness.generate import fabric_lab, write_lab
from harness.labfile import load_lab
from harness.topology import Topology, bird_name, resolve, vm_mac, workload_ifname

REPO = Path(__file__).resolve().parents[2]
FABRIC = ipaddress.IPv4Network("198.18.0.0/15")
P2P = ipaddress.IPv4Network("198.19.0.0/16")


def _ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


@pytest.fixture(scope="module")
def topo() -> Topology:
    return resolve(load_lab(REPO / "labs" / "default.yml"))


def _all_interface_addresses(t: Topology) -> list[ipaddress.IPv4Interface]:
    out = list(t.tor_address.values()) + list(t.node_address.values())
    for link in [*t.links, *t.host_links]:
        out += [link.a.address, link.b.address]
    return out


def _generated(tmp_path: Path, racks: int, nodes: int) -> Topology:
    path = write_lab(fabric_lab(racks, nodes), tmp_path / f"fabric-{racks}x{nodes}.yml")
    return resolve(load_lab(path))


# -- default lab -----------------------------------------------------------------------


def test_rack_addresses(topo: Topology) -> None:
    assert str(topo.rack_subnet["r1"]) == "198.18.1.0/24"
    assert str(topo.tor_address["tor1"]) == "198.18.1.1/24"
    assert str(topo.tor_address["tor2"]) == "198.18.2.1/24"
    assert {n: str(a) for n, a in topo.node_address.items()} == {
        "r1-n1": "198.18.1.11/24",
        "r1-n2": "198.18.1.12/24",
        "r2-n1": "198.18.2.11/24",
        "r2-n2": "198.18.2.12/24",
    }


def test_rack_ports(topo: Topology) -> None:
    ports = {p.node: p for p in topo.rack_ports}
    assert set(ports) == {"r1-n1", "r1-n2", "r2-n1", "r2-n2"}
    assert (ports["r1-n2"].rack, ports["r1-n2"].tor) == ("r1", "tor1")
    assert (ports["r2-n1"].rack, ports["r2-n1"].tor) == ("r2", "tor2")
    assert ports["r2-n2"].node_address == topo.node_address["r2-n2"]
    assert len({p.tor_port for p in topo.rack_ports if p.tor == "tor1"}) == 2
    assert all(len(p.tor_port) <= 15 for p in topo.rack_ports)


def test_node_blocks(topo: Topology) -> None:
    assert {n: [str(b) for b in bs] for n, bs in topo.node_blocks.items()} == {
        "r1-n1": ["203.0.113.0/26"],
        "r1-n2": ["203.0.113.64/26"],
        "r2-n1": ["203.0.113.128/26"],
        "r2-n2": ["203.0.113.192/26"],
    }


def test_block_owner(topo: Topology) -> None:
    assert topo.block_owner(_ip("203.0.113.10")) == "r1-n1"
    assert topo.block_owner(_ip("203.0.113.64")) == "r1-n2"
    assert topo.block_owner(_ip("203.0.113.255")) == "r2-n2"
    assert topo.block_owner(_ip("198.51.100.1")) is None


def test_node_asn(topo: Topology) -> None:
    assert topo.node_asn == dict.fromkeys(("r1-n1", "r1-n2", "r2-n1", "r2-n2"), 64512)


def test_tor1_neighbors(topo: Topology) -> None:
    got = {
        (n.peer, str(n.address), n.asn, str(n.local_address), n.kind) for n in topo.router_neighbors("tor1")
    }
    spine_link = next(link for link in topo.links if {link.a.entity, link.b.entity} == {"spine1", "tor1"})
    spine_end = spine_link.a if spine_link.a.entity == "spine1" else spine_link.b
    tor_end = spine_link.b if spine_end is spine_link.a else spine_link.a
    assert got == {
        ("r1-n1", "198.18.1.11", 64512, "198.18.1.1", "node"),
        ("r1-n2", "198.18.1.12", 64512, "198.18.1.1", "node"),
        ("spine1", str(spine_end.address.ip), 65100, str(tor_end.address.ip), "router"),
    }
    assert {n.protocol for n in topo.router_neighbors("tor1")} == {"bgp_r1_n1", "bgp_r1_n2", "bgp_spine1"}


def test_spine_neighbors_are_the_tors(topo: Topology) -> None:
    got = {(n.peer, n.asn, n.kind) for n in topo.router_neighbors("spine1")}
    assert got == {("tor1", 65001, "router"), ("tor2", 65002, "router")}


def test_session_endpoints_agree(topo: Topology) -> None:
    """Each router-router session is configured on both sides with swapped addresses."""
    for r in topo.spec.routers:
        for n in topo.router_neighbors(r.name):
            if n.kind != "router":
                continue
            back = [m for m in topo.router_neighbors(n.peer) if m.peer == r.name]
            assert len(back) == 1
            assert (back[0].address, back[0].local_address) == (n.local_address, n.address)
            assert back[0].asn == r.asn


def test_router_ids_unique(topo: Topology) -> None:
    ids = list(topo.router_id.values())
    assert len(ids) == len(set(ids)) == 7
    assert topo.router_id["r1-n1"] == _ip("198.18.1.11")  # a node's router id is its address, as in Calico


def test_p2p_links_are_31s_in_link_range(topo: Topology) -> None:
    assert len(topo.links) == 2
    assert len(topo.host_links) == 1
    for link in [*topo.links, *topo.host_links]:
        assert link.subnet.prefixlen == 31
        assert link.subnet.subnet_of(P2P)
        assert link.a.address.network == link.b.address.network
        assert link.a.address.ip != link.b.address.ip
    subnets = [link.subnet for link in [*topo.links, *topo.host_links]]
    assert len(set(subnets)) == len(subnets)


def test_host_link(topo: Topology) -> None:
    link = topo.host_link("ext1")
    assert link.a.entity == "spine1"
    assert link.b.entity == "ext1"
    assert link.a.ifname == "ext1"  # the router's port is named after the host


def test_all_addresses_in_fabric_and_unique(topo: Topology) -> None:
    addrs = _all_interface_addresses(topo)
    assert all(a.ip in FABRIC for a in addrs)
    assert len({a.ip for a in addrs}) == len(addrs)


def test_entities(topo: Topology) -> None:
    assert topo.entities == {
        "spine1": "router",
        "tor1": "router",
        "tor2": "router",
        "r1-n1": "node",
        "r1-n2": "node",
        "r2-n1": "node",
        "r2-n2": "node",
        "ext1": "host",
        # vm1 is a QEMU guest: it runs in r1-n1's namespace and has none of its own
    }
    assert topo.workload("vm1").backend == "qemu"


def test_node_labels(topo: Topology) -> None:
    assert topo.node_labels("r2-n1") == {"kubernetes.io/hostname": "r2-n1", "rack": "r2"}


def test_workload(topo: Topology) -> None:
    w = topo.workload("vm1")
    assert (w.node, w.cluster, str(w.ip)) == ("r1-n1", "kv", "203.0.113.10")
    assert w.host_ifname == workload_ifname("vm1")
    assert w.mac == vm_mac("default", "vm1")


# -- naming helpers --------------------------------------------------------------------


@pytest.mark.parametrize("vm", ["vm1", "vm2", "a", "a-very-long-vm-1"])
def test_workload_ifname(vm: str) -> None:
    name = workload_ifname(vm)
    assert name.startswith("cali")
    assert len(name) <= 15
    assert name == workload_ifname(vm)


def test_workload_ifnames_differ() -> None:
    names = {workload_ifname(f"vm{i}") for i in range(200)}
    assert len(names) == 200


def test_vm_mac_stable_unicast_locally_administered() -> None:
    mac = vm_mac("default", "vm1")
    assert mac == vm_mac("default", "vm1")
    octets = [int(x, 16) for x in mac.split(":")]
    assert len(octets) == 6
    assert octets[0] & 0x01 == 0, "must be unicast"
    assert octets[0] & 0x02 == 0x02, "must be locally administered"
    assert vm_mac("default", "vm2") != mac
    assert vm_mac("other", "vm1") != mac


def test_explicit_vm_mac_is_kept(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "labs" / "default.yml").read_text())
    data["vms"][0]["mac"] = "52:54:00:aa:bb:cc"
    data["vms"].append({"name": "vm2", "node": "r1-n2", "ip": "203.0.113.70"})  # a mock VM
    text = yaml.safe_dump(data)
    (tmp_path / "calico").mkdir()
    (tmp_path / "calico" / "default.yaml").write_text((REPO / "labs/calico/default.yaml").read_text())
    (tmp_path / "lab.yml").write_text(text)
    t = resolve(load_lab(tmp_path / "lab.yml"))
    assert t.workload("vm1").mac == "52:54:00:aa:bb:cc"
    assert t.entities["vm2"] == "vm"  # a mock VM is a namespace of its own


def test_bird_name() -> None:
    assert bird_name("r1-n1") == "r1_n1"
    assert bird_name("spine1") == "spine1"


# -- explicit and automatic addressing --------------------------------------------------


def _lab(tmp_path: Path, body: str) -> Topology:
    path = tmp_path / "lab.yml"
    path.write_text(body)
    return resolve(load_lab(path))


def test_explicit_node_ip_and_automatic_ones_skip_it(tmp_path: Path) -> None:
    t = _lab(
        tmp_path,
        """\
name: t
routers: [{name: tor1, role: tor, asn: 65001}]
racks: [{name: r1, tor: tor1, subnet: 198.18.7.0/24}]
clusters:
  - name: kv
    pools: [203.0.113.0/24]
    nodes:
      - {name: n1, rack: r1}
      - {name: n2, rack: r1, ip: 198.18.7.11}
      - {name: n3, rack: r1}
""",
    )
    assert {n: str(a.ip) for n, a in t.node_address.items()} == {
        "n1": "198.18.7.12",
        "n2": "198.18.7.11",
        "n3": "198.18.7.13",
    }
    assert str(t.tor_address["tor1"]) == "198.18.7.1/24"


def test_automatic_rack_subnets_avoid_explicit_ones(tmp_path: Path) -> None:
    t = _lab(
        tmp_path,
        """\
name: t
routers:
  - {name: tor1, role: tor, asn: 65001}
  - {name: tor2, role: tor, asn: 65002}
  - {name: tor3, role: tor, asn: 65003}
racks:
  - {name: r1, tor: tor1}
  - {name: r2, tor: tor2, subnet: 198.18.1.0/24}
  - {name: r3, tor: tor3}
clusters:
  - name: kv
    pools: [203.0.113.0/24]
    nodes: [{name: n1, rack: r1}, {name: n2, rack: r2}, {name: n3, rack: r3}]
""",
    )
    subnets = {r: str(n) for r, n in t.rack_subnet.items()}
    assert subnets["r2"] == "198.18.1.0/24"
    assert len(set(subnets.values())) == 3
    assert all(
        ipaddress.IPv4Network(s).subnet_of(ipaddress.IPv4Network("198.18.0.0/16")) for s in subnets.values()
    )
    assert "198.18.0.0/24" not in subnets.values()  # the router-id range
    assert len({a.ip for a in _all_interface_addresses(t)}) == len(_all_interface_addresses(t))


def test_per_node_asn(tmp_path: Path) -> None:
    t = _lab(
        tmp_path,
        """\
name: t
routers: [{name: tor1, role: tor, asn: 65001}]
racks: [{name: r1, tor: tor1}]
clusters:
  - name: kv
    pools: [203.0.113.0/24]
    nodes: [{name: n1, rack: r1, asn: 64600}, {name: n2, rack: r1}]
""",
    )
    assert t.node_asn == {"n1": 64600, "n2": 64512}
    assert {(n.peer, n.asn) for n in t.router_neighbors("tor1")} == {("n1", 64600), ("n2", 64512)}


def test_explicit_link_subnet(tmp_path: Path) -> None:
    t = _lab(
        tmp_path,
        """\
name: t
routers:
  - {name: spine1, role: spine, asn: 65100}
  - {name: tor1, role: tor, asn: 65001}
  - {name: tor2, role: tor, asn: 65002}
links:
  - {endpoints: [spine1, tor1]}
  - {endpoints: [spine1, tor2], subnet: 198.19.0.0/31}
""",
    )
    by_peer = {link.b.entity: link for link in t.links}
    assert str(by_peer["tor2"].a.address) == "198.19.0.0/31"
    assert str(by_peer["tor2"].b.address) == "198.19.0.1/31"
    assert by_peer["tor1"].subnet != by_peer["tor2"].subnet


def test_node_labels_from_spec(tmp_path: Path) -> None:
    t = _lab(
        tmp_path,
        """\
name: t
routers: [{name: tor1, role: tor, asn: 65001}]
racks: [{name: r1, tor: tor1}]
clusters:
  - name: kv
    pools: [203.0.113.0/24]
    nodes: [{name: n1, rack: r1, labels: {zone: a}}]
""",
    )
    assert t.node_labels("n1") == {"kubernetes.io/hostname": "n1", "rack": "r1", "zone": "a"}


# -- generated labs --------------------------------------------------------------------


@pytest.mark.parametrize(("racks", "nodes"), [(1, 1), (2, 2), (8, 4)])
def test_generated_lab_resolves(tmp_path: Path, racks: int, nodes: int) -> None:
    t = _generated(tmp_path, racks, nodes)
    speakers = len(t.spec.routers) + len(t.node_address)
    assert speakers == 1 + racks + racks * nodes
    addrs = _all_interface_addresses(t)
    assert len({a.ip for a in addrs}) == len(addrs)
    assert all(a.ip in FABRIC for a in addrs)
    ids = list(t.router_id.values())
    assert len(ids) == len(set(ids)) == speakers
    blocks = [b for bs in t.node_blocks.values() for b in bs]
    assert len(blocks) == racks * nodes
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
    for r in range(1, racks + 1):
        assert len(t.router_neighbors(f"tor{r}")) == nodes + 1


def test_generated_8x4_has_41_speakers(tmp_path: Path) -> None:
    t = _generated(tmp_path, 8, 4)
    assert len([e for e, kind in t.entities.items() if kind in ("router", "node")]) == 41
    assert str(t.node_address["r8-n4"]) == "198.18.8.14/24"
    assert len(t.router_neighbors("spine1")) == 8
