"""What one lab name could have left on this machine, and nothing else.

Other labs (a user's, another CI job's, another test's) come and go while tests run, so a test
that checks it "created nothing" looks only at what its own lab name could have created: the
namespaces `kvlab.<name>.*`, the run directory, entries of the run root named after the lab
(lock files), its machine-wide lock file, and processes whose command line mentions the lab's run directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import netlink
from harness.procs import mentioning
from harness.state import NS_PREFIX, lab_dir, machine_lock_path, run_root


@dataclass(frozen=True)
class Footprint:
    namespaces: tuple[str, ...]
    run_entries: tuple[str, ...]  # the run directory and lock files named after the lab
    processes: tuple[int, ...]

    def __bool__(self) -> bool:
        return bool(self.namespaces or self.run_entries or self.processes)


def footprint(name: str) -> Footprint:
    """Everything on this machine that belongs to lab `name`."""
    namespaces = tuple(sorted(ns for ns in netlink.list_namespaces() if ns.startswith(f"{NS_PREFIX}{name}.")))
    root = run_root()
    entries = (
        tuple(sorted(p.name for p in root.iterdir() if p.name == name or name in p.name.split(".")))
        if root.is_dir()
        else ()
    )
    machine = machine_lock_path(name)
    if machine is not None and machine.exists():
        entries += (str(machine),)
    return Footprint(namespaces, entries, tuple(mentioning(lab_dir(name))))


def assert_no_footprint(name: str) -> None:
    """Lab `name` left nothing behind (or never created anything)."""
    left = footprint(name)
    assert not left, f"lab {name!r} left {left}"
