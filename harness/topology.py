"""The resolved lab: every address, interface, block and BGP session, derived from the spec.

Pure data, no side effects: both runtimes and every renderer read the same `Topology`.

Addressing plan (all inside 198.18.0.0/15, see lab-mechanics.md):
- rack segments: the rack's `subnet`, else the next free /24 from 198.18.1.0/24 up; the ToR
  takes the first host address, nodes take .11, .12, ... in spec order unless they set `ip`;
- router-router and host-router links: /31s from 198.19.0.0/16 in spec order unless set;
- router IDs of BIRD routers: 198.18.0.<n> (not configured on any interface).

Dual-stack labs (a cluster with `pools6`) number IPv6 the same way: every fabric address has an
IPv6 twin, its IPv4 address embedded in 2001:db8::/96 (`six()`: 198.18.1.1/24 ->
2001:db8::c612:101/120); VMs give their own `ip6`; each node's v6 block is the N-th
`block_size6` block of the cluster's `pools6`. Router IDs stay IPv4 (bird6 needs one too).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field, replace
from functools import cached_property

from harness.speakers import runs_bird
from harness.spec import (
    FABRIC6_PREFIX,
    FIRST_NODE_HOST,
    P2P_RANGE,
    RACK_RANGE,
    ROUTER_ID_RANGE,
    LabSpec,
    Node,
)

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
Net = ipaddress.IPv4Network
Net6 = ipaddress.IPv6Network

GUEST_PORT = 7007  # every VM serves a TCP echo here (mock guest, QEMU guest, KubeVirt guest): probes use it
WORKLOAD_GATEWAY = IPv4("169.254.1.1")
WORKLOAD_HOST_MAC = "ee:ee:ee:ee:ee:ee"
WORKLOAD_GATEWAY6 = ipaddress.IPv6Address("fe80::ecee:eeff:feee:eeee")
"""A workload's IPv6 gateway: the link-local (EUI-64) address of the host side's MAC
ee:ee:ee:ee:ee:ee, the same on every node, so a migrated guest's neighbour entry stays right."""
UPLINK = "eth0"
RACK_BRIDGE = "br-rack"


def rack_subnets(spec: LabSpec) -> dict[str, Net]:
    """Each rack's segment: explicit, or the next /24 not taken by an explicit one."""
    taken = {r.subnet for r in spec.racks if r.subnet is not None}
    free = (
        n
        for n in RACK_RANGE.subnets(new_prefix=24)
        if n.network_address.packed[2] >= 1 and n not in taken and not any(n.overlaps(t) for t in taken)
    )
    return {r.name: r.subnet if r.subnet is not None else next(free) for r in spec.racks}


def six(iface: ipaddress.IPv4Interface) -> ipaddress.IPv6Interface:
    """The IPv6 twin of a fabric address: the IPv4 address embedded in the last 32 bits of
    2001:db8::/96, the prefix length grown by 96 (a /24 segment is a /120, a /31 link a /127)."""
    ip = FABRIC6_PREFIX.network_address + int(iface.ip)
    return ipaddress.IPv6Interface(f"{ip}/{96 + iface.network.prefixlen}")


def workload_ifname(vm: str) -> str:
    """Host-side name of a workload interface: 'cali' + 11 hex digits, like Calico's."""
    return "cali" + hashlib.sha1(vm.encode()).hexdigest()[:11]


