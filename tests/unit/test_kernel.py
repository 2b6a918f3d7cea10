"""harness.kernel: probe a real throwaway network namespace."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator

import pytest
from pyroute2.netns import listnetns

from harness.kernel import KernelRoute, kernel_routes

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A namespace with two veth pairs and a known set of routes; deleted afterwards."""
    name = f"kvtest-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        _ip(name, "link", "set", "lo", "up")
        for a, b in (("kv0", "kv0p"), ("kv1", "kv1p")):
            _ip(name, "link", "add", "name", a, "type", "veth", "peer", "name", b)
            _ip(name, "link", "set", a, "up")
            _ip(name, "link", "set", b, "up")
        _ip(name, "addr", "add", "198.18.5.1/24", "dev", "kv0")
        _ip(name, "addr", "add", "198.18.6.1/24", "dev", "kv1")
        _ip(name, "route", "add", "203.0.113.0/24", "via", "198.18.5.2", "metric", "512")
        _ip(name, "route", "add", "203.0.113.0/24", "via", "198.18.6.2", "metric", "1024", "proto", "static")
        _ip(name, "route", "add", "blackhole", "198.51.100.0/24")
        _ip(name, "route", "add", "unreachable", "198.51.100.128/25", "metric", "7")
        _ip(name, "route", "add", "198.51.100.64/26", "nexthop", "via", "198.18.5.2",
            "nexthop", "via", "198.18.6.2", "weight", "3")  # fmt: skip
        _ip(name, "route", "add", "default", "via", "198.18.5.254", "proto", "dhcp")
        _ip(name, "route", "add", "203.0.113.128/25", "via", "198.18.5.2", "table", "1000", "proto", "12")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_exact_prefix_with_two_metrics(netns: str) -> None:
    routes = kernel_routes(netns, "203.0.113.0/24")
    assert routes == [
        KernelRoute("203.0.113.0/24", "198.18.5.2", "kv0", 512, "boot", 254, "unicast", 0),
        KernelRoute("203.0.113.0/24", "198.18.6.2", "kv1", 1024, "static", 254, "unicast", 0),
    ]
    # exact match only: neither the /25 in table 1000 nor covering/covered prefixes
    assert kernel_routes(netns, "203.0.113.0/25") == []
    assert kernel_routes(netns, "203.0.0.0/16") == []


def test_blackhole_unreachable_and_multipath(netns: str) -> None:
    (bh,) = kernel_routes(netns, "198.51.100.0/24")
    assert (bh.route_type, bh.gateway, bh.dev, bh.metric, bh.multipath) == ("blackhole", None, None, 0, ())
    (un,) = kernel_routes(netns, "198.51.100.128/25")
    assert (un.route_type, un.metric) == ("unreachable", 7)
    (mp,) = kernel_routes(netns, "198.51.100.64/26")
    assert mp.route_type == "unicast"
    assert mp.multipath == (("198.18.5.2", "kv0"), ("198.18.6.2", "kv1"))


def test_default_connected_and_tables(netns: str) -> None:
    (default,) = kernel_routes(netns, "0.0.0.0/0")
    assert (default.gateway, default.protocol) == ("198.18.5.254", "dhcp")
    assert kernel_routes(netns, "default") == [default]
    (connected,) = kernel_routes(netns, "198.18.5.0/24")
    assert (connected.protocol, connected.dev, connected.gateway) == ("kernel", "kv0", None)
    assert connected.scope == 253  # RT_SCOPE_LINK
    everything = kernel_routes(netns)
    assert all(r.table == 254 for r in everything)
    assert len(everything) == 8
    (other,) = kernel_routes(netns, table=1000)
    assert (other.prefix, other.protocol, other.table) == ("203.0.113.128/25", "bird", 1000)
    local = kernel_routes(netns, "198.18.5.1/32", table=255)
    assert [r.route_type for r in local] == ["local"]
    assert any(r.table == 255 for r in kernel_routes(netns, table=None))


def test_to_json(netns: str) -> None:
    (mp,) = kernel_routes(netns, "198.51.100.64/26")
    assert mp.to_json() == {
        "prefix": "198.51.100.64/26",
        "gateway": None,
        "dev": None,
        "metric": 0,
        "protocol": "boot",
        "table": 254,
        "route_type": "unicast",
        "scope": 0,
        "multipath": [{"gateway": "198.18.5.2", "dev": "kv0"}, {"gateway": "198.18.6.2", "dev": "kv1"}],
    }


def test_ipv6_family(netns: str) -> None:
    _ip(netns, "-6", "route", "add", "2001:db8::/64", "dev", "kv0", "metric", "300")
    (r,) = kernel_routes(netns, "2001:db8::/64", family=socket.AF_INET6)
    assert (r.dev, r.metric) == ("kv0", 300)


def test_missing_namespace_is_not_created() -> None:
    name = f"kvtest-missing-{secrets.token_hex(4)}"
    with pytest.raises(LookupError, match=name):
        kernel_routes(name)
    assert name not in listnetns()


def test_current_namespace() -> None:
    routes = kernel_routes(None)
    assert all(isinstance(r, KernelRoute) for r in routes)
