"""Which BIRDs a lab runs: one rule (harness.speakers.bird_daemons) for Lab.speakers and for the
CLI's fast path, which reads it off the cached status frame instead of the lab file."""

from __future__ import annotations

from pathlib import Path

import pytest
from labfiles import LABS, lab_data, without_ipv6, write_lab_data

from harness import fastpath
from harness.lab import Lab
from harness.labfile import load_lab
from harness.speakers import bird_daemons


def test_bird_daemons_lists_every_bird_then_every_bird6_but_the_v4_only_ones() -> None:
    entities = {"spine1": "router", "tor1": "router", "ext1": "host", "r1-n1": "node", "red-n1": "node"}
    assert bird_daemons(entities, (4,)) == [("spine1", 4), ("tor1", 4), ("r1-n1", 4), ("red-n1", 4)]
    assert bird_daemons(entities, (4, 6), {"red-n1"}) == [
        ("spine1", 4),
        ("tor1", 4),
        ("r1-n1", 4),
        ("red-n1", 4),
        ("spine1", 6),
        ("tor1", 6),
        ("r1-n1", 6),
    ]
    assert bird_daemons(entities, (4,), {"red-n1"}) == bird_daemons(entities, (4,))


def _v4_only_nested_blue(tmp_path: Path) -> Path:
    """nested-dual-stack with its nested cluster blue without IPv6 pools: blue-n1 runs no bird6."""
    return write_lab_data(without_ipv6(lab_data("nested-dual-stack"), "blue"), tmp_path / "lab.yml")


@pytest.mark.parametrize(
    "lab_file", [*sorted(p.stem for p in LABS.glob("*.yml")), "nested-dual-stack, blue v4 only"]
)
def test_the_fast_path_lists_the_birds_lab_speakers_lists(lab_file: str, tmp_path: Path) -> None:
    path = _v4_only_nested_blue(tmp_path) if "," in lab_file else LABS / f"{lab_file}.yml"
    lab = Lab(load_lab(path))  # not brought up: the frame and the speakers come from the topology
    expected = [(s.name, s.family) for s in lab.speakers()]
    assert fastpath.frame_birds(lab._status_frame(), lab.topo.entities) == expected
    if lab_file.startswith("nested-dual-stack"):
        assert ("red-n1", 6) in expected
        assert (("blue-n1", 6) in expected) == ("," not in lab_file)
