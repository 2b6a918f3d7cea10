"""Calico IPAM on a real cluster, read from its objects (pure: JSON in, answers out).

- `affine_blocks`: which blocks each node owns. Calico does not hand out blocks in node order: a
  node's search for a free block starts at a pseudo-random index seeded from its hostname
  (projectcalico/calico v3.32.1 libcalico-go/lib/ipam/ipam_block_reader_writer.go
  `randomBlockGenerator`, `determineSeed`), so on the real stack the blocks come from the
  cluster's BlockAffinity objects, never from the lab's node order.
- `address_holders`: pods that hold addresses the lab's VMs need (a VM's address handed to a
  system pod before the IPReservation existed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

# Where Calico's Kubernetes datastore keeps block affinities with the operator's install
# (manifests/operator-crds.yaml: blockaffinities.crd.projectcalico.org, served as v1).
BLOCK_AFFINITY_API = "crd.projectcalico.org/v1"
BLOCK_AFFINITY_KIND = "BlockAffinity"
CONFIRMED = "confirmed"

Net = ipaddress.IPv4Network


def _deleted(value: Any) -> bool:
    """`spec.deleted`: a string ("true"/"false") in the crd.projectcalico.org/v1 CRD, a bool in
    the projectcalico.org/v3 API (api/pkg/apis/projectcalico/v3/blockaffinity.go)."""
    return value is True or str(value).lower() == "true"


def affine_blocks(
    affinities: Iterable[Mapping[str, Any]], node_names: Mapping[str, str], pools: Iterable[str]
) -> dict[str, list[Net]]:
    """Spec node -> its blocks, sorted: BlockAffinity objects in state `confirmed`, not deleted,
    of host affinity (`spec.type` empty or "host"), whose `spec.node` (a Kubernetes node name)
    maps to a spec node through `node_names`, with a `spec.cidr` inside one of `pools`."""
    nets = [ipaddress.ip_network(p) for p in pools]
    out: dict[str, list[Net]] = {}
    for item in affinities:
        spec = item.get("spec") or {}
        if spec.get("state") != CONFIRMED or _deleted(spec.get("deleted")):
            continue
        if spec.get("type") not in (None, "", "host"):
            continue
        node = node_names.get(str(spec.get("node")))
        try:
            block = ipaddress.ip_network(str(spec.get("cidr")))
        except ValueError:
            continue
        if node is None or not isinstance(block, Net):
            continue
        if any(block.version == p.version and block.subnet_of(p) for p in nets):  # type: ignore[arg-type]
            out.setdefault(node, []).append(block)
    return {node: sorted(blocks) for node, blocks in out.items()}


def block_owner(blocks: Mapping[str, list[Net]], ip: str) -> str | None:
    """The node whose block contains `ip` (None: nobody's, e.g. not claimed yet)."""
    addr = ipaddress.ip_address(ip)
    return next((node for node, nets in blocks.items() if any(addr in n for n in nets)), None)


def pod_ips(pod: Mapping[str, Any]) -> set[str]:
    status = pod.get("status") or {}
    ips = {p.get("ip") for p in status.get("podIPs") or [] if p.get("ip")}
    if status.get("podIP"):
        ips.add(status["podIP"])
    return ips


def address_holders(pods: Iterable[Mapping[str, Any]], ips: Iterable[str]) -> list[dict[str, Any]]:
    """Pods (not host-network: those carry their node's address) holding one of `ips`:
    {"ip", "pod" (namespace/name), "node", "owned" (has a controller that recreates it)}."""
    wanted = set(ips)
    out = []
    for pod in pods:
        spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
        if spec.get("hostNetwork"):
            continue
        for ip in sorted(pod_ips(pod) & wanted):
            out.append(
                {
                    "ip": ip,
                    "pod": f"{meta.get('namespace')}/{meta.get('name')}",
                    "node": spec.get("nodeName"),
                    "owned": any(ref.get("controller") for ref in meta.get("ownerReferences") or []),
                }
            )
    return out
