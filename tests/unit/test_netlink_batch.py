"""harness.netlink batches: each request is encoded as the very message pyroute2 sends for the
per-call function it stands for (pyroute2's IPBatch compiles a request without sending it)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from pyroute2 import IPBatch

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
