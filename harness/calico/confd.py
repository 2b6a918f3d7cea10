"""How calico-node (confd) turns a cluster's Calico resources into one node's BIRD config.

An emulation of calico-node's routing logic, not Calico itself. It computes what Calico's
confd computes for its BIRD 1.6 templates (bird.cfg, bird_aggr.cfg, bird_ipam.cfg and their
IPv6 twins), from a `harness.calico.cluster.Cluster` and nothing else (facts from
shared/design/calico-semantics.md and Calico's confd: its templates, template functions, BGP
processor and peer computation; the code and wording are kvlab's). `bird-configs/node.conf.j2`
renders the result as one file; `kvlab conformance` measures it against Calico's own corpus.

Peerings (calico-node's v1 peers), for the node under test:
- mesh (`Mesh_<ip>`): every other node with an address of the family, unless this node or
  that one is a route reflector (has a cluster ID); passive towards higher addresses (string
  order); `nodeMeshPassword`, `nodeMeshMaxRestartTime`; the peer's listen port;
- BGPPeers without `node`/`nodeSelector` first (`Global_<ip>`), then the ones that apply to this
  node (`Node_<ip>`, dropped where a global peering to the same address and port exists), then
  reverse peerings (`reversePeering` not Manual): a node picked by `peerSelector`, or owning a
  `peerIP` with the BGPPeer's AS, peers back with the BGPPeer's node side. The first peering
  of an address and port wins (BGPPeers in name order);
- a `peerIP` BGPPeer to a Calico node is passive from the lower address; its port is the
  node's listen port when `peerIP` has none; `<ip>:<port>` adds `_port_<port>` to the name;
- `localWorkloadSelector` (`Local_Workload_<ip>`): one passive peering per workload Felix
  reports for that BGPPeer on this node, no source address;
- iBGP is the peer's AS equal to the node's (or the BGPPeer's `localASNumber`); an iBGP peer
  without this route reflector's cluster ID is its `rr client`.

Route priority, BGPFilters and aggregation: `harness.calico.bgpfilter`. IP pools: rejected on
export when `disableBGPExport`, else accepted; the kernel accepts what BIRD programs (pools
without encapsulation by default, `programClusterRoutes`) and rejects the rest (Felix's).

kvlab's own choice (README, "What the calico-node emulation covers"): the kernel protocol
imports with `calico_kernel_import` (the node's own elevated workload route gets preference
200), and logs to a file. Not rendered: routes for Kubernetes Services (service IP
advertisement); BIRD programming IPIP routes (Calico's BIRD fork's `krt_tunnel`) is refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from harness.calico import bgpfilter
from harness.calico import cluster as cc
from harness.calico import resources as cr
from harness.errors import InputError
from harness.topology import Topology

DEFAULT_NORMAL_PRIORITY = 1024
DEFAULT_ELEVATED_PRIORITY = 512
DIRECT_EXCLUDED = ("cali*", "kube-ipvs*")
"""Interfaces calico-node's `direct` protocol always ignores (workloads, kube-proxy's IPVS)."""
FELIX_TUNNELS = ("*.cali", "*.calico")
"""Interfaces of routes Felix programs (VXLAN, WireGuard): never exported over iBGP."""
IPIP_TUNNEL = "tunl0"


class Unsupported(InputError):
    """Calico renders something here that this emulation does not (exit 2, the reason says what)."""


@dataclass(frozen=True)
class PeerData:
    """One peering as calico-node computes it, before it becomes a BIRD protocol."""

    ip: str
    asn: int
    port: int | None = None
    local_asn: int | None = None
    source_address: str = "UseNodeIP"  # "UseNodeIP" | "None"
    keep_next_hop: bool = False
    next_hop_mode: str | None = None
    calico_node: bool = False
    ttl_security: int = 0
    filters: tuple[str, ...] = ()
    allow_local_as: int = 0
    reachable_by: str | None = None
    password: str | None = None
    restart_time: int | None = None
    keepalive: int | None = None
    rr_cluster_id: str | None = None
    passive: bool = False
    local_workload: bool = False
    resource: str | None = None  # the BGPPeer it comes from


@dataclass(frozen=True)
class BirdPeer:
    """One `protocol bgp` of a node's BIRD."""

    name: str
    kind: str  # "mesh" | "global" | "node" | "local_workload"
    ip: str
    asn: int
    source_address: str | None
    port: int | None = None
    passive: bool = False
    allow_local_as: int | None = None
    next_hop_keep: bool = False
    next_hop_self: bool = False
    ttl_security: int | None = None  # hops of `ttl security on; multihop N`; None: off
    graceful_restart: int | None = None  # `graceful restart time N`
    rr_cluster_id: str | None = None  # set: this node reflects routes to the peer (`rr client`)
    password: str | None = None
    source_resource: str | None = None  # BGPPeer name, None for mesh
    local_asn: int | None = None  # BGPPeer localASNumber
    keepalive: int | None = None  # BGPPeer keepaliveTime, whole seconds
    same_as: bool = False  # iBGP: the peer's AS is the node's (or localASNumber)
    filters: tuple[str, ...] = ()  # BGPPeer filters, in order
    import_filter: tuple[str, ...] = ()  # lines of `import filter { ... }`
    export_filter: tuple[str, ...] = ()  # lines of `export filter { ... }`


