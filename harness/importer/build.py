"""From a customer's dumps to a lab: nodes, racks and ToRs, route reflectors, the cluster AS,
pools and blocks, VMs on their nodes, renumbered into the lab's ranges.

The way from resources to a lab is the one `kvlab conformance` uses: the dumps become typed Calico
resources (`harness.calico.resources`, Kubernetes Nodes through their Calico annotations), and
`harness.calico.cluster.from_resources` makes the cluster calico-node would see; racks are read
off it: each BGPPeer with `peerIP` + `asNumber` + `nodeSelector` (or `node`) whose peer sits on the
subnet of the nodes it selects is a ToR, its nodes a rack.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.calico import resources as cr
from harness.calico.cluster import CalicoNode, from_resources
from harness.errors import InputError, SpecIssue
from harness.importer.dump import CALICO_API_VERSIONS, DumpObject, object_name, read_dump, valid_labels
from harness.importer.mapping import CustomerMap
from harness.importer.torconf import TorConfig, read_tor_config
from harness.names import NAME_PATTERN
from harness.spec import POOL_RANGES, RACK_RANGE, ROUTER_ID_RANGE, WORKLOAD_PEERING_IPS

IPv4 = ipaddress.IPv4Address
Net4 = ipaddress.IPv4Network
DEFAULT_SPINE_ASNS = (65100, 65200, 65300, 65400)
MAX_LAB_BLOCK = 30  # a node's block must hold its VMs: at most a /30 per node
SENSIBLE_NODES = 32  # more nodes than this: a note suggesting --max-nodes-per-rack
NODE_PEERING_WAIT = 180.0  # seconds: node-to-node sessions settle their connection collisions
ANNOTATION = "projectcalico.org/"
USED_ANNOTATIONS = ("IPv4Address", "ASNumber", "RouteReflectorClusterID")
_CLUSTER_KINDS: TypeAdapter[Any] = TypeAdapter(cr.CalicoResource)
_NODE: TypeAdapter[Any] = TypeAdapter(cr.Node)
_SIMPLE_SELECTOR = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*==\s*['\"]([A-Za-z0-9._-]+)['\"]\s*$")
_LAB_NAME = re.compile(NAME_PATTERN)


class ImportError_(InputError):
    """The dumps cannot make a lab (exit 2): no nodes, no racks, too many nodes for the pools."""


@dataclass
class ImportOptions:
    nodes: Path
    calico: Path
    vmis: Path | None = None
    tors: list[Path] = field(default_factory=list)
    name: str = "imported"
    cluster: str = "kv"
    max_nodes_per_rack: int | None = None


@dataclass
class ImportResult:
    """The lab file's data, its Calico resources, the customer mapping, and what could not be
    reproduced (each naming file, line and object path) or was changed on the way (notes)."""

    lab: dict[str, Any]
    resources: list[dict[str, Any]]
    mapping: CustomerMap
    warnings: list[SpecIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Notes:
    """Warnings, each naming the dump object (file, line, path) it is about."""

    warn: list[SpecIssue]
    origins: dict[int, DumpObject] = field(default_factory=dict)  # id(resource) -> its object
    nodes: dict[str, DumpObject] = field(default_factory=dict)  # customer node name -> its object

    def about(self, res: Any, sub: tuple[Any, ...], message: str) -> None:
        obj = self.origins.get(id(res))
        if obj is not None:
            self.warn.append(obj.note(sub, message))
        else:
            self.warn.append(SpecIssue("", "", f"{res.kind} {res.metadata.name!r}: {message}"))

    def node(self, name: str, sub: tuple[Any, ...], message: str) -> None:
        obj = self.nodes.get(name)
        if obj is not None:
            self.warn.append(obj.note(sub, message))
        else:
            self.warn.append(SpecIssue("", "", f"Node {name!r}: {message}"))


@dataclass
class _Rack:
    name: str
    tor_ip: IPv4
    asn: int
    subnet: Net4
    peers: list[str]
    nodes: list[str]  # customer node names
    tor: str = ""
    lab_subnet: Net4 | None = None


# -- reading the resources -----------------------------------------------------------------------


def _calico_resource(obj: DumpObject, adapter: TypeAdapter[Any], warn: list[SpecIssue]) -> Any | None:
    """A dump object as a typed Calico v3 resource; unsupported fields left out with a warning."""
    name = object_name(obj)
    if name is None:
        warn.append(obj.note(("metadata", "name"), "not a Kubernetes name: left out"))
        return None
    spec = obj.get("spec")
    doc: dict[str, Any] = {
        "apiVersion": cr.API_VERSION,
        "kind": obj.kind,
        "metadata": {"name": name, "labels": valid_labels(obj, ("metadata", "labels"), warn)},
    }
    if spec is not None:
        doc["spec"] = spec if not isinstance(spec, dict) else dict(spec)
    for _ in range(64):
        try:
            return adapter.validate_python(doc, context=cr.CALICO_API)
        except ValidationError as e:
            removable = [
                err for err in e.errors() if err["type"] == "extra_forbidden" and err["loc"][:1] != ()
            ]
            if not removable:
                first = e.errors()[0]
                loc = tuple(x for x in first["loc"] if x != obj.kind)
                warn.append(obj.note(loc, f"{first['msg']}: the object is left out"))
                return None
            for err in removable:
                loc = tuple(x for x in err["loc"] if x != obj.kind)
                if _delete(doc, loc):
                    warn.append(obj.note(loc, "not supported by kvlab: left out"))
    return None


def _delete(doc: Any, loc: tuple[Any, ...]) -> bool:
    parent = doc
    for key in loc[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(parent, dict) and loc and loc[-1] in parent:
        del parent[loc[-1]]
        return True
    return False


def _k8s_node(obj: DumpObject, warn: list[SpecIssue], unused: dict[str, list[DumpObject]]) -> Any | None:
    """A Kubernetes Node as the Calico Node calico-node makes of it (its projectcalico.org/
    annotations), or None with a warning."""
    name = object_name(obj)
    if name is None:
        warn.append(obj.note(("metadata", "name"), "not a Kubernetes name: the node is left out"))
        return None
    ann = obj.get("metadata", "annotations") or {}
    if not isinstance(ann, dict):
        ann = {}
    bgp: dict[str, Any] = {}
    v4 = ann.get(ANNOTATION + "IPv4Address")
    if isinstance(v4, str) and v4:
        bgp["ipv4Address"] = v4
    else:
        internal = [
            a.get("address")
            for a in obj.get("status", "addresses") or []
            if isinstance(a, dict) and a.get("type") == "InternalIP"
        ]
        v4s = [a for a in internal if isinstance(a, str) and _is_v4(a)]
        if not v4s:
            warn.append(
                obj.note(("metadata", "annotations"), f"no {ANNOTATION}IPv4Address nor InternalIP: left out")
            )
            return None
        bgp["ipv4Address"] = f"{v4s[0]}/24"
        warn.append(
            obj.note(
                ("metadata", "annotations"),
                f"no {ANNOTATION}IPv4Address: its InternalIP {v4s[0]} taken, its subnet assumed a /24",
            )
        )
    asn = ann.get(ANNOTATION + "ASNumber")
    if asn not in (None, ""):
        try:
            bgp["asNumber"] = int(str(asn))
        except ValueError:
            warn.append(
                obj.note(("metadata", "annotations", ANNOTATION + "ASNumber"), "not a number: left out")
            )
    rr = ann.get(ANNOTATION + "RouteReflectorClusterID")
    if rr not in (None, ""):
        bgp["routeReflectorClusterID"] = str(rr)
    for key in ann:
        if (
            isinstance(key, str)
            and key.startswith(ANNOTATION)
            and key[len(ANNOTATION) :] not in USED_ANNOTATIONS
        ):
            unused[key].append(obj)
    doc = {
        "apiVersion": cr.API_VERSION,
        "kind": "Node",
        "metadata": {"name": name, "labels": valid_labels(obj, ("metadata", "labels"), warn)},
        "spec": {"bgp": bgp},
    }
    try:
        return _NODE.validate_python(doc, context=cr.CALICO_API)
    except ValidationError as e:
        warn.append(obj.note(("metadata", "annotations"), f"{e.errors()[0]['msg']}: the node is left out"))
        return None


def _is_v4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def read_inputs(opts: ImportOptions) -> tuple[list[Any], list[Any], _Notes]:
    """(Calico Nodes, the other Calico resources, warnings) from the node and Calico dumps."""
    warn: list[SpecIssue] = []
    notes_ = _Notes(warn)
    node_objs, notes = read_dump(opts.nodes)
    warn += notes
    calico_objs, notes = read_dump(opts.calico)
    warn += notes
    nodes: list[Any] = []
    resources: list[Any] = []
    unused: dict[str, list[DumpObject]] = defaultdict(list)
    for obj in [*node_objs, *calico_objs]:
        if obj.kind == "Node" and obj.api_version == "v1":
            node = _k8s_node(obj, warn, unused)
        elif obj.kind == "Node" and obj.api_version in CALICO_API_VERSIONS:
            node = _calico_resource(obj, _NODE, warn)
        elif obj.kind in cr.KINDS and obj.api_version in CALICO_API_VERSIONS:
            res = _calico_resource(obj, _CLUSTER_KINDS, warn)
            if res is not None:
                resources.append(res)
                notes_.origins[id(res)] = obj
            continue
        else:
            what = f"kind {obj.kind or '?'} ({obj.api_version or 'no apiVersion'})"
            warn.append(obj.note((), f"{what} is not reproduced: left out"))
            continue
        if node is not None:
            nodes.append(node)
            notes_.nodes[node.metadata.name] = obj
    for key, objs in sorted(unused.items()):
        warn.append(
            objs[0].note(
                ("metadata", "annotations", key),
                f"not reproduced on {len(objs)} node(s) (labs route without overlay or IPv6)",
            )
        )
    return nodes, resources, notes_


# -- the lab ---------------------------------------------------------------------------------


def import_dump(opts: ImportOptions) -> ImportResult:
    """The lab a customer's dumps describe. ImportError_ when they describe none."""
    nodes, resources, log = read_inputs(opts)
    warn = log.warn
    if not nodes:
        raise ImportError_(f"--nodes {opts.nodes}: no Kubernetes or Calico Node in it")
    cluster = from_resources([*nodes, *resources], k8s_labels=False)
    customer_asn = cluster.global_asn()
    notes: list[str] = []

    racks, peers_of_racks = _racks(cluster.nodes, resources, log)
    if not racks:
        raise ImportError_(
            f"--calico {opts.calico}: no BGPPeer with peerIP, asNumber and nodeSelector (or node) selects "
            "nodes on the peer's subnet: no rack to reproduce"
        )
    _sample(racks, cluster.nodes, opts, notes, vm_nodes=_vm_nodes(opts))
    mapping = CustomerMap(lab=opts.name)
    lab_nodes = _name_nodes(racks, cluster.nodes, mapping)
    total = sum(len(r.nodes) for r in racks)
    if total > SENSIBLE_NODES:
        notes.append(
            f"{total} nodes: a lab this size takes a while to come up; "
            "--max-nodes-per-rack N samples racks down"
        )

    # Racks: a /24 each in the lab's fabric range, the ToR first, nodes at their offset if it fits.
    free = (n for n in RACK_RANGE.subnets(new_prefix=24) if n.network_address.packed[2] >= 1)
    used_names: set[str] = set(lab_nodes.values())
    node_specs: list[dict[str, Any]] = []
    rr_ids: dict[str, IPv4] = {}
    rr_pool = iter(reversed(list(ROUTER_ID_RANGE.hosts())))
    for i, rack in enumerate(racks, start=1):
        rack.lab_subnet = next(free)
        rack.tor = _free_name(f"tor-{rack.name}", f"tor{i}", used_names)
        mapping.addresses[rack.tor_ip] = rack.lab_subnet.network_address + 1
        mapping.prefixes[rack.subnet] = rack.lab_subnet
        taken = {rack.lab_subnet.network_address + 1}
        for cname in rack.nodes:
            cn = cluster.nodes[cname]
            assert cn.ipv4 is not None
            ip = _lab_host(cn.ipv4.ip, rack.subnet, rack.lab_subnet, taken)
            taken.add(ip)
            mapping.addresses[cn.ipv4.ip] = ip
            spec: dict[str, Any] = {"name": lab_nodes[cname], "rack": rack.name, "ip": str(ip)}
            if cn.asn is not None and cn.asn != customer_asn:
                spec["asn"] = cn.asn
            if cn.rr_cluster_id:
                if cn.rr_cluster_id not in rr_ids:
                    rr_ids[cn.rr_cluster_id] = next(rr_pool)
                    mapping.addresses[IPv4(cn.rr_cluster_id)] = rr_ids[cn.rr_cluster_id]
                spec["route_reflector"] = str(rr_ids[cn.rr_cluster_id])
            labels = {k: v for k, v in cn.labels.items() if not (k == "rack" and v != rack.name)}
            if len(labels) != len(cn.labels):
                log.node(
                    cname,
                    ("metadata", "labels", "rack"),
                    f"label 'rack' left out: the lab's rack is {rack.name}",
                )
            if labels:
                spec["labels"] = labels
            node_specs.append(spec)

    pools, block_size, pool_map = _pools(resources, total, log, notes)
    for customer, lab in pool_map.items():
        mapping.prefixes[customer] = lab
    lab_blocks = [b for lab in pools for b in lab.subnets(new_prefix=block_size)]
    block_of = {spec["name"]: lab_blocks[i] for i, spec in enumerate(node_specs)}

    vms = _vms(opts, lab_nodes, block_of, pool_map, mapping, warn) if opts.vmis else []

    tor_confs = _tor_configs(opts, racks, cluster.nodes, warn)
    spine_asn = _spine_asn(racks, tor_confs, customer_asn, {n.asn for n in cluster.nodes.values() if n.asn})
    out_resources = _lab_resources(resources, racks, peers_of_racks, lab_nodes, pool_map, block_size, log)
    node_to_node = _node_peerings(resources, cluster.nodes, racks, log)
    lab: dict[str, Any] = {
        "name": opts.name,
        "description": f"Imported by kvlab import from {Path(opts.nodes).name} and {Path(opts.calico).name}",
        "routers": [{"name": "spine1", "role": "spine", "asn": spine_asn}]
        + [{"name": r.tor, "role": "tor", "asn": r.asn} for r in racks],
        "racks": [{"name": r.name, "tor": r.tor, "subnet": str(r.lab_subnet)} for r in racks],
        "links": [{"endpoints": ["spine1", r.tor]} for r in racks],
        "clusters": [
            {"name": opts.cluster, "asn": customer_asn, "nodes": node_specs, "resources": "calico.yaml"}
        ],
        "hosts": [{"name": "ext1", "router": "spine1"}],
        "vms": vms,
    }
    if node_to_node:
        lab["timers"] = {"bgp_established": NODE_PEERING_WAIT}
        notes.append(
            f"node-to-node BGPPeers: both nodes of a peering connect (as calico-node renders them), and "
            f"nodes started in lockstep collide for a while: timers.bgp_established {NODE_PEERING_WAIT:g} s"
        )
    notes.insert(
        0,
        f"{len(racks)} racks ({', '.join(f'{r.name}: {len(r.nodes)}' for r in racks)} nodes), "
        f"{len(rr_ids) and sum(1 for s in node_specs if 'route_reflector' in s)} route reflector(s), "
        f"cluster AS {customer_asn}, {len(pools)} pool(s) /{block_size} blocks, {len(vms)} VM(s)",
    )
    notes.append(
        f"the fabric above the ToRs is not in the dumps: the lab joins them with spine1 (AS {spine_asn}) "
        "and puts an external host ext1 on it (the canary's end)"
    )
    return ImportResult(lab=lab, resources=out_resources, mapping=mapping, warnings=warn, notes=notes)


