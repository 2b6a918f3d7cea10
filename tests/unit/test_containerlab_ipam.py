"""harness.runtime.containerlab.ipam: node blocks are Calico's choice on the real stack (its
BlockAffinities), the topology's plan on netns, through one Lab call; pods holding VM addresses."""

from __future__ import annotations

import copy
from typing import Any

from clab_fakes import (
    DEFAULT_LAB,
    KIND_NAMES,
    load,
    net,
)

from harness.lab import Lab
from harness.labfile import load_lab
from harness.runtime.containerlab import ipam
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import runtime as cl
from harness.topology import resolve


def test_blocks_come_from_confirmed_affinities_inside_the_pools() -> None:
    items = load("blockaffinities-crd-v1.json")["items"]
    blocks = ipam.affine_blocks(items, KIND_NAMES, ["203.0.113.0/24"])
    assert blocks == {
        "r1-n1": [net("203.0.113.128/26")],
        "r1-n2": [net("203.0.113.0/26")],
        "r2-n1": [net("203.0.113.192/26")],
        "r2-n2": [net("203.0.113.64/26")],
    }
    plan = resolve(load_lab(DEFAULT_LAB)).node_blocks
    assert blocks != plan  # not the lab's node order
    # vm1 (203.0.113.10) on r1-n1 lies in r1-n2's block: r1-n1 announces its /32 from the start
    assert ipam.block_owner(blocks, "203.0.113.10") == "r1-n2"
    assert ipam.block_owner(plan, "203.0.113.10") == "r1-n1"
    assert ipam.block_owner(blocks, "198.51.100.1") is None


def test_the_v3_api_form_of_an_affinity_is_read_too() -> None:
    """projectcalico.org/v3 BlockAffinity: `deleted` is a bool there (api/.../v3/blockaffinity.go)."""
    items = load("blockaffinities-crd-v1.json")["items"][:2]
    v3 = copy.deepcopy(items)
    v3[0]["spec"]["deleted"] = True
    v3[1]["spec"]["deleted"] = False
    del v3[1]["spec"]["type"]
    assert ipam.affine_blocks(v3, KIND_NAMES, ["203.0.113.0/24"]) == {"r1-n2": [net("203.0.113.0/26")]}


def test_on_netns_the_lab_call_answers_the_topology_plan() -> None:
    lab = Lab.from_file(DEFAULT_LAB)  # not brought up: the netns runtime answers from the topology
    assert lab.node_blocks() == lab.topo.node_blocks
    assert lab.node_blocks() is not lab.topo.node_blocks  # a copy the caller may change


class _Affinities(k.Kube):
    def __init__(self, items: list[dict[str, Any]]):
        super().__init__(api_client=None, name="kv")
        self.items = items
        self.asked: list[tuple[str, str]] = []

    def list(self, api_version: str, kind: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        self.asked.append((api_version, kind))
        return self.items


def test_on_containerlab_the_lab_call_reads_the_clusters_affinities(clab: cl.ContainerlabRuntime) -> None:
    kube = _Affinities(load("blockaffinities-crd-v1.json")["items"])
    clab._kubes["kv"] = kube
    lab = Lab(load_lab(DEFAULT_LAB).model_copy(update={"name": "tlab"}), runtime="containerlab")
    lab.runtime = clab
    blocks = lab.node_blocks()
    assert kube.asked == [("crd.projectcalico.org/v1", "BlockAffinity")]
    assert blocks["r1-n1"] == [net("203.0.113.128/26")]
    assert set(blocks) == {"r1-n1", "r1-n2", "r2-n1", "r2-n2"}
    kube.items = kube.items[1:]  # kv-control-plane has no block (yet)
    assert lab.node_blocks()["r1-n1"] == []


def test_address_holders_skip_host_network_pods() -> None:
    pods = load("pods-before-vms.json")["items"]
    holders = ipam.address_holders(pods, ["203.0.113.10", "198.18.1.11"])
    assert holders == [
        {
            "ip": "203.0.113.10",
            "pod": "kube-system/coredns-7db6d8ff4d-h4x9q",
            "node": "kv-control-plane",
            "owned": True,
        }
    ]