@dataclass(frozen=True)
class Aggregate:
    """One affine block in `calico_aggr` (its statements only when confirmed)."""

    cidr: str
    state: str
    lines: tuple[str, ...]


@dataclass
class NodeBirdConfig:
    """Everything node.conf.j2 needs for one node and address family."""

    node: str
    family: int
    router_id: str
    node_ip: str | None  # None: the node has no address of this family (no BGP rendered)
    asn: int
    log_file: str | None = None
    normal_priority: int = DEFAULT_NORMAL_PRIORITY
    debug: str | None = "{ states }"  # device/direct protocols (None: no debug)
    peer_debug: str | None = "{ states, routes, filters, events }"  # BGP protocols
    listen_address: str | None = None
    listen_port: int | None = None
    direct_interfaces: tuple[tuple[bool, str], ...] = ()  # (excluded, pattern), in order
    communities: list[tuple[str, list[str]]] = field(default_factory=list)  # (cidr, statements)
    static_routes: list[str] = field(default_factory=list)  # blackholed block CIDRs
    peer_routes: list[tuple[str, str]] = field(default_factory=list)  # (peer /32 or /128, via)
    aggregates: list[Aggregate] = field(default_factory=list)
    export_rejects: list[str] = field(default_factory=list)  # disabled pools: `if (...) then { reject; }`
    tunnel_interfaces: tuple[str, ...] = FELIX_TUNNELS
    rr_accepts: list[str] = field(default_factory=list)  # service CIDRs a route reflector accepts
    export_accepts: list[str] = field(default_factory=list)  # enabled pools: `if (...) then { accept; }`
    kernel_lines: list[str] = field(default_factory=list)  # WireGuard and pool statements
    filter_functions: list[str] = field(default_factory=list)  # lines: every BGPFilter's functions
    peers: list[BirdPeer] = field(default_factory=list)

    def kernel_priority(self) -> list[str]:
        """`calico_kernel_programming` lines giving BGP routes their kernel metric."""
        return bgpfilter.kernel_priority(self.normal_priority)

    @property
    def max_length(self) -> int:
        return 32 if self.family == 4 else 128


# -- the lab's entry point -----------------------------------------------------------------


def node_bird_config(
    topo: Topology, node: str, resources: list[Any], log_file: str | None = None, family: int = 4
) -> NodeBirdConfig:
    """A lab node's BIRD (family 4) or bird6 (family 6) configuration from its cluster's
    Calico resources."""
    cluster, _ = topo.spec.node(node)
    return node_config(cc.from_topology(topo, cluster.name, resources), node, family, log_file)


def bgp_configuration(resources: list[Any]) -> cr.BGPConfigurationSpec:
    """The `default` BGPConfiguration's spec, or an empty one (Calico's defaults apply)."""
    return cc.Cluster(nodes={}, resources=tuple(resources)).default_config()


# -- one node, one family --------------------------------------------------------------------


