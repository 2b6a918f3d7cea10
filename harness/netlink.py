"""Network namespaces, links, addresses, routes and sysctls through netlink (pyroute2).

Every function takes a namespace *name* (or the absolute path of a namespace file, e.g. a
container's `/proc/<pid>/ns/net`) and attaches with `flags=0`, so a typo never creates a stray
namespace. Interfaces are created directly inside lab namespaces, never
in the root namespace, so two labs cannot clash on interface names.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import re
import socket
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError, netns

NETNS_DIR = Path("/run/netns")
RTPROT_BOOT = 3  # what Felix uses for workload routes by default (deviceRouteProtocol)


def list_namespaces() -> list[str]:
    return sorted(netns.listnetns())


def ns_path(ns: str) -> Path:
    """The namespace file: `/run/netns/<name>` for a name, the path itself for an absolute path."""
    return Path(ns) if ns.startswith("/") else NETNS_DIR / ns


def namespace_exists(name: str) -> bool:
    return ns_path(name).exists()


def create_namespace(name: str, sysctls: dict[str, str] | None = None) -> None:
    """Create a namespace, bring its loopback up and write `sysctls` (as `set_sysctls`) in it.

    Made by a short-lived thread that unshares its network namespace and has pyroute2 bind-mount
    it as `/run/netns/<name>` (what `ip netns add` does). pyroute2's netns.create forks a child
    for it instead: 20 ms from a lab builder, 3 times a thread's cost, for each of 300 namespaces.
    Many namespaces: `NamespaceMaker`, one thread for all."""
    with NamespaceMaker() as maker:
        maker.create(name, sysctls)


class NamespaceMaker:
    """Creates namespaces one after the other from one thread of its own (`create_namespace`
    without a thread start each): each `unshare` takes that thread into a new, empty namespace."""

    def __enter__(self) -> NamespaceMaker:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns-maker")
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)  # the thread ends: nothing holds the last namespace

    def create(self, name: str, sysctls: dict[str, str] | None = None) -> None:
        self._pool.submit(_make_namespace, name, sysctls or {}).result()


def _make_namespace(name: str, sysctls: dict[str, str]) -> None:
    """In a thread of its own: unshare into a new namespace, bind it as `name`, set it up."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    netns.attach(name, "thread-self")  # bind-mounts /proc/thread-self/ns/net
    with _channel(None) as ch:
        ch.apply([LinkSet("lo", up=True)])
    _write_sysctls(sysctls)  # this thread is inside the namespace


def remove_namespace(name: str) -> None:
    if namespace_exists(name):
        netns.remove(name)


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def enter(ns: str) -> None:
    """Move this thread into namespace `ns` for the rest of its life (setns is per thread)."""
    target = os.open(ns_path(ns), os.O_RDONLY)
    try:
        _setns(target)
    finally:
        os.close(target)


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block in a namespace (this thread only: setns is per thread), then come back.

    Thread-safe, unlike pyroute2's pushns/popns, whose stack is shared by the process. Sockets
    created inside stay in the namespace after the block.
    """
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(ns_path(ns), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(back)
    finally:
        os.close(back)


@contextmanager
def ipr(namespace: str) -> Iterator[IPRoute]:
    """An IPRoute socket attached to an existing namespace.

    The socket is opened inside the namespace by this thread, which then returns; a netlink
    socket stays in the namespace it was created in. This avoids pyroute2's helper process per
    namespaced socket (~10 ms each).
    """
    if not namespace_exists(namespace):
        raise LookupError(f"network namespace '{namespace}' does not exist")
    with inside(namespace):
        ip = IPRoute()
    with ip:
        yield ip


def _index(ip: IPRoute, ifname: str) -> int:
    found = ip.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface '{ifname}'")
    return found[0]


def add_veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair with one end in each namespace."""
    with ipr(ns_a) as ip:
        ip.link("add", ifname=if_a, kind="veth", peer={"ifname": if_b, "net_ns_fd": ns_b})


def add_bridge(ns: str, ifname: str) -> None:
    with ipr(ns) as ip:
        ip.link("add", ifname=ifname, kind="bridge")
        ip.link("set", index=_index(ip, ifname), state="up")


