"""A probe for migrations: watch routers' BIRD (and their kernels' FIB) for one prefix in a
thread and record every change of what they hold, on any runtime (BIRD's control socket and the
entity's network namespace are what `Runtime.bird_socket` and `Runtime.netns_path` give)."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from typing import Any

from harness import netlink
from harness.birdc import BirdClient, BirdError
from harness.speakers import Probed
from harness.wait import eventually

# linux/netlink.h, linux/rtnetlink.h
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RTM_NEWROUTE, _RTM_GETROUTE = 24, 26
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_RTA_DST, _RTA_GATEWAY, _RTA_PRIORITY, _RTA_TABLE = 1, 5, 6, 15
_RT_TABLE_MAIN = 254
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR = struct.Struct("=HH")  # length, type


class FibProbe:
    """The gateway a namespace's kernel forwards exactly one prefix with (its lowest-metric route
    in the main table; None without one, or for a multipath route), over a netlink socket opened
    in that namespace. A route dump parsed with struct: a poller every few milliseconds cannot
    afford pyroute2's decoding of every route of the table (milliseconds of CPU per dump)."""

    def __init__(self, netns: str, prefix: str):
        net = ipaddress.ip_network(prefix, strict=False)
        self.family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
        self.dst, self.dst_len = net.network_address.packed, net.prefixlen
        self._seq = 0
        with netlink.inside(netns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.settimeout(5.0)

    def close(self) -> None:
        self.sock.close()

    def gateway(self) -> str | None:
        self._seq = seq = self._seq + 1
        request = _RTMSG.pack(self.family, 0, 0, 0, 0, 0, 0, 0, 0)
        flags = _NLM_F_REQUEST | _NLM_F_DUMP
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(request), _RTM_GETROUTE, flags, seq, 0) + request)
        best: tuple[int, bytes | None] | None = None  # (metric, gateway) of the first lowest metric
        while True:
            data = self.sock.recv(1 << 16)
            at = 0
            while at + _NLMSGHDR.size <= len(data):
                length, kind, _, msg_seq, _ = _NLMSGHDR.unpack_from(data, at)
                if length < _NLMSGHDR.size:
                    raise OSError("malformed netlink message in a route dump")
                end, body = at + length, at + _NLMSGHDR.size
                at = (end + 3) & ~3
                if msg_seq != seq:
                    continue  # the rest of an earlier dump that was given up on
                if kind == _NLMSG_DONE:
                    return None if best is None or best[1] is None else socket.inet_ntop(self.family, best[1])
                if kind == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, body)
                    raise OSError(-code, "netlink route dump failed")
                if kind != _RTM_NEWROUTE:
                    continue
                family, dst_len, _, _, table, *_ = _RTMSG.unpack_from(data, body)
                if family != self.family or dst_len != self.dst_len:
                    continue
                attrs = _attributes(data, body + _RTMSG.size, end)
                table = int.from_bytes(attrs[_RTA_TABLE], "little") if _RTA_TABLE in attrs else table
                dst = attrs.get(_RTA_DST, bytes(len(self.dst)))
                if table != _RT_TABLE_MAIN or dst != self.dst:
                    continue
                metric = int.from_bytes(attrs[_RTA_PRIORITY], "little") if _RTA_PRIORITY in attrs else 0
                if best is None or metric < best[0]:
                    best = (metric, attrs.get(_RTA_GATEWAY))


def _attributes(data: bytes, at: int, end: int) -> dict[int, bytes]:
    """The route attributes of one message, by type (the first of each)."""
    out: dict[int, bytes] = {}
    while at + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, at)
        if length < _RTATTR.size:
            break
        out.setdefault(kind, data[at + _RTATTR.size : at + length])
        at += (length + 3) & ~3
    return out


class RouteWatcher:
    """Polls routers' BIRD for one prefix in a thread and records every change of what they hold."""

    def __init__(self, runtime: Probed, routers: list[str], prefix: str, interval: float = 0.005):
        self.runtime, self.routers, self.prefix, self.interval = runtime, routers, prefix, interval
        self.family = 6 if ":" in prefix else 4  # an IPv6 prefix is bird6's and the kernel's IPv6 table
        self.events: list[dict[str, Any]] = []
        self.cycles = 0
        self._probes: dict[str, FibProbe] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvlab-route-watcher", daemon=True)

    def __enter__(self) -> RouteWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _fib(self, router: str) -> str | None:
        """The gateway the router's kernel uses for exactly `prefix` (lowest metric), if any."""
        probe = self._probes.get(router)
        if probe is None:
            path = self.runtime.netns_path(router)
            if path is None:
                return None
            probe = self._probes[router] = FibProbe(path, self.prefix)
        return probe.gateway()

    def sync(self, cycles: int = 2, timeout: float = 5.0) -> None:
        """Wait until the watcher has polled every router `cycles` more times."""
        goal = self.cycles + cycles
        eventually(
            lambda: self.cycles >= goal or not self._thread.is_alive(),
            timeout=timeout,
            interval=0.01,
            what="the route watcher to poll the routers again",
        )

    def _run(self) -> None:
        clients = {r: BirdClient(self.runtime.bird_socket(r, self.family)) for r in self.routers}
        last: dict[str, Any] = {}
        try:
            while not self._stop.is_set():
                for router, client in clients.items():
                    try:
                        routes = client.routes(self.prefix)
                    except BirdError:
                        continue
                    best = next((r for r in routes if r.best), None)
                    view = {
                        "paths": len(routes),
                        "best_via": best.via if best else None,
                        "best_protocol": best.protocol if best else None,
                        "communities": best.community_strings() if best else [],
                        "ecmp": bool(best and len(best.next_hops) > 1),
                        "fib_via": self._fib(router),  # what the router's kernel forwards with
                    }
                    if last.get(router) != view:
                        last[router] = view
                        self.events.append(
                            {
                                "t": time.time(),
                                "source": f"bird:{router}",
                                "kind": "route",
                                "router": router,
                                "prefix": self.prefix,
                                "family": self.family,
                                **view,
                            }
                        )
                self.cycles += 1
                self._stop.wait(self.interval)
        finally:
            for c in clients.values():
                c.close()
            for probe in self._probes.values():
                probe.close()
