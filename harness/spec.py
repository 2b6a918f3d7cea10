"""The lab spec: what a lab is, as typed models (the data of `labs/<name>.yml`).

A lab file is data; everything else (addresses, BIRD configs, Calico resources, the
containerlab topology) is derived from it. `LabFile` is what a file may hold; `LabSpec` is a
loaded lab: the file's content, where it came from, and its clusters' Calico resources.
`harness.labfile.load_lab()` reads and checks one (`harness.labcheck` holds the cross-checks).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.calico import resources as cr
from harness.names import LAB_NAME_PATTERN, NAME_PATTERN
from harness.yamlsrc import shown

# Names become parts of namespace names and Linux interface names (<= 15 characters).
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
# IPv6 (dual-stack labs): documentation addresses only. Every fabric address (rack segments,
# links, router-side host links) is its IPv4 twin embedded in the last 32 bits of
# FABRIC6_PREFIX (RFC 6052's layout: 198.18.1.1 -> 2001:db8::198.18.1.1 = 2001:db8::c612:101);
# pools come from the rest of 2001:db8::/32; the workload peering address from the seeds' ULA.
DOC6_RANGE = ipaddress.IPv6Network("2001:db8::/32")
FABRIC6_PREFIX = ipaddress.IPv6Network("2001:db8::/96")
FABRIC6_RESERVED = ipaddress.IPv6Network("2001:db8::/64")  # pools stay out of the fabric's /64
POOL6_RANGES = (DOC6_RANGE,)
WORKLOAD_PEERING6_RANGE = ipaddress.IPv6Network("fdc9:9723:9bc::/48")
BLOCK6_DEFAULT = 122  # Calico's default IPv6 block size


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
    route_reflector: ipaddress.IPv4Address | None = Field(
        default=None, description="route reflector cluster ID (Calico Node spec.bgp.routeReflectorClusterID)"
    )


class Cluster(_Model):
    """A Kubernetes cluster running Calico in BGP mode without overlay."""

    name: Name
    parent: Name | None = Field(
        default=None,
        description="nested cluster: the cluster whose VMs its nodes run in (eBGP to its workload peering)",
    )
    asn: ASN = 64512
    pools: list[ipaddress.IPv4Network] = Field(
        default_factory=list, description="left out: the cluster's IPPool resources (harness.labpools)"
    )
    block_size: int = Field(default=26, ge=20, le=32)
    pools6: list[ipaddress.IPv6Network] = Field(
        default_factory=list, description="IPv6 pools (dual stack: the lab's fabric gets IPv6 too)"
    )
    block_size6: int = Field(default=BLOCK6_DEFAULT, ge=116, le=128)
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
    ip6: ipaddress.IPv6Address | None = Field(default=None, description="dual stack: the VM's IPv6 address")
    cluster: Name | None = None
    mac: str | None = Field(default=None, pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
    labels: cr.Labels = Field(default_factory=dict)
    backend: Literal["mock", "qemu"] = Field(
        default="mock", description="mock: a namespace with the VM's IP (MockVirt); qemu: a real QEMU guest"
    )

    @field_validator("ip6")
    @classmethod
    def _unscoped(cls, v: ipaddress.IPv6Address | None) -> ipaddress.IPv6Address | None:
        if v is not None and v.scope_id is not None:
            raise ValueError(f"{shown(str(v))} has a scope (%...): a VM's address is a plain IPv6 address")
        return v

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


class LabFile(_Model):
    """What a lab file may hold."""

    name: Annotated[str, Field(pattern=LAB_NAME_PATTERN)]
    description: str = Field(default="", max_length=DESCRIPTION_MAX, description="free text, one line")
    routers: list[Router] = Field(default_factory=list)
    racks: list[Rack] = Field(default_factory=list)
    clusters: list[Cluster] = Field(default_factory=list)
    hosts: list[Host] = Field(default_factory=list)
    vms: list[VM] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    timers: Timers = Field(default_factory=Timers)

    @field_validator("description")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if not v.isprintable():
            raise ValueError("a description is one line of printable text (no control characters)")
        return v

    @property
    def dual_stack(self) -> bool:
        """Whether the lab runs IPv6 beside IPv4: some cluster has an IPv6 pool."""
        return any(c.pools6 for c in self.clusters)

    @property
    def families(self) -> tuple[int, ...]:
        """The address families the lab routes: (4,) or (4, 6)."""
        return (4, 6) if self.dual_stack else (4,)

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


class LabSpec(LabFile):
    """A loaded lab: the file's content, the file it came from, and each cluster's validated
    Calico resources (`harness.calico.resources` models, in file order). Neither is part of
    the file: `harness.labfile.load_lab` fills them in."""

    source: str = Field(default="", exclude=True)
    calico: dict[str, tuple[Any, ...]] = Field(default_factory=dict, exclude=True)

    def resources(self, cluster: str) -> list[Any]:
        """The Calico resources of one cluster."""
        return list(self.calico.get(cluster, ()))


def cluster_resources(spec: LabSpec) -> dict[str, list[Any]]:
    """The validated Calico resources of each cluster."""
    return {name: list(items) for name, items in spec.calico.items()}