def add_tap(ns: str, ifname: str) -> None:
    """A persistent tap device in a namespace, down, no packet info: what `ip tuntap add mode tap`
    makes, for a QEMU to attach to.

    pyroute2 makes a tap with ioctls on /dev/net/tun, which act in the calling thread's
    namespace (not the netlink socket's): the whole call runs inside the namespace.
    """
    with inside(ns), IPRoute() as ip:
        ip.link("add", ifname=ifname, kind="tuntap", mode="tap", ifr={"no_pi": 1})


def enslave(ns: str, ifname: str, bridge: str) -> None:
    with ipr(ns) as ip:
        ip.link("set", index=_index(ip, ifname), master=_index(ip, bridge))


def link_up(ns: str, ifname: str, *, mac: str | None = None) -> None:
    with ipr(ns) as ip:
        kwargs = {"address": mac} if mac else {}
        ip.link("set", index=_index(ip, ifname), state="up", **kwargs)


def link_down(ns: str, ifname: str) -> None:
    with ipr(ns) as ip:
        ip.link("set", index=_index(ip, ifname), state="down")


def is_up(ns: str, ifname: str) -> bool:
    """Whether an interface is administratively up (LookupError if it does not exist)."""
    with ipr(ns) as ip:
        (link,) = ip.get_links(_index(ip, ifname))
        return bool(link["flags"] & 1)  # IFF_UP


def link_delete(ns: str, ifname: str) -> None:
    with ipr(ns) as ip:
        found = ip.link_lookup(ifname=ifname)
        if found:
            ip.link("del", index=found[0])


