"""Where a running lab lives on disk, and how to find labs (even after a crash).

Each lab instance has a run directory `<KVLAB_RUN_DIR>/<lab>/` (default /run/kvlab, a tmpfs
that a reboot empties) holding `state.json`, BIRD configs, control sockets, pid files and
logs. Every namespace of the lab is named `kvlab.<lab>.<entity>`; lab and entity names
cannot contain dots, so the prefix identifies a lab's namespaces without ambiguity and
`kvlab down` can reap them even when state.json is gone.

Instance names are hostile input (kvlab runs as root): `check_lab_name` applies the lab
file's `name:` rule to every name from a command line or the API, and every path built from
a name must stay a direct child of the run root. `.<lab>.lock` files serialise up/down of a
lab between processes and vanish when released (harness.locking).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import LabNameError, UnsafePathError
from harness.locking import file_lock, private_dir
from harness.names import LAB_NAME_PATTERN
from harness.safefile import FileRefused, read_regular, replace_file

STATE_LIMIT = 16 * 1024 * 1024  # bytes of a state file read back (a big lab's is well under 1 MiB)
NS_PREFIX = "kvlab."
LAB_NAME_RULE = (
    "lowercase letters, digits and '-', starting with a letter, ending with a letter or digit, "
    "at most 32 characters"
)


def valid_lab_name(name: object) -> bool:
    return isinstance(name, str) and re.fullmatch(LAB_NAME_PATTERN, name) is not None


def check_lab_name(name: object, option: str = "lab name", problem: str = "is not a valid lab name") -> str:
    """`name` if it is a valid instance name, else LabNameError naming `option` and the rule."""
    if valid_lab_name(name):
        return str(name)
    shown = repr(name) if not isinstance(name, str) or len(name) <= 64 else repr(name[:64]) + "..."
    raise LabNameError(f"{option}: {shown} {problem}: {LAB_NAME_RULE}")


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
    stack: str | None = None  # the runtime's stack option (containerlab: the version-matrix entry)
    owner_pid: int | None = None  # set for labs owned by a process (pytest); reaped once it is gone
    builder_pid: int | None = None  # the process bringing it up, until it is ready (or kept on failure)
    builder_started: int | None = None  # its start time (procs.start_time): guards against pid reuse
    created: float = field(default_factory=time.time)
    ready: bool = False
    entities: dict[str, str] = field(default_factory=dict)  # entity -> kind
    vms: dict[str, dict[str, str]] = field(default_factory=dict)  # vm -> {"node", "ifname", "guest"} now

    def save(self, run_dir: Path) -> None:
        replace_file(run_dir / "state.json", json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, run_dir: Path) -> LabState | None:
        try:
            raw = read_regular(run_dir / "state.json", STATE_LIMIT, what="state files", follow_symlinks=False)
            data = json.loads(raw)
        except (FileRefused, ValueError):
            return None
        if not isinstance(data, dict):
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

    def abandoned(self) -> bool:
        """True when no live process will finish or own this lab: its `up` stopped half-way
        (not ready, and the recorded builder process is gone) or its owner is gone."""
        from harness.procs import alive

        if not self.ready and self.builder_pid is not None:
            return not alive(self.builder_pid, self.builder_started)
        return not self.owner_alive()


def _child_of_run_root(name: str) -> Path:
    """run_root()/name, refused unless it resolves to exactly that direct child. `name` is one
    path component without dots or slashes (a checked lab name), so only a symlink in its place
    could lead elsewhere: one lstat instead of resolving the whole path (called often)."""
    if "/" in name or name in (".", "..", ""):
        raise UnsafePathError(f"{name!r} is not a single file name under the run directory")
    root = run_root()
    path = root / name
    if path.is_symlink():
        raise UnsafePathError(f"{path} resolves outside the run directory {root}: kvlab will not use it")
    return path


def lab_dir(lab: str) -> Path:
    """The run directory of lab instance `lab` (a valid name; a direct child of the run root)."""
    return _child_of_run_root(check_lab_name(lab))


def lock_path(lab: str) -> Path:
    return _child_of_run_root(f".{check_lab_name(lab)}.lock")


# Namespace names (kvlab.<lab>.<entity>) are machine-wide, whatever the run root: a lab's name is
# also locked here, so that a process with another KVLAB_RUN_DIR (a second test session, say)
# never mistakes a lab that is coming up (namespaces, no processes yet) for a crashed one.
MACHINE_LOCK_DIR = Path("/run/kvlab.labs")


def machine_lock_path(lab: str) -> Path | None:
    """The machine-wide lock of lab name `lab` (None without root: no namespaces to guard)."""
    return MACHINE_LOCK_DIR / f"{check_lab_name(lab)}.lock" if os.geteuid() == 0 else None


@contextmanager
def lab_lock(lab: str, *, blocking: bool = True) -> Iterator[None]:
    """Serialise up/down of one lab between processes (LockBusy if not `blocking` and held):
    its lock under the run root, then the machine-wide one of its name."""
    path = lock_path(lab)
    machine = machine_lock_path(lab)
    private_dir(run_root())
    with file_lock(path, blocking=blocking):
        if machine is None:
            yield
            return
        private_dir(MACHINE_LOCK_DIR, 0o700)
        with file_lock(machine, blocking=blocking):
            yield


def known_labs(namespaces: list[str]) -> set[str]:
    """Every lab that has a run directory or at least one namespace (valid names only)."""
    root = run_root()
    labs = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    labs |= {parsed[0] for ns in namespaces if (parsed := parse_namespace(ns))}
    return {name for name in labs if valid_lab_name(name)}


def locked_labs() -> set[str]:
    """Every lab with a lock file: held now, or left by a holder that was killed."""
    root = run_root()
    if not root.is_dir():
        return set()
    names = {p.name[1:-5] for p in root.glob(".*.lock")}
    return {name for name in names if valid_lab_name(name)}
