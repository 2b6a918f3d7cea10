"""Variants of the shipped lab files for tests: read a lab of labs/ as data with its Calico
resources inlined (a lab file may only name resources inside its own directory), change what the
test needs, write it anywhere."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import SpecError
from harness.labfile import load_lab

LABS = Path(__file__).resolve().parents[1] / "labs"


def resources(relative: str) -> list[dict[str, Any]]:
    """The Calico documents of a resources file under labs/ (e.g. 'calico/default.yaml')."""
    return [d for d in yaml.safe_load_all((LABS / relative).read_text()) if d]


def lab_data(lab: str = "default") -> dict[str, Any]:
    """labs/<lab>.yml as data, every cluster's resources inline."""
    data = yaml.safe_load((LABS / f"{lab}.yml").read_text())
    for cluster in data["clusters"]:
        if isinstance(cluster.get("resources"), str):
            cluster["resources"] = resources(cluster["resources"])
    return data


def write_lab_data(data: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cluster_of(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A cluster of lab data by name."""
    return next(c for c in data["clusters"] if c["name"] == name)


def resource(cluster: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """A Calico resource (inline) of a cluster of lab data by kind and name."""
    return next(r for r in cluster["resources"] if r["kind"] == kind and r["metadata"]["name"] == name)


def issues_of(tmp_path: Path, lab: str, change: Callable[[dict[str, Any]], None]) -> list[str]:
    """The issue lines `load_lab` reports for labs/<lab>.yml after `change` (it must refuse it)."""
    data = lab_data(lab)
    change(data)
    path = write_lab_data(data, tmp_path / "lab.yml")
    with pytest.raises(SpecError) as ei:
        load_lab(path)
    return [str(i) for i in ei.value.issues]


def without_ipv6(data: dict[str, Any], cluster: str) -> dict[str, Any]:
    """Lab data with `cluster` made IPv4 only: no pools6 or block_size6, none of its resources
    named '*-v6' (its IPv6 pool and peerings). Changes `data`; returns it."""
    c = cluster_of(data, cluster)
    c.pop("pools6", None)
    c.pop("block_size6", None)
    c["resources"] = [r for r in c["resources"] if not r["metadata"]["name"].endswith("-v6")]
    return data


def bgp_protocols(text: str) -> dict[str, str]:
    """`protocol bgp NAME [from T] { BODY }` blocks of a rendered BIRD config, by name."""
    pattern = re.compile(r"^protocol bgp (\S+)(?: from \S+)? \{\n(.*?)^\}", re.M | re.S)
    return {m.group(1): m.group(2) for m in pattern.finditer(text)}
