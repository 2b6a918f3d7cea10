"""Generate lab files for fabrics of any size (benchmarks, scale tests, customer sketches).

`fabric_lab(racks=8, nodes_per_rack=4)` returns the data of a lab shaped like
labs/default.yml: one spine, one ToR per rack (AS 65001 + i), one Calico cluster in AS
64512 with a per-rack BGPPeer carrying the live-migration BGPFilter, an external host, and
one VM on the first node.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

from harness.calico import seeds


def fabric_lab(racks: int, nodes_per_rack: int, *, name: str | None = None) -> dict[str, Any]:
    if not 1 <= racks <= 200 or not 1 <= nodes_per_rack <= 200:
        raise ValueError("racks and nodes_per_rack must be between 1 and 200")
    pool = ipaddress.IPv4Network("203.0.113.0/24")
    nodes = racks * nodes_per_rack
    # a block per node: past 256 nodes the second documentation /24 joins the first
    pools = [pool] + ([ipaddress.IPv4Network("198.51.100.0/24")] if nodes > 256 else [])
    addresses = sum(p.num_addresses for p in pools)
    if nodes > addresses:
        raise ValueError(f"{nodes} nodes need more than the {addresses} addresses of {pools} (a block each)")
    block = 32 - max(0, (addresses // _pow2_at_least(nodes)).bit_length() - 1)
    resources: list[dict[str, Any]] = [
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"asNumber": 64512, "nodeToNodeMeshEnabled": False},
        },
        *(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": "vm-pool" if i == 0 else f"vm-pool-{i + 1}"},
                "spec": {
                    "cidr": str(p),
                    "blockSize": block,
                    "ipipMode": "Never",
                    "vxlanMode": "Never",
                    "natOutgoing": False,
                },
            }
            for i, p in enumerate(pools)
        ),
        seeds.kubevirt_live_migration_filter(),
    ]
    lab: dict[str, Any] = {
        "name": name or f"fabric-{racks}x{nodes_per_rack}",
        "description": f"generated: {racks} racks x {nodes_per_rack} nodes",
        "routers": [{"name": "spine1", "role": "spine", "asn": 65100}],
        "racks": [],
        "links": [],
        "clusters": [
            {
                "name": "kv",
                "asn": 64512,
                "pools": [str(p) for p in pools],
                "block_size": block,
                "nodes": [],
                "resources": resources,
            }
        ],
        "hosts": [{"name": "ext1", "router": "spine1"}],
        "vms": [{"name": "vm1", "node": "r1-n1", "ip": str(pool.network_address + 2)}],
    }
    for r in range(1, racks + 1):
        subnet = ipaddress.IPv4Network(f"198.18.{r}.0/24")
        lab["routers"].append({"name": f"tor{r}", "role": "tor", "asn": 65000 + r})
        lab["racks"].append({"name": f"r{r}", "tor": f"tor{r}", "subnet": str(subnet)})
        lab["links"].append({"endpoints": ["spine1", f"tor{r}"]})
        lab["clusters"][0]["nodes"] += [
            {"name": f"r{r}-n{n}", "rack": f"r{r}"} for n in range(1, nodes_per_rack + 1)
        ]
        resources.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "BGPPeer",
                "metadata": {"name": f"rack-r{r}-tor"},
                "spec": {
                    "nodeSelector": f"rack == 'r{r}'",
                    "peerIP": str(subnet.network_address + 1),
                    "asNumber": 65000 + r,
                    "numAllowedLocalASNumbers": 1,
                    "filters": ["kubevirt-live-migration"],
                },
            }
        )
    return lab


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def write_lab(data: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