def node_config(
    cluster: cc.Cluster, node: str, family: int = 4, log_file: str | None = None
) -> NodeBirdConfig:
    """What confd renders for `node` and address family 4 or 6. InputError for an unknown node,
    Unsupported for what this emulation does not render."""
    if node not in cluster.nodes:
        raise InputError(
            f"no Calico Node named {node!r} (known: {', '.join(sorted(cluster.nodes)) or 'none'})"
        )
    me = cluster.nodes[node]
    default = cluster.default_config()
    own = cluster.node_config(node)
    address = me.address(family)
    normal = (default.ipv4NormalRoutePriority if family == 4 else default.ipv6NormalRoutePriority) or (
        DEFAULT_NORMAL_PRIORITY
    )
    debug, peer_debug = _debug_modes(own, default)
    cfg = NodeBirdConfig(
        node=node,
        family=family,
        router_id=_router_id(cluster, me),
        node_ip=str(address.ip) if address else None,
        asn=cluster.asn(node),
        log_file=log_file,
        normal_priority=normal,
        debug=debug,
        peer_debug=peer_debug,
        listen_address=str(address.ip) if address and default.bindMode == "NodeIP" else None,
        listen_port=cluster.listen_port(node),
        direct_interfaces=(
            *((True, i) for i in default.ignoredInterfaces or []),
            *((True, i) for i in DIRECT_EXCLUDED),
            (False, "*"),
        ),
        communities=_communities(own, default, family),
    )
    _blocks(cfg, cluster.blocks.get(node, ()))
    _pools(cfg, cluster, me)
    cfg.kernel_lines = _wireguard(cluster, me, family) + cfg.kernel_lines
    peers = _mesh(cluster, node, family) + _peerings(cluster, node, family)
    cfg.peer_routes = [
        (f"{data.ip}/{cfg.max_length}", data.reachable_by)
        for kind, data in peers
        if kind != "mesh" and data.reachable_by
    ]
    if cfg.node_ip is None:
        return cfg  # confd renders no BGP for a family the node has no address of
    filters = {f.metadata.name: f for f in cluster.of_kind(cr.BGPFilter)}
    cfg.filter_functions = bgpfilter.function_definitions(filters.values(), family)
    built = (_bird_peer(cfg, me, kind, data, filters) for kind, data in peers)
    cfg.peers = sorted((p for p in built if p is not None), key=lambda p: p.name)
    return cfg


def _router_id(cluster: cc.Cluster, me: cc.CalicoNode) -> str:
    """CALICO_ROUTER_ID (an address, or "hash": 4 bytes of SHA-256 of the node name, first
    octet kept below 224), else the node's IPv4 address (for IPv6 too: router IDs are IPv4)."""
    if cluster.router_id == "hash":
        b = hashlib.sha256(me.name.encode()).digest()[:4]
        first = b[0] - 32 if b[0] > 223 else b[0]
        return f"{first}.{b[1]}.{b[2]}.{b[3]}"
    if cluster.router_id:
        return cluster.router_id
    return str(me.ipv4.ip) if me.ipv4 else ""


def _debug_modes(
    own: cr.BGPConfigurationSpec | None, default: cr.BGPConfigurationSpec
) -> tuple[str | None, str | None]:
    """BIRD debug options from logSeverityScreen (node's own, else default): debug -> all,
    info (the default) -> states (BGP: states, routes, filters, events), anything else -> none."""
    severity = (
        own.logSeverityScreen if own and own.logSeverityScreen else default.logSeverityScreen
    ) or "info"
    level = severity.lower()
    if level == "debug":
        return "all", "all"
    if level == "info":
        return "{ states }", "{ states, routes, filters, events }"
    return None, None


def _communities(
    own: cr.BGPConfigurationSpec | None, default: cr.BGPConfigurationSpec, family: int
) -> list[tuple[str, list[str]]]:
    """`apply_communities` rules: prefixAdvertisements of the node's own BGPConfiguration if it
    has any, else the default's; each community a value or a name of that resource's
    `communities`; unknown names dropped; values deduplicated and sorted."""
    source = own if own is not None and own.prefixAdvertisements is not None else default
    named = {c.name: c.value for c in source.communities or []}
    out = []
    for adv in source.prefixAdvertisements or []:
        if ipaddress.ip_network(adv.cidr).version != family:
            continue
        values = sorted(
            {
                c if cr.accepts(cr.parse_community, c) else named[c]
                for c in adv.communities
                if cr.accepts(cr.parse_community, c) or c in named
            }
        )
        statements = [f"{attr}.add({value});" for attr, value in (_community_parts(v) for v in values)]
        if statements:
            out.append((adv.cidr, statements))
    return out


