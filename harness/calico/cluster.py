"""What calico-node's confd reads of a cluster: its Calico Nodes, the IPAM block affinities of
each node, the workloads a node's Felix reports for workload peering, secrets, and the Calico
resources (BGPConfiguration, BGPPeer, BGPFilter, IPPool).

`harness.calico.confd` renders a node's BIRD config from a `Cluster` and nothing else. A
`Cluster` comes either from a lab (`from_topology`: nodes, addresses, blocks and VMs derived
from the lab file) or from Calico resources alone (`from_resources`: `Node` objects, block
affinities given explicitly, as a real cluster's IPAM or Calico's confd tests preload them).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from harness.calico import resources as cr
from harness.calico.selector import compile_selector
from harness.errors import InputError
from harness.topology import Topology

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

DEFAULT_ASN = 64512
"""calico-node's AS number when no BGPConfiguration or Node sets one."""

BLOCK_STATES = ("", "confirmed", "pending")
"""Block affinity states: '' (implicitly confirmed), confirmed, pending (not yet this node's)."""


@dataclass(frozen=True)
class CalicoNode:
    """A node as confd sees it: BGP addresses with their subnet, AS, route reflector cluster ID, labels."""

    name: str
    ipv4: ipaddress.IPv4Interface | None = None
    ipv6: ipaddress.IPv6Interface | None = None
    asn: int | None = None
    rr_cluster_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    wireguard_v4: str | None = None
    wireguard_v6: str | None = None

    def address(self, family: int) -> Interface | None:
        return self.ipv4 if family == 4 else self.ipv6


@dataclass(frozen=True)
class BlockAffinity:
    """An IPAM block affine to a node (the node exports it and blackholes the rest of it)."""

    cidr: Network
    state: str = ""


@dataclass(frozen=True)
class LocalWorkload:
    """A workload on the node that a `localWorkloadSelector` BGPPeer selects, as Felix reports it
    to confd (its endpoint status): which BGPPeer, and the workload's addresses."""

    peer: str
    ipv4: str | None = None
    ipv6: str | None = None


@dataclass(frozen=True)
class Cluster:
    """The whole input of one node's confd render (see `harness.calico.confd.node_config`)."""

    nodes: Mapping[str, CalicoNode]
    resources: tuple[Any, ...] = ()
    blocks: Mapping[str, tuple[BlockAffinity, ...]] = field(default_factory=dict)
    workloads: Mapping[str, tuple[LocalWorkload, ...]] = field(default_factory=dict)
    secrets: Mapping[tuple[str, str], str] = field(default_factory=dict)
    router_id: str | None = None  # calico-node's CALICO_ROUTER_ID: an IPv4 address or "hash"

    def of_kind(self, kind: type) -> list[Any]:
        return [r for r in self.resources if isinstance(r, kind)]

    @functools.cached_property
    def _selected(self) -> dict[str, tuple[list[str], frozenset[str]]]:
        """Selector -> the nodes it picks (in name order, and as a set), filled as selectors are
        asked: every node's render asks every BGPPeer's selectors (a scan of all nodes each
        would be quadratic)."""
        return {}

    def _matching(self, selector: str) -> tuple[list[str], frozenset[str]]:
        found = self._selected.get(selector)
        if found is None:
            match = compile_selector(selector)
            names = [n for n in sorted(self.nodes) if match(self.nodes[n].labels)]
            found = self._selected[selector] = (names, frozenset(names))
        return found

    @functools.cached_property
    def addresses(self) -> frozenset[str]:
        """Every node's BGP addresses (both families), as text."""
        return frozenset(str(a.ip) for n in self.nodes.values() for a in (n.ipv4, n.ipv6) if a is not None)

    @functools.cached_property
    def nodes_by_ip(self) -> dict[Any, list[str]]:
        """Address (an ipaddress object) -> the nodes that have it, in name order: looked up
        for every BGPPeer of every node's render (a scan of all nodes each would be quadratic)."""
        out: dict[Any, list[str]] = {}
        for name in sorted(self.nodes):
            n = self.nodes[name]
            for a in (n.ipv4, n.ipv6):
                if a is not None:
                    out.setdefault(a.ip, []).append(name)
        return out

    def bgp_configuration(self, name: str = "default") -> cr.BGPConfiguration | None:
        return next((r for r in self.of_kind(cr.BGPConfiguration) if r.metadata.name == name), None)

    def default_config(self) -> cr.BGPConfigurationSpec:
        """The `default` BGPConfiguration's spec, or an empty one (Calico's defaults apply)."""
        res = self.bgp_configuration()
        return res.spec if res is not None else cr.BGPConfigurationSpec()

    def node_config(self, node: str) -> cr.BGPConfigurationSpec | None:
        """The per-node BGPConfiguration (`node.<name>`), if any."""
        res = self.bgp_configuration(f"node.{node}")
        return res.spec if res is not None else None

    def global_asn(self) -> int:
        return self.default_config().asNumber or DEFAULT_ASN

    def asn(self, node: str) -> int:
        return self.nodes[node].asn or self.global_asn()

    def nodes_matching(self, selector: str) -> list[str]:
        return list(self._matching(selector)[0])

    def selects(self, selector: str, node: str) -> bool:
        """Whether `selector` picks `node`."""
        return node in self._matching(selector)[1]

    def listen_port(self, node: str) -> int | None:
        """The BGP port a node listens on (its `node.<name>` BGPConfiguration, else the default's)."""
        own = self.node_config(node)
        if own is not None and own.listenPort:
            return own.listenPort
        return self.default_config().listenPort

    def secret(self, ref: cr.SecretRef | None) -> str | None:
        if ref is None:
            return None
        return self.secrets.get((ref.secretKeyRef.name, ref.secretKeyRef.key))


