"""Typed models of the Calico `projectcalico.org/v3` resources a lab may carry.

Field names and defaults are Calico's (see shared/design/calico-semantics.md). Unknown
fields are rejected so that a typo in a lab's resources fails at load time instead of
silently being ignored; FelixConfiguration, which has hundreds of fields, keeps the ones
the harness does not interpret.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

API_VERSION = "projectcalico.org/v3"

_IFACE = re.compile(r"^[a-zA-Z0-9_.*-]{1,15}$")
_COMMUNITY = re.compile(r"^\d{1,10}:\d{1,10}(:\d{1,10})?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Metadata(_Strict):
    name: str
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


def parse_community(value: str) -> tuple[int, ...]:
    """'65000:100' -> (65000, 100); 'a:b:c' -> large community. Raises ValueError on bad input."""
    if not _COMMUNITY.match(value):
        raise ValueError(f"'{value}' is not a BGP community (aa:nn or aa:nn:mm)")
    parts = tuple(int(p) for p in value.split(":"))
    limit = 0xFFFF if len(parts) == 2 else 0xFFFFFFFF
    if any(p > limit for p in parts):
        raise ValueError(f"'{value}' has a component above {limit}")
    return parts


Community = Annotated[str, Field(max_length=32)]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Kubernetes/Go duration ('30s', '1m30s', '500ms') in seconds. Raises ValueError."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"'{text}' is not a duration like '30s' or '1m30s'")
    return total


class PrefixLength(_Strict):
    min: int | None = Field(default=None, ge=0, le=128)
    max: int | None = Field(default=None, ge=0, le=128)


class CommunityMatch(_Strict):
    values: list[Community] = Field(min_length=1, max_length=1)

    @field_validator("values")
    @classmethod
    def _check(cls, v: list[str]) -> list[str]:
        for c in v:
            parse_community(c)
        return v


class AddCommunity(_Strict):
    value: Community

    @field_validator("value")
    @classmethod
    def _check(cls, v: str) -> str:
        parse_community(v)
        return v


class PrependASPath(_Strict):
    prefix: list[Annotated[int, Field(ge=0, le=4294967295)]] = Field(min_length=1, max_length=10)


class SetPriority(_Strict):
    value: int = Field(ge=1, le=2147483646)


class FilterOperation(_Strict):
    """Exactly one of the three operations."""

    addCommunity: AddCommunity | None = None
    prependASPath: PrependASPath | None = None
    setPriority: SetPriority | None = None

    def model_post_init(self, _: Any) -> None:
        n = sum(x is not None for x in (self.addCommunity, self.prependASPath, self.setPriority))
        if n != 1:
            raise ValueError("an operation must set exactly one of addCommunity, prependASPath, setPriority")


class FilterRule(_Strict):
    action: Literal["Accept", "Reject"]
    cidr: str | None = None
    matchOperator: Literal["Equal", "NotEqual", "In", "NotIn"] | None = None
    prefixLength: PrefixLength | None = None
    source: Literal["RemotePeers"] | None = None
    interface: str | None = None
    peerType: Literal["eBGP", "iBGP"] | None = None
    priority: int | None = Field(default=None, ge=1, le=2147483646)
    communities: CommunityMatch | None = None
    asPathPrefix: list[Annotated[int, Field(ge=0, le=4294967295)]] | None = None
    operations: list[FilterOperation] = Field(default_factory=list)

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ipaddress.ip_network(v, strict=True)
            except ValueError as e:
                raise ValueError(f"cidr '{v}': {e} (BIRD rejects host bits in a prefix)") from None
        return v

    @field_validator("interface")
    @classmethod
    def _interface(cls, v: str | None) -> str | None:
        if v is not None and not _IFACE.match(v):
            raise ValueError(
                f"interface '{v}' must be an interface name or pattern of 1-15 of [A-Za-z0-9_.*-]"
            )
        return v

    def model_post_init(self, _: Any) -> None:
        if self.prefixLength is not None and self.cidr is not None:
            length = ipaddress.ip_network(self.cidr).prefixlen
            lo, hi = self.prefixLength.min, self.prefixLength.max
            if hi is not None and hi < length:
                raise ValueError(f"prefixLength.max {hi} is shorter than the cidr's /{length}")
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"prefixLength.min {lo} is above prefixLength.max {hi}")
        if (self.cidr is None) != (self.matchOperator is None):
            raise ValueError("cidr and matchOperator must be given together")
        if self.prefixLength is not None and self.cidr is None:
            raise ValueError("prefixLength needs cidr")
        if self.operations and self.action != "Accept":
            raise ValueError("operations are only allowed on Accept rules")


class BGPFilterSpec(_Strict):
    exportV4: list[FilterRule] = Field(default_factory=list)
    importV4: list[FilterRule] = Field(default_factory=list)
    exportV6: list[FilterRule] = Field(default_factory=list)
    importV6: list[FilterRule] = Field(default_factory=list)


class BGPConfigurationSpec(_Strict):
    asNumber: int | None = Field(default=None, ge=1, le=4294967295)
    nodeToNodeMeshEnabled: bool | None = None
    logSeverityScreen: str | None = None
    listenPort: int | None = Field(default=None, ge=1, le=65535)
    bindMode: str | None = None
    localWorkloadPeeringIPV4: str | None = None
    localWorkloadPeeringIPV6: str | None = None
    ipv4NormalRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    ipv6NormalRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    nodeMeshMaxRestartTime: str | None = None
    nodeMeshPassword: dict[str, Any] | None = None
    communities: list[dict[str, Any]] | None = None
    prefixAdvertisements: list[dict[str, Any]] | None = None
    ignoredInterfaces: list[str] | None = None
    serviceClusterIPs: list[dict[str, Any]] | None = None
    serviceExternalIPs: list[dict[str, Any]] | None = None
    serviceLoadBalancerIPs: list[dict[str, Any]] | None = None
    serviceLoadBalancerAggregation: str | None = None
    programClusterRoutes: str | None = None

    @field_validator("localWorkloadPeeringIPV4")
    @classmethod
    def _lwp4(cls, v: str | None) -> str | None:
        if v is not None:
            ip = ipaddress.IPv4Address(v)
            if str(ip) in ("169.254.0.1", "169.254.0.2"):
                raise ValueError(f"{v} is reserved by Calico")
        return v

    @field_validator("localWorkloadPeeringIPV6")
    @classmethod
    def _lwp6(cls, v: str | None) -> str | None:
        if v is not None and ipaddress.IPv6Address(v).is_link_local:
            raise ValueError("must not be link-local (Calico cannot provision the scope)")
        return v


class BGPPeerSpec(_Strict):
    node: str | None = None
    nodeSelector: str | None = None
    peerIP: str | None = None
    peerSelector: str | None = None
    asNumber: int | None = Field(default=None, ge=1, le=4294967295)
    localASNumber: int | None = Field(default=None, ge=1, le=4294967295)
    filters: list[str] = Field(default_factory=list)
    localWorkloadSelector: str | None = None
    nextHopMode: Literal["Auto", "Self", "Keep"] | None = None
    keepOriginalNextHop: bool | None = None
    numAllowedLocalASNumbers: int | None = Field(default=None, ge=0)
    password: dict[str, Any] | None = None
    sourceAddress: Literal["UseNodeIP", "None"] | None = None
    maxRestartTime: str | None = None
    keepaliveTime: str | None = None
    ttlSecurity: int | None = None
    reachableBy: str | None = None
    reversePeering: Literal["Auto", "Manual"] | None = None

    def model_post_init(self, _: Any) -> None:
        if self.localWorkloadSelector is not None:
            if self.peerIP is not None or self.peerSelector is not None:
                raise ValueError("localWorkloadSelector excludes peerIP and peerSelector")
            if self.asNumber is None:
                raise ValueError("localWorkloadSelector requires asNumber")
        if self.node is not None and self.nodeSelector is not None:
            raise ValueError("node and nodeSelector are mutually exclusive")
        if self.peerSelector is not None and (self.peerIP is not None or self.asNumber is not None):
            raise ValueError("peerSelector excludes peerIP and asNumber")


class IPPoolSpec(_Strict):
    cidr: str

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"'{v}' is not an IP network") from None
        return v

    blockSize: int | None = Field(default=None, ge=0, le=128)
    ipipMode: Literal["Never", "Always", "CrossSubnet"] | None = None
    vxlanMode: Literal["Never", "Always", "CrossSubnet"] | None = None
    natOutgoing: bool | None = None
    disabled: bool | None = None
    disableBGPExport: bool | None = None
    nodeSelector: str | None = None
    namespaceSelector: str | None = None
    allowedUses: list[str] | None = None
    assignmentMode: str | None = None


class IPAMConfigurationSpec(_Strict):
    strictAffinity: bool  # required by the CRD
    autoAllocateBlocks: bool  # required by the CRD
    maxBlocksPerHost: int | None = None
    kubeVirtVMAddressPersistence: Literal["Enabled", "Disabled"] | None = None
    ipCooldownSeconds: int | None = None


class FelixConfigurationSpec(BaseModel):
    """Only the fields the harness interprets are typed; the rest are kept as given."""

    model_config = ConfigDict(extra="allow", frozen=True)
    ipv4NormalRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    ipv4ElevatedRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    ipv6NormalRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    ipv6ElevatedRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    liveMigrationRouteConvergenceTime: str | None = None

    @field_validator("liveMigrationRouteConvergenceTime")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v


class _Resource(_Strict):
    apiVersion: Literal["projectcalico.org/v3"]
    metadata: Metadata


class BGPConfiguration(_Resource):
    kind: Literal["BGPConfiguration"]
    spec: BGPConfigurationSpec = Field(default_factory=BGPConfigurationSpec)


class BGPPeer(_Resource):
    kind: Literal["BGPPeer"]
    spec: BGPPeerSpec


class BGPFilter(_Resource):
    kind: Literal["BGPFilter"]
    spec: BGPFilterSpec = Field(default_factory=BGPFilterSpec)


class IPPool(_Resource):
    kind: Literal["IPPool"]
    spec: IPPoolSpec


class IPAMConfiguration(_Resource):
    kind: Literal["IPAMConfiguration"]
    spec: IPAMConfigurationSpec


class FelixConfiguration(_Resource):
    kind: Literal["FelixConfiguration"]
    spec: FelixConfigurationSpec = Field(default_factory=FelixConfigurationSpec)


CalicoResource = Annotated[
    BGPConfiguration | BGPPeer | BGPFilter | IPPool | IPAMConfiguration | FelixConfiguration,
    Field(discriminator="kind"),
]
KINDS = ("BGPConfiguration", "BGPPeer", "BGPFilter", "IPPool", "IPAMConfiguration", "FelixConfiguration")
