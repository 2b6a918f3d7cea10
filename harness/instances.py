"""Labs on this machine: which run, tearing one down by name, and reaping what crashed runs left.

Each runtime says which labs have resources of its own (`Runtime.present`: netns namespaces) and
whether one without a state file belongs to another run directory (`Runtime.owned_elsewhere`);
the run root says which have state. A lab is torn down by the runtime its state names (the
netns runtime when the state is gone), holding the lab's lock.
"""

from __future__ import annotations

from harness.locking import LockBusy, lock_held
from harness.runtime import RUNTIMES, get_runtime
from harness.state import (
    LabState,
    check_lab_name,
    lab_dir,
    lab_lock,
    locked_labs,
    machine_lock_path,
    run_root,
    valid_lab_name,
)


def running_lab_names() -> list[str]:
    """Labs with a state file in the run root."""
    root = run_root()
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if valid_lab_name(p.name) and p.is_dir() and (p / "state.json").exists()
    )


def present_labs() -> set[str]:
    """Every lab with a run directory or resources of any runtime on this machine."""
    root = run_root()
    labs = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    for name in RUNTIMES:
        labs |= get_runtime(name).present()
    return {lab for lab in labs if valid_lab_name(lab)}


def _teardown(name: str, state: LabState | None) -> None:
    """Remove lab `name` with its own runtime (netns if its state is gone); hold its lock."""
    get_runtime(state.runtime if state else "netns")(name).down()


def labs_to_take_down() -> list[str]:
    """What `kvlab down --all` takes down: the labs with state in this run root, and labs with
    resources but no state here unless they belong to another run root: their processes name
    its files, or its `up` holds the machine-wide lock of the name right now."""
    running = set(running_lab_names())
    present = present_labs() - running

    def elsewhere(name: str) -> bool:
        machine = machine_lock_path(name)
        if machine is not None and lock_held(machine):
            return True
        return any(get_runtime(r).owned_elsewhere(name) for r in RUNTIMES)

    return sorted(running | {n for n in present if not elsewhere(n)})


def down_lab(name: str) -> bool:
    """Tear down a lab by name, with or without its state file. True if anything was found;
    a lab that is not there is left alone (no lock file, nothing created)."""
    if check_lab_name(name) not in present_labs():
        return False
    with lab_lock(name):
        _teardown(name, LabState.load(lab_dir(name)))
    return True


def reap_stale() -> list[str]:
    """Remove labs left behind by crashed processes; returns their names.

    Stale, unless another process holds the lab's lock right now (an `up`, `down` or state
    update in progress): a lab whose `up` stopped half-way (not ready, its builder process
    gone), a lab whose owning process (e.g. a SIGKILLed pytest) is gone, or resources and a run
    directory with no state file (unless they belong to another run directory). Lock files
    nobody holds are removed on the way.
    """
    reaped = []
    present = present_labs()
    for name in sorted(present | locked_labs()):
        try:
            with lab_lock(name, blocking=False):
                state = LabState.load(lab_dir(name))
                if state is None and any(get_runtime(r).owned_elsewhere(name) for r in RUNTIMES):
                    continue
                if name in present and (state is None or state.abandoned()):
                    _teardown(name, state)
                    reaped.append(name)
        except LockBusy:
            continue
    return reaped


__all__ = ["down_lab", "labs_to_take_down", "present_labs", "reap_stale", "running_lab_names"]
