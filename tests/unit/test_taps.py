"""Taps for QEMU guests (harness.runtime.netns.qemu.create_tap over harness.netlink.add_tap),
in a real throwaway network namespace."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from harness import netlink
from harness.runtime.netns.qemu import QemuError, create_tap, delete_tap

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]

IFF_TAP = 2  # IFLA_TUN_TYPE of a tap (1: tun)


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"kvtest-{secrets.token_hex(4)}"
    netlink.create_namespace(name)
    try:
        yield name
    finally:
        netlink.remove_namespace(name)


def tun_info(ns: str, ifname: str) -> dict[str, int]:
    with netlink.ipr(ns) as ip:
        (link,) = ip.get_links(ip.link_lookup(ifname=ifname)[0])
    info = link.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "tun"
    return dict(info.get_attr("IFLA_INFO_DATA")["attrs"])


def test_a_tap_is_made_inside_the_namespace_persistent_and_up(ns: str) -> None:
    name = f"tap{secrets.token_hex(4)}"
    create_tap(ns, name, mac="ee:ee:ee:ee:ee:ee")
    info = tun_info(ns, name)
    assert info["IFLA_TUN_TYPE"] == IFF_TAP
    assert info["IFLA_TUN_PERSIST"] == 1  # outlives this process, for QEMU to attach to
    assert info["IFLA_TUN_PI"] == 0  # no packet-information header, as `ip tuntap add` makes it
    assert netlink.is_up(ns, name)
    with netlink.ipr(ns) as ip:
        (link,) = ip.get_links(ip.link_lookup(ifname=name)[0])
    assert link.get_attr("IFLA_ADDRESS") == "ee:ee:ee:ee:ee:ee"
    with IPRoute() as root:
        assert root.link_lookup(ifname=name) == []  # never in the root namespace
    delete_tap(ns, name)
    with netlink.ipr(ns) as ip:
        assert ip.link_lookup(ifname=name) == []


def test_bad_names_and_missing_namespaces_are_refused_before_anything_is_made(ns: str) -> None:
    with pytest.raises(ValueError, match="1-15 characters"):
        create_tap(ns, "cali0123456789abc")
    with pytest.raises(ValueError, match="no '/' or spaces"):
        create_tap(ns, "tap/x")
    with pytest.raises(QemuError, match="does not exist"):
        create_tap(f"{ns}-missing", "tap0")
    with netlink.ipr(ns) as ip:
        assert [link.get_attr("IFLA_IFNAME") for link in ip.get_links()] == ["lo"]


def test_a_name_taken_by_another_kind_of_link_is_a_qemu_error(ns: str) -> None:
    netlink.add_bridge(ns, "br-taken")
    with pytest.raises(QemuError, match="cannot create tap br-taken"):
        create_tap(ns, "br-taken")
