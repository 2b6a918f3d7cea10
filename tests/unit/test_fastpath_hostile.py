"""The CLI fast path (harness.fastpath) against a tampered run directory: kvlab runs as root, so a
status cache or state file that is a symlink, a FIFO, oversized, of the wrong shape, or names
files, entities or sockets outside where `up` put them is never believed nor followed: the fast
path declines (None: the full path answers) and never blocks. Writing the cache or the state file
never follows a symlink planted in the run directory.

Real files, FIFOs and Unix sockets in a private run directory; the lab is not brought up (its
BIRD sockets are missing, so a believed cache answers with every session Down)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from labfiles import LABS
from nonblocking import answer_within, unix_listener, was_connected

from harness import fastpath
from harness.lab import Lab
from harness.labfile import load_lab
from harness.state import LabState, lab_dir, private_dir

LAB = "hostile"


@pytest.fixture
def lab(run_root: Path, tmp_path: Path) -> Lab:
    """A ready netns lab as `up` leaves its run directory: state file and status cache, built
    from a copy of labs/ (the lab file and its resources), its BIRDs not running."""
    shutil.copytree(LABS, tmp_path / "labs")
    lab = Lab(load_lab(tmp_path / "labs" / "default.yml"), name=LAB)
    private_dir(run_root, 0o700)
    lab_dir(LAB).mkdir()
    state = LabState(LAB, lab.spec.source, "digest", "netns", "session", ready=True)
    state.entities = dict(lab.topo.entities)
    state.save(lab_dir(LAB))
    lab._save_status_frame(state)
    return lab


def _cache() -> Path:
    return lab_dir(LAB) / fastpath.CACHE


def _doc() -> dict[str, Any]:
    return json.loads(_cache().read_text())


def _rewrite(change: Callable[[dict[str, Any]], None]) -> None:
    doc = _doc()
    change(doc)
    _cache().write_text(json.dumps(doc))


def _answer(call: Callable[[], Any], timeout: float = 10.0) -> Any:
    return answer_within(call, timeout, "the fast path")


def test_a_cache_up_wrote_is_believed(lab: Lab) -> None:
    """The baseline of every test here: untampered, the fast path answers from the cache."""
    doc = fastpath.status(LAB)
    assert doc is not None
    assert doc["lab"] == lab.name
    assert doc["sessions"]
    assert all(s["state"] == "Down" for s in doc["sessions"])


def test_a_symlinked_cache_is_not_followed(lab: Lab, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(_cache().read_text())  # a cache that would be believed in its place
    _cache().unlink()
    _cache().symlink_to(outside)
    assert fastpath.status(LAB) is None


def test_a_fifo_cache_does_not_block(lab: Lab) -> None:
    _cache().unlink()
    os.mkfifo(_cache())
    assert _answer(lambda: fastpath.status(LAB)) is None


def test_an_oversized_cache_is_not_read(lab: Lab) -> None:
    text = _cache().read_text()
    _cache().write_text(text + " " * (fastpath.MAX_CACHE_BYTES + 1 - len(text)))  # valid JSON still
    assert fastpath.status(LAB) is None


def test_a_cache_naming_a_file_outside_the_lab_directory_is_not_believed(lab: Lab) -> None:
    """Its hash right, /etc/hostname is still no file of the lab: the cache is not believed."""
    outside = "/etc/hostname"
    digest = hashlib.sha256(Path(outside).read_bytes()).hexdigest()
    _rewrite(lambda d: d["files"].update({outside: digest}))
    assert fastpath.status(LAB) is None


@pytest.mark.parametrize("name", ["../secret.yaml", "calico/../../secret.yaml"])
def test_a_cache_naming_a_path_with_dot_dot_is_not_believed(lab: Lab, tmp_path: Path, name: str) -> None:
    """A file beside the lab's directory, its hash right, named through '..': not believed."""
    (tmp_path / "secret.yaml").write_text("not the lab's\n")
    digest = hashlib.sha256(b"not the lab's\n").hexdigest()
    path = os.path.join(os.path.dirname(lab.spec.source), name)
    _rewrite(lambda d: d["files"].update({path: digest}))
    assert fastpath.status(LAB) is None


def test_a_cache_naming_a_fifo_does_not_block(lab: Lab) -> None:
    fifo = Path(lab.spec.source).parent / "calico" / "fifo.yaml"
    os.mkfifo(fifo)
    _rewrite(lambda d: d["files"].update({str(fifo): hashlib.sha256(b"").hexdigest()}))
    assert _answer(lambda: fastpath.status(LAB)) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a device node")