def add_address(ns: str, ifname: str, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
    with ipr(ns) as ip:
        try:
            ip.addr(
                "add", index=_index(ip, ifname), address=str(address.ip), prefixlen=address.network.prefixlen
            )
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise


def addresses(ns: str, ifname: str) -> list[str]:
    """IPv4 addresses of an interface, as 'a.b.c.d/len'."""
    with ipr(ns) as ip:
        idx = _index(ip, ifname)
        return [
            f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ip.get_addr(family=socket.AF_INET, index=idx)
        ]


def add_route(
    ns: str,
    dst: str,
    *,
    gateway: str | None = None,
    dev: str | None = None,
    metric: int | None = None,
    onlink: bool = False,
    proto: int = RTPROT_BOOT,
) -> None:
    """Add (or replace) a route. `metric` is the kernel route priority (RTA_PRIORITY)."""
    with ipr(ns) as ip:
        kwargs: dict = {"dst": dst, "proto": proto}
        if gateway:
            kwargs["gateway"] = gateway
        if dev:
            kwargs["oif"] = _index(ip, dev)
        if metric is not None:
            kwargs["priority"] = metric
        if onlink:
            kwargs["flags"] = 4  # RTNH_F_ONLINK
        ip.route("replace", **kwargs)


def delete_route(ns: str, dst: str, *, metric: int | None = None) -> bool:
    """Delete a route; False if there was none."""
    with ipr(ns) as ip:
        kwargs: dict = {"dst": dst}
        if metric is not None:
            kwargs["priority"] = metric
        try:
            ip.route("del", **kwargs)
        except NetlinkError as e:
            if e.code in (errno.ESRCH, errno.ENOENT):
                return False
            raise
        return True


def add_permanent_neighbour(ns: str, ifname: str, ip_addr: str, mac: str) -> None:
    with ipr(ns) as ip:
        ip.neigh("replace", dst=ip_addr, lladdr=mac, ifindex=_index(ip, ifname), state="permanent")


def neighbours(ns: str, ifname: str, family: int = 4) -> list[tuple[str, str]]:
    """(ip, mac) of the resolved neighbour entries (family 4: ARP, 6: NDP) on an interface."""
    with ipr(ns) as ip:
        idx = _index(ip, ifname)
        out = []
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        for n in ip.neigh("dump", ifindex=idx, family=af):
            dst, mac = n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR")
            if dst and mac and n["state"] not in (0x20, 0x01):  # not FAILED / INCOMPLETE
                out.append((dst, mac))
        return out


def set_neighbour(ns: str, ifname: str, ip_addr: str, mac: str) -> None:
    """A resolved (REACHABLE) neighbour entry, as a guest's ARP cache would hold it."""
    with ipr(ns) as ip:
        ip.neigh("replace", dst=ip_addr, lladdr=mac, ifindex=_index(ip, ifname), state="reachable")


def set_sysctls(ns: str, values: dict[str, str]) -> None:
    """Write /proc/sys keys (dotted names) inside a namespace."""
    with inside(ns):
        _write_sysctls(values)


SYSCTL_PART = re.compile(r"[A-Za-z0-9_-]{1,64}")


def sysctl_path(key: str) -> Path:
    """/proc/sys/... of a dotted key; ValueError unless every part is a plain name (an interface
    name in a key must not walk out of /proc/sys)."""
    parts = key.split(".")
    if not all(SYSCTL_PART.fullmatch(p) for p in parts):
        raise ValueError(f"not a sysctl key: {key!r}")
    return Path("/proc/sys", *parts)


def _write_sysctls(values: dict[str, str]) -> None:
    """Write /proc/sys keys in this thread's namespace (/proc/sys/net is the writer's)."""
    for key, value in values.items():
        sysctl_path(key).write_text(value)


# -- batches: many requests to one namespace in two round trips ----------------------------
#
# Bringing a lab up takes thousands of link, address and route requests. pyroute2's IPRoute costs
# a socket, an event loop turn and an interface lookup (a dump) per call; a batch is encoded here
# (the same messages pyroute2 sends: tests/unit/test_netlink_batch.py compares them byte for
# byte) and sent to the kernel together: the creations in one sendmsg, then, interface indexes
# read with one dump, everything else in another. The kernel acknowledges each message.

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE, RTM_NEWNEIGH = 16, 18, 20, 24, 28
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY = 1, 4, 5, 6
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP, RTNH_F_ONLINK, NUD_PERMANENT = 0x1, 0x4, 0x80
RT_TABLE_MAIN, RTN_UNICAST = 254, 1
_NEW = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
_REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
_SET = NLM_F_REQUEST | NLM_F_ACK


@dataclass(frozen=True)
class Veth:
    """A veth pair: `ifname` in the batch's namespace, `peer` in namespace `peer_ns`."""

    ifname: str
    peer: str
    peer_ns: str


@dataclass(frozen=True)
class Bridge:
    ifname: str


@dataclass(frozen=True)
class LinkSet:
    """Set an interface up (and its MAC), or make it a port of bridge `master`."""

    ifname: str
    up: bool = False
    mac: str | None = None
    master: str | None = None


@dataclass(frozen=True)
class Address:
    """An address on an interface (one already there is no error, as `add_address`)."""

    ifname: str
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Route:
    """Add or replace a route, as `add_route`."""

    dst: str
    gateway: str | None = None
    dev: str | None = None
    metric: int | None = None
    onlink: bool = False
    proto: int = RTPROT_BOOT
    scope: int = 0  # RT_SCOPE_UNIVERSE; 253 (link) for a workload's on-link route


@dataclass(frozen=True)
class Neighbour:
    """A permanent neighbour entry, as `add_permanent_neighbour`."""

    ifname: str
    ip: str
    mac: str


Request = Veth | Bridge | LinkSet | Address | Route | Neighbour
CREATIONS = (Veth, Bridge)


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


def _ip(text: str) -> tuple[int, bytes]:
    a = ipaddress.ip_address(text)
    return (socket.AF_INET if a.version == 4 else socket.AF_INET6), a.packed


def encode(req: Request, index: dict[str, int], fds: dict[str, int]) -> tuple[int, int, bytes]:
    """(message type, flags, body) of a request; `index`: interface name -> index in the
    batch's namespace, `fds`: namespace -> an open file of it (a veth's peer's)."""

    def idx(ifname: str) -> int:
        if ifname not in index:
            raise LookupError(f"no interface '{ifname}'")
        return index[ifname]

    if isinstance(req, Veth):
        peer = (
            _ifinfo()
            + _attr(IFLA_IFNAME, _name(req.peer))
            + _attr(IFLA_NET_NS_FD, struct.pack("=i", fds[req.peer_ns]))
        )
        info = _attr(IFLA_INFO_KIND, _name("veth")) + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer))
        return (
            RTM_NEWLINK,
            _NEW,
            _ifinfo() + _attr(IFLA_IFNAME, _name(req.ifname)) + _attr(IFLA_LINKINFO, info),
        )
    if isinstance(req, Bridge):
        info = _attr(IFLA_INFO_KIND, _name("bridge"))
        return (
            RTM_NEWLINK,
            _NEW,
            _ifinfo() + _attr(IFLA_IFNAME, _name(req.ifname)) + _attr(IFLA_LINKINFO, info),
        )
    if isinstance(req, LinkSet):
        up = IFF_UP if req.up else 0
        body = _ifinfo(idx(req.ifname), up, up)
        if req.mac is not None:
            body += _attr(IFLA_ADDRESS, bytes.fromhex(req.mac.replace(":", "")))
        if req.master is not None:
            body += _attr(IFLA_MASTER, struct.pack("=I", idx(req.master)))
        return RTM_NEWLINK, _SET, body
    if isinstance(req, Address):
        a = req.address
        family = socket.AF_INET if a.version == 4 else socket.AF_INET6
        body = struct.pack("=BBBBI", family, a.network.prefixlen, 0, 0, idx(req.ifname))
        body += _attr(IFA_ADDRESS, a.ip.packed)
        if a.version == 4:
            body += _attr(IFA_LOCAL, a.ip.packed)
        return RTM_NEWADDR, _NEW, body
    if isinstance(req, Route):
        dst = ipaddress.ip_network(req.dst)
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        flags = RTNH_F_ONLINK if req.onlink else 0
        body = struct.pack(
            "=BBBBBBBBI", family, dst.prefixlen, 0, 0, RT_TABLE_MAIN, req.proto, req.scope, RTN_UNICAST, flags
        )
        if dst.prefixlen:
            body += _attr(RTA_DST, dst.network_address.packed)
        if req.gateway:
            body += _attr(RTA_GATEWAY, _ip(req.gateway)[1])
        if req.dev:
            body += _attr(RTA_OIF, struct.pack("=I", idx(req.dev)))
        if req.metric is not None:
            body += _attr(RTA_PRIORITY, struct.pack("=I", req.metric))
        return RTM_NEWROUTE, _REPLACE, body
    family, packed = _ip(req.ip)
    body = struct.pack("=BxxxiHBB", family, idx(req.ifname), NUD_PERMANENT, 0, 0)
    body += _attr(NDA_DST, packed) + _attr(NDA_LLADDR, bytes.fromhex(req.mac.replace(":", "")))
    return RTM_NEWNEIGH, _REPLACE, body