# -- from Calico resources alone ------------------------------------------------------------


def calico_node(res: cr.Node) -> CalicoNode:
    """The confd view of a Calico Node resource."""
    bgp = res.spec.bgp or cr.NodeBGPSpec()
    wg = res.spec.wireguard or cr.NodeWireguardSpec()
    return CalicoNode(
        name=res.metadata.name,
        ipv4=ipaddress.IPv4Interface(bgp.ipv4Address) if bgp.ipv4Address else None,
        ipv6=ipaddress.IPv6Interface(bgp.ipv6Address) if bgp.ipv6Address else None,
        asn=bgp.asNumber,
        rr_cluster_id=bgp.routeReflectorClusterID,
        labels=dict(res.metadata.labels),
        wireguard_v4=wg.interfaceIPv4Address,
        wireguard_v6=wg.interfaceIPv6Address,
    )


def from_resources(
    resources: Iterable[Any],
    blocks: Mapping[str, Iterable[BlockAffinity]] | None = None,
    *,
    workloads: Mapping[str, Iterable[LocalWorkload]] | None = None,
    secrets: Mapping[tuple[str, str], str] | None = None,
    router_id: str | None = None,
    k8s_labels: bool = True,
) -> Cluster:
    """A cluster from typed Calico resources (Nodes among them) and explicit block affinities.

    With `k8s_labels`, every node carries the label `kubernetes.io/hostname: <name>` as a
    Kubernetes node does (selectors may use it). InputError when two Nodes share a name."""
    items = list(resources)
    nodes: dict[str, CalicoNode] = {}
    for res in items:
        if isinstance(res, cr.Node):
            if res.metadata.name in nodes:
                raise InputError(f"two Calico Nodes named {res.metadata.name!r}")
            node = calico_node(res)
            if k8s_labels:
                node = replace(node, labels={"kubernetes.io/hostname": node.name, **node.labels})
            nodes[node.name] = node
    return Cluster(
        nodes=nodes,
        resources=tuple(r for r in items if not isinstance(r, cr.Node)),
        blocks={n: tuple(b) for n, b in (blocks or {}).items()},
        workloads={n: tuple(w) for n, w in (workloads or {}).items()},
        secrets=dict(secrets or {}),
        router_id=router_id,
    )


