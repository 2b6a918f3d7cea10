"""Cross-checks of a lab: what no single field can say wrong (unique names, references,
address plan, AS numbers, nested clusters, the Calico resources against the lab). Collected,
never thrown one at a time: each is a `SpecIssue` naming file, field, line and reason."""

from __future__ import annotations

import ipaddress
from typing import Any

from harness.calico import resources as cr
from harness.calico.selector import SelectorError, compile_selector
from harness.errors import SpecIssue
from harness.spec import (
    DOC6_RANGE,
    FABRIC6_RESERVED,
    FABRIC_RANGE,
    FIRST_NODE_HOST,
    P2P_RANGE,
    POOL_RANGES,
    RACK_RANGE,
    ROUTER_ID_RANGE,
    WORKLOAD_PEERING6_RANGE,
    WORKLOAD_PEERING_IPS,
    Cluster,
    LabSpec,
    Router,
)
from harness.topology import rack_subnets, six
from harness.yamlsrc import SourceMap, format_path


def check_lab(spec: LabSpec, smap: SourceMap, resources: dict[str, list[Any]]) -> list[SpecIssue]:
    issues: list[SpecIssue] = []

    def bad(path: tuple, message: str) -> None:
        issues.append(smap.issue(path, message))

    # Unique names: routers, nodes, hosts and VMs all become namespaces.
    seen: dict[str, tuple] = {}
    entities: list[tuple[str, tuple]] = [(r.name, ("routers", i, "name")) for i, r in enumerate(spec.routers)]
    for ci, c in enumerate(spec.clusters):
        entities += [(n.name, ("clusters", ci, "nodes", ni, "name")) for ni, n in enumerate(c.nodes)]
    entities += [(h.name, ("hosts", i, "name")) for i, h in enumerate(spec.hosts)]
    entities += [(v.name, ("vms", i, "name")) for i, v in enumerate(spec.vms)]
    for name, path in entities:
        if name in seen:
            first = seen[name]
            bad(path, f"duplicate name '{name}' (already used at {_fmt(first)})")
        else:
            seen[name] = path
    _unique(spec.racks, "racks", bad)
    _unique(spec.clusters, "clusters", bad)

    routers = {r.name: r for r in spec.routers}
    for ri, rack in enumerate(spec.racks):
        tor = routers.get(rack.tor)
        if tor is None:
            bad(("racks", ri, "tor"), f"no router named '{rack.tor}'")
        elif tor.role != "tor":
            bad(("racks", ri, "tor"), f"router '{rack.tor}' has role '{tor.role}', a rack needs a 'tor'")
        if rack.subnet is not None:
            _in_fabric(rack.subnet, ("racks", ri, "subnet"), bad)
    tors_used = [r.tor for r in spec.racks]
    for ri, rack in enumerate(spec.racks):
        if tors_used.count(rack.tor) > 1 and tors_used.index(rack.tor) != ri:
            bad(("racks", ri, "tor"), f"ToR '{rack.tor}' already serves another rack")

    rack_names = {r.name for r in spec.racks}
    for li, link in enumerate(spec.links):
        a, b = link.endpoints
        for k, end in enumerate((a, b)):
            if end not in routers:
                bad(("links", li, "endpoints", k), f"no router named '{end}' (links join routers)")
        if a == b:
            bad(("links", li, "endpoints"), "a link needs two different routers")
        elif a in routers and b in routers and routers[a].asn == routers[b].asn:
            bad(
                ("links", li, "endpoints"),
                f"'{a}' and '{b}' share AS {routers[a].asn}: router links are eBGP, use different AS numbers",
            )
        if link.subnet is not None:
            _in_fabric(link.subnet, ("links", li, "subnet"), bad)
            if link.subnet.prefixlen not in (30, 31):
                bad(("links", li, "subnet"), f"{link.subnet} must be a /31 or /30 point-to-point subnet")

    for hi, host in enumerate(spec.hosts):
        if host.router not in routers:
            bad(("hosts", hi, "router"), f"no router named '{host.router}'")

    # Pools: allowed ranges, no overlap anywhere in the lab.
    pools: list[tuple[ipaddress.IPv4Network, tuple]] = []
    for ci, c in enumerate(spec.clusters):
        for pi, pool in enumerate(c.pools):
            path = ("clusters", ci, "pools", pi)
            if not any(pool.subnet_of(r) for r in POOL_RANGES):
                bad(path, f"pool {pool} is outside the lab pool ranges ({', '.join(map(str, POOL_RANGES))})")
            for other, opath in pools:
                if pool.overlaps(other):
                    bad(path, f"pool {pool} overlaps {other} ({_fmt(opath)})")
            pools.append((pool, path))
            if c.block_size < pool.prefixlen:
                bad(("clusters", ci, "block_size"), f"block size /{c.block_size} is larger than pool {pool}")
        blocks = sum(2 ** max(0, c.block_size - p.prefixlen) for p in c.pools)
        if c.pools and blocks < len(c.nodes):  # no pools at all: harness.labpools says so
            bad(
                ("clusters", ci, "block_size"),
                f"the pools hold only {blocks} block{'s' if blocks != 1 else ''} of /{c.block_size} for "
                f"{len(c.nodes)} nodes (each node needs its own block)",
            )

    _check_pools6(spec, bad)

    # Nodes: rack placement, addresses, eBGP to the ToR.
    for ci, c in enumerate(spec.clusters):
        for ni, n in enumerate(c.nodes):
            base = ("clusters", ci, "nodes", ni)
            if n.rack is not None and n.rack not in rack_names:
                bad((*base, "rack"), f"no rack named '{n.rack}'")
            if c.parent is not None:
                continue  # nested nodes run in VMs: _check_nested
            if n.vm is not None:
                bad(
                    (*base, "vm"),
                    f"node '{n.name}' names a VM, but cluster '{c.name}' has no parent: only nodes of a "
                    "nested cluster (parent: CLUSTER) run in VMs",
                )
            if n.rack is None:
                bad((*base, "rack"), "missing rack: every node sits in a rack (its ToR is its BGP neighbour)")
            if n.ip is not None and n.ip not in FABRIC_RANGE:
                bad((*base, "ip"), f"address {n.ip} is outside the lab fabric range {FABRIC_RANGE}")
            if n.rack in rack_names:
                rack = spec.rack(n.rack)
                if n.ip is not None and rack.subnet is not None and n.ip not in rack.subnet:
                    bad((*base, "ip"), f"address {n.ip} is not in rack {rack.name}'s subnet {rack.subnet}")
                tor = routers.get(rack.tor)
                node_asn = n.asn or c.asn
                if tor is not None and tor.asn == node_asn:
                    bad(
                        (*base, "asn") if n.asn else ("clusters", ci, "asn"),
                        f"node '{n.name}' and its ToR '{tor.name}' share AS {node_asn}: node<->ToR peering "
                        "must be eBGP (Calico's nested-cluster and live-migration guides: iBGP to the ToR "
                        "is not supported, there is no next-hop-self on that peering)",
                    )

    # VMs: on an existing node, IP inside that node's cluster pools, unique.
    vm_ips: dict[ipaddress.IPv4Address, int] = {}
    vm_ips6: dict[ipaddress.IPv6Address, int] = {}
    for vi, vm in enumerate(spec.vms):
        try:
            cluster, _ = spec.node(vm.node)
        except KeyError:
            bad(("vms", vi, "node"), f"no node named '{vm.node}'")
            continue
        if vm.cluster is not None and vm.cluster != cluster.name:
            bad(("vms", vi, "cluster"), f"node '{vm.node}' belongs to cluster '{cluster.name}'")
        if not any(vm.ip in p for p in cluster.pools):
            bad(
                ("vms", vi, "ip"),
                f"{vm.ip} is not in cluster '{cluster.name}' pools ({', '.join(map(str, cluster.pools))})",
            )
        if vm.ip in vm_ips:
            bad(("vms", vi, "ip"), f"{vm.ip} is already vms[{vm_ips[vm.ip]}]'s address")
        vm_ips[vm.ip] = vi
        if vm.ip6 is not None:
            if not cluster.pools6:
                bad(("vms", vi, "ip6"), f"cluster '{cluster.name}' has no IPv6 pools (pools6) for {vm.ip6}")
            elif not any(vm.ip6 in p for p in cluster.pools6):
                bad(
                    ("vms", vi, "ip6"),
                    f"{vm.ip6} is not in cluster '{cluster.name}' IPv6 pools "
                    f"({', '.join(map(str, cluster.pools6))})",
                )
            if vm.ip6 in vm_ips6:
                bad(("vms", vi, "ip6"), f"{vm.ip6} is already vms[{vm_ips6[vm.ip6]}]'s address")
            vm_ips6[vm.ip6] = vi

    _check_nested(spec, bad)
    _check_address_plan(spec, bad)
    issues += _check_resources(spec, resources)
    issues += _check_workload_peering(spec, smap, resources)
    return issues