def test_a_cache_naming_a_device_is_not_believed(lab: Lab) -> None:
    """A copy of /dev/null in the lab directory, its (empty) hash right: never read (a copy of
    /dev/zero would be read for ever)."""
    null = Path(lab.spec.source).parent / "null.yaml"
    os.mknod(null, 0o600 | 0o020000, os.makedev(1, 3))
    _rewrite(lambda d: d["files"].update({str(null): hashlib.sha256(b"").hexdigest()}))
    assert fastpath.status(LAB) is None


def test_a_cache_not_naming_the_lab_file_first_is_not_believed(lab: Lab) -> None:
    _rewrite(lambda d: d.update(files=dict(reversed(list(d["files"].items())))))
    assert len(_doc()["files"]) > 1
    assert fastpath.status(LAB) is None


FRAMES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "not-json": lambda d: "{",
    "frame-a-list": lambda d: {**d, "frame": []},
    "vms-a-number": lambda d: {**d, "frame": {**d["frame"], "vms": 5}},
    "vm-without-node": lambda d: {**d, "frame": {**d["frame"], "vms": [{"name": "vm1"}]}},
    "nodes-of-numbers": lambda d: {**d, "frame": {**d["frame"], "nodes": [1]}},
    "clusters-null": lambda d: {**d, "frame": {**d["frame"], "clusters": None}},
    "files-a-list": lambda d: {**d, "files": list(d["files"])},
    "no-frame": lambda d: {k: v for k, v in d.items() if k != "frame"},
}


@pytest.mark.parametrize("tamper", FRAMES.values(), ids=FRAMES.keys())
def test_a_cache_of_the_wrong_shape_is_not_believed(
    lab: Lab, tamper: Callable[[dict[str, Any]], Any]
) -> None:
    changed = tamper(_doc())
    _cache().write_text(changed if isinstance(changed, str) else json.dumps(changed))
    assert fastpath.status(LAB) is None


def _set_state(**fields: Any) -> None:
    state = LabState.load(lab_dir(LAB))
    assert state is not None
    for key, value in fields.items():
        setattr(state, key, value)
    state.save(lab_dir(LAB))


def test_entity_names_with_path_tricks_reach_no_socket_outside(lab: Lab, tmp_path: Path) -> None:
    """A state file naming an entity '../../<dir>': its BIRD socket would be outside the run
    directory; the fast path declines instead of connecting to it."""
    evil = os.path.relpath(tmp_path / "evil", lab_dir(LAB))
    listener = unix_listener(tmp_path / "evil" / "bird.ctl")
    _set_state(entities={**lab.topo.entities, evil: "router"})
    try:
        assert fastpath.status(LAB) is None
        assert fastpath.routes(LAB, evil, None) is None
        assert not was_connected(listener)
    finally:
        listener.close()


def test_a_symlinked_entity_directory_or_socket_is_not_followed(lab: Lab, tmp_path: Path) -> None:
    listener = unix_listener(tmp_path / "other" / "bird.ctl")
    try:
        (lab_dir(LAB) / "tor1").symlink_to(tmp_path / "other")
        assert fastpath.status(LAB) is None
        assert fastpath.routes(LAB, "tor1", None) is None
        (lab_dir(LAB) / "spine1").mkdir()
        (lab_dir(LAB) / "spine1" / "bird.ctl").symlink_to(tmp_path / "other" / "bird.ctl")
        (lab_dir(LAB) / "tor1").unlink()
        assert fastpath.routes(LAB, "spine1", None) is None
        assert fastpath.status(LAB) is None
        assert not was_connected(listener)
    finally:
        listener.close()


@pytest.mark.parametrize(
    "fields", [{"entities": ["tor1"]}, {"entities": {"tor1": 4}}, {"vms": {"vm1": "r1-n1"}}, {"vms": 3}]
)
def test_a_state_file_of_the_wrong_shape_is_not_believed(lab: Lab, fields: dict[str, Any]) -> None:
    _set_state(**fields)
    assert fastpath.status(LAB) is None


def test_writing_the_cache_and_state_never_follows_a_planted_symlink(lab: Lab, tmp_path: Path) -> None:
    """Symlinks planted where `up` writes (the final names and the old fixed temporary names) to
    a file elsewhere: the file stays as it was, the run directory gets regular files."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    run = lab_dir(LAB)
    for name in (fastpath.CACHE, f"{fastpath.CACHE}.tmp", "state.json", "state.json.tmp"):
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(victim)
    state = LabState.load(run)  # through the symlink: what it reads, not where it writes, here
    assert state is None or state.lab == LAB
    state = LabState(LAB, lab.spec.source, "digest", "netns", "session", ready=True)
    state.save(run)
    lab._save_status_frame(state)
    assert victim.read_text() == "precious\n"
    assert not (run / "state.json").is_symlink()
    assert not _cache().is_symlink()
    assert LabState.load(run) == state
    assert fastpath.status(LAB) is not None
