"""Typed models of the Calico `projectcalico.org/v3` resources a lab may carry.

Field names and defaults are Calico's (see shared/design/calico-semantics.md). Unknown
fields are rejected so that a typo in a lab's resources fails at load time instead of
silently being ignored; FelixConfiguration, which has hundreds of fields, keeps the ones
the harness does not interpret.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from harness.calico.selector import SelectorError, compile_selector
from harness.yamlsrc import shown

API_VERSION = "projectcalico.org/v3"

CALICO_API: dict[str, bool] = {"calico_api": True}
"""Validation context (`model_validate(..., context=CALICO_API)`) for resources taken as Calico
takes them, e.g. a cluster's own resources or Calico's confd corpus: IPv6 and `<ip>:<port>`
peerIPs are accepted there. Without it (lab files) they are refused: the netns nodes peer over
IPv4 on port 179 only."""


def calico_api(info: ValidationInfo) -> bool:
    """Whether a validator runs in the CALICO_API context."""
    return bool(info.context and info.context.get("calico_api"))


_IFACE = re.compile(r"[a-zA-Z0-9_.*-]{1,15}")
_COMMUNITY = re.compile(r"\d{1,10}:\d{1,10}(:\d{1,10})?")
_CIDR = re.compile(r"[0-9A-Fa-f.:]+/\d{1,3}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# -- Kubernetes object-meta syntax (apimachinery's validation rules) ----------------------------

_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_QUALIFIED = re.compile(r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
ANNOTATIONS_MAX_BYTES = 256 * 1024  # Kubernetes' total annotation size limit


def dns_subdomain(value: str, what: str = "name") -> str:
    """A DNS-1123 subdomain, as Kubernetes requires of object names. Raises ValueError."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f"{what} {shown(value)} is not a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters (Kubernetes object names)"
        )
    return value