def _free_name(preferred: str, fallback: str, used: set[str]) -> str:
    for name in (preferred, fallback):
        if _LAB_NAME.fullmatch(name) and name not in used:
            used.add(name)
            return name
    i = 1
    while f"{fallback}-{i}" in used:
        i += 1
    used.add(f"{fallback}-{i}")
    return f"{fallback}-{i}"


def _racks(
    nodes: dict[str, CalicoNode], resources: list[Any], log: _Notes
) -> tuple[list[_Rack], dict[str, str]]:
    """The racks the ToR BGPPeers describe, and each such peer's rack."""
    candidates: dict[IPv4, dict[str, Any]] = {}
    first_peer: dict[IPv4, Any] = {}
    for res in resources:
        if not isinstance(res, cr.BGPPeer):
            continue
        s = res.spec
        if s.peerIP is None or s.peerSelector is not None or s.localWorkloadSelector is not None:
            continue
        ip, _port = cr.split_peer_ip(s.peerIP)
        if s.asNumber is None or (s.nodeSelector is None and s.node is None):
            log.about(res, ("spec",), "a peerIP without asNumber and nodeSelector/node: no ToR; left out")
            continue
        if ip.version != 4:
            log.about(res, ("spec", "peerIP"), f"peerIP {ip} is IPv6: not reproduced (labs are IPv4)")
            continue
        first_peer.setdefault(ip, res)  # type: ignore[arg-type]
        selected = [s.node] if s.node is not None else _matching(nodes, s.nodeSelector or "")
        selected = [n for n in selected if n in nodes]
        c = candidates.setdefault(ip, {"asn": s.asNumber, "peers": [], "nodes": [], "selectors": []})
        if c["asn"] != s.asNumber:
            log.about(
                res, ("spec", "asNumber"), f"peerIP {ip} with AS {s.asNumber} and {c['asn']}: the first kept"
            )
        c["peers"].append(res.metadata.name)
        c["selectors"].append(s.nodeSelector)
        c["nodes"] += [n for n in selected if n not in c["nodes"]]
    racks: list[_Rack] = []
    rack_of_peer: dict[str, str] = {}
    placed: dict[str, str] = {}
    used: set[str] = set()
    for ip in sorted(candidates):
        c = candidates[ip]
        subnets = {nodes[n].ipv4.network for n in c["nodes"] if nodes[n].ipv4 is not None}  # type: ignore[union-attr]
        on_subnet = [n for n in c["nodes"] if nodes[n].ipv4 is not None and ip in nodes[n].ipv4.network]  # type: ignore[union-attr]
        peers = ", ".join(c["peers"])
        res0 = first_peer[ip]
        if not on_subnet:
            log.about(
                res0,
                ("spec", "peerIP"),
                f"peer {ip} (AS {c['asn']}; BGPPeers {peers}) is on none of the subnets of the "
                f"{len(c['nodes'])} node(s) it selects: not a ToR, and the lab has no router for it; "
                "left out",
            )
            continue
        if len(on_subnet) != len(c["nodes"]) or len(subnets) > 1:
            off = sorted(set(c["nodes"]) - set(on_subnet))
            log.about(
                res0, ("spec", "nodeSelector"), f"nodes off the ToR's subnet left out of its rack: {off}"
            )
        for n in (n for n in on_subnet if n in placed):
            log.about(
                res0,
                ("spec",),
                f"node {n} is already in rack {placed[n]}: dual-homed nodes are not reproduced",
            )
        members = sorted((n for n in on_subnet if n not in placed), key=lambda n: nodes[n].ipv4.ip)  # type: ignore[union-attr]
        if not members:
            continue
        name = _rack_name(c["selectors"], len(racks) + 1, used)
        subnet = next(nodes[n].ipv4.network for n in members)  # type: ignore[union-attr]
        racks.append(_Rack(name, ip, c["asn"], subnet, c["peers"], members))
        for n in members:
            placed[n] = name
        for p in c["peers"]:
            rack_of_peer[p] = name
    for n in sorted(set(nodes) - set(placed)):
        log.node(n, (), "no BGPPeer to a ToR selects it: left out of the lab")
    return racks, rack_of_peer