def _community_parts(value: str) -> tuple[str, str]:
    parts = value.split(":")
    attr = "bgp_community" if len(parts) == 2 else "bgp_large_community"
    return attr, "(" + ", ".join(parts) + ")"


def _blocks(cfg: NodeBirdConfig, blocks: Iterable[cc.BlockAffinity]) -> None:
    """Static blackholes (not for single addresses) and `calico_aggr` of the node's blocks of the
    family, in the order confd lists them; pending affinities are not the node's yet."""
    mine = [b for b in blocks if b.cidr.version == cfg.family and b.state != "pending"]
    for b in sorted(mine, key=lambda b: str(b.cidr).replace("/", "-")):
        cidr = str(b.cidr)
        if b.cidr.prefixlen != cfg.max_length:
            cfg.static_routes.append(cidr)
        lines = bgpfilter.aggregation(cidr, cfg.normal_priority) if b.state in ("", "confirmed") else []
        cfg.aggregates.append(Aggregate(cidr, b.state, tuple(lines)))


def _pools(cfg: NodeBirdConfig, cluster: cc.Cluster, me: cc.CalicoNode) -> None:
    """Export and kernel statements of the family's IP pools (sorted as confd sorts them)."""
    policy = cluster.default_config().programClusterRoutes or "EnabledNoEncapOnly"
    ipip_by_bird = policy in ("Enabled", "EnabledIPIPOnly")
    noencap_by_bird = policy in ("Enabled", "EnabledNoEncapOnly")
    cfg.tunnel_interfaces = FELIX_TUNNELS if ipip_by_bird else (*FELIX_TUNNELS, IPIP_TUNNEL)
    subnet = me.address(cfg.family)
    rejects, accepts, kernel = [], [], []
    for pool in cluster.of_kind(cr.IPPool):
        net = ipaddress.ip_network(pool.spec.cidr, strict=False)
        if net.version != cfg.family:
            continue
        cidr = str(net)
        vxlan = pool.spec.vxlanMode in ("Always", "CrossSubnet")
        ipip = pool.spec.ipipMode in ("Always", "CrossSubnet")
        by_bird = not vxlan and (ipip_by_bird if ipip else noencap_by_bird)
        if pool.spec.disableBGPExport:
            rejects.append(cidr)
        else:
            accepts.append(cidr)
        if cfg.family == 4 and subnet is None:
            continue  # confd programs IPv4 pools only knowing the node's subnet
        if by_bird and ipip and cfg.family == 4:
            raise Unsupported(
                f"IPPool {pool.metadata.name}: BIRD would program its IPIP routes (programClusterRoutes "
                f"{policy}): that takes Calico's BIRD fork (krt_tunnel); Debian's BIRD 1.6 has none"
            )
        if by_bird and cfg.family == 4:
            kernel.append((cidr, "accept;"))
        elif not by_bird:
            kernel.append((cidr, "reject;"))
    # confd sorts the statements' text: the CIDR's text, then ")"
    cfg.export_rejects = sorted(rejects, key=lambda c: c + ")")
    cfg.export_accepts = sorted(accepts, key=lambda c: c + ")")
    cfg.kernel_lines += [
        f"if (net ~ {c}) then {{ {action} }}" for c, action in sorted(kernel, key=lambda k: k[0] + ")")
    ]
    if cluster.nodes[me.name].rr_cluster_id:
        default = cluster.default_config()
        cfg.rr_accepts = [
            s.cidr
            for s in [*(default.serviceLoadBalancerIPs or []), *(default.serviceExternalIPs or [])]
            if s.cidr and ipaddress.ip_network(s.cidr).version == cfg.family
        ]


def _wireguard(cluster: cc.Cluster, me: cc.CalicoNode, family: int) -> list[str]:
    """Kernel rejects of BGP routes via WireGuard peers (Felix routes those), if this node runs WireGuard."""
    if not (me.wireguard_v4 if family == 4 else me.wireguard_v6):
        return []
    out = []
    for other in cluster.nodes.values():
        address = other.address(family)
        wg = other.wireguard_v4 if family == 4 else other.wireguard_v6
        if other.name != me.name and address and wg:
            out.append(f"if (defined(bgp_next_hop) && bgp_next_hop = {address.ip}) then {{ reject; }}")
    return sorted(out)


