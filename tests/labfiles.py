"""Variants of the shipped lab files for tests: read a lab of labs/ as data with its Calico
resources inlined (a lab file may only name resources inside its own directory), change what the
test needs, write it anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