def _node_peerings(
    resources: list[Any], nodes: dict[str, CalicoNode], racks: list[_Rack], log: _Notes
) -> bool:
    """Whether BGPPeers peer nodes with nodes (peerSelector); a warning for each that spans racks
    whose nodes also peer with their ToR: a node re-exports what it learns over iBGP from another
    rack to its own ToR, with a next hop it reaches only through that ToR (a routing loop)."""
    rack_of = {n: r.name for r in racks for n in r.nodes}
    found = False
    for res in resources:
        if not isinstance(res, cr.BGPPeer) or res.spec.peerSelector is None:
            continue
        found = True
        if res.spec.node is not None:
            local = [res.spec.node]
        else:
            local = _matching(nodes, res.spec.nodeSelector) if res.spec.nodeSelector else sorted(nodes)
        peers = _matching(nodes, res.spec.peerSelector)
        pairs = {(rack_of[a], rack_of[b]) for a in local for b in peers if a in rack_of and b in rack_of}
        spans = sorted(pair for pair in pairs if pair[0] != pair[1])
        if spans:
            log.about(
                res,
                ("spec", "peerSelector"),
                f"peers nodes across racks ({', '.join(f'{a}-{b}' for a, b in spans[:4])}"
                f"{', ...' if len(spans) > 4 else ''}) whose nodes also peer with their ToR: a node "
                "re-exports what it learns over iBGP to its ToR with a next hop it reaches through that "
                "ToR (a routing loop); reproduced as it is",
            )
    return found