def dns_label(value: str, what: str = "name") -> str:
    """A DNS-1123 label (namespace names). Raises ValueError."""
    if len(value) > 63 or not re.fullmatch(_DNS_LABEL, value):
        raise ValueError(
            f"{what} {shown(value)} is not a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return value


def qualified_name(key: str, what: str = "label key") -> str:
    """A Kubernetes qualified name ('[prefix/]name'), as label and annotation keys must be."""
    prefix, _, name = key.rpartition("/")
    reason = None
    if "/" in prefix or (key.count("/") and not prefix):
        reason = "at most one '/', with a prefix before it"
    elif prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        reason = "its prefix must be a DNS-1123 subdomain (e.g. example.com)"
    elif len(name) > 63 or not _QUALIFIED.fullmatch(name):
        reason = "its name must be 1-63 letters, digits, '-', '_' or '.', with a letter or digit at both ends"
    if reason:
        raise ValueError(f"{what} {shown(key)} is not a Kubernetes qualified name: {reason}")
    return key


def label_value(value: str, key: str) -> str:
    """A Kubernetes label value: empty, or up to 63 letters, digits, '-', '_', '.' (alnum at both ends)."""
    if value and (len(value) > 63 or not _QUALIFIED.fullmatch(value)):
        raise ValueError(
            f"label {shown(key)}: value {shown(value)} is not a Kubernetes label value (empty, or 1-63 "
            "letters, digits, '-', '_' or '.', with a letter or digit at both ends)"
        )
    return value


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Labels with Kubernetes' syntax for keys and values. Raises ValueError naming the label."""
    for key, value in labels.items():
        qualified_name(key)
        label_value(value, key)
    return labels


def _check_annotations(annotations: dict[str, str]) -> dict[str, str]:
    for key in annotations:
        qualified_name(key.lower(), "annotation key")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > ANNOTATIONS_MAX_BYTES:
        raise ValueError(f"annotations take {size} bytes, above Kubernetes' limit of {ANNOTATIONS_MAX_BYTES}")
    return annotations


Labels = Annotated[dict[str, str], AfterValidator(check_labels)]
ObjectName = Annotated[str, AfterValidator(dns_subdomain)]


class Metadata(_Strict):
    name: ObjectName
    namespace: Annotated[str, AfterValidator(lambda v: dns_label(v, "namespace"))] | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: Annotated[dict[str, str], AfterValidator(_check_annotations)] = Field(default_factory=dict)


# -- typed values ----------------------------------------------------------------------------

ASN_MAX = 4294967295
RESERVED_ASNS = {
    0: "reserved (RFC 7607)",
    23456: "AS_TRANS, a placeholder for 4-byte AS numbers (RFC 6793)",
    65535: "reserved (RFC 7300)",
    ASN_MAX: "reserved (RFC 7300)",
}


def check_asn(value: int) -> int:
    """An AS number usable in a BGP session (not a reserved one). Raises ValueError."""
    if value in RESERVED_ASNS:
        raise ValueError(f"AS {value} is reserved: {RESERVED_ASNS[value]}")
    return value


ASNumber = Annotated[int, Field(ge=1, le=ASN_MAX), AfterValidator(check_asn)]

SELECTOR_MAX = 1024
"""Calico's CRDs cap selectors at 1024 characters."""


def check_selector(text: str) -> str:
    """A Calico selector this emulation evaluates: bounded, parsed. Raises ValueError."""
    if len(text) > SELECTOR_MAX:
        raise ValueError(f"selector is {len(text)} characters long; Calico allows at most {SELECTOR_MAX}")
    try:
        compile_selector(text)
    except SelectorError as e:
        raise ValueError(str(e)) from None
    except RecursionError:
        raise ValueError(f"selector {shown(text)} nests too deeply") from None
    return text


Selector = Annotated[str, AfterValidator(check_selector)]
FreeText = Annotated[str, Field(max_length=SELECTOR_MAX)]
"""A string kvlab keeps but never interprets or renders (bounded all the same)."""


def parse_community(value: str) -> tuple[int, ...]:
    """'65000:100' -> (65000, 100); 'a:b:c' -> large community. Raises ValueError on bad input."""
    if not _COMMUNITY.fullmatch(value):
        raise ValueError(f"{shown(value)} is not a BGP community (aa:nn or aa:nn:mm)")
    parts = tuple(int(p) for p in value.split(":"))
    limit = 0xFFFF if len(parts) == 2 else 0xFFFFFFFF
    if any(p > limit for p in parts):
        raise ValueError(f"{shown(value)} has a component above {limit}")
    return parts


def _community(value: str) -> str:
    parse_community(value)
    return value


Community = Annotated[str, Field(max_length=32), AfterValidator(_community)]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Kubernetes/Go duration ('30s', '1m30s', '500ms') in seconds. Raises ValueError."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text[:64]):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or not math.isfinite(total):
        raise ValueError(f"{shown(text)} is not a duration like '30s' or '1m30s'")
    return total


def duration(low: float, high: float, why: str) -> AfterValidator:
    """A validator of a duration string between `low` and `high` seconds (`why` says whose limit)."""

    def check(text: str) -> str:
        seconds = parse_duration(text)
        if not low <= seconds <= high:
            raise ValueError(f"{shown(text)} is out of range: {why}")
        return text

    return AfterValidator(check)


def interface_pattern(value: str) -> str:
    """An interface name or glob (BGPFilter `interface`, BGPConfiguration `ignoredInterfaces`): it
    lands in a BIRD string, so only [A-Za-z0-9_.*-], 1-15 characters. Raises ValueError."""
    if not _IFACE.fullmatch(value):
        raise ValueError(
            f"interface {shown(value)} must be an interface name or pattern of 1-15 of [A-Za-z0-9_.*-]"
        )
    return value


def check_cidr(value: str, strict: bool = True) -> str:
    """An IPv4 or IPv6 prefix (with `strict`, without host bits: as BIRD reads it). Raises ValueError."""
    try:
        if not _CIDR.fullmatch(value):
            raise ValueError
        ipaddress.ip_network(value, strict=strict)
    except ValueError:
        hint = " (no host bits, like 203.0.113.0/24)" if strict else ""
        raise ValueError(f"{shown(value)} is not an IP network{hint}") from None
    return value


KEEPALIVE_MAX = 120
"""Longest BGP keepalive time (s): half of BIRD's default 240 s hold time, which kvlab's configs
keep (BIRD 2 refuses a keepalive above the hold time and warns above half of it)."""

Keepalive = Annotated[
    str,
    duration(
        1,
        KEEPALIVE_MAX,
        f"BIRD takes whole seconds from 1 to {KEEPALIVE_MAX} here (half of its 240 s hold time)",
    ),
]


class PrefixLength(_Strict):
    min: int | None = Field(default=None, ge=0, le=128)
    max: int | None = Field(default=None, ge=0, le=128)


class CommunityMatch(_Strict):
    values: list[Community] = Field(min_length=1, max_length=1)


class AddCommunity(_Strict):
    value: Community


class PrependASPath(_Strict):
    prefix: list[ASNumber] = Field(min_length=1, max_length=10)


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
    """One BGPFilter rule; `FilterRuleV4`/`FilterRuleV6` hold it to its address family."""

    FAMILY: ClassVar[int] = 0
    action: Literal["Accept", "Reject"]
    cidr: str | None = None
    matchOperator: Literal["Equal", "NotEqual", "In", "NotIn"] | None = None
    prefixLength: PrefixLength | None = None
    source: Literal["RemotePeers"] | None = None
    interface: str | None = None
    peerType: Literal["eBGP", "iBGP"] | None = None
    priority: int | None = Field(default=None, ge=1, le=2147483646)
    communities: CommunityMatch | None = None
    asPathPrefix: list[ASNumber] | None = Field(default=None, max_length=64)
    operations: list[FilterOperation] = Field(default_factory=list, max_length=16)

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                net = ipaddress.ip_network(v, strict=True)
            except ValueError as e:
                raise ValueError(f"cidr {shown(v)}: {e} (BIRD rejects host bits in a prefix)") from None
            if not _CIDR.fullmatch(v):
                raise ValueError(f"cidr {shown(v)} is not a prefix like 203.0.113.0/24")
            if cls.FAMILY and net.version != cls.FAMILY:
                raise ValueError(
                    f"cidr {v} is IPv{net.version}: a V{cls.FAMILY} rule needs an IPv{cls.FAMILY} prefix"
                )
        return v

    @field_validator("interface")
    @classmethod
    def _interface(cls, v: str | None) -> str | None:
        return None if v is None else interface_pattern(v)

    def model_post_init(self, _: Any) -> None:
        top = 32 if self.FAMILY == 4 else 128
        if (
            self.prefixLength is not None
            and max(self.prefixLength.min or 0, self.prefixLength.max or 0) > top
        ):
            raise ValueError(
                f"prefixLength above /{top}: a V{self.FAMILY} rule matches IPv{self.FAMILY} prefixes"
            )
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


class FilterRuleV4(FilterRule):
    FAMILY: ClassVar[int] = 4


class FilterRuleV6(FilterRule):
    FAMILY: ClassVar[int] = 6


class BGPFilterSpec(_Strict):
    exportV4: list[FilterRuleV4] = Field(default_factory=list)
    importV4: list[FilterRuleV4] = Field(default_factory=list)
    exportV6: list[FilterRuleV6] = Field(default_factory=list)
    importV6: list[FilterRuleV6] = Field(default_factory=list)


class SecretKeyRef(_Strict):
    """A key of a Kubernetes Secret in calico-node's namespace."""

    name: Annotated[str, AfterValidator(lambda v: dns_subdomain(v, "secret name"))]
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    optional: bool | None = None


class SecretRef(_Strict):
    secretKeyRef: SecretKeyRef


class NamedCommunity(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    value: Community


class PrefixAdvertisement(_Strict):
    """Communities (values, or names of BGPConfiguration `communities`) to add to routes in a CIDR."""

    cidr: str
    communities: list[Annotated[str, Field(max_length=253, pattern=r"^[-._:a-zA-Z0-9]+$")]] = Field(
        default_factory=list, max_length=50
    )

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return check_cidr(v)


class ServiceCIDR(_Strict):
    cidr: str | None = None  # service advertisement is not emulated: kept, not rendered

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str | None) -> str | None:
        return None if v is None else check_cidr(v)


InterfacePattern = Annotated[str, AfterValidator(lambda v: interface_pattern(v))]
LOG_SEVERITY = re.compile(r"(?i)(Trace|Debug|Info|Warning|Error|Fatal)?")


class BGPConfigurationSpec(_Strict):
    asNumber: ASNumber | None = None
    nodeToNodeMeshEnabled: bool | None = None
    logSeverityScreen: Annotated[str, Field(max_length=16)] | None = None
    listenPort: int | None = Field(default=None, ge=1, le=65535)
    bindMode: Literal["None", "NodeIP"] | None = None
    localWorkloadPeeringIPV4: str | None = None
    localWorkloadPeeringIPV6: str | None = None
    ipv4NormalRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    ipv6NormalRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    nodeMeshMaxRestartTime: Annotated[str, duration(0, 3600, "at most 1h")] | None = None
    nodeMeshPassword: SecretRef | None = None
    communities: list[NamedCommunity] | None = Field(default=None, max_length=500)
    prefixAdvertisements: list[PrefixAdvertisement] | None = Field(default=None, max_length=500)
    ignoredInterfaces: list[InterfacePattern] | None = Field(default=None, max_length=64)
    serviceClusterIPs: list[ServiceCIDR] | None = Field(default=None, max_length=500)
    serviceExternalIPs: list[ServiceCIDR] | None = Field(default=None, max_length=500)
    serviceLoadBalancerIPs: list[ServiceCIDR] | None = Field(default=None, max_length=500)
    serviceLoadBalancerAggregation: Literal["Enabled", "Disabled"] | None = None
    programClusterRoutes: Literal["Enabled", "Disabled", "EnabledIPIPOnly", "EnabledNoEncapOnly"] | None = (
        None
    )

    @field_validator("logSeverityScreen")
    @classmethod
    def _severity(cls, v: str | None) -> str | None:
        if v is not None and not LOG_SEVERITY.fullmatch(v):
            raise ValueError(f"{shown(v)} is not one of Trace, Debug, Info, Warning, Error, Fatal")
        return v

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
        if v is not None and "%" in v:
            raise ValueError(f"{shown(v)} has a scope (%...): give a plain IPv6 address")
        if v is not None and ipaddress.IPv6Address(v).is_link_local:
            raise ValueError("must not be link-local (Calico cannot provision the scope)")
        return v


ALLOW_LOCAL_AS_MAX = 255
"""Most occurrences of the local AS a peer may accept in an AS path (kvlab's bound: BIRD
counts them in an int, and an AS_PATH segment holds at most 255 AS numbers)."""


class BGPPeerSpec(_Strict):
    node: Annotated[str, AfterValidator(lambda v: dns_subdomain(v, "node name"))] | None = None
    nodeSelector: Selector | None = None
    peerIP: str | None = None
    peerSelector: Selector | None = None
    asNumber: ASNumber | None = None
    localASNumber: ASNumber | None = None
    filters: list[Annotated[str, AfterValidator(lambda v: dns_subdomain(v, "filter name"))]] = Field(
        default_factory=list, max_length=64
    )
    localWorkloadSelector: Selector | None = None
    nextHopMode: Literal["Auto", "Self", "Keep"] | None = None
    keepOriginalNextHop: bool | None = None
    numAllowedLocalASNumbers: int | None = Field(default=None, ge=0, le=ALLOW_LOCAL_AS_MAX)
    password: SecretRef | None = None
    sourceAddress: Literal["UseNodeIP", "None"] | None = None
    maxRestartTime: Annotated[str, duration(0, 3600, "at most 1h")] | None = None
    keepaliveTime: Keepalive | None = None
    ttlSecurity: int | None = Field(default=None, ge=0, le=255)
    reachableBy: IPText | None = None
    reversePeering: Literal["Auto", "Manual"] | None = None

    @field_validator("peerIP")
    @classmethod
    def _peer_ip(cls, v: str | None, info: ValidationInfo) -> str | None:
        """An IPv4 or IPv6 address (a lab checks the family against its pools); the emulated
        nodes peer on port 179. In the CALICO_API context also `<ip>:<port>` / `[<ipv6>]:<port>`."""
        if v is None:
            return v
        try:
            ip, port = split_peer_ip(v)
        except ValueError:
            raise ValueError(f"{shown(v)} is not an IP address") from None
        if calico_api(info):
            return v
        if port is not None:
            raise ValueError(
                f"peerIP {shown(v)} has a port: peering on another port than 179 is not emulated"
            )
        return str(ip)

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


def accepts(parse: Callable[[str], Any], text: str) -> bool:
    """Whether `parse` takes `text` (raises no ValueError)."""
    try:
        parse(text)
    except ValueError:
        return False
    return True


def _is_ip(text: str) -> bool:
    return "%" not in text and accepts(ipaddress.ip_address, text)


def _ip_text(value: str) -> str:
    if not _is_ip(value):
        raise ValueError(f"{shown(value)} is not an IP address")
    return value


IPText = Annotated[str, Field(max_length=64), AfterValidator(_ip_text)]
"""An IPv4 or IPv6 address, as text."""


def split_peer_ip(value: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int | None]:
    """A BGPPeer peerIP as (address, port or None): '10.0.0.1', '10.0.0.1:166', '2001::1',
    '[2001::1]:166'; never a scoped IPv6 address ('fe80::1%eth0'). Raises ValueError."""
    if "%" in value:
        raise ValueError(f"{shown(value)} is not an IP address (a scope is no part of one)")
    try:
        return ipaddress.ip_address(value), None
    except ValueError:
        pass
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or not 1 <= int(port) <= 65535:
        raise ValueError(f"{shown(value)} is not an IP address")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{shown(value)} is not an IP address")
        ip = ipaddress.ip_address(host[1:-1])
        if ip.version != 6:
            raise ValueError(f"{shown(value)} is not an IP address")
    else:
        ip = ipaddress.ip_address(host)
        if ip.version != 4:
            raise ValueError(f"{shown(value)} is not an IP address")
    return ip, int(port)


class IPPoolSpec(_Strict):
    cidr: str

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return check_cidr(v, strict=False)  # Calico takes the network of the CIDR

    blockSize: int | None = Field(default=None, ge=0, le=128)
    ipipMode: Literal["Never", "Always", "CrossSubnet"] | None = None
    vxlanMode: Literal["Never", "Always", "CrossSubnet"] | None = None
    natOutgoing: bool | None = None
    disabled: bool | None = None
    disableBGPExport: bool | None = None
    nodeSelector: FreeText | None = None  # not emulated: kept, not evaluated
    namespaceSelector: FreeText | None = None
    allowedUses: list[Literal["Workload", "Tunnel", "LoadBalancer"]] | None = None
    assignmentMode: Literal["Automatic", "Manual"] | None = None


class IPAMConfigurationSpec(_Strict):
    strictAffinity: bool  # required by the CRD
    autoAllocateBlocks: bool  # required by the CRD
    maxBlocksPerHost: int | None = Field(default=None, ge=0, le=2147483647)
    kubeVirtVMAddressPersistence: Literal["Enabled", "Disabled"] | None = None
    ipCooldownSeconds: int | None = Field(default=None, ge=0, le=2147483647)


class FelixConfigurationSpec(BaseModel):
    """Only the fields the harness interprets are typed; the rest are kept as given."""

    model_config = ConfigDict(extra="allow", frozen=True)
    ipv4NormalRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    ipv4ElevatedRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    ipv6NormalRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    ipv6ElevatedRoutePriority: int | None = Field(default=None, ge=1, le=2147483646)
    liveMigrationRouteConvergenceTime: (
        Annotated[str, duration(0, 3600, "the node agent holds elevated routes for at most 1h")] | None
    ) = None


class _Resource(_Strict):
    apiVersion: Literal["projectcalico.org/v3"]
    metadata: Metadata


class BGPConfiguration(_Resource):
    kind: Literal["BGPConfiguration"]
    spec: BGPConfigurationSpec = Field(default_factory=BGPConfigurationSpec)

    @field_validator("spec", mode="before")
    @classmethod
    def _empty(cls, v: Any) -> Any:
        return {} if v is None else v  # `spec:` with nothing under it


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


class NodeBGPSpec(_Strict):
    """What confd reads of a Calico Node: its BGP addresses (address/prefix length: the
    prefix is the node's subnet), its AS, its route reflector cluster ID."""

    ipv4Address: str | None = None
    ipv6Address: str | None = None
    asNumber: ASNumber | None = None
    routeReflectorClusterID: str | None = None
    ipv4IPIPTunnelAddr: IPText | None = None  # kept, not interpreted

    @field_validator("ipv4Address", "ipv6Address")
    @classmethod
    def _address(cls, v: str | None, info: ValidationInfo) -> str | None:
        if not v:
            return None
        try:
            iface = ipaddress.ip_interface(v)
        except ValueError:
            raise ValueError(f"{shown(v)} is not an address like 10.192.0.2/16") from None
        want = 4 if info.field_name == "ipv4Address" else 6
        if iface.version != want:
            raise ValueError(f"{v} is not an IPv{want} address")
        return v

    @field_validator("routeReflectorClusterID")
    @classmethod
    def _cluster_id(cls, v: str | None) -> str | None:
        if v:
            try:
                ipaddress.IPv4Address(v)
            except ValueError:
                raise ValueError(
                    f"routeReflectorClusterID {shown(v)} is not an IPv4 address (BGP cluster ID)"
                ) from None
        return v or None


class NodeWireguardSpec(_Strict):
    interfaceIPv4Address: IPText | None = None
    interfaceIPv6Address: IPText | None = None


class NodeSpec(_Strict):
    bgp: NodeBGPSpec | None = None
    wireguard: NodeWireguardSpec | None = None
    # Kept, not interpreted (a `calicoctl get nodes -o yaml` carries them).
    addresses: list[dict[str, FreeText]] | None = Field(default=None, max_length=64)
    orchRefs: list[dict[str, FreeText]] | None = Field(default=None, max_length=16)
    ipv4VXLANTunnelAddr: FreeText | None = None
    ipv6VXLANTunnelAddr: FreeText | None = None
    vxlanTunnelMACAddr: FreeText | None = None
    vxlanTunnelMACAddrV6: FreeText | None = None


class Node(_Resource):
    """A Calico Node (`projectcalico.org/v3`, not a CRD: calico-node writes it). Not part of a
    lab's resources (a lab's nodes come from the lab file); the input of `harness.calico.cluster`."""

    kind: Literal["Node"]
    spec: NodeSpec = Field(default_factory=NodeSpec)

    @field_validator("spec", mode="before")
    @classmethod
    def _empty(cls, v: Any) -> Any:
        return {} if v is None else v


CalicoResource = Annotated[
    BGPConfiguration | BGPPeer | BGPFilter | IPPool | IPAMConfiguration | FelixConfiguration,
    Field(discriminator="kind"),
]
KINDS = ("BGPConfiguration", "BGPPeer", "BGPFilter", "IPPool", "IPAMConfiguration", "FelixConfiguration")

ClusterResource = Annotated[
    BGPConfiguration | BGPPeer | BGPFilter | IPPool | IPAMConfiguration | FelixConfiguration | Node,
    Field(discriminator="kind"),
]
"""A lab's resource kinds and Calico Nodes: a cluster described by Calico resources alone."""
CLUSTER_KINDS = (*KINDS, "Node")
