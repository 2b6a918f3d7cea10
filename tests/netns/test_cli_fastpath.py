"""The CLI's fast path (harness.fastpath) answers `routes --json` and `status --json` exactly as
the full path does, and declines (None) whenever it could not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import fastpath
from harness.lab import Lab
from harness.state import lab_dir

pytestmark = [
    pytest.mark.netns,
    pytest.mark.netns_only("reads the netns runtime's state file and BIRD sockets"),
]


@pytest.fixture(scope="module")
def lab(mock_default_path: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A private mock default lab from a copy of its file (the tests change the copy)."""
    d = tmp_path_factory.mktemp("fastpath")
    path = d / "lab.yml"
    shutil.copy(mock_default_path, path)
    with Lab.from_file(path, name=Lab.unique_name("fastpath")) as lab:
        yield lab


def test_same_documents_as_the_full_path_before_and_after_a_migration(lab: Lab) -> None:
    for _ in range(2):
        assert fastpath.status(lab.name) == lab.status()
        for entity in ("tor1", "r1-n1", "spine1"):
            full = [r.to_json() for r in lab.speaker(entity).routes()]
            assert fastpath.routes(lab.name, entity, None) == full
        assert fastpath.routes(lab.name, "tor1", "203.0.113.10/32") == [
            r.to_json() for r in lab.speaker("tor1").routes("203.0.113.10/32")
        ]
        target = "r2-n1" if lab.vm("vm1").node == "r1-n1" else "r1-n1"
        lab.migrate("vm1", target)
    assert {v["name"]: v["node"] for v in fastpath.status(lab.name)["vms"]}["vm1"] == lab.vm("vm1").node


def test_declines_what_only_the_full_path_can_answer(lab: Lab) -> None:
    assert fastpath.routes(lab.name, "ext1", None) is None  # a host: the full path's error
    assert fastpath.routes(lab.name, "nosuch", None) is None
    journals = lab_dir(lab.name) / fastpath.JOURNALS
    journals.mkdir(exist_ok=True)
    journal = journals / "vm1.json"
    journal.write_text("{}")  # what attach would settle first
    try:
        assert fastpath.status(lab.name) is None
        assert fastpath.routes(lab.name, "tor1", None) is None
    finally:
        journal.unlink()
    assert fastpath.status(lab.name) is not None
    spec = Path(lab.spec.source)
    text = spec.read_text()
    spec.write_text(text + "\n# changed since up\n")  # attach would check its digest
    try:
        assert fastpath.status(lab.name) is None
    finally:
        spec.write_text(text)
    assert fastpath.status(lab.name) is not None
    cache = lab_dir(lab.name) / fastpath.CACHE
    doc = json.loads(cache.read_text())
    cache.write_text(json.dumps({**doc, "session_id": "another"}))  # a frame of another instance
    assert fastpath.status(lab.name) is None