# -- peerings ------------------------------------------------------------------------------


def _mesh(cluster: cc.Cluster, node: str, family: int) -> list[tuple[str, PeerData]]:
    me = cluster.nodes[node]
    default = cluster.default_config()
    mesh = default.nodeToNodeMeshEnabled is not False
    if not mesh or me.rr_cluster_id or me.address(family) is None:
        return []
    my_ip = str(me.address(family).ip)  # type: ignore[union-attr]
    out = []
    for other in cluster.nodes.values():
        address = other.address(family)
        if address is None or str(address.ip) == my_ip or other.rr_cluster_id:
            continue
        ip = str(address.ip)
        out.append(
            (
                "mesh",
                PeerData(
                    ip=ip,
                    asn=other.asn or cluster.asn(node),  # a peer without its own AS: this node's
                    port=cluster.listen_port(other.name),
                    passive=ip > my_ip,  # calico-node compares the address strings
                    password=cluster.secret(default.nodeMeshPassword),
                    restart_time=_seconds(default.nodeMeshMaxRestartTime),
                    calico_node=True,
                ),
            )
        )
    return out


def _peerings(cluster: cc.Cluster, node: str, family: int) -> list[tuple[str, PeerData]]:
    """The global and node-specific peerings of `node` (calico-node's v1 peers of one node)."""
    emitted: dict[tuple[str, str, int | None], PeerData] = {}

    def emit(scope: str, peer: PeerData) -> None:
        key = (scope, peer.ip, peer.port)
        if key in emitted or (scope == "node" and ("global", peer.ip, peer.port) in emitted):
            return
        emitted[key] = peer

    peers = sorted(cluster.of_kind(cr.BGPPeer), key=lambda p: p.metadata.name)
    for global_pass in (True, False):
        for res in peers:
            spec = res.spec
            if global_pass != (spec.node is None and spec.nodeSelector is None):
                continue
            if not global_pass and not _applies_to(cluster, spec, node):
                continue
            for peer in _forward(cluster, node, res):
                emit("global" if global_pass else "node", peer)
    for res in peers:
        if node in _reverse_side(cluster, res.spec):
            for other in _node_side(cluster, res.spec):
                v4, v6 = _reverse_families(res.spec)
                for peer in _node_as_peers(cluster, other, res, v4=v4, v6=v6):
                    emit("node", peer)
    return [
        ("local_workload" if p.local_workload else scope, p)
        for (scope, _, _), p in emitted.items()
        if ipaddress.ip_address(p.ip).version == family
    ]


def _node_side(cluster: cc.Cluster, spec: cr.BGPPeerSpec) -> list[str]:
    """The nodes a BGPPeer applies to: `node`, those its `nodeSelector` picks, or all."""
    if spec.nodeSelector is not None:
        return cluster.nodes_matching(spec.nodeSelector)
    if spec.node is not None:
        return [spec.node]
    return sorted(cluster.nodes)


def _applies_to(cluster: cc.Cluster, spec: cr.BGPPeerSpec, node: str) -> bool:
    """Whether `node` is on a BGPPeer's node side (`node in _node_side(...)`, without the list)."""
    if spec.nodeSelector is not None:
        return cluster.selects(spec.nodeSelector, node)
    if spec.node is not None:
        return node == spec.node
    return node in cluster.nodes


def _reverse_side(cluster: cc.Cluster, spec: cr.BGPPeerSpec) -> list[str]:
    """The nodes that peer back with a BGPPeer's node side (automatic reverse peering)."""
    if spec.reversePeering == "Manual" or spec.localWorkloadSelector is not None:
        return []
    if spec.peerSelector is not None:
        return cluster.nodes_matching(spec.peerSelector)
    if spec.peerIP is None:
        return []
    ip, port = cr.split_peer_ip(spec.peerIP)
    return _nodes_with(cluster, str(ip), spec.asNumber, port)


def _reverse_families(spec: cr.BGPPeerSpec) -> tuple[bool, bool]:
    if spec.peerSelector is not None:
        return True, True
    ip, _ = cr.split_peer_ip(spec.peerIP or "")
    return ip.version == 4, ip.version == 6