class _Channel:
    """A netlink socket in one namespace: batches out, one acknowledgement per message back."""

    def __init__(self, sock: socket.socket, ns: str) -> None:
        self.sock, self.ns, self.seq = sock, ns, 0

    def _messages(self) -> Iterator[tuple[int, int, int, bytes]]:
        """(type, flags, sequence number, body) of what the kernel sends, one recv at a time."""
        data = self.sock.recv(1 << 20)
        off = 0
        while off + 16 <= len(data):
            size, kind, flags, seq, _ = struct.unpack_from("=IHHII", data, off)
            yield kind, flags, seq, data[off + 16 : off + size]
            off += (size + 3) & ~3

    def send(self, requests: Sequence[Request], index: dict[str, int], fds: dict[str, int]) -> None:
        """Send every request in one buffer; raise (after all were answered) for the first refused."""
        out, sent = bytearray(), {}
        for req in requests:
            kind, flags, body = encode(req, index, fds)
            self.seq += 1
            out += struct.pack("=IHHII", 16 + len(body), kind, flags, self.seq, 0) + body
            sent[self.seq] = req
        if not sent:
            return
        self.sock.sendall(out)
        errors: dict[int, int] = {}
        while sent.keys() - errors.keys():
            for kind, _, seq, body in self._messages():
                if kind == NLMSG_ERROR and seq in sent:
                    errors[seq] = -struct.unpack_from("=i", body)[0]
        for seq, code in sorted(errors.items()):
            req = sent[seq]
            if code and not (code == errno.EEXIST and isinstance(req, Address)):
                raise NetlinkError(code, f"{os.strerror(code)}: {req} in namespace {self.ns}")

    def links(self) -> dict[str, int]:
        """Interface name -> index, from one dump."""
        self.seq += 1
        body = _ifinfo()
        self.sock.sendall(
            struct.pack("=IHHII", 16 + len(body), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0) + body
        )
        out: dict[str, int] = {}
        while True:
            for kind, _, seq, msg in self._messages():
                if seq != self.seq:
                    continue
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", msg)[0]
                    raise NetlinkError(code, f"{os.strerror(code)}: link dump in namespace {self.ns}")
                if kind == RTM_NEWLINK:
                    index = struct.unpack_from("=i", msg, 4)[0]
                    off = 16
                    while off + 4 <= len(msg):
                        size, attr = struct.unpack_from("=HH", msg, off)
                        if attr == IFLA_IFNAME:
                            out[msg[off + 4 : off + size].rstrip(b"\0").decode()] = index
                            break
                        off += (size + 3) & ~3

    def apply(self, requests: Sequence[Request]) -> None:
        creations = [r for r in requests if isinstance(r, CREATIONS)]
        rest = [r for r in requests if not isinstance(r, CREATIONS)]
        if requests[: len(creations)] != creations:
            raise ValueError("a batch creates its interfaces before anything else")
        fds: dict[str, int] = {}
        try:
            for r in creations:
                if isinstance(r, Veth) and r.peer_ns not in fds:
                    fds[r.peer_ns] = os.open(ns_path(r.peer_ns), os.O_RDONLY | os.O_CLOEXEC)
            self.send(creations, {}, fds)
        finally:
            for fd in fds.values():
                os.close(fd)
        if rest:
            self.send(rest, self.links(), {})


