"""How a lab maps onto containerlab and kind, checked before anything is written: the names
containerlab and kind give things, which spec node each kind node plays and where it is wired, and
the address plan (service and pod subnets) the clusters get inside the lab's ranges.

`plan_lab(topo)` runs every such check; RenderError (bad input, exit 2) names what does not fit.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.errors import InputError
from harness.spec import (
    DOC6_RANGE,
    FABRIC6_RESERVED,
    FABRIC_RANGE,
    POOL_RANGES,
    WORKLOAD_PEERING6_RANGE,
    WORKLOAD_PEERING_IPS,
    Cluster,
    LabSpec,
)
from harness.topology import Topology

LAB_RANGES = (FABRIC_RANGE, *POOL_RANGES)
SERVICE_RANGE = ipaddress.IPv4Network("198.19.255.0/24")
"""Service subnet of the first kind cluster; the next clusters count down (198.19.254.0/24, ...).
Automatic link subnets are numbered from the bottom of 198.19.0.0/16, so the top stays free;
`service_subnets()` checks that nothing in the topology overlaps."""
SERVICE6_RANGE = ipaddress.IPv6Network("2001:db8:ffff:ffff::ffff:0/112")
"""IPv6 service subnet of the first dual-stack kind cluster (the top of 2001:db8::/32, away from
the fabric's 2001:db8::/64); the next clusters count down."""
NODE_LABEL = "kvlab.io/node"
CLUSTER_LABEL = "kvlab.io/cluster"


class RenderError(InputError):
    """The lab cannot be rendered for containerlab (e.g. an address plan clash): bad input, exit 2."""


# -- names -----------------------------------------------------------------------------------


def kind_node_names(cluster: str, count: int) -> list[str]:
    """The container (and Kubernetes node) names kind gives a cluster's nodes, in order."""
    names = [f"{cluster}-control-plane"]
    names += [f"{cluster}-worker" + ("" if i == 1 else str(i)) for i in range(1, count)]
    return names


def container_name(lab: str, node: str) -> str:
    """containerlab's name of a topology node's container (default prefix 'clab')."""
    return f"clab-{lab}-{node}"


def mgmt_network(lab: str) -> str:
    return f"kvlab-{lab}"


def kind_clusters(spec: LabSpec) -> list[Cluster]:
    """Clusters that are kind clusters (everything but nested clusters)."""
    return [c for c in spec.clusters if c.parent is None]


@dataclass(frozen=True)
class KindNode:
    """One kind node: its kind/Kubernetes name, the spec node it plays, where it is wired."""

    kind_name: str
    spec_name: str
    cluster: str
    role: Literal["control-plane", "worker"]
    ip: ipaddress.IPv4Address
    prefixlen: int
    rack: str
    tor: str
    labels: dict[str, str] = field(default_factory=dict)
    ip6: ipaddress.IPv6Address | None = None  # dual stack: its fabric address's IPv6 twin


def plan_kind_nodes(topo: Topology) -> dict[str, list[KindNode]]:
    """Kind nodes of each kind cluster, in spec order (the first node is the control plane)."""
    spec = topo.spec
    out: dict[str, list[KindNode]] = {}
    problems = []
    for cluster in kind_clusters(spec):
        nodes = []
        for i, (node, kind_name) in enumerate(
            zip(cluster.nodes, kind_node_names(cluster.name, len(cluster.nodes)), strict=True)
        ):
            if node.rack is None or node.name not in topo.node_address:
                problems.append(
                    f"node '{node.name}' of cluster '{cluster.name}' has no rack: the containerlab runtime "
                    "wires every kind node to its rack's ToR"
                )
                continue
            addr = topo.node_address[node.name]
            labels = {NODE_LABEL: node.name, "rack": node.rack}
            labels.update({k: v for k, v in node.labels.items() if not _restricted_label(k)})
            nodes.append(
                KindNode(
                    kind_name=kind_name,
                    spec_name=node.name,
                    cluster=cluster.name,
                    role="control-plane" if i == 0 else "worker",
                    ip=addr.ip,
                    prefixlen=addr.network.prefixlen,
                    rack=node.rack,
                    tor=spec.rack(node.rack).tor,
                    labels=labels,
                    ip6=topo.node_ip(node.name, 6),  # type: ignore[arg-type]
                )
            )
        out[cluster.name] = nodes
    if problems:
        raise RenderError("; ".join(problems))
    return out


def _restricted_label(key: str) -> bool:
    """kubelet refuses --node-labels in the kubernetes.io / k8s.io namespaces."""
    prefix = key.split("/", 1)[0] if "/" in key else ""
    return prefix.endswith(("kubernetes.io", "k8s.io"))


# -- address plan ----------------------------------------------------------------------------


def topology_networks(topo: Topology) -> list[tuple[str, ipaddress.IPv4Network]]:
    """Every subnet the topology uses, named: rack segments, router and host links, pools."""
    nets = [(f"rack {name}", net) for name, net in topo.rack_subnet.items()]
    for link in topo.links:
        nets.append((f"link {link.a.entity}-{link.b.entity}", link.subnet))
    for link in topo.host_links:
        nets.append((f"host link {link.a.entity}-{link.b.entity}", link.subnet))
    for cluster in topo.spec.clusters:
        nets += [(f"pool of cluster {cluster.name}", pool) for pool in cluster.pools]
    return nets


def service_subnets(topo: Topology) -> dict[str, ipaddress.IPv4Network]:
    """A Kubernetes service subnet per kind cluster, inside the fabric range and clashing with
    nothing in the topology. Raises RenderError naming the clash."""
    used = [(f"{what} ({net})", net) for what, net in topology_networks(topo)]
    return _service_subnets(topo, SERVICE_RANGE, used, "service subnet", "subnet")


def _service_subnets(
    topo: Topology, service_range: Any, used: list[tuple[str, Any]], label: str, moved: str
) -> dict[str, Any]:
    """Each kind cluster's service subnet: the i-th block of `service_range`'s size counting down
    from its start, overlapping none of `used` (description, network); RenderError naming the
    first clash (`label` the subnet's, `moved` what the user should move)."""
    out = {}
    base = int(service_range.network_address)
    for i, cluster in enumerate(kind_clusters(topo.spec)):
        net = type(service_range)((base - i * service_range.num_addresses, service_range.prefixlen))
        for what, other in used:
            if net.overlaps(other):
                raise RenderError(
                    f"{label} {net} of cluster '{cluster.name}' overlaps {what}; "
                    f"move that {moved} out of {net}"
                )
        out[cluster.name] = net
    return out


def covering_network(nets: list[Any]) -> Any:
    """The smallest network that contains every one of `nets` (at least one)."""
    cover = nets[0]
    while not all(n.subnet_of(cover) for n in nets):
        cover = cover.supernet()
    return cover


def pod_subnets(spec: LabSpec) -> dict[str, ipaddress.IPv4Network]:
    """kind's `podSubnet` per kind cluster: the smallest network covering all of its pools.

    kubeadm takes one IPv4 pod CIDR, and the tigera operator refuses Installation pools that lie
    outside it (operator v1.42.3 pkg/controller/ippool/defaults.go mergePlatformPodCIDRs: "IPPool
    ... is not within the platform's configured pod network CIDR(s)"). The cover must stay inside
    one lab pool range; RenderError naming the cluster's `pools` field otherwise."""
    out = {}
    for ci, cluster in enumerate(spec.clusters):
        if cluster.parent is not None:
            continue
        cover = covering_network(list(cluster.pools))
        if not any(cover.subnet_of(r) for r in POOL_RANGES):
            raise RenderError(
                f"clusters[{ci}].pools: the pools of cluster '{cluster.name}' "
                f"({', '.join(map(str, cluster.pools))}) need one kubeadm pod subnet covering them all, "
                f"and the smallest one, {cover}, leaves the lab pool ranges "
                f"({', '.join(map(str, POOL_RANGES))}); the tigera operator refuses pools outside it. "
                "Put the cluster's pools inside one pool range"
            )
        out[cluster.name] = cover
    return out


def service_subnets6(topo: Topology) -> dict[str, ipaddress.IPv6Network]:
    """A dual-stack kind cluster's IPv6 service subnet: a /112 (kubeadm takes at most 20 host
    bits) counting down from SERVICE6_RANGE, clashing with no IPv6 pool. RenderError otherwise."""
    pools = [(f"pool {p} of cluster '{c.name}'", p) for c in topo.spec.clusters for p in c.pools6]
    return _service_subnets(topo, SERVICE6_RANGE, pools, "IPv6 service subnet", "pool")


def pod_subnets6(spec: LabSpec) -> dict[str, ipaddress.IPv6Network]:
    """kind's IPv6 `podSubnet` of each dual-stack kind cluster: the smallest network covering its
    `pools6` (inside 2001:db8::/32; RenderError naming the field otherwise)."""
    out: dict[str, ipaddress.IPv6Network] = {}
    for ci, cluster in enumerate(spec.clusters):
        if cluster.parent is not None or not cluster.pools6:
            continue
        cover = covering_network(list(cluster.pools6))
        if not cover.subnet_of(DOC6_RANGE) or cover.overlaps(FABRIC6_RESERVED):
            raise RenderError(
                f"clusters[{ci}].pools6: the IPv6 pools of cluster '{cluster.name}' need one kubeadm pod "
                f"subnet covering them all, and the smallest one, {cover}, leaves {DOC6_RANGE} or overlaps "
                f"the fabric's {FABRIC6_RESERVED}; put them closer together"
            )
        out[cluster.name] = cover
    return out


def in_lab_ranges(value: str) -> bool:
    """True when an address or prefix lies inside the lab's ranges (or is a workload peering IP)."""
    net = ipaddress.ip_network(value, strict=False)
    if net.version == 6:
        return net.subnet_of(DOC6_RANGE) or net.subnet_of(WORKLOAD_PEERING6_RANGE)  # type: ignore[arg-type]
    if net.num_addresses == 1 and net.network_address in WORKLOAD_PEERING_IPS:
        return True
    return any(net.subnet_of(r) for r in LAB_RANGES)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Plan:
    """How a lab maps onto containerlab and kind, checked before anything is written."""

    kind_nodes: dict[str, list[KindNode]]
    service_subnets: dict[str, ipaddress.IPv4Network]
    pod_subnets: dict[str, ipaddress.IPv4Network]
    service_subnets6: dict[str, ipaddress.IPv6Network] = field(default_factory=dict)  # dual stack
    pod_subnets6: dict[str, ipaddress.IPv6Network] = field(default_factory=dict)


def plan_lab(topo: Topology) -> Plan:
    """Every check that needs no file: kind nodes wired to racks, service and pod subnets, unique
    containerlab names. RenderError (bad input) on the first problem; nothing is created."""
    kind_nodes = plan_kind_nodes(topo)
    plan = Plan(
        kind_nodes,
        service_subnets(topo),
        pod_subnets(topo.spec),
        service_subnets6(topo) if topo.dual_stack else {},
        pod_subnets6(topo.spec) if topo.dual_stack else {},
    )
    _check_names(topo.spec, kind_nodes)
    nested6 = [(ci, c.name) for ci, c in enumerate(topo.spec.clusters) if c.parent is not None and c.pools6]
    if nested6:
        ci, name = nested6[0]
        raise RenderError(
            f"clusters[{ci}].pools6: nested cluster '{name}' has IPv6 pools, and the containerlab "
            "runtime's nested nodes (cloud-init guests) run IPv4 BIRD only: dual-stack nested "
            "clusters run on netns"
        )
    reflectors = [n.name for _, n in topo.spec.all_nodes() if n.route_reflector is not None]
    if reflectors:
        raise RenderError(
            f"route reflector nodes ({', '.join(reflectors)}) are not built on the containerlab runtime yet "
            "(their Calico Node's routeReflectorClusterID is not set): run this lab on netns"
        )
    return plan


def _check_names(spec: LabSpec, kind_nodes: dict[str, list[KindNode]]) -> None:
    """containerlab node names must be unique: routers, hosts, kind clusters, kind nodes."""
    seen: dict[str, str] = {}
    entries = [(r.name, f"router {r.name}") for r in spec.routers]
    entries += [(h.name, f"host {h.name}") for h in spec.hosts]
    for c in kind_clusters(spec):
        entries.append((c.name, f"kind cluster {c.name}"))
        entries += [(kn.kind_name, f"kind node of {kn.spec_name}") for kn in kind_nodes[c.name]]
    for name, what in entries:
        if name in seen:
            raise RenderError(f"containerlab node name '{name}' is both the {seen[name]} and the {what}")
        seen[name] = what