def _matching(nodes: dict[str, CalicoNode], selector: str) -> list[str]:
    from harness.calico.selector import compile_selector

    match = compile_selector(selector)
    return [n for n in sorted(nodes) if match(nodes[n].labels)]


def _rack_name(selectors: list[str | None], i: int, used: set[str]) -> str:
    for sel in selectors:
        m = _SIMPLE_SELECTOR.match(sel or "")
        if m and _LAB_NAME.fullmatch(m.group(2)) and m.group(2) not in used:
            used.add(m.group(2))
            return m.group(2)
    return _free_name(f"r{i}", f"rack{i}", used)


def _vm_nodes(opts: ImportOptions) -> set[str]:
    if opts.vmis is None:
        return set()
    objs, _ = read_dump(opts.vmis)
    return {n for o in objs if isinstance(n := o.get("status", "nodeName"), str)}


def _sample(
    racks: list[_Rack],
    nodes: dict[str, CalicoNode],
    opts: ImportOptions,
    notes: list[str],
    vm_nodes: set[str],
) -> None:
    n = opts.max_nodes_per_rack
    if n is None:
        return
    for rack in racks:
        if len(rack.nodes) <= n:
            continue
        order = sorted(
            rack.nodes,
            key=lambda x: (not nodes[x].rr_cluster_id, x not in vm_nodes, rack.nodes.index(x)),
        )
        kept = set(order[:n])
        dropped = [x for x in rack.nodes if x not in kept]
        rack.nodes = [x for x in rack.nodes if x in kept]
        notes.append(
            f"rack {rack.name}: {len(kept) + len(dropped)} nodes sampled down to {n} "
            "(--max-nodes-per-rack; route "
            f"reflectors and nodes with VMs first); left out: {', '.join(dropped)}"
        )