def _check_pools6(spec: LabSpec, bad: Any) -> None:
    """IPv6 pools: inside the documentation range 2001:db8::/32, out of the fabric's /64, no
    overlap, room for a block per node; a dual-stack nested cluster's nodes run in mock VMs
    with an `ip6` (the node's IPv6 address; a QEMU guest runs `bird` only)."""
    pools6: list[tuple[ipaddress.IPv6Network, tuple]] = []
    for ci, c in enumerate(spec.clusters):
        if c.pools6 and c.parent is not None:
            _check_nested6(spec, ci, c, bad)
        for pi, pool in enumerate(c.pools6):
            path = ("clusters", ci, "pools6", pi)
            if pool.is_link_local:
                bad(path, f"pool {pool} is link-local: IPv6 pools come from {DOC6_RANGE}")
            elif not pool.subnet_of(DOC6_RANGE):
                bad(path, f"pool {pool} is outside the lab's IPv6 pool range {DOC6_RANGE}")
            elif pool.overlaps(FABRIC6_RESERVED):
                bad(path, f"pool {pool} overlaps {FABRIC6_RESERVED}, where the lab numbers its IPv6 fabric")
            for other, opath in pools6:
                if pool.overlaps(other):
                    bad(path, f"pool {pool} overlaps {other} ({_fmt(opath)})")
            pools6.append((pool, path))
            if c.block_size6 < pool.prefixlen:
                bad(
                    ("clusters", ci, "block_size6"), f"block size /{c.block_size6} is larger than pool {pool}"
                )
        if c.pools6:
            blocks = sum(2 ** min(32, max(0, c.block_size6 - p.prefixlen)) for p in c.pools6)
            if blocks < len(c.nodes):
                bad(
                    ("clusters", ci, "block_size6"),
                    f"the IPv6 pools hold only {blocks} block{'s' if blocks != 1 else ''} of "
                    f"/{c.block_size6} for {len(c.nodes)} nodes (each node needs its own block)",
                )


