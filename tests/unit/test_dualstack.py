"""Dual stack: the IPv6 half of the address plan, of the rendered BIRD configs (bird6) and of
the Calico resources of `labs/dual-stack.yml`."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from harness.labfile import load_lab
from harness.render.bird import check_rendered, rendered_configs
from harness.spec import FABRIC6_PREFIX
from harness.topology import resolve, six

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dual() -> object:
    return load_lab(REPO / "labs" / "dual-stack.yml")


def test_six_embeds_the_ipv4_address_in_the_documentation_prefix() -> None:
    assert six(ipaddress.IPv4Interface("198.18.1.1/24")) == ipaddress.IPv6Interface("2001:db8::c612:101/120")
    assert six(ipaddress.IPv4Interface("198.19.0.1/31")) == ipaddress.IPv6Interface("2001:db8::c613:1/127")


def test_dual_stack_lab_numbers_every_fabric_address_in_both_families(dual: object) -> None:
    topo = resolve(dual)  # type: ignore[arg-type]
    assert topo.families == (4, 6)
    assert str(topo.tor_address6["tor1"]) == "2001:db8::c612:101/120"
    assert str(topo.node_address6["r1-n1"]) == "2001:db8::c612:10b/120"
    for link in topo.links + topo.host_links:
        for end in (link.a, link.b):
            assert end.address6 is not None
            assert end.address6.ip in FABRIC6_PREFIX
            assert end.address6 == six(end.address)
    assert [str(b) for b in topo.node_blocks6["r2-n1"]] == ["2001:db8:203:113::80/122"]
    assert str(topo.workload("vm1").ip6) == "2001:db8:203:113::10"
    v6 = {n.peer: str(n.address) for n in topo.router_neighbors("tor2", 6)}
    assert v6 == {"r2-n1": "2001:db8::c612:20b", "r2-n2": "2001:db8::c612:20c", "spine1": "2001:db8::c613:2"}


def test_single_stack_lab_has_no_ipv6() -> None:
    topo = resolve(load_lab(REPO / "labs" / "default.yml"))
    assert topo.families == (4,)
    assert not topo.node_address6
    assert not topo.tor_address6
    assert topo.router_neighbors("tor1", 6) == []
    assert all(end.address6 is None for link in topo.links for end in (link.a, link.b))


def test_bird6_configs_carry_the_v6_half_and_pass_bird6(dual: object) -> None:
    configs = {label: text for label, _, text in rendered_configs(dual)}  # type: ignore[arg-type]
    assert set(configs) >= {"tor1", "tor1/bird6", "r1-n1", "r1-n1/bird6"}
    node6 = configs["r1-n1/bird6"]
    assert "neighbor 2001:db8::c612:101 as 65001;" in node6
    assert "route 2001:db8:203:113::/122 blackhole;" in node6
    assert "'bgp_kubevirt-live-migration_exportFilterV6'(false);" in node6
    assert "neighbor 2001:db8::c612:101" not in configs["r1-n1"]  # the v6 peer is bird6's only
    assert "neighbor 2001:db8::c612:10b as 64512;" in configs["tor1/bird6"]
    assert check_rendered(dual) == 14  # type: ignore[arg-type]


def test_v6_priorities_of_the_dual_stack_resources(dual: object) -> None:
    from harness.calico import felix

    pr = felix.priorities(dual.resources("kv"), family=6)  # type: ignore[attr-defined]
    assert (pr.normal, pr.elevated) == (1024, 512)


# -- the node agent's IPv6 trigger -------------------------------------------------------


def test_unsolicited_neighbour_advertisement_is_the_v6_trigger() -> None:
    """The mock guest's NA (checksummed, Override set, Solicited clear) is what the agent takes
    as the IPv6 announcement; a solicited one, another target, or another MAC is not."""
    import socket

    from harness.runtime.netns import mockguest
    from harness.runtime.netns.agent import TRIGGERS, classify_frame

    mac, ip4, ip6 = "52:54:00:12:34:56", "203.0.113.10", "2001:db8:203:113::10"
    hw, a4, a6 = (
        bytes.fromhex(mac.replace(":", "")),
        socket.inet_aton(ip4),
        socket.inet_pton(socket.AF_INET6, ip6),
    )
    na = mockguest.na_frame(mac, ip6)
    assert classify_frame(na, hw, a4, a6) == "NA"
    icmp = na[54:]
    pseudo = na[22:38] + na[38:54] + len(icmp).to_bytes(4, "big") + b"\0\0\0" + bytes([58])
    assert mockguest._checksum(pseudo + icmp) == 0  # a valid ICMPv6 checksum sums to 0xffff
    solicited = na[:58] + bytes([na[58] | 0x40]) + na[59:]
    assert classify_frame(solicited, hw, a4, a6) is None
    other = mockguest.na_frame(mac, "2001:db8:203:113::11")
    assert classify_frame(other, hw, a4, a6) is None
    assert classify_frame(na, bytes.fromhex("525400000000"), a4, a6) is None
    assert classify_frame(na, hw, a4, None) is None  # a VM without IPv6 ignores it
    assert classify_frame(mockguest.garp_frame(mac, ip4), hw, a4, a6) == "GARP"
    assert TRIGGERS == {"RARP": (4, 6), "GARP": (4,), "NA": (6,)}