def _name_nodes(racks: list[_Rack], nodes: dict[str, CalicoNode], mapping: CustomerMap) -> dict[str, str]:
    used: set[str] = set()
    out: dict[str, str] = {}
    for rack in racks:
        for i, cname in enumerate(rack.nodes, start=1):
            out[cname] = _free_name(cname.split(".")[0], f"{rack.name[:10]}-n{i}", used)
            mapping.nodes[cname] = out[cname]
    return out


def _lab_host(ip: IPv4, subnet: Net4, lab: Net4, taken: set[IPv4]) -> IPv4:
    """The node's address in the lab's rack subnet: at its customer offset if that fits, else the
    next free one from .11."""
    offset = int(ip) - int(subnet.network_address)
    if 2 <= offset < lab.num_addresses - 1:
        candidate = lab.network_address + offset
        if candidate not in taken:
            return candidate
    for k in range(11, lab.num_addresses - 1):
        if lab.network_address + k not in taken:
            return lab.network_address + k
    raise ImportError_(f"rack subnet {lab} is full")


def _pools(
    resources: list[Any], nodes: int, log: _Notes, notes: list[str]
) -> tuple[list[Net4], int, dict[Net4, Net4]]:
    """The lab's pools (one lab range per customer IPv4 pool) and block size, and pool mapping."""
    v4: list[tuple[Net4, Any]] = []
    for res in resources:
        if isinstance(res, cr.IPPool):
            net = ipaddress.ip_network(res.spec.cidr, strict=False)
            if net.version != 4:
                log.about(res, ("spec", "cidr"), f"{net} is IPv6: not reproduced (labs are IPv4), left out")
            elif len(v4) >= len(POOL_RANGES):
                log.about(
                    res, ("spec", "cidr"), f"{net}: the lab has {len(POOL_RANGES)} pool ranges, left out"
                )
            else:
                v4.append((net, res))  # type: ignore[arg-type]
    if not v4:
        raise ImportError_("no IPv4 IPPool in the Calico dump: the lab needs a pool for its VMs")
    labs = list(POOL_RANGES[: len(v4)])
    customer_block = max(res.spec.blockSize or 26 for _, res in v4)
    per_pool = math.ceil(nodes / len(labs))
    need = labs[0].prefixlen + max(0, math.ceil(math.log2(per_pool)))
    block = max(customer_block, need)
    if block > MAX_LAB_BLOCK:
        raise ImportError_(
            f"{nodes} nodes need a block each: more than the lab's pools hold "
            "(--max-nodes-per-rack N samples racks)"
        )
    if block != customer_block:
        notes.append(
            f"block size /{customer_block} -> /{block}: the lab's pool range is a /{labs[0].prefixlen} and "
            f"each of {nodes} nodes needs a block of its own"
        )
    return labs, block, {net: lab for (net, _), lab in zip(v4, labs, strict=True)}