def _check_nested(spec: LabSpec, bad: Any) -> None:
    """Nested clusters (Calico's "BGP peering with nested clusters running on KubeVirt VMs"): a
    nested cluster's nodes are VMs of its parent cluster, and parent AS, nested AS and the ToR's
    AS must all differ (eBGP on both peerings)."""
    clusters = {c.name: c for c in spec.clusters}
    vms = {v.name: v for v in spec.vms}
    hosted: dict[str, tuple] = {}
    for ci, c in enumerate(spec.clusters):
        if c.parent is None:
            continue
        parent = clusters.get(c.parent)
        if c.parent == c.name:
            bad(("clusters", ci, "parent"), f"cluster '{c.name}' cannot be its own parent")
            continue
        if parent is None:
            bad(("clusters", ci, "parent"), f"no cluster named '{c.parent}'")
            continue
        if parent.parent is not None:
            bad(
                ("clusters", ci, "parent"),
                f"cluster '{c.parent}' is itself nested (parent '{parent.parent}'): only one level of "
                "nesting is supported",
            )
            continue
        if c.asn == parent.asn:
            bad(
                ("clusters", ci, "asn"),
                f"nested cluster '{c.name}' shares AS {c.asn} with its parent '{parent.name}': the "
                "workload peering must be eBGP (parent, nested cluster and ToR AS numbers must all differ)",
            )
        for ni, n in enumerate(c.nodes):
            base = ("clusters", ci, "nodes", ni)
            if n.rack is not None:
                bad(
                    (*base, "rack"),
                    f"node '{n.name}' of nested cluster '{c.name}' runs in a VM of '{c.parent}': "
                    "give 'vm', not 'rack'",
                )
            if n.ip is not None:
                bad((*base, "ip"), f"node '{n.name}' of nested cluster '{c.name}' has its VM's address")
            if n.vm is None:
                bad(
                    (*base, "vm"),
                    f"missing vm: nodes of nested cluster '{c.name}' run in a VM of cluster '{c.parent}'",
                )
                continue
            vm = vms.get(n.vm)
            if vm is None:
                bad((*base, "vm"), f"no VM named '{n.vm}'")
                continue
            if n.vm in hosted:
                bad((*base, "vm"), f"VM '{n.vm}' already runs node {_fmt(hosted[n.vm])}")
                continue
            hosted[n.vm] = base
            try:
                vm_cluster, vm_node = spec.node(vm.node)
            except KeyError:
                continue  # reported with the VM
            if vm_cluster.name != parent.name:
                bad(
                    (*base, "vm"),
                    f"VM '{n.vm}' runs in cluster '{vm_cluster.name}', "
                    f"not in the parent cluster '{parent.name}'",
                )
                continue
            asn = n.asn or c.asn
            parent_asn = vm_node.asn or parent.asn
            if asn == parent_asn and asn != c.asn:
                bad(
                    (*base, "asn"),
                    f"node '{n.name}' shares AS {asn} with its parent node '{vm_node.name}': the workload "
                    "peering must be eBGP",
                )
            if vm_node.rack is not None and any(r.name == vm_node.rack for r in spec.racks):
                tor = next((r for r in spec.routers if r.name == spec.rack(vm_node.rack).tor), None)
                if tor is not None and tor.asn == asn:
                    bad(
                        (*base, "asn") if n.asn else ("clusters", ci, "asn"),
                        f"nested node '{n.name}' shares AS {asn} with ToR '{tor.name}' of its parent node "
                        f"'{vm_node.name}': parent, nested cluster and ToR AS numbers must all differ "
                        "(Calico's nested-cluster guide: eBGP only)",
                    )


