"""Answers for `kvlab routes` and `kvlab status --json` without loading the lab: the state file,
a status frame cached at `up`, and BIRD's control sockets.

Loading a lab (YAML, pydantic models, Calico resources, the topology) costs far more than asking
BIRD; these commands only need what `up` already knew. Every function returns None when it cannot
answer exactly as the full path would (another runtime, a lab not ready, a migration journal on
disk that `attach` would settle, a lab file changed since `up`, no cache): the caller then takes
the full path. Imports only light modules (no pyroute2, pydantic, YAML).

kvlab runs as root, so what it reads from the run directory is checked before it is believed:
the cache is read only as a regular file there (no symlink, FIFO or device; bounded), must be of
this lab instance and name only the lab file and files in its directory (regular files, bounded:
never a device or a FIFO to hash), and its frame must have the shape `up` wrote; entity names must
be names, and a BIRD socket is reached only through no symlink. Anything else: None.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from harness.birdc import BirdUnavailable
from harness.names import NAME_PATTERN
from harness.safefile import FileRefused, read_regular, replace_file
from harness.speakers import SPEAKER_KINDS, BirdSpeaker, Session, bird_daemons
from harness.state import LabState, lab_dir

CACHE = "status-frame.json"
JOURNALS = "migrations"  # harness.runtime.netns.journal.JOURNAL_DIR, not imported (light)
MAX_CACHE_BYTES = 16 * 1024 * 1024  # a 64x8 fabric's frame is well under 1 MiB
MAX_LAB_FILE_BYTES = 4 * 1024 * 1024  # harness.yamlsrc.MAX_FILE_BYTES, not imported (YAML)


def fingerprint(files: list[str]) -> dict[str, str]:
    """path -> sha256 of its bytes, for the lab file and the resource files it names (regular
    files of at most MAX_LAB_FILE_BYTES, else FileRefused)."""
    return {f: hashlib.sha256(read_regular(f, MAX_LAB_FILE_BYTES)).hexdigest() for f in files}


def save_frame(lab: str, state: LabState, frame: dict[str, Any], files: list[str]) -> None:
    """Cache the static part of a lab's status (everything but sessions and VM locations) for
    this lab instance (its session id) built from these exact files."""
    doc = {
        "session_id": state.session_id,
        "spec_digest": state.spec_digest,
        "files": fingerprint(files),
        "frame": frame,
    }
    replace_file(lab_dir(lab) / CACHE, json.dumps(doc).encode())


class _Sockets:
    """What BirdSpeaker needs of a netns runtime to reach BIRD: its control socket."""

    def __init__(self, lab: str, run_dir: Path) -> None:
        self.lab, self.run_dir = lab, run_dir

    def bird_socket(self, entity: str, family: int = 4) -> Path:
        return self.run_dir / entity / ("bird.ctl" if family == 4 else "bird6.ctl")

    def kernel_routes(self, entity: str, prefix: str | None = None) -> Any:
        raise NotImplementedError("the CLI fast path reads BIRD only")

    def netns_path(self, entity: str) -> str | None:
        raise NotImplementedError("the CLI fast path reads BIRD only")


def _state(lab: str) -> LabState | None:
    """A ready netns lab's state with no migration journal left (else None: the full path)."""
    run_dir = lab_dir(lab)
    state = LabState.load(run_dir)
    if state is None or state.runtime != "netns" or not state.ready:
        return None
    if not (
        isinstance(state.spec_path, str)
        and isinstance(state.vms, dict)
        and all(isinstance(v, dict) for v in state.vms.values())
        and isinstance(state.entities, dict)
        and all(isinstance(k, str) for k in state.entities.values())
    ):
        return None  # not what `up` writes: the full path says what is wrong
    journals = run_dir / JOURNALS
    if journals.is_dir() and any(journals.glob("*.json")):
        return None
    return state


def _is_name(entity: object) -> bool:
    return isinstance(entity, str) and re.fullmatch(NAME_PATTERN, entity) is not None


def _socket(run_dir: Path, entity: str, family: int) -> Path | None:
    """The path of `entity`'s BIRD socket, if it reaches nothing through a symlink: a valid
    entity name, its directory (if there) a directory, the socket (if there) a socket."""
    if not _is_name(entity):
        return None
    path = _Sockets("", run_dir).bird_socket(entity, family)
    for p, is_kind in ((path.parent, stat.S_ISDIR), (path, stat.S_ISSOCK)):
        try:
            if not is_kind(os.lstat(p).st_mode):
                return None
        except FileNotFoundError:
            break  # nothing there: BIRD is not running (an answer, "Down")
        except OSError:
            return None
    return path


