"""Pools and block size in one place: a lab file's cluster may leave out `pools` and
`block_size` and take them from its IPPool resources, or give them and leave the IPPools out.
Where both say something, they must agree (harness.labcheck keeps that an error)."""

from __future__ import annotations

import ipaddress
from typing import Any

from harness.calico import resources as cr
from harness.errors import SpecIssue
from harness.spec import Cluster, LabFile
from harness.yamlsrc import SourceMap

CALICO_DEFAULT_BLOCK_SIZE = 26  # Calico's IPv4 default when an IPPool has no blockSize


def _ip_pools(items: list[tuple[Any, SourceMap, tuple]]) -> list[tuple[cr.IPPool, SourceMap, tuple]]:
    return [(r, m, p) for r, m, p in items if isinstance(r, cr.IPPool)]


def fill_pools(
    lab: LabFile, resources: dict[str, list[tuple[Any, SourceMap, tuple]]], smap: SourceMap
) -> tuple[LabFile, list[SpecIssue]]:
    """`lab` with each cluster's omitted `pools`/`block_size` taken from its IPv4 IPPools; issues
    when neither the lab file nor the resources give pools, or the IPPools' block sizes differ."""
    issues: list[SpecIssue] = []
    clusters: list[Cluster] = []
    for ci, cluster in enumerate(lab.clusters):
        pools = _ip_pools(resources.get(cluster.name, []))
        v4 = [
            (ipaddress.ip_network(r.spec.cidr, strict=False), r, m, p)
            for r, m, p in pools
            if ipaddress.ip_network(r.spec.cidr, strict=False).version == 4
        ]
        update: dict[str, Any] = {}
        if not cluster.pools:
            if v4:
                update["pools"] = [net for net, *_ in v4]
            else:
                issues.append(
                    smap.issue(
                        ("clusters", ci),
                        f"cluster '{cluster.name}' has no pools: give 'pools:' here or IPPool resources",
                    )
                )
        if "block_size" not in cluster.model_fields_set and v4:
            size = {id(r): r.spec.blockSize or CALICO_DEFAULT_BLOCK_SIZE for _, r, _, _ in v4}
            sizes = set(size.values())
            if len(sizes) == 1:
                update["block_size"] = sizes.pop()
            else:
                for _, r, m, p in v4:
                    issues.append(
                        m.issue(
                            (*p, "spec", "blockSize"),
                            f"IPPool {r.spec.cidr} blockSize {size[id(r)]}: "
                            f"the IPPools of cluster '{cluster.name}' disagree on the block size "
                            f"({', '.join(f'/{s}' for s in sorted(sizes))}); a lab cluster has one, "
                            "give 'block_size:' in the lab file or make them agree",
                        )
                    )
        clusters.append(cluster.model_copy(update=update) if update else cluster)
    return lab.model_copy(update={"clusters": clusters}), issues


__all__ = ["CALICO_DEFAULT_BLOCK_SIZE", "fill_pools"]
