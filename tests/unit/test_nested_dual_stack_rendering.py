"""Nested clusters over IPv6 (labs/nested-dual-stack.yml): the spec rules for a nested cluster
with `pools6`, its topology, the parent's and nested nodes' bird6 configs (`Local_Workload_<ip6>`
on the parent, `Global_fdc9_9723_9bc__1` on the nested node), which workloads get the parent's
localWorkloadPeeringIPV6, and the containerlab runtime's refusal. Rendered configs are
parse-checked by the real `bird6 -p`."""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import labfiles
import pytest
from labfiles import bgp_protocols, cluster_of, lab_data, resource, without_ipv6, write_lab_data

from harness.calico import confd
from harness.labfile import load_lab
from harness.render.bird import check_config, render_node
from harness.runtime.containerlab.plan import RenderError, plan_lab
from harness.spec import cluster_resources
from harness.topology import resolve

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "labs" / "nested-dual-stack.yml"
needs_bird6 = pytest.mark.skipif(
    (shutil.which("bird6") or shutil.which("bird6", path="/usr/sbin:/sbin")) is None,
    reason="BIRD is not installed (Debian package 'bird'): cannot run 'bird6 -p'",
)


def issues_of(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> list[str]:
    return labfiles.issues_of(tmp_path, LAB.stem, change)


def bird6_config(node: str) -> str:
    spec = load_lab(LAB)
    cluster, _ = spec.node(node)
    return render_node(resolve(spec), node, cluster_resources(spec)[cluster.name], family=6)


# -- topology ------------------------------------------------------------------------------


def test_a_dual_stack_nested_node_has_its_vms_ip6_a_v6_block_and_a_v6_pod() -> None:
    topo = resolve(load_lab(LAB))
    assert str(topo.node_address6["red-n1"]) == "2001:db8:203:113::10/128"
    assert [str(b) for b in topo.node_blocks6["red-n1"]] == ["2001:db8:51:100::/120"]
    assert str(topo.nested_pod6["red-n1"]) == "2001:db8:51:100::1"
    assert str(topo.nested_pod6["blue-n1"]) == "2001:db8:51:140::1"
    assert topo.runs_family("red-n1", 6)
    assert topo.runs_family("p1-n1", 6)


def test_nested_nodes_of_a_v4_only_nested_cluster_run_no_bird6(tmp_path: Path) -> None:
    """A dual-stack lab whose nested cluster blue has no pools6: blue-n1 runs bird only."""
    path = write_lab_data(without_ipv6(lab_data(LAB.stem), "blue"), tmp_path / "lab.yml")
    topo = resolve(load_lab(path))
    assert topo.runs_family("red-n1", 6)
    assert not topo.runs_family("blue-n1", 6)
    assert "blue-n1" not in topo.node_address6
    assert "blue-n1" not in topo.nested_pod6


# -- BIRD configs --------------------------------------------------------------------------


def test_parent_bird6_renders_a_local_workload_peer_per_selected_vm() -> None:
    p1 = bgp_protocols(bird6_config("p1-n1"))
    assert set(p1) == {
        "Global_2001_db8__c612_101",
        "Local_Workload_2001_db8_203_113__10",
        "Local_Workload_2001_db8_203_113__11",
    }
    red = p1["Local_Workload_2001_db8_203_113__10"]
    assert "neighbor 2001:db8:203:113::10 as 65101;" in red
    assert "source address" not in red  # passive, no source address (calico-node's v6 template too)
    assert "passive on;" in red
    assert "multihop;" in red
    assert "'bgp_accept-nested-red-pool_importFilterV6'();" in red
    assert "'bgp_no-export_exportFilterV6'();" in red
    assert set(bgp_protocols(bird6_config("p1-n2"))) == {"Global_2001_db8__c612_101"}  # vm-green: none


def test_parent_bird6_has_the_v6_halves_of_the_nested_filters() -> None:
    text = bird6_config("p1-n1")
    assert "function 'bgp_accept-nested-red-pool_importFilterV6'()" in text
    assert "(net ~ 2001:db8:51:100::/120)" in text
    assert "function 'bgp_export-to-tor_exportFilterV6'()" in text
    assert "importFilterV4" not in text  # the v4 halves stay in bird's config


def test_nested_bird6_peers_with_the_parents_v6_workload_peering_ip() -> None:
    text = bird6_config("red-n1")
    peers = bgp_protocols(text)
    assert set(peers) == {"Global_fdc9_9723_9bc__1"}
    body = peers["Global_fdc9_9723_9bc__1"]
    assert "neighbor fdc9:9723:9bc::1 as 64512;" in body
    assert "source address 2001:db8:203:113::10;" in body
    assert "multihop;" in body
    assert "2001:db8:51:100::/120" in text  # its block: blackholed and announced


@needs_bird6
@pytest.mark.parametrize("node", ["p1-n1", "p1-n2", "red-n1", "blue-n1"])
def test_rendered_bird6_configs_pass_bird6_parse_check(node: str) -> None:
    check_config(bird6_config(node), "bird6")


# -- the node agent's part: which workloads get localWorkloadPeeringIPV6 ----------------------


def test_v6_peering_ip_goes_on_selected_workloads_only() -> None:
    spec = load_lab(LAB)
    topo, res = resolve(spec), cluster_resources(spec)["parent"]
    assert confd.peering_workloads(topo, "p1-n1", res, 6) == ["2001:db8:203:113::10", "2001:db8:203:113::11"]
    assert confd.peering_workloads(topo, "p1-n2", res, 6) == []
    ip6 = confd.peering_ip_on(topo, "p1-n1", res, "2001:db8:203:113::10", 6)
    assert ip6 is not None
    assert ipaddress.ip_address(ip6) == ipaddress.ip_address("fdc9:9723:9bc::1")
    assert confd.peering_ip_on(topo, "p1-n2", res, "2001:db8:203:113::70", 6) is None
    assert confd.peering_ip_on(topo, "p1-n1", res, "203.0.113.10") == "169.254.0.179"  # v4 unchanged


def test_without_localworkloadpeeringipv6_no_v6_peer_and_no_v6_peering_ip(tmp_path: Path) -> None:
    """The feature is per IP version: the parent renders no v6 Local_Workload peer and provisions
    no v6 address unless its BGPConfiguration sets localWorkloadPeeringIPV6."""
    spec = load_lab(LAB)
    res = cluster_resources(spec)["parent"]
    conf = next(r for r in res if type(r).__name__ == "BGPConfiguration")
    no_v6 = conf.model_copy(update={"spec": conf.spec.model_copy(update={"localWorkloadPeeringIPV6": None})})
    res = [no_v6 if r is conf else r for r in res]
    topo = resolve(spec)
    assert confd.peering_workloads(topo, "p1-n1", res, 6) == []
    text = render_node(topo, "p1-n1", res, family=6)
    assert not [p for p in bgp_protocols(text) if p.startswith("Local_Workload_")]


# -- validation ----------------------------------------------------------------------------


def test_a_dual_stack_nested_node_needs_an_ip6_on_its_vm(tmp_path: Path) -> None:
    def drop(data: dict[str, Any]) -> None:
        del next(v for v in data["vms"] if v["name"] == "vm-red")["ip6"]

    issues = issues_of(tmp_path, drop)
    assert any("clusters[1].nodes[0].vm" in i and "has no ip6" in i for i in issues), issues


def test_a_dual_stack_nested_node_in_a_qemu_guest_is_refused(tmp_path: Path) -> None:
    def qemu(data: dict[str, Any]) -> None:
        next(v for v in data["vms"] if v["name"] == "vm-red")["backend"] = "qemu"

    issues = issues_of(tmp_path, qemu)
    assert any("clusters[1].pools6" in i and "IPv4 BIRD only" in i for i in issues), issues


def test_a_dual_stack_nested_cluster_needs_the_parents_v6_peering_ip(tmp_path: Path) -> None:
    def drop(data: dict[str, Any]) -> None:
        del resource(cluster_of(data, "parent"), "BGPConfiguration", "default")["spec"][
            "localWorkloadPeeringIPV6"
        ]

    issues = issues_of(tmp_path, drop)
    assert any("clusters[1].pools6" in i and "no localWorkloadPeeringIPV6" in i for i in issues), issues


def test_the_nested_v6_peer_must_use_the_parents_v6_peering_ip_and_as(tmp_path: Path) -> None:
    def wrong(data: dict[str, Any]) -> None:
        peer = resource(cluster_of(data, "red"), "BGPPeer", "peer-to-parent-cluster-v6")
        peer["spec"]["peerIP"] = "fdc9:9723:9bc::2"
        peer["spec"]["asNumber"] = 65001

    issues = issues_of(tmp_path, wrong)
    assert any(
        "listens on localWorkloadPeeringIPV6 fdc9:9723:09bc::1, not fdc9:9723:9bc::2" in i for i in issues
    )
    assert any("must use the parent 'parent' AS 64512, not asNumber 65001" in i for i in issues), issues


def test_a_v6_peering_ip_outside_the_ula_is_refused(tmp_path: Path) -> None:
    def outside(data: dict[str, Any]) -> None:
        resource(cluster_of(data, "red"), "BGPPeer", "peer-to-parent-cluster-v6")["spec"]["peerIP"] = (
            "fd00::1"
        )

    issues = issues_of(tmp_path, outside)
    assert any("fd00::1 is no router address" in i for i in issues), issues


def test_containerlab_refuses_dual_stack_nested_clusters() -> None:
    with pytest.raises(RenderError, match=r"clusters\[1\]\.pools6: nested cluster 'red' has IPv6 pools"):
        plan_lab(resolve(load_lab(LAB)))
