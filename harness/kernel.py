"""Kernel routing table probe (netlink via pyroute2, no ``ip`` subprocess)."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netns import listnetns

__all__ = ["RT_PROTOCOLS", "RT_TYPES", "KernelRoute", "kernel_routes", "routes_from"]

#: rtm_protocol numbers with a name (anything else is reported as the number).
RT_PROTOCOLS: Mapping[int, str] = {2: "kernel", 3: "boot", 4: "static", 12: "bird", 16: "dhcp"}

#: rtm_type numbers (linux/rtnetlink.h).
RT_TYPES: Mapping[int, str] = {
    0: "unspec",
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
    11: "xresolve",
}


@dataclass(frozen=True)
class KernelRoute:
    """One kernel route as the probe reports it."""

    prefix: str  # "203.0.113.0/24"; the default route is "0.0.0.0/0" (or "::/0")
    gateway: str | None
    dev: str | None
    metric: int  # RTA_PRIORITY (0 when absent), not RTA_METRICS
    protocol: str  # "kernel", "boot", "static", "bird", "dhcp", else the number as a string
    table: int
    route_type: str  # "unicast", "blackhole", "unreachable", "prohibit", ...
    scope: int
    multipath: tuple[tuple[str | None, str | None], ...] = ()  # (gateway, dev) per next hop

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "gateway": self.gateway,
            "dev": self.dev,
            "metric": self.metric,
            "protocol": self.protocol,
            "table": self.table,
            "route_type": self.route_type,
            "scope": self.scope,
            "multipath": [{"gateway": gw, "dev": dev} for gw, dev in self.multipath],
        }


def address_family(prefix: str | None, family: int | None = None) -> int:
    """The socket family (AF_INET/AF_INET6) of a probe: `family` (4 or 6) if given, else the
    prefix's, else IPv4."""
    if family is None:
        family = 6 if prefix is not None and ":" in prefix else 4
    return socket.AF_INET6 if family == 6 else socket.AF_INET


def _normalize_prefix(prefix: str, family: int) -> str:
    if prefix == "default":
        return "0.0.0.0/0" if family == socket.AF_INET else "::/0"
    return str(ipaddress.ip_network(prefix, strict=False))


def _nh_attr(nh: Any, name: str) -> Any:
    """RTA_* attribute of a RTA_MULTIPATH next hop (a dict in pyroute2 0.9, an nla earlier)."""
    if isinstance(nh, Mapping):
        for key, value in nh.get("attrs", ()):
            if key == name:
                return value
        return None
    return nh.get_attr(name)


def _route_from_msg(msg: Any, family: int, links: Mapping[int, str]) -> KernelRoute:
    dst = msg.get_attr("RTA_DST")
    if dst is None:
        dst = "0.0.0.0" if family == socket.AF_INET else "::"
    table = msg.get_attr("RTA_TABLE")
    if table is None:
        table = msg["table"]
    oif = msg.get_attr("RTA_OIF")
    hops: list[tuple[str | None, str | None]] = []
    for nh in msg.get_attr("RTA_MULTIPATH") or ():
        nh_oif = nh["oif"] if isinstance(nh, Mapping) else nh.get("oif")
        hops.append((_nh_attr(nh, "RTA_GATEWAY"), links.get(nh_oif) if nh_oif else None))
    proto = msg["proto"]
    rtype = msg["type"]
    return KernelRoute(
        prefix=f"{dst}/{msg['dst_len']}",
        gateway=msg.get_attr("RTA_GATEWAY"),
        dev=links.get(oif) if oif is not None else None,
        metric=int(msg.get_attr("RTA_PRIORITY") or 0),
        protocol=RT_PROTOCOLS.get(proto, str(proto)),
        table=int(table),
        route_type=RT_TYPES.get(rtype, str(rtype)),
        scope=int(msg["scope"]),
        multipath=tuple(hops),
    )


def routes_from(
    ipr: IPRoute,
    prefix: str | None = None,
    *,
    family: int = socket.AF_INET,
    table: int | None = 254,
    devices: bool = True,
) -> list[KernelRoute]:
    """`kernel_routes` over an already open socket (e.g. one a poller keeps).

    ``devices=False`` skips the link dump: `dev` is then None, which is cheaper for pollers
    that only need gateways and metrics.
    """
    want = _normalize_prefix(prefix, family) if prefix is not None else None
    links = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()} if devices else {}
    out: list[KernelRoute] = []
    want_len = int(want.rsplit("/", 1)[1]) if want is not None else None
    for msg in ipr.route("dump", family=family):
        if want_len is not None and msg["dst_len"] != want_len:
            continue  # cheap test first: pollers call this every few milliseconds
        route = _route_from_msg(msg, family, links)
        if table is not None and route.table != table:
            continue
        if want is not None and route.prefix != want:
            continue
        out.append(route)
    return out


def kernel_routes(
    netns: str | None,
    prefix: str | None = None,
    *,
    family: int = socket.AF_INET,
    table: int | None = 254,
) -> list[KernelRoute]:
    """Routes of ``family`` in routing ``table`` (None: all tables) of namespace ``netns``.

    ``netns=None`` probes the current namespace; an absolute path names a namespace file
    (e.g. a container's ``/proc/<pid>/ns/net``; entering it needs CAP_SYS_ADMIN).  With
    ``prefix`` only routes whose dst/len equals it exactly are returned (several, e.g. with
    different metrics). Raises LookupError when the namespace does not exist (it is never created).
    """
    if netns is None:
        with IPRoute() as ipr:
            return routes_from(ipr, prefix, family=family, table=table)
    if netns.startswith("/"):
        if not os.path.exists(netns):
            raise LookupError(f"network namespace file {netns!r} does not exist")
    elif netns not in listnetns():
        raise LookupError(f"network namespace {netns!r} does not exist")
    from harness.netlink import ipr as namespace_socket  # never creates a namespace

    with namespace_socket(netns) as ipr:
        return routes_from(ipr, prefix, family=family, table=table)