def _nodes_with(cluster: cc.Cluster, ip: str, asn: int | None, port: int | None) -> list[str]:
    """Nodes owning `ip` with AS `asn` (the global AS when unset) listening on `port` (if given:
    a node's own listenPort must equal it, and else (even when it does) a default listenPort)."""
    want = asn or cluster.global_asn()
    default_port = cluster.default_config().listenPort
    out = []
    for name in cluster.nodes_by_ip.get(ipaddress.ip_address(ip), []):
        if cluster.asn(name) != want:
            continue
        own = cluster.node_config(name)
        own_port = own.listenPort if own is not None else None
        if port is not None and ((own_port and own_port != port) or (default_port and default_port != port)):
            continue
        out.append(name)
    return out


def _forward(cluster: cc.Cluster, node: str, res: cr.BGPPeer) -> list[PeerData]:
    """The peerings a BGPPeer names: its local workloads on `node`, the nodes its peerSelector
    picks, or its peerIP."""
    spec = res.spec
    if spec.localWorkloadSelector is not None:
        out = []
        for w in cluster.workloads.get(node, ()):
            if w.peer == res.metadata.name:
                for ip in (w.ipv4, w.ipv6):
                    if ip:
                        out.append(
                            PeerData(
                                ip=ip,
                                asn=spec.asNumber or 0,  # validated: localWorkloadSelector requires asNumber
                                local_asn=spec.localASNumber,
                                source_address="None",
                                filters=tuple(spec.filters),
                                passive=True,
                                local_workload=True,
                                resource=res.metadata.name,
                            )
                        )
        return out
    if spec.peerSelector is not None:
        return [p for n in cluster.nodes_matching(spec.peerSelector) for p in _node_as_peers(cluster, n, res)]
    if spec.peerIP is None:
        return []
    ip, port = cr.split_peer_ip(spec.peerIP)
    if port is None:
        owners = _nodes_with(cluster, str(ip), spec.asNumber, None)
        port = cluster.listen_port(owners[0]) if owners else None
    keep, mode = _next_hop(spec)
    return [
        _common(
            res,
            PeerData(
                ip=str(ip),
                asn=spec.asNumber or 0,
                port=port,
                local_asn=spec.localASNumber,
                keep_next_hop=keep,
                next_hop_mode=mode,
                calico_node=str(ip) in cluster.addresses,
                ttl_security=spec.ttlSecurity or 0,
                filters=tuple(spec.filters),
                allow_local_as=spec.numAllowedLocalASNumbers or 0,
                reachable_by=spec.reachableBy,
                resource=res.metadata.name,
            ),
            cluster,
        )
    ]


def _node_as_peers(
    cluster: cc.Cluster, node: str, res: cr.BGPPeer, v4: bool = True, v6: bool = True
) -> list[PeerData]:
    """A Calico node as the peer(s) of a BGPPeer: one per address family it has."""
    n = cluster.nodes.get(node)
    if n is None:
        return []
    spec = res.spec
    keep, mode = _next_hop(spec)
    out = []
    for want, address in ((v4, n.ipv4), (v6, n.ipv6)):
        if want and address is not None:
            out.append(
                _common(
                    res,
                    PeerData(
                        ip=str(address.ip),
                        asn=cluster.asn(node),
                        port=cluster.listen_port(node),
                        keep_next_hop=keep,
                        next_hop_mode=mode,
                        ttl_security=spec.ttlSecurity or 0,
                        filters=tuple(spec.filters),
                        reachable_by=spec.reachableBy,
                        rr_cluster_id=n.rr_cluster_id,
                        resource=res.metadata.name,
                    ),
                    cluster,
                )
            )
    return out


def _common(res: cr.BGPPeer, peer: PeerData, cluster: cc.Cluster) -> PeerData:
    """What every BGPPeer gives its peerings: password, source address, restart and keepalive times."""
    spec = res.spec
    return replace(
        peer,
        password=cluster.secret(spec.password),
        source_address=spec.sourceAddress or "UseNodeIP",
        restart_time=_seconds(spec.maxRestartTime),
        keepalive=_seconds(spec.keepaliveTime),
    )


def _next_hop(spec: cr.BGPPeerSpec) -> tuple[bool, str | None]:
    """(keepOriginalNextHop, nextHopMode): the legacy flag counts only without nextHopMode."""
    if spec.nextHopMode is not None:
        return False, spec.nextHopMode
    return bool(spec.keepOriginalNextHop), None