def routes(lab: str, entity: str, prefix: str | None, family: int = 4) -> list[dict[str, Any]] | None:
    """`kvlab routes ENTITY --json`'s document (bird6's with `family` 6), or None (take the full
    path: for bird6, unless the entity runs one)."""
    state = _state(lab)
    if state is None or state.entities.get(entity) not in SPEAKER_KINDS:
        return None
    socket = _socket(lab_dir(lab), entity, family)
    if socket is None or (family == 6 and not socket.exists()):
        return None
    speaker = BirdSpeaker(_Sockets(lab, lab_dir(lab)), entity, family)
    return [r.to_json() for r in speaker.routes(prefix)]


def _lab_files(files: list[str], spec_path: str) -> bool:
    """Whether a cache's files are what `up` fingerprints: the lab file, then files inside its
    directory (absolute, normal paths: no '..')."""
    if not files or files[0] != spec_path:
        return False
    base = os.path.dirname(spec_path)
    return all(
        isinstance(f, str)
        and os.path.isabs(f)
        and os.path.normpath(f) == f
        and os.path.commonpath([base, f]) == base
        for f in files
    )


def _frame_shaped(frame: Any) -> bool:
    """Whether a cached frame has the shape `Lab._status_frame` writes, where the fast path reads it."""

    def records(key: str, *names: str) -> bool:
        rows = frame.get(key)
        return isinstance(rows, list) and all(
            isinstance(r, dict) and all(isinstance(r.get(n), str) for n in names) for r in rows
        )

    return (
        isinstance(frame, dict)
        and records("vms", "name", "node")
        and records("nodes", "name")
        and records("clusters", "name")
    )


def _cached_frame(lab: str, state: LabState) -> dict[str, Any] | None:
    """The status frame `up` cached for this lab instance, built from the lab's files as they are
    now, or None (no cache, another instance's, stale, or not to be believed)."""
    try:
        cache = json.loads(read_regular(lab_dir(lab) / CACHE, MAX_CACHE_BYTES, follow_symlinks=False))
        files, frame = cache["files"], cache["frame"]
        if (
            cache["session_id"] != state.session_id
            or cache["spec_digest"] != state.spec_digest
            or not isinstance(files, dict)
            or not _lab_files(list(files), state.spec_path)
            or fingerprint(list(files)) != files
            or not _frame_shaped(frame)
        ):
            return None
    except (FileRefused, ValueError, KeyError, TypeError):
        return None
    return frame


def frame_birds(frame: dict[str, Any], entities: dict[str, str]) -> list[tuple[str, int]]:
    """The BIRDs Lab.speakers lists, as (entity, family), from a status frame: its clusters say
    the families (one with IPv6 pools: dual stack), its nodes which nested ones lack IPv6."""
    families = (4, 6) if any("pools6" in c for c in frame["clusters"]) else (4,)
    v4_only = {n["name"] for n in frame["nodes"] if "vm" in n and "ip6" not in n}
    return bird_daemons(entities, families, v4_only)


def status(lab: str) -> dict[str, Any] | None:
    """`kvlab status --json`'s document, or None (take the full path)."""
    state = _state(lab)
    if state is None:
        return None
    doc = _cached_frame(lab, state)
    birds = frame_birds(doc, state.entities) if doc is not None else []
    run_dir = lab_dir(lab)
    if doc is None or any(_socket(run_dir, entity, family) is None for entity, family in birds):
        return None
    for vm in doc["vms"]:
        node = state.vms.get(vm["name"], {}).get("node")
        vm["node"] = node if isinstance(node, str) else vm["node"]
    sockets = _Sockets(lab, lab_dir(lab))
    sessions: list[Session] = []
    for entity, family in birds:
        try:
            sessions += BirdSpeaker(sockets, entity, family).sessions()
        except BirdUnavailable as e:
            daemon = "<bird>" if family == 4 else "<bird6>"
            sessions.append(Session(entity, daemon, None, "Down", str(e), family))
    doc["sessions"] = [s.to_json() for s in sessions]
    return doc


__all__ = ["frame_birds", "routes", "save_frame", "status"]
