"""The lab spec: `labs/<name>.yml` validated into a typed model.

A lab file is data; everything else (addresses, BIRD configs, Calico resources, the
containerlab topology) is derived from it. `load_lab()` returns a `LabSpec` or raises
`SpecError` carrying every problem found, each naming the file, the field path, the
line, and the reason. Nothing is created while loading.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from harness.calico import resources as cr
from harness.calico.selector import SelectorError, compile_selector
from harness.errors import SpecError, SpecIssue
from harness.yamlsrc import SourceMap, load_documents, shown

# Names become parts of namespace names and Linux interface names (<= 15 characters).
NAME_PATTERN = r"^[a-z](?:[a-z0-9-]{0,13}[a-z0-9])?$"
LAB_NAME_PATTERN = r"^[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
ASN = cr.ASNumber

BIRD_TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "bird-configs"
NODE_TEMPLATE = "node.conf.j2"
DESCRIPTION_MAX = 1024
TIMER_MAX = 3600.0
"""Longest wait a lab's `timers:` may ask for (seconds)."""


def router_templates() -> list[str]:
    """The router templates a lab may name (`template:`): the .j2 files of bird-configs/."""
    return sorted(p.name for p in BIRD_TEMPLATE_DIR.glob("*.j2") if p.is_file() and p.name != NODE_TEMPLATE)


# Address ranges a lab may use (shared/design/lab-mechanics.md, "Traffic rule for tests").
FABRIC_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
POOL_RANGES = (ipaddress.IPv4Network("203.0.113.0/24"), ipaddress.IPv4Network("198.51.100.0/24"))
WORKLOAD_PEERING_IPS = (ipaddress.IPv4Address("169.254.0.179"),)
# How the fabric range is split (harness.topology numbers addresses from these).
RACK_RANGE = ipaddress.IPv4Network("198.18.0.0/16")
P2P_RANGE = ipaddress.IPv4Network("198.19.0.0/16")
ROUTER_ID_RANGE = ipaddress.IPv4Network("198.18.0.0/24")
FIRST_NODE_HOST = 11


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Router(_Model):
    """A BIRD router: a spine, a top-of-rack switch, or an external (customer edge) router."""

    name: Name
    role: Literal["spine", "tor", "external"]
    asn: ASN
    template: str | None = Field(default=None, description="BIRD template in bird-configs/, default by role")
    elevated_community: str = Field(
        default="65000:100",
        description="BGP community that marks elevated-priority routes; imported with preference 200",
    )
    community_preference: bool = Field(
        default=True, description="apply the seed's BIRD 1.x import preference for the elevated community"
    )

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        """One of the router templates shipped in bird-configs/, by file name (never a path)."""
        names = router_templates()
        if v is not None and v not in names:
            kind = "a path" if "/" in v or v.startswith(".") else "not a router template there"
            raise ValueError(
                f"template {shown(v)} is {kind}: name a file of bird-configs/ ({', '.join(names)})"
            )
        return v

    @field_validator("elevated_community")
    @classmethod
    def _community(cls, v: str) -> str:
        if len(cr.parse_community(v)) != 2:
            raise ValueError(f"{shown(v)} is a large community; use a standard one (aa:nn)")
        return v


class Rack(_Model):
    """A rack: one layer-2 segment shared by its ToR and its nodes."""

    name: Name
    tor: Name
    subnet: ipaddress.IPv4Network | None = Field(
        default=None, description="rack segment; the ToR takes the first address, nodes the following ones"
    )


class Node(_Model):
    """A Kubernetes node of a cluster (a namespace running BIRD and the node agent)."""

    name: Name
    rack: Name | None = None
    vm: Name | None = Field(
        default=None, description="nested clusters only: the parent cluster's VM this node runs in (its IP)"
    )
    ip: ipaddress.IPv4Address | None = None
    asn: ASN | None = Field(default=None, description="per-node AS override (Calico Node spec.bgp.asNumber)")
    labels: cr.Labels = Field(default_factory=dict)


