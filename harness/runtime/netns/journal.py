"""The durable journal of a live migration in progress: what a crash or Ctrl-C must be able to undo.

A migration of VM `vm` writes `<run dir>/migrations/<vm>.json` before each step it takes (which
nodes, which interfaces, which QEMU instance directories belong to it, which phase it is in) and
holds an exclusive lock on `<run dir>/migrations/<vm>.lock` for as long as it runs. A journal whose
lock nobody holds belongs to a migration whose process died (SIGKILL, a crash): the next kvlab
command that touches the lab finds it, looks at where the VM really runs, and finishes the
migration or rolls it back (`harness.runtime.netns.runtime` does that, `Lab.reconcile` asks for it).

Phases, in order:
- `prepare`: the target pod is being created. Nothing has moved; undoing means removing the target.
- `cutover`: the VM is being moved (QEMU live migration, or the mock guest switching interfaces).
  Only the VM itself can say where it runs now.
- `complete`: the VM ran on the target and the source is being released; finishing means
  releasing the source.

QEMU instances are named by directory (`qemu-<node>` for the first boot, `qemu-<node>-<id>` for a
migration target), so recovery never touches a QEMU this migration did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import LabError
from harness.locking import LockBusy, file_lock
from harness.safefile import FileRefused, read_regular, replace_file

PHASES = ("prepare", "cutover", "complete")
JOURNAL_DIR = "migrations"
JOURNAL_LIMIT = 1024 * 1024  # bytes: a journal is a few hundred


class MigrationInProgress(LabError):
    """Another live process is migrating this VM right now."""


@dataclass
class MigrationJournal:
    vm: str
    source: str
    target: str
    source_if: str
    target_if: str
    backend: str  # "qemu" | "mock"
    source_guest: str | None = None  # QEMU instance directory the VM runs in on the source
    target_guest: str | None = None  # QEMU instance directory this migration starts on the target
    phase: str = "prepare"
    id: str = field(default_factory=lambda: secrets.token_hex(3))
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)

    # -- files -------------------------------------------------------------------------
    @staticmethod
    def directory(run_dir: Path) -> Path:
        return run_dir / JOURNAL_DIR

    @classmethod
    def path(cls, run_dir: Path, vm: str) -> Path:
        return cls.directory(run_dir) / f"{vm}.json"

    def save(self, run_dir: Path) -> None:
        """Write atomically (a new file of a unique name, fsync, rename, fsync of the directory): a
        reader sees the old or the new journal; a symlink planted in the run directory is never
        followed (kvlab runs as root)."""
        path = self.path(run_dir, self.vm)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, json.dumps(asdict(self)).encode(), durable=True)

    def enter(self, phase: str, run_dir: Path) -> None:
        """Record that the migration is about to take the steps of `phase`."""
        if phase not in PHASES:
            raise ValueError(f"unknown migration phase {phase!r}")
        self.phase = phase
        self.save(run_dir)

    def remove(self, run_dir: Path) -> None:
        self.path(run_dir, self.vm).unlink(missing_ok=True)

    @classmethod
    def load(cls, run_dir: Path, vm: str) -> MigrationJournal | None:
        try:
            raw = read_regular(cls.path(run_dir, vm), JOURNAL_LIMIT, what="journals", follow_symlinks=False)
            data = json.loads(raw)
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (FileRefused, ValueError, TypeError, AttributeError):
            return None

    @classmethod
    def pending(cls, run_dir: Path) -> list[str]:
        """VMs with a journal on disk (their migration is running or was interrupted)."""
        d = cls.directory(run_dir)
        return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []

    def describe(self) -> str:
        return f"{self.vm} {self.source} -> {self.target} (phase {self.phase}, pid {self.pid})"


@contextlib.contextmanager
def migration_lock(run_dir: Path, vm: str) -> Iterator[None]:
    """Hold VM `vm`'s migration lock for the block; MigrationInProgress if another process has it.

    The lock is an flock (harness.locking): the kernel drops it when its holder dies, however it
    dies, which is what tells a crashed migration from a running one.
    """
    d = MigrationJournal.directory(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    held = contextlib.ExitStack()
    try:
        held.enter_context(file_lock(d / f"{vm}.lock", blocking=False))
    except LockBusy:
        journal = MigrationJournal.load(run_dir, vm)
        raise MigrationInProgress(
            f"{vm} is being migrated right now" + (f" ({journal.describe()})" if journal is not None else "")
        ) from None
    with held:
        yield