def _check_address_plan(spec: LabSpec, bad: Any) -> None:
    """Rack segments, link subnets and node addresses must not collide (racks in 198.18.0.0/16,
    router IDs in 198.18.0.0/24, automatic links in 198.19.0.0/16)."""
    seen: list[tuple[ipaddress.IPv4Network, tuple]] = []
    for ri, rack in enumerate(spec.racks):
        if rack.subnet is None:
            continue
        path = ("racks", ri, "subnet")
        if rack.subnet.overlaps(P2P_RANGE):
            bad(path, f"{rack.subnet} overlaps the range links are numbered from ({P2P_RANGE})")
        elif rack.subnet.overlaps(ROUTER_ID_RANGE):
            bad(path, f"{rack.subnet} overlaps {ROUTER_ID_RANGE}, reserved for router IDs")
        for other, opath in seen:
            if rack.subnet.overlaps(other):
                bad(path, f"{rack.subnet} overlaps {other} ({_fmt(opath)})")
        seen.append((rack.subnet, path))
    try:
        subnets = rack_subnets(spec)
    except StopIteration:
        bad(("racks",), f"no free /24 left in {RACK_RANGE} for the racks without a subnet")
        return
    node_ips: dict[ipaddress.IPv4Address, tuple] = {}
    for ri, rack in enumerate(spec.racks):
        net = subnets[rack.name]
        members = [
            (ci, ni, n)
            for ci, c in enumerate(spec.clusters)
            for ni, n in enumerate(c.nodes)
            if n.rack == rack.name
        ]
        automatic = [m for m in members if m[2].ip is None]
        if net.num_addresses - 1 - FIRST_NODE_HOST < len(automatic):
            bad(
                ("racks", ri, "subnet"),
                f"{net} has no room for {len(automatic)} nodes (node addresses start at .{FIRST_NODE_HOST})",
            )
        for ci, ni, n in members:
            if n.ip is None or n.ip not in net:
                continue
            path = ("clusters", ci, "nodes", ni, "ip")
            if n.ip == net.network_address:
                bad(path, f"address {n.ip} is the network address of rack {rack.name}'s subnet {net}")
            elif n.ip == net.broadcast_address:
                bad(path, f"address {n.ip} is the broadcast address of rack {rack.name}'s subnet {net}")
            elif n.ip == next(net.hosts()):
                bad(path, f"address {n.ip} is ToR {rack.tor}'s address in rack {rack.name}")
            elif n.ip in node_ips:
                bad(path, f"address {n.ip} is already {_fmt(node_ips[n.ip][:-1])}'s address")
            else:
                node_ips[n.ip] = path
    link_nets: list[tuple[ipaddress.IPv4Network, tuple]] = []
    for li, link in enumerate(spec.links):
        if link.subnet is None:
            continue
        path = ("links", li, "subnet")
        for rack in spec.racks:
            if link.subnet.overlaps(subnets[rack.name]):
                bad(path, f"{link.subnet} overlaps rack {rack.name}'s subnet {subnets[rack.name]}")
        for other, opath in link_nets:
            if link.subnet.overlaps(other):
                bad(path, f"{link.subnet} overlaps {other} ({_fmt(opath)})")
        link_nets.append((link.subnet, path))