class RouteChannel:
    """A netlink socket of this thread's namespace for one route at a time, kept open (a node
    agent's: it programs a migrated VM's /32 on the critical path of the migration, where
    pyroute2's request building and decoding took ~0.5 ms per route, and milliseconds when the
    agents' threads contend)."""

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        sock.settimeout(10)
        sock.bind((0, 0))
        self._ch = _Channel(sock, "(this thread's)")

    def replace(self, route: Route, index: int) -> None:
        """Add or replace `route` through the interface of that index (`route.dev` names it)."""
        self._ch.send([route], {route.dev or "": index}, {})

    def close(self) -> None:
        self._ch.sock.close()


@contextmanager
def _channel(ns: str | None) -> Iterator[_Channel]:
    """A channel in namespace `ns` (None: this thread's own)."""
    if ns is not None and not namespace_exists(ns):
        raise LookupError(f"network namespace '{ns}' does not exist")
    with inside(ns) if ns is not None else contextlib.nullcontext():
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    with sock:
        sock.settimeout(30)
        sock.bind((0, 0))
        yield _Channel(sock, ns or "(this thread's)")


def apply(ns: str, requests: Sequence[Request]) -> None:
    """Carry out `requests` in namespace `ns`, in order: its creations (which come first) in one
    round trip, then the rest, with interface names resolved by one dump in between. Raises
    NetlinkError naming the first request the kernel refused (each request is still answered),
    LookupError for an interface that is not there."""
    if requests:
        with _channel(ns) as ch:
            ch.apply(requests)


NEIGH_PROC = {4: ("ipv4", "arp_cache"), 6: ("ipv6", "ndisc_cache")}


def ensure_neighbour_room(entries: int, family: int = 4) -> str | None:
    """Make room for `entries` more neighbour (ARP, NDP) entries in the kernel's table, which all
    network namespaces share: its limits (`net.ipv4.neigh.default.gc_thresh2/3`, set in the
    host's namespace only) are raised, never lowered, to at least what is in the table now plus
    `entries`, twice that for the hard limit. Past gc_thresh3 a new neighbour cannot be resolved
    ("neighbor table overflow": BGP sessions stay in Connect until garbage collection frees
    entries, tens of seconds); past gc_thresh2 entries are evicted every 5 s. Returns what was
    raised, or None; OSError when the limits cannot be read or written."""
    proto, stat = NEIGH_PROC[family]
    keys = [Path(f"/proc/sys/net/{proto}/neigh/default/gc_thresh{n}") for n in (2, 3)]
    in_use = int(Path(f"/proc/net/stat/{stat}").read_text().splitlines()[1].split()[0], 16)
    soft, hard = (int(k.read_text()) for k in keys)
    want = in_use + entries
    if want <= soft:
        return None
    new_soft, new_hard = max(soft, want), max(hard, 2 * want)
    for key, old, new in ((keys[1], hard, new_hard), (keys[0], soft, new_soft)):  # hard first: 2 <= 3
        if new != old:
            key.write_text(str(new))
    return (
        f"net.{proto}.neigh.default.gc_thresh2/3 raised from {soft}/{hard} to {new_soft}/{new_hard} "
        f"(neighbour entries of every namespace: {in_use} in use, {entries} more for this lab)"
    )


def namespace_pids(name: str) -> list[int]:
    """Processes whose network namespace is `name` (what `ip netns pids` reports)."""
    try:
        target = os.stat(NETNS_DIR / name)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue
        if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
            pids.append(int(entry.name))
    return pids
