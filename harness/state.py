"""Where a running lab lives on disk, and how to find labs (even after a crash).

Each lab instance has a run directory `<KVLAB_RUN_DIR>/<lab>/` (default /run/kvlab, a tmpfs
that a reboot empties) holding `state.json`, BIRD configs, control sockets, pid files and
logs. Every namespace of the lab is named `kvlab.<lab>.<entity>`; lab and entity names
cannot contain dots, so the prefix identifies a lab's namespaces without ambiguity and
`kvlab down` can reap them even when state.json is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

NS_PREFIX = "kvlab."


def run_root() -> Path:
    return Path(os.environ.get("KVLAB_RUN_DIR", "/run/kvlab"))


def namespace_name(lab: str, entity: str) -> str:
    return f"{NS_PREFIX}{lab}.{entity}"


def parse_namespace(name: str) -> tuple[str, str] | None:
    """'kvlab.default.tor1' -> ('default', 'tor1'); None for foreign namespaces."""
    if not name.startswith(NS_PREFIX):
        return None
    parts = name[len(NS_PREFIX) :].split(".")
    return (parts[0], parts[1]) if len(parts) == 2 else None


@dataclass
class LabState:
    """What `kvlab up` recorded about a lab instance."""

    lab: str
    spec_path: str
    spec_digest: str
    runtime: str
    session_id: str
    owner_pid: int | None = None  # set for labs owned by a process (pytest); reaped once it is gone
    created: float = field(default_factory=time.time)
    ready: bool = False
    entities: dict[str, str] = field(default_factory=dict)  # entity -> kind
    vms: dict[str, dict[str, str]] = field(default_factory=dict)  # vm -> {"node", "ifname"} where it runs now

    def save(self, run_dir: Path) -> None:
        tmp = run_dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(run_dir / "state.json")

    @classmethod
    def load(cls, run_dir: Path) -> LabState | None:
        try:
            data = json.loads((run_dir / "state.json").read_text())
        except (OSError, ValueError):
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError:
            return None

    def owner_alive(self) -> bool:
        """False once the owning process is gone (a killed, unreaped zombie counts as gone)."""
        from harness.procs import alive

        return self.owner_pid is None or alive(self.owner_pid)


def lab_dir(lab: str) -> Path:
    return run_root() / lab


@contextmanager
def lab_lock(lab: str) -> Iterator[None]:
    """Serialise up/down of one lab between processes."""
    root = run_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{lab}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def known_labs(namespaces: list[str]) -> set[str]:
    """Every lab that has a run directory or at least one namespace."""
    labs = {p.name for p in run_root().glob("*") if p.is_dir()} if run_root().exists() else set()
    labs |= {parsed[0] for ns in namespaces if (parsed := parse_namespace(ns))}
    return labs
