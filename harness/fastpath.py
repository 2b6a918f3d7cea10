"""Answers for `kvlab routes` and `kvlab status --json` without loading the lab: the state file,
a status frame cached at `up`, and BIRD's control sockets.

Loading a lab (YAML, pydantic models, Calico resources, the topology) costs far more than asking
BIRD; these commands only need what `up` already knew. Every function returns None when it cannot
answer exactly as the full path would (another runtime, a lab not ready, a migration journal on
disk that `attach` would settle, a lab file changed since `up`, no cache): the caller then takes
the full path. Imports only light modules (no pyroute2, pydantic, YAML).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from harness.birdc import BirdUnavailable
from harness.speakers import SPEAKER_KINDS, BirdSpeaker, Session, bird_daemons
from harness.state import LabState, lab_dir

CACHE = "status-frame.json"
JOURNALS = "migrations"  # harness.runtime.netns.journal.JOURNAL_DIR, not imported (light)


def fingerprint(files: list[str]) -> dict[str, str]:
    """path -> sha256 of its bytes, for the lab file and the resource files it names."""
    return {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}


def save_frame(lab: str, state: LabState, frame: dict[str, Any], files: list[str]) -> None:
    """Cache the static part of a lab's status (everything but sessions and VM locations) for
    this lab instance (its session id) built from these exact files."""
    doc = {
        "session_id": state.session_id,
        "spec_digest": state.spec_digest,
        "files": fingerprint(files),
        "frame": frame,
    }
    run_dir = lab_dir(lab)
    tmp = run_dir / f"{CACHE}.tmp"
    tmp.write_text(json.dumps(doc))
    tmp.replace(run_dir / CACHE)


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
    journals = run_dir / JOURNALS
    if journals.is_dir() and any(journals.glob("*.json")):
        return None
    return state


def routes(lab: str, entity: str, prefix: str | None, family: int = 4) -> list[dict[str, Any]] | None:
    """`kvlab routes ENTITY --json`'s document (bird6's with `family` 6), or None (take the full
    path: for bird6, unless the entity runs one)."""
    state = _state(lab)
    if state is None or state.entities.get(entity) not in SPEAKER_KINDS:
        return None
    if family == 6 and not (lab_dir(lab) / entity / "bird6.ctl").exists():
        return None
    speaker = BirdSpeaker(_Sockets(lab, lab_dir(lab)), entity, family)
    return [r.to_json() for r in speaker.routes(prefix)]


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
    try:
        cache = json.loads((lab_dir(lab) / CACHE).read_text())
        if (
            cache["session_id"] != state.session_id
            or cache["spec_digest"] != state.spec_digest
            or fingerprint(list(cache["files"])) != cache["files"]
        ):
            return None
        doc: dict[str, Any] = cache["frame"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for vm in doc["vms"]:
        vm["node"] = state.vms.get(vm["name"], {}).get("node", vm["node"])
    sockets = _Sockets(lab, lab_dir(lab))
    sessions: list[Session] = []
    for entity, family in frame_birds(doc, state.entities):
        try:
            sessions += BirdSpeaker(sockets, entity, family).sessions()
        except BirdUnavailable as e:
            daemon = "<bird>" if family == 4 else "<bird6>"
            sessions.append(Session(entity, daemon, None, "Down", str(e), family))
    doc["sessions"] = [s.to_json() for s in sessions]
    return doc


__all__ = ["frame_birds", "routes", "save_frame", "status"]
