"""How calico-node (confd) turns a cluster's Calico resources into one node's BIRD config.

This is an emulation of calico-node's routing logic, not Calico itself. It follows the
structure of calico-node's BIRD 1.6 templates (facts from shared/design/calico-semantics.md
and Calico's confd templates):

- one `static` protocol with a blackhole route per IPAM block affine to the node;
- `calico_aggr()` exports each block and suppresses the routes inside it, except those
  whose kernel metric is below the normal route priority (elevated /32s);
- `calico_export_to_bgp_peers(internal_peer)` rejects disabled pools and accepts routes
  inside any IP pool;
- every BGPFilter of the cluster becomes BIRD functions, and each BGP session's import and
  export filters call the functions of its BGPPeer's `filters`, in order, around Calico's
  route-priority mapping (krt_metric <-> bgp_local_pref, preference 200 for elevated
  imports); the kernel protocol's export filter turns local_pref back into the kernel
  metric. The rules live in `harness.calico.bgpfilter`;
- BGP protocols are named `Mesh_<ip>` (node-to-node mesh), `Global_<ip>` (BGPPeer for all
  nodes), `Node_<ip>` (BGPPeer with `node` or `nodeSelector`) and `Local_Workload_<ip>`
  (BGPPeer with `localWorkloadSelector`), IPs with `_` for `.`, sorted by name;
- workload peering (nested clusters): for a BGPPeer with `localWorkloadSelector` on the
  nodes it applies to (`node`/`nodeSelector`, else all), one protocol per selected workload
  running on the node, as calico-node renders it: neighbor = the workload IP, `as` = the
  BGPPeer's asNumber (`localASNumber` honoured), passive (the workload connects to the
  parent's localWorkloadPeeringIPV4), multihop, `ttl security off`, no `source address`
  (calico-node sets the source to "None" for these peers), the BGPPeer's filters wired like
  every other peer's. A nested node renders with the same code from its own cluster's
  resources: its node IP is its VM's IP, its BGPPeer to 169.254.0.179 becomes `Global_...`;
- iBGP vs eBGP (`is_same_as`) compares the peer's AS with the node's AS or
  the BGPPeer's `localASNumber`;
- the kernel protocol learns alien routes (the workload /32s the node agent programs),
  programs every BIRD route into the kernel and merges equal paths (ECMP).

Not covered (rendered without them): workload peering over IPv6, the `pcns.` namespace
labels of `localWorkloadSelector`, IPv6,
BGPPeer `password`, `maxRestartTime`, `ttlSecurity`, `reachableBy`,
`peerIP` ports and `reversePeering` (the automatic session back from the nodes a
peerSelector picks), route reflection, the tunnel/BPF route rejects of
`calico_export_to_bgp_peers`, and BGPConfiguration `communities` / `prefixAdvertisements`,
service IP advertisement, `ignoredInterfaces`, `listenPort`, `bindMode`,
`logSeverityScreen`, `nodeMeshPassword`, `nodeMeshMaxRestartTime`, `programClusterRoutes`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

from harness.calico import bgpfilter
from harness.calico import resources as cr
from harness.calico.selector import compile_selector
from harness.topology import Topology

DEFAULT_NORMAL_PRIORITY = 1024
DEFAULT_ELEVATED_PRIORITY = 512


@dataclass(frozen=True)
class BirdPeer:
    """One `protocol bgp` of a node's BIRD."""

    name: str
    kind: str  # "mesh" | "global" | "node" | "local_workload"
    ip: str
    asn: int
    source_address: str | None
    passive: bool = False
    allow_local_as: int | None = None
    next_hop_keep: bool = False
    next_hop_self: bool = False
    ttl_security_off: bool = False  # explicit `ttl security off;` (calico-node's workload peers)
    source_resource: str | None = None  # BGPPeer name, None for mesh
    local_asn: int | None = None  # BGPPeer localASNumber
    keepalive: int | None = None  # BGPPeer keepaliveTime, whole seconds
    same_as: bool = False  # iBGP: the peer's AS is the node's (or localASNumber)
    filters: tuple[str, ...] = ()  # BGPPeer filters, in order
    import_filter: tuple[str, ...] = ()  # lines of `import filter { ... }`
    export_filter: tuple[str, ...] = ()  # lines of `export filter { ... }`


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
    filter_functions: list[str] = field(default_factory=list)  # lines: every BGPFilter's functions

    def is_internal(self, peer: BirdPeer) -> bool:
        return peer.same_as

    def aggregation(self, block: str) -> list[str]:
        """`calico_aggr` lines of one affine block."""
        return bgpfilter.aggregation(block, self.normal_priority)

    def kernel_priority(self) -> list[str]:
        """`calico_kernel_programming` lines giving BGP routes their kernel metric."""
        return bgpfilter.kernel_priority(self.normal_priority)


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
    filters = {f.metadata.name: f for f in _by_kind(resources, cr.BGPFilter)}
    normal = bgpconf.ipv4NormalRoutePriority or DEFAULT_NORMAL_PRIORITY

    def with_filters(peer: BirdPeer, names: tuple[str, ...] = ()) -> BirdPeer:
        """The peer with its iBGP/eBGP flag and the bodies of its import and export filters."""
        same_as = peer.asn == (peer.local_asn or my_asn)
        return replace(
            peer,
            same_as=same_as,
            filters=names,
            import_filter=tuple(
                bgpfilter.import_filter(names, filters, same_as=same_as, normal_priority=normal)
            ),
            export_filter=tuple(
                bgpfilter.export_filter(names, filters, same_as=same_as, normal_priority=normal)
            ),
        )

    pool_specs = {str(ipaddress.ip_network(p.spec.cidr)): p.spec for p in _by_kind(resources, cr.IPPool)}
    pools = [
        {
            "cidr": str(p),
            "disable_bgp_export": bool(pool_specs.get(str(p)) and pool_specs[str(p)].disableBGPExport),
        }
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
        normal_priority=normal,
        filter_functions=bgpfilter.function_definitions(filters.values()),
    )

    if mesh:
        for other in cluster.nodes:
            if other.name == node or other.name not in topo.node_address:
                continue
            ip = str(topo.node_address[other.name].ip)
            cfg.peers.append(
                with_filters(
                    BirdPeer(
                        name=f"Mesh_{_protocol_id(ip)}",
                        kind="mesh",
                        ip=ip,
                        asn=topo.node_asn[other.name],
                        source_address=my_ip,
                        passive=ip > my_ip,  # calico-node compares the address strings
                    )
                )
            )

    labels = topo.node_labels(node)
    for peer in _by_kind(resources, cr.BGPPeer):
        spec = peer.spec
        if spec.localWorkloadSelector is not None:
            for ip in _local_workloads(topo, cluster.name, node, spec):
                cfg.peers.append(
                    with_filters(
                        BirdPeer(
                            name=f"Local_Workload_{_protocol_id(ip)}",
                            kind="local_workload",
                            ip=ip,
                            asn=spec.asNumber or 0,  # validated: localWorkloadSelector requires asNumber
                            source_address=None,
                            passive=True,
                            ttl_security_off=True,
                            source_resource=peer.metadata.name,
                            local_asn=spec.localASNumber,
                            keepalive=_seconds(spec.keepaliveTime),
                        ),
                        tuple(spec.filters),
                    )
                )
            continue
        for kind, ip, asn, is_node in _sessions_of(topo, cluster.name, node, labels, spec):
            if ip == my_ip:
                continue  # calico-node skips itself
            prefix = "Node" if kind == "node" else "Global"
            local_asn = spec.localASNumber
            cfg.peers.append(
                with_filters(
                    BirdPeer(
                        name=f"{prefix}_{_protocol_id(ip)}",
                        kind=kind,
                        ip=ip,
                        asn=asn,
                        source_address=my_ip if spec.sourceAddress in (None, "UseNodeIP") else None,
                        # calico-node makes the higher address passive between two Calico
                        # nodes of a global peering, as in the mesh
                        passive=kind == "global" and is_node and ip > my_ip,
                        allow_local_as=spec.numAllowedLocalASNumbers or None,
                        # nextHopMode Keep, or the legacy keepOriginalNextHop on eBGP only
                        next_hop_keep=spec.nextHopMode == "Keep"
                        or (bool(spec.keepOriginalNextHop) and asn != (local_asn or my_asn)),
                        next_hop_self=spec.nextHopMode == "Self",
                        source_resource=peer.metadata.name,
                        local_asn=local_asn,
                        keepalive=_seconds(spec.keepaliveTime),
                    ),
                    tuple(spec.filters),
                )
            )
    # Two resources (or a forward and a reverse peering) naming the same neighbour yield one
    # BIRD protocol: the first one found.
    seen: set[str] = set()
    cfg.peers = [p for p in cfg.peers if not (p.ip in seen or seen.add(p.ip))]
    cfg.peers.sort(key=lambda p: p.name)  # calico-node orders its protocols by name
    return cfg