def _check_resources(spec: LabSpec, resources: dict[str, list[Any]]) -> list[SpecIssue]:
    """Calico resources must agree with the lab: AS, pools, peers that exist, filters that exist."""
    issues: list[SpecIssue] = []
    router_ips = _declared_router_ips(spec)
    for cluster in spec.clusters:
        items = resources.get(cluster.name, [])
        filters = {r.metadata.name for r, _, _ in items if isinstance(r, cr.BGPFilter)}
        names: set[tuple[str, str]] = set()
        for res, smap, prefix in items:

            def bad(path: tuple, message: str, smap: SourceMap = smap, prefix: tuple = prefix) -> None:
                issues.append(smap.issue((*prefix, *path), message))

            key = (res.kind, res.metadata.name)
            if key in names:
                bad(("metadata", "name"), f"duplicate {res.kind} '{key[1]}'")
            names.add(key)
            if isinstance(res, cr.BGPConfiguration):
                _check_bgp_configuration(res, cluster, bad)
            elif isinstance(res, cr.IPPool):
                _check_ip_pool(res, cluster, bad)
            elif isinstance(res, cr.BGPPeer):
                _check_bgp_peer(res, cluster, filters, router_ips, bad)
    return issues


def _check_nested6(spec: LabSpec, ci: int, c: Cluster, bad: Any) -> None:
    """A nested cluster with IPv6 pools: each node's VM has an IPv6 address (the node's, which
    peers with the parent's localWorkloadPeeringIPV6) and is a mock VM."""
    vms = {v.name: v for v in spec.vms}
    for ni, n in enumerate(c.nodes):
        vm = vms.get(n.vm or "")
        if vm is None:
            continue  # reported by _check_nested
        if vm.ip6 is None:
            bad(
                ("clusters", ci, "nodes", ni, "vm"),
                f"node '{n.name}' of dual-stack nested cluster '{c.name}' runs in VM '{vm.name}', "
                "which has no ip6: the node's IPv6 address is its VM's (give the VM an ip6)",
            )
        if vm.backend != "mock":
            bad(
                ("clusters", ci, "pools6"),
                f"nested cluster '{c.name}' has IPv6 pools, but its node '{n.name}' runs in QEMU VM "
                f"'{vm.name}', whose guest runs IPv4 BIRD only: dual-stack nested nodes run in mock VMs",
            )