def _vms(
    opts: ImportOptions,
    lab_nodes: dict[str, str],
    block_of: dict[str, Net4],
    pool_map: dict[Net4, Net4],
    mapping: CustomerMap,
    warn: list[SpecIssue],
) -> list[dict[str, Any]]:
    assert opts.vmis is not None
    objs, notes = read_dump(opts.vmis)
    warn += notes
    out: list[dict[str, Any]] = []
    used: set[str] = set(lab_nodes.values()) | {"spine1", "ext1"}
    per_node: dict[str, int] = defaultdict(int)
    for obj in objs:
        if obj.kind != "VirtualMachineInstance":
            warn.append(obj.note((), f"kind {obj.kind or '?'} is no VirtualMachineInstance: left out"))
            continue
        name = object_name(obj)
        if name is None:
            warn.append(obj.note(("metadata", "name"), "not a Kubernetes name: left out"))
            continue
        ns = obj.get("metadata", "namespace")
        key = f"{ns}/{name}" if isinstance(ns, str) and ns else name
        node = obj.get("status", "nodeName")
        if not isinstance(node, str) or node not in lab_nodes:
            warn.append(
                obj.note(("status", "nodeName"), f"runs on {node!r}, which is not in the lab: left out")
            )
            continue
        ifaces = [i for i in obj.get("status", "interfaces") or [] if isinstance(i, dict)]
        ips = [i.get("ipAddress") for i in ifaces]
        if not ips or not isinstance(ips[0], str) or not _is_v4(ips[0]):
            warn.append(
                obj.note(("status", "interfaces"), "no IPv4 address on its first interface: left out")
            )
            continue
        for k, extra in enumerate(ifaces[1:], start=1):
            warn.append(
                obj.note(
                    ("status", "interfaces", k),
                    f"interface {extra.get('name')!r} ({extra.get('ipAddress')}) is not reproduced: "
                    "a lab VM has one",
                )
            )
        ip = IPv4(ips[0])
        if not any(ip in p for p in pool_map):
            warn.append(
                obj.note(("status", "interfaces", 0, "ipAddress"), f"{ip} is in no imported pool: left out")
            )
            continue
        lab_node = lab_nodes[node]
        block = block_of[lab_node]
        first = 10 if block.num_addresses > 16 else 1
        index = first + per_node[lab_node]
        if index >= block.num_addresses - 1:
            warn.append(obj.note((), f"no room left in {lab_node}'s block {block}: left out"))
            continue
        per_node[lab_node] += 1
        lab_ip = block.network_address + index
        vm_name = _free_name(name, f"vm{len(out) + 1}", used)
        mapping.vms[key] = vm_name
        mapping.addresses[ip] = lab_ip
        vm: dict[str, Any] = {"name": vm_name, "node": lab_node, "ip": str(lab_ip)}
        labels = valid_labels(obj, ("metadata", "labels"), warn)
        if labels:
            vm["labels"] = labels
        out.append(vm)
    return out


