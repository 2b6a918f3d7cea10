"""harness.netlink batches: each request is encoded as the very message pyroute2 sends for the
per-call function it stands for (pyroute2's IPBatch compiles a request without sending it)."""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPBatch, IPRoute, NetlinkError

from harness import netlink
from harness.netlink import Address, Bridge, LinkSet, Neighbour, Request, Route, Veth

INDEX = {"br-rack": 7, "eth0": 5, "r1-n1": 9}
FDS = {"kvlab.x.r1-n1": 11}


def compiled(call: str, *args: object, **kwargs: object) -> tuple[int, int, bytes]:
    """(type, flags, body) of the one message pyroute2 compiles for `IPRoute.<call>(...)`."""
    ipb = IPBatch()
    getattr(ipb, call)(*args, **kwargs)
    data = bytes(ipb.batch)
    size, kind, flags, _, _ = struct.unpack_from("=IHHII", data)
    assert size == len(data)
    return kind, flags, data[16:size]


CASES: list[tuple[Request, tuple[str, tuple[object, ...], dict[str, object]]]] = [
    (Bridge("br-rack"), ("link", ("add",), {"ifname": "br-rack", "kind": "bridge"})),
    (
        Veth("r1-n1", "eth0", "kvlab.x.r1-n1"),
        ("link", ("add",), {"ifname": "r1-n1", "kind": "veth", "peer": {"ifname": "eth0", "net_ns_fd": 11}}),
    ),
    (LinkSet("eth0", up=True), ("link", ("set",), {"index": 5, "state": "up"})),
    (
        LinkSet("eth0", up=True, mac="ee:ee:ee:ee:ee:ee"),
        ("link", ("set",), {"index": 5, "state": "up", "address": "ee:ee:ee:ee:ee:ee"}),
    ),
    (LinkSet("r1-n1", master="br-rack"), ("link", ("set",), {"index": 9, "master": 7})),
    (
        Address("br-rack", ipaddress.ip_interface("198.18.1.1/24")),
        ("addr", ("add",), {"index": 7, "address": "198.18.1.1", "prefixlen": 24}),
    ),
    (
        Address("eth0", ipaddress.ip_interface("fdc9:9723:9bc:1::11/64")),
        ("addr", ("add",), {"index": 5, "address": "fdc9:9723:9bc:1::11", "prefixlen": 64}),
    ),
    (
        Route("0.0.0.0/0", gateway="198.18.1.1"),
        ("route", ("replace",), {"dst": "0.0.0.0/0", "proto": 3, "gateway": "198.18.1.1"}),
    ),
    (
        Route("::/0", gateway="fdc9:9723:9bc:1::1"),
        ("route", ("replace",), {"dst": "::/0", "proto": 3, "gateway": "fdc9:9723:9bc:1::1"}),
    ),
    (
        Route("169.254.1.1/32", dev="eth0"),
        ("route", ("replace",), {"dst": "169.254.1.1/32", "proto": 3, "oif": 5}),
    ),
    (
        Route("0.0.0.0/0", gateway="169.254.1.1", dev="eth0", onlink=True),
        (
            "route",
            ("replace",),
            {"dst": "0.0.0.0/0", "proto": 3, "gateway": "169.254.1.1", "oif": 5, "flags": 4},
        ),
    ),
    (
        Route("203.0.113.0/26", gateway="198.18.1.1", metric=512),
        (
            "route",
            ("replace",),
            {"dst": "203.0.113.0/26", "proto": 3, "gateway": "198.18.1.1", "priority": 512},
        ),
    ),
    (  # a node agent's workload route (RouteChannel): on-link, its priority as the metric
        Route("203.0.113.10/32", dev="eth0", metric=512, scope=253),
        (
            "route",
            ("replace",),
            {"dst": "203.0.113.10/32", "proto": 3, "oif": 5, "priority": 512, "scope": 253},
        ),
    ),
    (
        Route("2001:db8::10/128", dev="eth0", metric=1024),
        (
            "route",
            ("replace",),
            {"dst": "2001:db8::10/128", "family": 10, "proto": 3, "oif": 5, "priority": 1024},
        ),
    ),
    (
        Neighbour("eth0", "203.0.113.10", "52:54:00:00:00:01"),
        (
            "neigh",
            ("replace",),
            {"dst": "203.0.113.10", "lladdr": "52:54:00:00:00:01", "ifindex": 5, "state": "permanent"},
        ),
    ),
]


@pytest.mark.parametrize(("request_", "call"), CASES, ids=[type(r).__name__ for r, _ in CASES])
def test_a_request_is_the_message_pyroute2_sends(
    request_: Request, call: tuple[str, tuple[object, ...], dict[str, object]]
) -> None:
    name, args, kwargs = call
    assert netlink.encode(request_, INDEX, FDS) == compiled(name, *args, **kwargs)


def test_an_unknown_interface_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="no interface 'eth9'"):
        netlink.encode(LinkSet("eth9", up=True), INDEX, FDS)


# -- in real throwaway namespaces ------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces, made by one NamespaceMaker (its thread makes both)."""
    names = (f"kvtest-{secrets.token_hex(4)}", f"kvtest-{secrets.token_hex(4)}")
    try:
        with netlink.NamespaceMaker() as maker:
            for name in names:
                maker.create(name, {"net.ipv4.ip_forward": "1"})
        yield names
    finally:
        for name in names:
            netlink.remove_namespace(name)