def is_workload_peering(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `ip` is a workload peering address of the address plan (169.254.0.179, the ULA)."""
    return ip in WORKLOAD_PEERING_IPS if ip.version == 4 else ip in WORKLOAD_PEERING6_RANGE


def _default_bgp_configuration(items: list[Any]) -> tuple[Any, SourceMap, tuple] | None:
    return next(
        (i for i in items if isinstance(i[0], cr.BGPConfiguration) and i[0].metadata.name == "default"), None
    )


def _check_workload_peering(
    spec: LabSpec, lab_map: SourceMap, resources: dict[str, list[Any]]
) -> list[SpecIssue]:
    """Workload BGP peering between a parent cluster and the nested clusters in its VMs: the
    parent needs localWorkloadPeeringIPV4 for localWorkloadSelector peers, the nested cluster
    disables its mesh and peers with that IP as the parent's AS (Calico's nested-cluster guide)."""
    issues: list[SpecIssue] = []
    clusters = {c.name: c for c in spec.clusters}
    for ci, cluster in enumerate(spec.clusters):
        items = resources.get(cluster.name, [])
        conf = _default_bgp_configuration(items)
        peering_ip = conf[0].spec.localWorkloadPeeringIPV4 if conf else None
        parent = clusters.get(cluster.parent) if cluster.parent is not None else None
        if parent is not None and parent.parent is not None:
            parent = None  # reported by _check_nested
        if parent is not None:
            if conf is None:
                issues.append(
                    lab_map.issue(
                        ("clusters", ci, "resources"),
                        f"nested cluster '{cluster.name}' needs a BGPConfiguration 'default' with "
                        "nodeToNodeMeshEnabled: false (peering with workloads and using a BGP mesh "
                        "within the cluster is not supported)",
                    )
                )
            elif conf[0].spec.nodeToNodeMeshEnabled is not False:
                res, smap, prefix = conf
                field = "nodeToNodeMeshEnabled" if res.spec.nodeToNodeMeshEnabled is not None else ""
                issues.append(
                    smap.issue(
                        (*prefix, "spec", *([field] if field else [])),
                        f"nested cluster '{cluster.name}' must set nodeToNodeMeshEnabled: false (the mesh "
                        "is on by default; peering with workloads and using a BGP mesh within the cluster "
                        "is not supported)",
                    )
                )
        parent_conf = _default_bgp_configuration(resources.get(parent.name, [])) if parent else None
        parent_ips = {
            4: parent_conf[0].spec.localWorkloadPeeringIPV4 if parent_conf else None,
            6: parent_conf[0].spec.localWorkloadPeeringIPV6 if parent_conf else None,
        }
        if parent is not None and cluster.pools6 and parent_ips[6] is None:
            issues.append(
                lab_map.issue(
                    ("clusters", ci, "pools6"),
                    f"nested cluster '{cluster.name}' has IPv6 pools, but its parent '{parent.name}' has "
                    "no localWorkloadPeeringIPV6 in its BGPConfiguration 'default' (e.g. "
                    "fdc9:9723:09bc::1): IPv6 workload peering is off until it is set",
                )
            )
        for res, smap, prefix in items:
            if not isinstance(res, cr.BGPPeer):
                continue
            if res.spec.localWorkloadSelector is not None:
                if peering_ip is None:
                    issues.append(
                        smap.issue(
                            (*prefix, "spec", "localWorkloadSelector"),
                            f"cluster '{cluster.name}' has no localWorkloadPeeringIPV4 in its "
                            "BGPConfiguration 'default': workload peering is off until it is set "
                            "(e.g. 169.254.0.179)",
                        )
                    )
                issues += _check_selected_asn(spec, cluster, res, smap, prefix)
                continue
            if res.spec.peerIP is None:
                continue
            try:
                ip = ipaddress.ip_address(res.spec.peerIP)
            except ValueError:
                continue  # reported by _check_bgp_peer
            if not is_workload_peering(ip):
                continue
            if parent is None:
                if cluster.parent is None:
                    issues.append(
                        smap.issue(
                            (*prefix, "spec", "peerIP"),
                            f"{ip} is a parent cluster's workload peering address: only a nested cluster "
                            f"(parent: CLUSTER) peers with it, and cluster '{cluster.name}' has no parent",
                        )
                    )
                continue
            if res.spec.asNumber != parent.asn:
                got = "no asNumber" if res.spec.asNumber is None else f"asNumber {res.spec.asNumber}"
                issues.append(
                    smap.issue(
                        (*prefix, "spec", "asNumber"),
                        f"the peering with the parent cluster's workload peering IP {ip} must use the "
                        f"parent '{parent.name}' AS {parent.asn}, not {got}",
                    )
                )
            parent_ip = parent_ips[ip.version]
            if parent_ip is not None and ipaddress.ip_address(parent_ip) != ip:
                field_name = "localWorkloadPeeringIPV4" if ip.version == 4 else "localWorkloadPeeringIPV6"
                issues.append(
                    smap.issue(
                        (*prefix, "spec", "peerIP"),
                        f"parent cluster '{parent.name}' listens on {field_name} {parent_ip}, not {ip}",
                    )
                )
    return issues


def _check_selected_asn(
    spec: LabSpec, cluster: Cluster, res: cr.BGPPeer, smap: SourceMap, prefix: tuple
) -> list[SpecIssue]:
    """A localWorkloadSelector peer's asNumber is the AS of the nested nodes in the VMs it selects."""
    issues = []
    try:
        match = compile_selector(res.spec.localWorkloadSelector or "")
    except SelectorError:
        return []  # reported by _check_bgp_peer
    for vm in spec.vms:
        try:
            vm_cluster, _ = spec.node(vm.node)
        except KeyError:
            continue
        nested = spec.nested_node_in(vm.name)
        if vm_cluster.name != cluster.name or nested is None or not match(vm.labels):
            continue
        ncluster, nnode = nested
        asn = nnode.asn or ncluster.asn
        if ncluster.parent == cluster.name and res.spec.asNumber != asn:
            issues.append(
                smap.issue(
                    (*prefix, "spec", "asNumber"),
                    f"BGPPeer '{res.metadata.name}' selects VM '{vm.name}', which runs node '{nnode.name}' "
                    f"of nested cluster '{ncluster.name}' (AS {asn}), but has asNumber {res.spec.asNumber}",
                )
            )
    return issues


