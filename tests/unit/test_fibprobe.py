"""harness.routewatch.FibProbe: the gateway a namespace's kernel uses for exactly one prefix, read
over a raw netlink route dump, against the same question answered by harness.kernel (pyroute2),
in a real throwaway network namespace."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator

import pytest

from harness import netlink
from harness.kernel import address_family, routes_from
from harness.routewatch import FibProbe

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"kvtest-{secrets.token_hex(4)}"
    netlink.create_namespace(name)
    try:
        netlink.add_veth(name, "d0", name, "d1")
        netlink.link_up(name, "d1")
        netlink.link_up(name, "d0")
        with netlink.ipr(name) as ip:
            idx = ip.link_lookup(ifname="d0")[0]
            ip.addr("add", index=idx, address="198.18.0.1", prefixlen=24)
            ip.addr("add", index=idx, address="2001:db8::1", prefixlen=64, family=socket.AF_INET6, flags=0x02)
        yield name
    finally:
        netlink.remove_namespace(name)


def pyroute2_answer(ns: str, prefix: str) -> str | None:
    with netlink.ipr(ns) as ip:
        routes = routes_from(ip, prefix, family=address_family(prefix), devices=False)
    return min(routes, key=lambda r: r.metric).gateway if routes else None


def test_the_lowest_metric_route_of_exactly_the_prefix_in_the_main_table(ns: str) -> None:
    with netlink.ipr(ns) as ip:
        idx = ip.link_lookup(ifname="d0")[0]
        # the /32 at two metrics (the lower one wins), a covering /24 that must not count
        ip.route("add", dst="203.0.113.10/32", gateway="198.18.0.2", priority=1024)
        ip.route("add", dst="203.0.113.10/32", gateway="198.18.0.3", priority=512)
        ip.route("add", dst="203.0.113.0/24", gateway="198.18.0.4")
        # another table only
        ip.route("add", dst="203.0.113.20/32", gateway="198.18.0.5", table=100)
        # a multipath route: no single gateway
        ip.route(
            "add",
            dst="203.0.113.30/32",
            multipath=[{"gateway": "198.18.0.6", "oif": idx}, {"gateway": "198.18.0.7", "oif": idx}],
        )
        ip.route("add", dst="2001:db8:1::10/128", gateway="2001:db8::2", priority=512, family=socket.AF_INET6)
        ip.route("add", dst="2001:db8:1::10/128", gateway="2001:db8::3", priority=100, family=socket.AF_INET6)
    want = {
        "203.0.113.10/32": "198.18.0.3",
        "203.0.113.0/24": "198.18.0.4",
        "203.0.113.20/32": None,
        "203.0.113.30/32": None,
        "203.0.113.40/32": None,
        "2001:db8:1::10/128": "2001:db8::3",
        "2001:db8:1::11/128": None,
    }
    for prefix, gateway in want.items():
        probe = FibProbe(netlink.ns_path(ns).as_posix(), prefix)
        try:
            assert probe.gateway() == gateway == pyroute2_answer(ns, prefix), prefix
            assert probe.gateway() == gateway, prefix  # the same socket asked again
        finally:
            probe.close()


def test_a_change_is_seen_on_the_next_question(ns: str) -> None:
    probe = FibProbe(netlink.ns_path(ns).as_posix(), "203.0.113.10/32")
    try:
        assert probe.gateway() is None
        netlink.add_route(ns, "203.0.113.10/32", gateway="198.18.0.2", metric=1024)
        assert probe.gateway() == "198.18.0.2"
        netlink.add_route(ns, "203.0.113.10/32", gateway="198.18.0.9", metric=512)
        assert probe.gateway() == "198.18.0.9"
        assert netlink.delete_route(ns, "203.0.113.10/32", metric=512)
        assert probe.gateway() == "198.18.0.2"
    finally:
        probe.close()