@pytest.mark.netns
@needs_root
def test_a_batch_wires_two_namespaces_as_the_per_call_functions_do(pair: tuple[str, str]) -> None:
    a, b = pair
    for ns in pair:  # NamespaceMaker: loopback up, sysctls written inside the namespace
        assert netlink.is_up(ns, "lo")
        with netlink.inside(ns):
            assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    with IPRoute() as root:
        assert root.link_lookup(ifname="kvt-b") == []
    netlink.apply(
        a,
        [
            Bridge("kvt-br"),
            Veth("kvt-b", "eth0", b),
            LinkSet("kvt-br", up=True),
            Address("kvt-br", ipaddress.ip_interface("198.18.250.1/24")),
            LinkSet("kvt-b", master="kvt-br"),
            LinkSet("kvt-b", up=True),
        ],
    )
    netlink.apply(
        b,
        [
            Address("eth0", ipaddress.ip_interface("198.18.250.2/24")),
            Address("eth0", ipaddress.ip_interface("198.18.250.2/24")),  # again: no error, as add_address
            LinkSet("eth0", up=True, mac="02:00:00:00:00:02"),
            Route("0.0.0.0/0", gateway="198.18.250.1"),
            Route("203.0.113.0/26", gateway="198.18.250.1", metric=512),
            Neighbour("eth0", "198.18.250.9", "02:00:00:00:00:09"),
        ],
    )
    assert netlink.is_up(a, "kvt-br")
    assert netlink.is_up(a, "kvt-b")
    assert netlink.is_up(b, "eth0")
    assert netlink.addresses(a, "kvt-br") == ["198.18.250.1/24"]
    assert netlink.addresses(b, "eth0") == ["198.18.250.2/24"]
    with netlink.ipr(a) as ip:
        (port,) = ip.get_links(ip.link_lookup(ifname="kvt-b")[0])
        assert port.get_attr("IFLA_MASTER") == ip.link_lookup(ifname="kvt-br")[0]
    with netlink.ipr(b) as ip:
        (eth0,) = ip.get_links(ip.link_lookup(ifname="eth0")[0])
        assert eth0.get_attr("IFLA_ADDRESS") == "02:00:00:00:00:02"
        routes = {(r["dst_len"], r.get_attr("RTA_PRIORITY")): r for r in ip.get_routes(family=socket.AF_INET)}
        assert routes[0, None].get_attr("RTA_GATEWAY") == "198.18.250.1"
        assert routes[26, 512]["proto"] == netlink.RTPROT_BOOT
    assert ("198.18.250.9", "02:00:00:00:00:09") in netlink.neighbours(b, "eth0")


@pytest.mark.netns
@needs_root
def test_a_refused_request_is_named_and_an_unknown_interface_refused(pair: tuple[str, str]) -> None:
    a, b = pair
    netlink.apply(a, [Veth("kvt-b", "eth0", b)])
    with pytest.raises(NetlinkError) as ei:
        netlink.apply(a, [Veth("kvt-b", "eth1", b)])  # the name is taken
    assert ei.value.code == errno.EEXIST
    assert "kvt-b" in str(ei.value)
    assert a in str(ei.value)
    with pytest.raises(LookupError, match="no interface 'eth9'"):
        netlink.apply(b, [LinkSet("eth9", up=True)])
    with pytest.raises(ValueError, match="creates its interfaces before"):
        netlink.apply(a, [LinkSet("kvt-b", up=True), Bridge("kvt-br")])
    with pytest.raises(LookupError, match="does not exist"):
        netlink.apply(f"kvtest-{secrets.token_hex(4)}", [LinkSet("lo", up=True)])


def _thresh(n: int) -> int:
    return int(Path(f"/proc/sys/net/ipv4/neigh/default/gc_thresh{n}").read_text())


@pytest.mark.netns
@needs_root
def test_neighbour_table_limits_are_raised_for_what_a_lab_needs_never_lowered() -> None:
    """The limits of the kernel's ARP table (shared by every namespace) grow to hold what is in
    it plus a lab's entries; this raises them by about 50 entries on this machine."""
    soft, hard = _thresh(2), _thresh(3)
    in_use = int(Path("/proc/net/stat/arp_cache").read_text().splitlines()[1].split()[0], 16)
    more = soft - in_use + 50
    note = netlink.ensure_neighbour_room(more)
    assert note is not None
    assert f"raised from {soft}/{hard}" in note
    assert _thresh(2) >= soft + 40  # in use + more, give or take what other labs freed meanwhile
    assert _thresh(3) >= max(hard, 2 * _thresh(2) - 100)
    assert netlink.ensure_neighbour_room(0) is None  # room enough now: nothing changes


@pytest.mark.parametrize(
    "key", ["net.ipv4.conf.../../../etc/passwd", "net.ipv4.conf.a/b.proxy_arp", "", "net..x", "net.ipv4 .x"]
)
def test_a_sysctl_key_never_walks_out_of_proc_sys(key: str) -> None:
    with pytest.raises(ValueError, match="not a sysctl key"):
        netlink.sysctl_path(key)


def test_a_sysctl_key_of_an_interface_is_its_proc_sys_file() -> None:
    assert netlink.sysctl_path("net.ipv4.conf.cali1a2b-3.proxy_arp") == Path(
        "/proc/sys/net/ipv4/conf/cali1a2b-3/proxy_arp"
    )


@pytest.mark.parametrize("dst", ["203.0.113.10/32; ip link del eth0", "203.0.113.10/33", "eth0", ""])
def test_a_route_destination_that_is_no_prefix_is_refused_before_encoding(dst: str) -> None:
    """A node agent's route (RouteChannel) carries a VM's address as packed bytes: anything that
    does not parse as a prefix is a ValueError, never a message."""
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        netlink.encode(Route(dst, dev="eth0", metric=512, scope=253), INDEX, FDS)