def _check_bgp_configuration(res: cr.BGPConfiguration, cluster: Cluster, bad: Any) -> None:
    if res.metadata.name == "default" and res.spec.asNumber not in (None, cluster.asn):
        bad(
            ("spec", "asNumber"),
            f"asNumber {res.spec.asNumber} disagrees with cluster '{cluster.name}' asn "
            f"{cluster.asn} (set it in one place)",
        )
    peering: list[tuple[str, str | None, Any, str]] = [
        (
            "localWorkloadPeeringIPV4",
            res.spec.localWorkloadPeeringIPV4,
            WORKLOAD_PEERING_IPS,
            f"workload peering uses {', '.join(map(str, WORKLOAD_PEERING_IPS))}",
        ),
        (
            "localWorkloadPeeringIPV6",
            res.spec.localWorkloadPeeringIPV6,
            WORKLOAD_PEERING6_RANGE,
            f"IPv6 workload peering uses the ULA {WORKLOAD_PEERING6_RANGE} (the seeds' fdc9:9723:09bc::1)",
        ),
    ]
    for field_name, ip, allowed, plan in peering:
        if ip is not None and ipaddress.ip_address(ip) not in allowed:
            bad(("spec", field_name), f"{ip} is outside the lab's address plan: {plan}")


def _check_ip_pool(res: cr.IPPool, cluster: Cluster, bad: Any) -> None:
    net = ipaddress.ip_network(res.spec.cidr, strict=False)
    v4 = net.version == 4
    if net not in (cluster.pools if v4 else cluster.pools6):
        bad(("spec", "cidr"), f"IPPool {net} is not one of the cluster's {'pools' if v4 else 'pools6'}")
    size, field = (cluster.block_size, "block_size") if v4 else (cluster.block_size6, "block_size6")
    if res.spec.blockSize is not None and res.spec.blockSize != size:
        bad(
            ("spec", "blockSize"),
            f"blockSize {res.spec.blockSize} disagrees with cluster '{cluster.name}' {field} {size}",
        )


