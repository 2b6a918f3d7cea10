"""Network namespaces, links, addresses, routes and sysctls through netlink (pyroute2).

Every function takes a namespace *name* (or the absolute path of a namespace file, e.g. a
container's `/proc/<pid>/ns/net`) and attaches with `flags=0`, so a typo never creates a stray
namespace. Interfaces are created directly inside lab namespaces, never
in the root namespace, so two labs cannot clash on interface names.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


def create_namespace(name: str) -> None:
    """Create a namespace and bring its loopback up.

    Made by a short-lived thread that unshares its network namespace and has pyroute2 bind-mount
    it as `/run/netns/<name>` (what `ip netns add` does). pyroute2's netns.create forks a child
    for it instead: 20 ms from a lab builder, 3 times a thread's cost, for each of 300 namespaces."""
    failed: list[BaseException] = []

    def make() -> None:
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare: {os.strerror(err)}")
            netns.attach(name, "thread-self")  # bind-mounts /proc/thread-self/ns/net
            with IPRoute() as ip:
                ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
        except BaseException as e:
            failed.append(e)

    thread = threading.Thread(target=make, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


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
        for key, value in values.items():
            Path("/proc/sys", *key.split(".")).write_text(value)


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