def _sessions_of(
    topo: Topology, cluster: str, node: str, labels: dict[str, str], spec: cr.BGPPeerSpec
) -> list[tuple[str, str, int, bool]]:
    """(kind, ip, asn, is a Calico node) of every session a BGPPeer gives `node`.

    Forward: the node is on the BGPPeer's node side (`node`, `nodeSelector`, or all nodes) and
    peers with its peerIP or the nodes its peerSelector picks. Reverse (reversePeering Auto,
    Calico's default): the node is picked by peerSelector and peers back with the node side.
    """
    out: list[tuple[str, str, int, bool]] = []
    if _on_node_side(topo, node, spec):
        kind = "global" if spec.node is None and spec.nodeSelector is None else "node"
        out += [(kind, ip, asn, is_node) for ip, asn, is_node in _peer_targets(topo, cluster, spec)]
    if (
        spec.peerSelector is not None
        and spec.reversePeering != "Manual"
        and compile_selector(spec.peerSelector)(labels)
    ):
        out += [
            ("node", str(topo.node_address[n].ip), topo.node_asn[n], True)
            for n in _node_side(topo, cluster, spec)
            if n in topo.node_address
        ]
    return out


def _local_workloads(topo: Topology, cluster: str, node: str, spec: cr.BGPPeerSpec) -> list[str]:
    """IPs of the workloads on `node` a localWorkloadSelector BGPPeer peers with (none if the
    BGPPeer's `node`/`nodeSelector` leaves this node out)."""
    if not _on_node_side(topo, node, spec):
        return []
    match = compile_selector(spec.localWorkloadSelector or "")
    return [str(w.ip) for w in topo.workloads if w.node == node and match(topo.workload_labels(w.vm))]