def _bird_peer(
    cfg: NodeBirdConfig, me: cc.CalicoNode, kind: str, peer: PeerData, filters: dict[str, cr.BGPFilter]
) -> BirdPeer | None:
    """The BIRD protocol of one peering (None for the node itself)."""
    if peer.ip == cfg.node_ip:
        return None
    prefix = {"mesh": "Mesh", "global": "Global", "node": "Node", "local_workload": "Local_Workload"}[kind]
    name = f"{prefix}_{_protocol_id(peer.ip)}"
    if peer.port and kind != "mesh":
        name += f"_port_{peer.port}"
    effective = peer.local_asn or cfg.asn
    same_as = peer.asn == effective
    names = () if kind == "mesh" else peer.filters
    passive = peer.passive or (kind != "node" and peer.calico_node and peer.ip > (cfg.node_ip or ""))
    return BirdPeer(
        name=name,
        kind=kind,
        ip=peer.ip,
        port=peer.port,
        asn=peer.asn,
        local_asn=peer.local_asn,
        source_address=cfg.node_ip if peer.source_address == "UseNodeIP" or kind == "mesh" else None,
        passive=passive,
        allow_local_as=peer.allow_local_as or None,
        next_hop_keep=peer.next_hop_mode == "Keep" or (peer.keep_next_hop and not same_as),
        next_hop_self=peer.next_hop_mode == "Self",
        ttl_security=peer.ttl_security or None,
        graceful_restart=peer.restart_time,
        rr_cluster_id=me.rr_cluster_id
        if same_as and me.rr_cluster_id and peer.rr_cluster_id != me.rr_cluster_id
        else None,
        password=peer.password or None,
        source_resource=peer.resource,
        keepalive=peer.keepalive,
        same_as=same_as,
        filters=names,
        import_filter=tuple(
            bgpfilter.import_filter(
                names, filters, same_as=same_as, normal_priority=cfg.normal_priority, family=cfg.family
            )
        ),
        export_filter=tuple(
            bgpfilter.export_filter(
                names, filters, same_as=same_as, normal_priority=cfg.normal_priority, family=cfg.family
            )
        ),
    )


def _protocol_id(ip: str) -> str:
    return ip.replace(".", "_").replace(":", "_")


def _seconds(duration: str | None) -> int | None:
    """A duration ('10s', '1m') as BIRD's whole seconds, None if unset."""
    return None if duration is None else round(cr.parse_duration(duration))


# -- workload peering (the node agent's part) ------------------------------------------------


def workload_peering_ip(resources: list[Any], family: int = 4) -> str | None:
    """The cluster's localWorkloadPeeringIPV4 (family 4) or localWorkloadPeeringIPV6 (family 6)
    (BGPConfiguration 'default'), if set."""
    conf = bgp_configuration(resources)
    return conf.localWorkloadPeeringIPV4 if family == 4 else conf.localWorkloadPeeringIPV6


def peering_workloads(topo: Topology, node: str, resources: list[Any], family: int = 4) -> list[str]:
    """IPs (of a family) of the workloads on `node` that some localWorkloadSelector BGPPeer peers
    with: the ones whose host-side interface carries the workload peering IP (Felix's part)."""
    if workload_peering_ip(resources, family) is None:
        return []
    cluster, _ = topo.spec.node(node)
    state = cc.from_topology(topo, cluster.name, resources)
    peers = {p.metadata.name: p for p in state.of_kind(cr.BGPPeer)}
    out: list[str] = []
    for w in state.workloads.get(node, ()):
        ip = w.ipv4 if family == 4 else w.ipv6
        if ip and ip not in out and node in _node_side(state, peers[w.peer].spec):
            out.append(ip)
    return out


def peering_ip_on(
    topo: Topology, node: str, resources: list[Any], workload_ip: str, family: int = 4
) -> str | None:
    """The peering IP of a family `node` provisions on a workload's interface (`workload_ip` the
    workload's address of that family): the family's localWorkloadPeeringIPV4/IPV6 when a
    localWorkloadSelector BGPPeer selects that workload there, else None."""
    if workload_ip in peering_workloads(topo, node, resources, family):
        return workload_peering_ip(resources, family)
    return None