def _check_bgp_peer(
    res: cr.BGPPeer,
    cluster: Cluster,
    filters: set[str],
    router_ips: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, Router],
    bad: Any,
) -> None:
    spec = res.spec
    for f in spec.filters:
        if f not in filters:
            bad(("spec", "filters"), f"no BGPFilter named '{f}'")
    if spec.node is not None and spec.node not in {n.name for n in cluster.nodes}:
        bad(("spec", "node"), f"no node '{spec.node}' in cluster '{cluster.name}'")
    if spec.peerIP is None:
        return
    ip = ipaddress.ip_address(spec.peerIP)  # validated by the model: an address, no port
    if ip.version == 6 and not cluster.pools6:
        bad(
            ("spec", "peerIP"),
            f"{ip} is IPv6, but cluster '{cluster.name}' has no IPv6 pools (pools6): "
            "a single-stack lab's nodes peer over IPv4",
        )
        return
    router = router_ips.get(ip)
    if router is None and not is_workload_peering(ip):
        known = ", ".join(sorted(map(str, router_ips))) or "none"
        bad(("spec", "peerIP"), f"{ip} is no router address in this lab (known: {known})")
    elif router is not None and spec.asNumber not in (None, router.asn):
        bad(("spec", "asNumber"), f"router '{router.name}' at {ip} has AS {router.asn}, not {spec.asNumber}")
    elif router is not None and router.asn == cluster.asn:
        bad(
            ("spec", "peerIP"),
            f"router '{router.name}' shares the cluster's AS {cluster.asn}: iBGP to the ToR "
            "is not supported (no next-hop-self on that peering)",
        )


def _declared_router_ips(spec: LabSpec) -> dict[ipaddress.IPv4Address | ipaddress.IPv6Address, Router]:
    """ToR addresses on rack segments (first address of the subnet, and its IPv6 twin in a
    dual-stack lab), as the addressing plan derives them."""
    out: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, Router] = {}
    subnets = rack_subnets(spec)
    for rack in spec.racks:
        net = subnets.get(rack.name)
        if net is not None and any(r.name == rack.tor for r in spec.routers):
            first = next(net.hosts())
            out[first] = spec.router(rack.tor)
            if spec.dual_stack:
                out[six(ipaddress.IPv4Interface(f"{first}/{net.prefixlen}")).ip] = spec.router(rack.tor)
    return out


def _unique(items: list[Any], field: str, bad: Any) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.name in seen:
            bad(
                (field, i, "name"),
                f"duplicate name '{item.name}' (already used at {field}[{seen[item.name]}])",
            )
        seen.setdefault(item.name, i)


def _in_fabric(net: ipaddress.IPv4Network, path: tuple, bad: Any) -> None:
    if not net.subnet_of(FABRIC_RANGE):
        bad(path, f"{net} is outside the lab fabric range {FABRIC_RANGE}")


def _fmt(path: tuple) -> str:
    return format_path(path)