def _tor_configs(
    opts: ImportOptions, racks: list[_Rack], nodes: dict[str, CalicoNode], warn: list[SpecIssue]
) -> dict[str, TorConfig]:
    """Each rack's ToR config among --tor files (matched by AS and neighbors), warnings for the rest."""
    out: dict[str, TorConfig] = {}
    for path in opts.tors:
        conf, notes = read_tor_config(path)
        warn += notes
        if conf is None:
            continue
        match = None
        for rack in racks:
            rack_ips = {nodes[n].ipv4.ip for n in rack.nodes if nodes[n].ipv4 is not None}  # type: ignore[union-attr]
            if conf.router_id == rack.tor_ip or (
                rack.asn in conf.local_as and rack_ips & set(conf.neighbors)
            ):
                match = rack
                break
        if match is None:
            warn.append(SpecIssue(conf.file, "", "serves none of the racks the BGPPeers describe: not used"))
            continue
        out[match.name] = conf
        if conf.local_as and match.asn not in conf.local_as:
            warn.append(
                SpecIssue(
                    conf.file,
                    "",
                    f"local AS {sorted(conf.local_as)} but the BGPPeers say AS {match.asn}: "
                    f"the lab uses {match.asn}",
                )
            )
        rack_ips = {nodes[n].ipv4.ip: n for n in match.nodes if nodes[n].ipv4 is not None}  # type: ignore[union-attr]
        missing = sorted(n for ip, n in rack_ips.items() if ip not in conf.neighbors)
        if missing:
            warn.append(SpecIssue(conf.file, "", f"no neighbor for node(s) {missing} of rack {match.name}"))
    return out


def _spine_asn(racks: list[_Rack], confs: dict[str, TorConfig], cluster_asn: int, node_asns: set[int]) -> int:
    """The AS above the ToRs: the one their configs' uplinks name, else the first free default."""
    taken = {r.asn for r in racks} | {cluster_asn} | node_asns
    uplinks = {
        asn
        for rack in racks
        if rack.name in confs
        for ip, asn in confs[rack.name].neighbors.items()
        if ip not in rack.subnet and asn not in taken
    }
    if len(uplinks) == 1:
        return uplinks.pop()
    return next(a for a in DEFAULT_SPINE_ASNS if a not in taken)