# -- from a lab ----------------------------------------------------------------------------


def from_topology(topo: Topology, cluster: str, resources: Iterable[Any]) -> Cluster:
    """A lab cluster as calico-node would see it.

    Nodes: the lab's addresses (with their rack subnet), AS numbers and labels; blocks: each
    node's affine blocks (implicitly confirmed); IP pools: the cluster's `pools` (an IPPool
    resource of the same CIDR gives its settings); workloads: the VMs on each node that a
    `localWorkloadSelector` BGPPeer selects; a BGPPeer to a lab router without `asNumber`
    peers with that router's AS."""
    spec = topo.spec.cluster(cluster)
    items = [_with_peer_asn(topo, r) for r in resources]
    nodes = {
        n.name: CalicoNode(
            name=n.name,
            ipv4=topo.node_address[n.name],
            ipv6=topo.node_address6.get(n.name),
            asn=topo.node_asn[n.name],
            rr_cluster_id=None if n.route_reflector is None else str(n.route_reflector),
            labels=topo.node_labels(n.name),
        )
        for n in spec.nodes
        if n.name in topo.node_address
    }
    declared = {
        str(ipaddress.ip_network(p.spec.cidr, strict=False)) for p in items if isinstance(p, cr.IPPool)
    }
    items += [
        cr.IPPool.model_validate(
            {
                "apiVersion": cr.API_VERSION,
                "kind": "IPPool",
                "metadata": {"name": f"pool-{str(p).replace('.', '-').replace(':', '-').replace('/', '-')}"},
                "spec": {"cidr": str(p), "blockSize": size},
            }
        )
        for p, size in [
            *((p, spec.block_size) for p in spec.pools),
            *((p, spec.block_size6) for p in spec.pools6),
        ]
        if str(p) not in declared
    ]
    blocks = {
        n: tuple(BlockAffinity(b) for b in [*topo.node_blocks.get(n, []), *topo.node_blocks6.get(n, [])])
        for n in nodes
    }
    workloads: dict[str, list[LocalWorkload]] = {n: [] for n in nodes}
    default = Cluster(nodes={}, resources=tuple(items)).default_config()
    v6_peering = default.localWorkloadPeeringIPV6 is not None
    for peer in items:
        if isinstance(peer, cr.BGPPeer) and peer.spec.localWorkloadSelector is not None:
            match = compile_selector(peer.spec.localWorkloadSelector)
            for w in topo.workloads:
                if w.node in workloads and match(topo.workload_labels(w.vm)):
                    ip6 = str(w.ip6) if v6_peering and w.ip6 is not None else None
                    workloads[w.node].append(LocalWorkload(peer.metadata.name, ipv4=str(w.ip), ipv6=ip6))
    return Cluster(
        nodes=nodes,
        resources=tuple(items),
        blocks=blocks,
        workloads={n: tuple(w) for n, w in workloads.items()},
    )


def _with_peer_asn(topo: Topology, res: Any) -> Any:
    """A BGPPeer naming a lab router or node by peerIP without asNumber, given that one's AS."""
    if not isinstance(res, cr.BGPPeer) or res.spec.peerIP is None or res.spec.asNumber is not None:
        return res
    asn = _asn_of(topo, res.spec.peerIP)
    if asn is None:
        return res
    return res.model_copy(update={"spec": res.spec.model_copy(update={"asNumber": asn})})


def _asn_of(topo: Topology, ip: str) -> int | None:
    for tor, addr in topo.tor_address.items():
        if str(addr.ip) == ip:
            return topo.spec.router(tor).asn
    for node, addr in topo.node_address.items():
        if str(addr.ip) == ip:
            return topo.node_asn[node]
    return None


__all__ = [
    "BLOCK_STATES",
    "DEFAULT_ASN",
    "BlockAffinity",
    "CalicoNode",
    "Cluster",
    "LocalWorkload",
    "calico_node",
    "from_resources",
    "from_topology",
]