def _on_node_side(topo: Topology, node: str, spec: cr.BGPPeerSpec) -> bool:
    """Whether a BGPPeer of `node`'s cluster applies to it (one node's share of `_node_side`,
    without evaluating the selector for every node of the cluster)."""
    if spec.node is not None:
        return node == spec.node
    if spec.nodeSelector is not None:
        return compile_selector(spec.nodeSelector)(topo.node_labels(node))
    return True


def _node_side(topo: Topology, cluster: str, spec: cr.BGPPeerSpec) -> list[str]:
    """The nodes a BGPPeer applies to: `node`, the `nodeSelector` matches, or every node."""
    nodes = [n.name for n in topo.spec.cluster(cluster).nodes]
    if spec.node is not None:
        return [n for n in nodes if n == spec.node]
    if spec.nodeSelector is not None:
        match = compile_selector(spec.nodeSelector)
        return [n for n in nodes if match(topo.node_labels(n))]
    return nodes


def _peer_targets(topo: Topology, cluster: str, spec: cr.BGPPeerSpec) -> list[tuple[str, int, bool]]:
    """(ip, asn, is a Calico node) of the peers a BGPPeer names: its peerIP, or the nodes its
    peerSelector picks."""
    if spec.peerIP is not None:
        ip = spec.peerIP
        return [(ip, spec.asNumber or _asn_of(topo, ip), ip in _node_ips(topo))]
    if spec.peerSelector is not None:
        match = compile_selector(spec.peerSelector)
        out = []
        for n in topo.spec.cluster(cluster).nodes:
            if match(topo.node_labels(n.name)) and n.name in topo.node_address:
                out.append((str(topo.node_address[n.name].ip), topo.node_asn[n.name], True))
        return out
    return []


def _node_ips(topo: Topology) -> set[str]:
    return {str(a.ip) for a in topo.node_address.values()}


def _asn_of(topo: Topology, ip: str) -> int:
    for tor, addr in topo.tor_address.items():
        if str(addr.ip) == ip:
            return topo.spec.router(tor).asn
    for node, addr in topo.node_address.items():
        if str(addr.ip) == ip:
            return topo.node_asn[node]
    raise LookupError(f"no lab entity has address {ip}")


def _seconds(duration: str | None) -> int | None:
    """A BGPPeer duration ('10s', '1m') as BIRD's whole seconds (at least 1), None if unset."""
    return None if duration is None else max(1, round(cr.parse_duration(duration)))


def workload_peering_ip(resources: list[Any]) -> str | None:
    """The cluster's localWorkloadPeeringIPV4 (BGPConfiguration 'default'), if set."""
    return bgp_configuration(resources).localWorkloadPeeringIPV4


def peering_workloads(topo: Topology, node: str, resources: list[Any]) -> list[str]:
    """IPs of the workloads on `node` that some localWorkloadSelector BGPPeer peers with: the
    ones whose host-side interface carries the workload peering IP (Felix's part)."""
    if workload_peering_ip(resources) is None:
        return []
    cluster, _ = topo.spec.node(node)
    out: list[str] = []
    for peer in _by_kind(resources, cr.BGPPeer):
        if peer.spec.localWorkloadSelector is not None:
            out += [ip for ip in _local_workloads(topo, cluster.name, node, peer.spec) if ip not in out]
    return out


def peering_ip_on(topo: Topology, node: str, resources: list[Any], workload_ip: str) -> str | None:
    """The peering IP `node` provisions on a workload's interface: localWorkloadPeeringIPV4
    when a localWorkloadSelector BGPPeer selects that workload there, else None."""
    return workload_peering_ip(resources) if workload_ip in peering_workloads(topo, node, resources) else None