# -- the lab's Calico resources -----------------------------------------------------------------


def _lab_resources(
    resources: list[Any],
    racks: list[_Rack],
    rack_of_peer: dict[str, str],
    lab_nodes: dict[str, str],
    pool_map: dict[Net4, Net4],
    block_size: int,
    log: _Notes,
) -> list[dict[str, Any]]:
    tor_ip = {r.name: str(r.lab_subnet.network_address + 1) for r in racks if r.lab_subnet is not None}
    out: list[dict[str, Any]] = []
    for res in resources:
        doc = res.model_dump(mode="json", exclude_unset=True)
        doc["metadata"] = {k: v for k, v in doc["metadata"].items() if v}
        spec = doc.setdefault("spec", {})
        if isinstance(res, cr.BGPPeer):
            if spec.get("peerIP") is not None and spec.get("peerSelector") is None:
                rack = rack_of_peer.get(res.metadata.name)
                if rack is None:
                    continue  # said when the racks were read
                spec["peerIP"] = tor_ip[rack]
            if "node" in spec:
                if spec["node"] not in lab_nodes:
                    log.about(res, ("spec", "node"), f"its node {spec['node']!r} is not in the lab: left out")
                    continue
                spec["node"] = lab_nodes[spec["node"]]
            if spec.pop("password", None) is not None:
                log.about(res, ("spec", "password"), "a lab has no Secrets: peered without a password")
        elif isinstance(res, cr.BGPConfiguration):
            name = res.metadata.name
            if name.startswith("node."):
                customer = name[len("node.") :]
                if customer not in lab_nodes:
                    log.about(res, ("metadata", "name"), "for a node that is not in the lab: left out")
                    continue
                doc["metadata"]["name"] = f"node.{lab_nodes[customer]}"
            for key in ("serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs"):
                if spec.pop(key, None):
                    log.about(res, ("spec", key), "Services are not emulated: left out")
            peering = spec.get("localWorkloadPeeringIPV4")
            if peering is not None and IPv4(peering) not in WORKLOAD_PEERING_IPS:
                spec.pop("localWorkloadPeeringIPV4")
                log.about(
                    res, ("spec", "localWorkloadPeeringIPV4"), f"{peering} is not a lab address: left out"
                )
            if "prefixAdvertisements" in spec:
                kept = []
                for k, adv in enumerate(spec["prefixAdvertisements"]):
                    lab = _lab_cidr(adv.get("cidr", ""), pool_map)
                    if lab is None:
                        log.about(
                            res,
                            ("spec", "prefixAdvertisements", k),
                            f"{adv.get('cidr')} is no pool: left out",
                        )
                    else:
                        kept.append({**adv, "cidr": lab})
                spec["prefixAdvertisements"] = kept
        elif isinstance(res, cr.BGPFilter):
            for direction in ("exportV4", "importV4", "exportV6", "importV6"):
                rules = spec.get(direction)
                if not rules:
                    continue
                kept = []
                for k, rule in enumerate(rules):
                    if "cidr" in rule:
                        lab = _lab_cidr(rule["cidr"], pool_map) if direction.endswith("V4") else None
                        if lab is None:
                            log.about(
                                res,
                                ("spec", direction, k, "cidr"),
                                f"rule on {rule['cidr']}: no lab prefix stands for it, the rule is left out",
                            )
                            continue
                        rule = {**rule, "cidr": lab}
                    kept.append(rule)
                spec[direction] = kept
        elif isinstance(res, cr.IPPool):
            net = ipaddress.ip_network(res.spec.cidr, strict=False)
            if net not in pool_map:
                continue  # said when the pools were read
            spec["cidr"] = str(pool_map[net])  # type: ignore[index]
            spec["blockSize"] = block_size
        elif isinstance(res, cr.FelixConfiguration):
            interpreted = set(cr.FelixConfigurationSpec.model_fields)
            other = sorted(k for k in spec if k not in interpreted)
            if other:
                log.about(
                    res, ("spec",), f"{', '.join(other)}: not emulated (Felix's own settings), left out"
                )
            doc["spec"] = {k: v for k, v in spec.items() if k in interpreted}
        out.append(doc)
    return out


def _lab_cidr(cidr: str, pool_map: dict[Net4, Net4]) -> str | None:
    """The lab prefix standing for a customer pool prefix, or None."""
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
    if net in pool_map:
        return str(pool_map[net])  # type: ignore[index]
    return None


__all__ = ["ImportError_", "ImportOptions", "ImportResult", "import_dump", "read_inputs"]