def vm_mac(lab: str, vm: str) -> str:
    """A stable locally administered MAC for a VM (52:54:00 is QEMU's prefix)."""
    h = hashlib.sha1(f"{lab}/{vm}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in h[:3])


def bird_name(name: str) -> str:
    """A lab name as a BIRD symbol ('r1-n1' -> 'r1_n1')."""
    return name.replace("-", "_")


@dataclass(frozen=True)
class Endpoint:
    """One end of a link: which namespace entity, which interface, which address."""

    entity: str
    ifname: str
    address: ipaddress.IPv4Interface
    address6: ipaddress.IPv6Interface | None = None  # dual stack: six(address)


@dataclass(frozen=True)
class P2PLink:
    a: Endpoint
    b: Endpoint

    @property
    def subnet(self) -> Net:
        return self.a.address.network


@dataclass(frozen=True)
class RackPort:
    """A node's uplink into its rack segment (the ToR bridges all of them)."""

    rack: str
    tor: str
    node: str
    tor_port: str  # interface name in the ToR namespace, enslaved to the rack bridge
    node_address: ipaddress.IPv4Interface
    node_address6: ipaddress.IPv6Interface | None = None


@dataclass(frozen=True)
class Workload:
    """A VM endpoint attached Calico-style to its node."""

    vm: str
    node: str
    cluster: str
    ip: IPv4
    mac: str
    host_ifname: str
    backend: str = "mock"  # "mock" (a namespace) or "qemu" (a QEMU guest on its node's tap)
    ip6: IPv6 | None = None  # dual stack: the VM's IPv6 address

    def address(self, family: int) -> IPv4 | IPv6 | None:
        """The VM's address of a family (None: it has none)."""
        return self.ip if family == 4 else self.ip6


@dataclass(frozen=True)
class RouterNeighbor:
    """A BGP neighbor as a BIRD router (spine/ToR/external) sees it."""

    protocol: str
    peer: str  # entity name
    address: IPv4 | IPv6
    asn: int
    local_address: IPv4 | IPv6
    kind: str  # "node" | "router"


@dataclass
class Topology:
    spec: LabSpec
    rack_subnet: dict[str, Net] = field(default_factory=dict)
    tor_address: dict[str, ipaddress.IPv4Interface] = field(default_factory=dict)  # by ToR name
    node_address: dict[str, ipaddress.IPv4Interface] = field(default_factory=dict)
    rack_ports: list[RackPort] = field(default_factory=list)
    links: list[P2PLink] = field(default_factory=list)
    host_links: list[P2PLink] = field(default_factory=list)
    router_id: dict[str, IPv4] = field(default_factory=dict)
    node_asn: dict[str, int] = field(default_factory=dict)
    node_blocks: dict[str, list[Net]] = field(default_factory=dict)
    workloads: list[Workload] = field(default_factory=list)
    nested_vm: dict[str, str] = field(default_factory=dict)  # nested node -> the parent VM it runs in
    nested_pod: dict[str, IPv4] = field(default_factory=dict)  # nested node -> its test pod's IP
    nested_pod6: dict[str, IPv6] = field(default_factory=dict)  # dual-stack nested node -> its IPv6 pod
    tor_address6: dict[str, ipaddress.IPv6Interface] = field(default_factory=dict)  # dual stack
    node_address6: dict[str, ipaddress.IPv6Interface] = field(default_factory=dict)
    node_blocks6: dict[str, list[Net6]] = field(default_factory=dict)

    @property
    def dual_stack(self) -> bool:
        return self.spec.dual_stack

    @property
    def families(self) -> tuple[int, ...]:
        return self.spec.families

    def with_pods(self, pods: dict[str, list[str]]) -> Topology:
        """This topology with each VM's pod on the nodes in `pods` (VM -> nodes; a migrating VM
        has a pod on its source and its target), as calico-node on each node sees workloads."""
        moved = [replace(w, node=node) for w in self.workloads for node in pods.get(w.vm, [w.node])]
        return replace(self, workloads=moved)

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def entities(self) -> dict[str, str]:
        """Every namespace entity and its kind: router, node, host, vm."""
        out = {r.name: "router" for r in self.spec.routers}
        out.update({n.name: "node" for _, n in self.spec.all_nodes()})
        out.update({h.name: "host" for h in self.spec.hosts})
        out.update({v.name: "vm" for v in self.spec.vms if v.backend == "mock"})  # QEMU VMs have no namespace
        return out

    @cached_property
    def _spec_nodes(self) -> dict[str, Node]:
        """Node name -> its lab file entry (asked for every node of every node's render)."""
        return {n.name: n for _, n in self.spec.all_nodes()}

    def node_labels(self, node: str) -> dict[str, str]:
        """The Kubernetes labels of a node, as Calico selectors see them."""
        n = self._spec_nodes[node]  # KeyError(node) for an unknown node, as spec.node
        labels = {"kubernetes.io/hostname": node}
        if n.rack:
            labels["rack"] = n.rack
        labels.update(n.labels)
        return labels

    def workload_labels(self, vm: str) -> dict[str, str]:
        """The labels of a VM's workload endpoint, as a BGPPeer's localWorkloadSelector sees them."""
        return dict(self.spec.vm(vm).labels)

    def router_neighbors(self, router: str, family: int = 4) -> list[RouterNeighbor]:
        """The BGP sessions a router's BIRD (family 4) or bird6 (family 6) runs: its rack's
        nodes (ToR) and linked routers. Same protocol names in both daemons."""
        out: list[RouterNeighbor] = []
        if family == 6 and not self.dual_stack:
            return out
        for port in self.rack_ports:
            if port.tor == router:
                node_addr = port.node_address if family == 4 else port.node_address6
                tor_addr = self.tor_address[router] if family == 4 else self.tor_address6[router]
                assert node_addr is not None
                out.append(
                    RouterNeighbor(
                        protocol=f"bgp_{bird_name(port.node)}",
                        peer=port.node,
                        address=node_addr.ip,
                        asn=self.node_asn[port.node],
                        local_address=tor_addr.ip,
                        kind="node",
                    )
                )
        for link in self.links:
            for mine, other in ((link.a, link.b), (link.b, link.a)):
                if mine.entity == router:
                    theirs = other.address if family == 4 else other.address6
                    ours = mine.address if family == 4 else mine.address6
                    assert theirs is not None
                    assert ours is not None
                    out.append(
                        RouterNeighbor(
                            protocol=f"bgp_{bird_name(other.entity)}",
                            peer=other.entity,
                            address=theirs.ip,
                            asn=self.spec.router(other.entity).asn,
                            local_address=ours.ip,
                            kind="router",
                        )
                    )
        return out

    def runs_family(self, entity: str, family: int) -> bool:
        """Whether a router or node runs BIRD for `family` (bird6: in a dual-stack lab; a nested
        node only when its cluster has IPv6 pools, its VM's ip6 its node address)."""
        return runs_bird(family, self.families, v4_only=entity in self.v4_only_nested)

    @property
    def v4_only_nested(self) -> set[str]:
        """Nested nodes without an IPv6 address (no bird6 even in a dual-stack lab)."""
        return {n for n in self.nested_vm if n not in self.node_address6}

    def node_ip(self, node: str, family: int = 4) -> IPv4 | IPv6 | None:
        """A node's address of a family (None: none of that family)."""
        addr = self.node_address.get(node) if family == 4 else self.node_address6.get(node)
        return addr.ip if addr is not None else None

    def host_link(self, host: str) -> P2PLink:
        return next(link for link in self.host_links if link.b.entity == host)

    def workload(self, vm: str) -> Workload:
        return next(w for w in self.workloads if w.vm == vm)

    def block_owner(self, ip: IPv4 | IPv6) -> str | None:
        for node, blocks in (self.node_blocks if ip.version == 4 else self.node_blocks6).items():
            if any(ip in b for b in blocks):
                return node
        return None


def resolve(spec: LabSpec) -> Topology:
    """Derive the full topology from a validated spec."""
    topo = Topology(spec=spec)
    topo.rack_subnet = rack_subnets(spec)
    for rack in spec.racks:
        net = topo.rack_subnet[rack.name]
        topo.tor_address[rack.tor] = ipaddress.IPv4Interface(f"{next(net.hosts())}/{net.prefixlen}")
        if spec.dual_stack:
            topo.tor_address6[rack.tor] = six(topo.tor_address[rack.tor])

    for cluster, node in spec.all_nodes():
        topo.node_asn[node.name] = node.asn or cluster.asn
    for rack in spec.racks:
        net = topo.rack_subnet[rack.name]
        used = {topo.tor_address[rack.tor].ip}
        used |= {n.ip for _, n in spec.all_nodes() if n.rack == rack.name and n.ip is not None}
        candidates = (net.network_address + i for i in range(FIRST_NODE_HOST, net.num_addresses - 1))
        for _, node in spec.all_nodes():
            if node.rack != rack.name:
                continue
            ip = node.ip
            if ip is None:
                ip = next(c for c in candidates if c not in used)
                used.add(ip)
            addr = ipaddress.IPv4Interface(f"{ip}/{net.prefixlen}")
            topo.node_address[node.name] = addr
            addr6 = six(addr) if spec.dual_stack else None
            if addr6 is not None:
                topo.node_address6[node.name] = addr6
            topo.rack_ports.append(RackPort(rack.name, rack.tor, node.name, node.name, addr, addr6))

    # Nested cluster nodes are VMs of their parent cluster: the VM's IP is the node IP (/32,
    # the VM's only interface; its default route goes via the parent node's 169.254.1.1).
    for cluster, node in spec.all_nodes():
        if cluster.parent is not None and node.vm is not None:
            vm = spec.vm(node.vm)
            topo.node_address[node.name] = ipaddress.IPv4Interface(f"{vm.ip}/32")
            if cluster.pools6 and vm.ip6 is not None:  # a dual-stack nested node: its VM's ip6
                topo.node_address6[node.name] = ipaddress.IPv6Interface(f"{vm.ip6}/128")
            topo.nested_vm[node.name] = node.vm

    explicit = [link.subnet for link in spec.links if link.subnet is not None]
    free = (n for n in P2P_RANGE.subnets(new_prefix=31) if not any(n.overlaps(e) for e in explicit))
    for link in spec.links:
        a, b = link.endpoints
        net = link.subnet or next(free)
        hosts = [net.network_address, net.network_address + 1] if net.prefixlen == 31 else list(net.hosts())
        topo.links.append(
            P2PLink(
                _endpoint(spec, a, b, ipaddress.IPv4Interface(f"{hosts[0]}/{net.prefixlen}")),
                _endpoint(spec, b, a, ipaddress.IPv4Interface(f"{hosts[1]}/{net.prefixlen}")),
            )
        )
    for host in spec.hosts:
        net = next(free)
        topo.host_links.append(
            P2PLink(
                _endpoint(spec, host.router, host.name, ipaddress.IPv4Interface(f"{net.network_address}/31")),
                _endpoint(spec, host.name, UPLINK, ipaddress.IPv4Interface(f"{net.network_address + 1}/31")),
            )
        )

    ids = ROUTER_ID_RANGE.hosts()
    for r in spec.routers:
        topo.router_id[r.name] = next(ids)
    for name, addr in topo.node_address.items():
        topo.router_id[name] = addr.ip

    for cluster in spec.clusters:
        if cluster.parent is not None:
            # A nested node holds a block of each of its cluster's pools (node i the i-th block of
            # every pool): what it announces to its parent is what its cluster's pools say.
            for i, node in enumerate(cluster.nodes):
                per_pool = [list(pool.subnets(new_prefix=cluster.block_size)) for pool in cluster.pools]
                topo.node_blocks[node.name] = [blocks[i] for blocks in per_pool if i < len(blocks)]
                per_pool6 = [list(pool.subnets(new_prefix=cluster.block_size6)) for pool in cluster.pools6]
                if per_pool6:
                    topo.node_blocks6[node.name] = [blocks[i] for blocks in per_pool6 if i < len(blocks)]
            continue
        blocks = [b for pool in cluster.pools for b in pool.subnets(new_prefix=cluster.block_size)]
        for node, block in zip(cluster.nodes, blocks, strict=False):
            topo.node_blocks[node.name] = [block]
        blocks6 = [b for pool in cluster.pools6 for b in pool.subnets(new_prefix=cluster.block_size6)]
        for node, block6 in zip(cluster.nodes, blocks6, strict=False):
            topo.node_blocks6[node.name] = [block6]

    # One pod per nested node: the first address of its block, where a canary can reach it
    # through the nested cluster's pool route.
    for node in topo.nested_vm:
        if topo.node_blocks.get(node):
            topo.nested_pod[node] = next(topo.node_blocks[node][0].hosts())
        if topo.node_blocks6.get(node):
            topo.nested_pod6[node] = next(topo.node_blocks6[node][0].hosts())

    for vm in spec.vms:
        cluster, _ = spec.node(vm.node)
        topo.workloads.append(
            Workload(
                vm=vm.name,
                node=vm.node,
                cluster=cluster.name,
                ip=vm.ip,
                mac=vm.mac or vm_mac(spec.name, vm.name),
                host_ifname=workload_ifname(vm.name),
                backend=vm.backend,
                ip6=vm.ip6,
            )
        )
    return topo


def _endpoint(spec: LabSpec, entity: str, ifname: str, address: ipaddress.IPv4Interface) -> Endpoint:
    return Endpoint(entity, ifname, address, six(address) if spec.dual_stack else None)
