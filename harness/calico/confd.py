"""How calico-node (confd) turns a cluster's Calico resources into one node's BIRD config.

This is an emulation of calico-node's routing logic, not Calico itself. It follows the
structure of calico-node's BIRD 1.6 templates (facts from shared/design/calico-semantics.md
and Calico's confd templates):

- one `static` protocol with a blackhole route per IPAM block affine to the node;
- `calico_aggr()` exports each block and suppresses the /32s inside it;
- `calico_export_to_bgp_peers(internal_peer)` rejects disabled pools and accepts routes
  inside any IP pool; every BGP session's export filter ends with it and a `reject`;
- BGP protocols are named `Mesh_<ip>` (node-to-node mesh), `Global_<ip>` (BGPPeer for all
  nodes) and `Node_<ip>` (BGPPeer with `node` or `nodeSelector`), IPs with `_` for `.`;
- the kernel protocol learns alien routes (the workload /32s the node agent programs),
  programs every BIRD route into the kernel and merges equal paths (ECMP).

Not covered yet (see the issue tracker): BGPFilter rules, route priority mapping,
workload peering. Peers with those settings are rendered without them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from harness.calico import resources as cr
from harness.calico.selector import compile_selector
from harness.topology import Topology

DEFAULT_NORMAL_PRIORITY = 1024
DEFAULT_ELEVATED_PRIORITY = 512


@dataclass(frozen=True)
class BirdPeer:
    """One `protocol bgp` of a node's BIRD."""

    name: str
    kind: str  # "mesh" | "global" | "node"
    ip: str
    asn: int
    source_address: str | None
    passive: bool = False
    allow_local_as: int | None = None
    next_hop_keep: bool = False
    source_resource: str | None = None  # BGPPeer name, None for mesh


@dataclass
class NodeBirdConfig:
    """Everything node.conf.j2 needs for one node."""

    node: str
    router_id: str
    node_ip: str
    asn: int
    blocks: list[str]
    pools: list[dict[str, Any]]
    mesh: bool
    peers: list[BirdPeer] = field(default_factory=list)
    log_file: str | None = None
    normal_priority: int = DEFAULT_NORMAL_PRIORITY

    def is_internal(self, peer: BirdPeer) -> bool:
        return peer.asn == self.asn


def _protocol_id(ip: str) -> str:
    return ip.replace(".", "_").replace(":", "_")


def _by_kind(items: list[Any], kind: type) -> list[Any]:
    return [r for r in items if isinstance(r, kind)]


def bgp_configuration(resources: list[Any]) -> cr.BGPConfigurationSpec:
    """The `default` BGPConfiguration's spec, or an empty one (Calico's defaults apply)."""
    for r in _by_kind(resources, cr.BGPConfiguration):
        if r.metadata.name == "default":
            return r.spec
    return cr.BGPConfigurationSpec()


def node_bird_config(
    topo: Topology, node: str, resources: list[Any], log_file: str | None = None
) -> NodeBirdConfig:
    """Compute a node's BIRD configuration from its cluster's Calico resources."""
    cluster, _ = topo.spec.node(node)
    bgpconf = bgp_configuration(resources)
    my_ip = str(topo.node_address[node].ip)
    my_asn = topo.node_asn[node]
    mesh = True if bgpconf.nodeToNodeMeshEnabled is None else bgpconf.nodeToNodeMeshEnabled

    pool_specs = {str(ipaddress.ip_network(p.spec.cidr)): p.spec for p in _by_kind(resources, cr.IPPool)}
    pools = [
        {"cidr": str(p), "disable_bgp_export": bool(pool_specs.get(str(p)) and pool_specs[str(p)].disableBGPExport)}
        for p in cluster.pools
    ]
    cfg = NodeBirdConfig(
        node=node,
        router_id=str(topo.router_id[node]),
        node_ip=my_ip,
        asn=my_asn,
        blocks=[str(b) for b in topo.node_blocks.get(node, [])],
        pools=pools,
        mesh=mesh,
        log_file=log_file,
        normal_priority=bgpconf.ipv4NormalRoutePriority or DEFAULT_NORMAL_PRIORITY,
    )

    if mesh:
        for other in cluster.nodes:
            if other.name == node or other.name not in topo.node_address:
                continue
            ip = str(topo.node_address[other.name].ip)
            cfg.peers.append(
                BirdPeer(
                    name=f"Mesh_{_protocol_id(ip)}",
                    kind="mesh",
                    ip=ip,
                    asn=topo.node_asn[other.name],
                    source_address=my_ip,
                    passive=ip > my_ip,  # calico-node compares the address strings
                )
            )

    labels = topo.node_labels(node)
    for peer in _by_kind(resources, cr.BGPPeer):
        spec = peer.spec
        if spec.localWorkloadSelector is not None:
            continue  # workload peering: rendered by the workload-peering support
        if spec.node is not None:
            if spec.node != node:
                continue
            kind = "node"
        elif spec.nodeSelector is not None:
            if not compile_selector(spec.nodeSelector)(labels):
                continue
            kind = "node"
        else:
            kind = "global"
        for ip, asn in _peer_targets(topo, cluster.name, spec):
            if ip == my_ip:
                continue  # calico-node skips itself
            prefix = "Node" if kind == "node" else "Global"
            cfg.peers.append(
                BirdPeer(
                    name=f"{prefix}_{_protocol_id(ip)}",
                    kind=kind,
                    ip=ip,
                    asn=asn,
                    source_address=my_ip if spec.sourceAddress in (None, "UseNodeIP") else None,
                    allow_local_as=spec.numAllowedLocalASNumbers or None,
                    next_hop_keep=spec.nextHopMode == "Keep" or bool(spec.keepOriginalNextHop),
                    source_resource=peer.metadata.name,
                )
            )
    # Two resources selecting the same peer yield one BIRD protocol, as in calico-node.
    seen: set[str] = set()
    cfg.peers = [p for p in cfg.peers if not (p.name in seen or seen.add(p.name))]
    return cfg


def _peer_targets(topo: Topology, cluster: str, spec: cr.BGPPeerSpec) -> list[tuple[str, int]]:
    """(ip, asn) of the peers a BGPPeer names: its peerIP, or the nodes its peerSelector picks."""
    if spec.peerIP is not None:
        ip = spec.peerIP
        return [(ip, spec.asNumber or _asn_of(topo, ip))]
    if spec.peerSelector is not None:
        match = compile_selector(spec.peerSelector)
        out = []
        for n in topo.spec.cluster(cluster).nodes:
            if match(topo.node_labels(n.name)) and n.name in topo.node_address:
                out.append((str(topo.node_address[n.name].ip), topo.node_asn[n.name]))
        return out
    return []


def _asn_of(topo: Topology, ip: str) -> int:
    for tor, addr in topo.tor_address.items():
        if str(addr.ip) == ip:
            return topo.spec.router(tor).asn
    for node, addr in topo.node_address.items():
        if str(addr.ip) == ip:
            return topo.node_asn[node]
    raise LookupError(f"no lab entity has address {ip}")