class Cluster(_Model):
    """A Kubernetes cluster running Calico in BGP mode without overlay."""

    name: Name
    parent: Name | None = Field(
        default=None,
        description="nested cluster: the cluster whose VMs its nodes run in (eBGP to its workload peering)",
    )
    asn: ASN = 64512
    pools: list[ipaddress.IPv4Network] = Field(min_length=1)
    block_size: int = Field(default=26, ge=20, le=32)
    nodes: list[Node] = Field(min_length=1)
    resources: str | list[dict[str, Any]] = Field(
        default_factory=list, description="Calico v3 resources: a YAML file (relative to the lab) or a list"
    )

    @field_validator("resources", mode="before")
    @classmethod
    def _resources(cls, v: Any) -> Any:
        if isinstance(v, list):
            for item in v:
                if isinstance(item, str):
                    raise ValueError(
                        f"'{item}' is a file name: give one file (resources: FILE) "
                        "or a list of Calico documents"
                    )
        return v


class Host(_Model):
    """An external host (no BIRD) attached to a router by a point-to-point link."""

    name: Name
    router: Name


class VM(_Model):
    """A VM of a cluster, on a node, with an IP from the cluster's pools."""

    name: Name
    node: Name
    ip: ipaddress.IPv4Address
    cluster: Name | None = None
    mac: str | None = Field(default=None, pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
    labels: cr.Labels = Field(default_factory=dict)
    backend: Literal["mock", "qemu"] = Field(
        default="mock", description="mock: a namespace with the VM's IP (MockVirt); qemu: a real QEMU guest"
    )

    @field_validator("mac")
    @classmethod
    def _unicast(cls, v: str | None) -> str | None:
        if v is not None and int(v[:2], 16) & 1:
            raise ValueError(f"{v} is a multicast address; a VM needs a unicast MAC")
        return v


class Link(_Model):
    """A point-to-point link between two routers (eBGP session over it)."""

    endpoints: tuple[Name, Name]
    subnet: ipaddress.IPv4Network | None = None


class Timers(_Model):
    """How long the harness waits for things (seconds, finite, at most TIMER_MAX)."""

    bgp_established: float = Field(default=60.0, gt=0, le=TIMER_MAX, allow_inf_nan=False)
    migration: float = Field(
        default=60.0,
        gt=0,
        le=TIMER_MAX,
        allow_inf_nan=False,
        description="deadline for a live migration to complete",
    )
    migration_source_cleanup: float = Field(
        default=1.0,
        ge=0,
        le=60,
        allow_inf_nan=False,
        description="how long the source pod (and its /32) outlives a migration",
    )


class LabSpec(_Model):
    """A whole lab. `source` and `resources` are filled in by `load_lab`."""

    name: Annotated[str, Field(pattern=LAB_NAME_PATTERN)]
    description: str = Field(default="", max_length=DESCRIPTION_MAX, description="free text, one line")
    routers: list[Router] = Field(default_factory=list)
    racks: list[Rack] = Field(default_factory=list)
    clusters: list[Cluster] = Field(default_factory=list)
    hosts: list[Host] = Field(default_factory=list)
    vms: list[VM] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    timers: Timers = Field(default_factory=Timers)
    source: str = Field(default="", exclude=True)

    @field_validator("description")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if not v.isprintable():
            raise ValueError("a description is one line of printable text (no control characters)")
        return v

    # -- lookups -----------------------------------------------------------------------
    def router(self, name: str) -> Router:
        return next(r for r in self.routers if r.name == name)

    def rack(self, name: str) -> Rack:
        return next(r for r in self.racks if r.name == name)

    def cluster(self, name: str) -> Cluster:
        return next(c for c in self.clusters if c.name == name)

    def node(self, name: str) -> tuple[Cluster, Node]:
        for c in self.clusters:
            for n in c.nodes:
                if n.name == name:
                    return c, n
        raise KeyError(name)

    def all_nodes(self) -> list[tuple[Cluster, Node]]:
        return [(c, n) for c in self.clusters for n in c.nodes]

    def rack_of_tor(self, tor: str) -> Rack | None:
        return next((r for r in self.racks if r.tor == tor), None)

    def vm(self, name: str) -> VM:
        return next(v for v in self.vms if v.name == name)

    def nested_node_in(self, vm: str) -> tuple[Cluster, Node] | None:
        """The nested cluster node running inside VM `vm`, if any."""
        return next(((c, n) for c, n in self.all_nodes() if c.parent is not None and n.vm == vm), None)


# ---------------------------------------------------------------------------------------
# Loading


def load_lab(path: str | Path) -> LabSpec:
    """Load and validate a lab file. Raises SpecError listing every issue found."""
    p = Path(path)
    display = str(path)
    docs, maps = load_documents(p, display)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise SpecError([SpecIssue(display, "", "a lab file must hold exactly one YAML mapping")])
    data, smap = docs[0], maps[0]
    try:
        spec = LabSpec.model_validate({**data, "source": str(p.resolve())})
    except ValidationError as e:
        raise SpecError(_pydantic_issues(e, smap)) from None
    resources, issues = load_cluster_resources(spec, p.parent, smap)
    issues += check_lab(spec, smap, resources)
    if issues:
        raise SpecError(issues)
    object.__setattr__(spec, "_resources", resources)
    return spec


def cluster_resources(spec: LabSpec) -> dict[str, list[Any]]:
    """The validated Calico resources of each cluster (as loaded by `load_lab`)."""
    return getattr(spec, "_resources", {})


def _pydantic_issues(err: ValidationError, smap: SourceMap, prefix: tuple = ()) -> list[SpecIssue]:
    issues = []
    for e in err.errors():
        loc = (*prefix, *(x for x in e["loc"] if not (isinstance(x, str) and x in _UNION_TAGS)))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown field '{loc[-1]}'"
        elif e["type"] == "missing":
            msg = f"missing required field '{loc[-1]}'"
        elif e["type"] == "string_pattern_mismatch" and loc and loc[-1] == "name":
            msg = (
                f"invalid name {e.get('input')!r}: use lowercase letters, digits and '-', start with a"
                " letter, at most 15 characters (names become interface and namespace names)"
            )
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        issues.append(smap.issue(loc, msg))
    return issues


_UNION_TAGS = set(cr.KINDS)
_RESOURCE_ADAPTER: TypeAdapter[Any] = TypeAdapter(cr.CalicoResource)


def load_cluster_resources(
    spec: LabSpec, base: Path, lab_map: SourceMap
) -> tuple[dict[str, list[Any]], list[SpecIssue]]:
    """Parse each cluster's Calico resources (inline or from a file) into typed models."""
    out: dict[str, list[Any]] = {}
    issues: list[SpecIssue] = []
    for ci, cluster in enumerate(spec.clusters):
        if isinstance(cluster.resources, str):
            rpath, reason = resource_file(base, cluster.resources)
            if rpath is None:
                issues.append(lab_map.issue(("clusters", ci, "resources"), reason))
                continue
            try:
                docs, maps = load_documents(rpath, str(base / cluster.resources))
            except SpecError as e:
                issues += e.issues
                continue
            places = [(m, ()) for m in maps]
        else:
            docs = cluster.resources
            places = [(lab_map, ("clusters", ci, "resources", i)) for i in range(len(docs))]
        parsed = []
        for doc, (smap, prefix) in zip(docs, places, strict=True):
            if not isinstance(doc, dict) or doc.get("kind") not in cr.KINDS:
                kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
                issues.append(
                    smap.issue(
                        (*prefix, "kind"),
                        f"unsupported resource kind {kind!r} (expected one of {', '.join(cr.KINDS)})",
                    )
                )
                continue
            try:
                parsed.append((_RESOURCE_ADAPTER.validate_python(doc), smap, prefix))
            except ValidationError as e:
                issues += _pydantic_issues(e, smap, prefix)
        out[cluster.name] = parsed
    return out, issues


def resource_file(base: Path, value: str) -> tuple[Path | None, str]:
    """The resource file a lab names (`resources: FILE`), resolved, or None and why not.

    kvlab reads it as root, so a lab file may only bring files of its own directory tree: the
    path is relative and stays inside the lab file's directory once '..' and symlinks resolve."""
    why = "kvlab reads it as root, so a lab file may only name files inside its own directory"
    if not value or not value.isprintable():
        return None, f"resources file {shown(value)} is not a usable file name"
    if Path(value).is_absolute():
        return (
            None,
            f"resources file {shown(value)} is an absolute path: give it relative to the lab file ({why})",
        )
    try:
        root = base.resolve()
        target = (base / value).resolve()
    except (OSError, RuntimeError) as e:
        return None, f"resources file {shown(value)} cannot be resolved: {e}"
    if not target.is_relative_to(root):
        return None, (
            f"resources file {shown(value)} leads outside the lab file's directory once '..' and symlinks "
            f"resolve ({why})"
        )
    return target, ""


# ---------------------------------------------------------------------------------------
# Cross-checks (collected, never thrown one at a time)


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
        if blocks < len(c.nodes):
            bad(
                ("clusters", ci, "block_size"),
                f"the pools hold only {blocks} block{'s' if blocks != 1 else ''} of /{c.block_size} for "
                f"{len(c.nodes)} nodes (each node needs its own block)",
            )

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

    _check_nested(spec, bad)
    _check_address_plan(spec, bad)
    issues += _check_resources(spec, resources)
    issues += _check_workload_peering(spec, smap, resources)
    return issues


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
    from harness.topology import rack_subnets  # late import: topology depends on this module

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
        parent_ip = parent_conf[0].spec.localWorkloadPeeringIPV4 if parent_conf else None
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
            if ip not in WORKLOAD_PEERING_IPS:
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
            if parent_ip is not None and ipaddress.ip_address(parent_ip) != ip:
                issues.append(
                    smap.issue(
                        (*prefix, "spec", "peerIP"),
                        f"parent cluster '{parent.name}' listens on localWorkloadPeeringIPV4 {parent_ip}, "
                        f"not {ip}",
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
    ip = res.spec.localWorkloadPeeringIPV4
    if ip is not None and ipaddress.IPv4Address(ip) not in WORKLOAD_PEERING_IPS:
        bad(
            ("spec", "localWorkloadPeeringIPV4"),
            f"{ip} is outside the lab's address plan: workload peering uses "
            f"{', '.join(map(str, WORKLOAD_PEERING_IPS))}",
        )


def _check_ip_pool(res: cr.IPPool, cluster: Cluster, bad: Any) -> None:
    net = ipaddress.ip_network(res.spec.cidr, strict=False)
    if net not in cluster.pools:
        bad(("spec", "cidr"), f"IPPool {net} is not one of the cluster's pools")
    if res.spec.blockSize is not None and res.spec.blockSize != cluster.block_size:
        bad(
            ("spec", "blockSize"),
            f"blockSize {res.spec.blockSize} disagrees with cluster '{cluster.name}' "
            f"block_size {cluster.block_size}",
        )


def _check_bgp_peer(
    res: cr.BGPPeer,
    cluster: Cluster,
    filters: set[str],
    router_ips: dict[ipaddress.IPv4Address, Router],
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
    ip = ipaddress.IPv4Address(spec.peerIP)  # validated by the model: IPv4, no port
    router = router_ips.get(ip)
    if router is None and ip not in WORKLOAD_PEERING_IPS:
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


def _declared_router_ips(spec: LabSpec) -> dict[ipaddress.IPv4Address, Router]:
    """ToR addresses on rack segments (first address of the subnet), as the addressing plan derives them."""
    from harness.topology import rack_subnets  # late import: topology depends on this module

    out = {}
    subnets = rack_subnets(spec)
    for rack in spec.racks:
        net = subnets.get(rack.name)
        if net is not None and any(r.name == rack.tor for r in spec.routers):
            out[next(net.hosts())] = spec.router(rack.tor)
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
    from harness.yamlsrc import format_path

    return format_path(path)
