"""Fail points: named places in long operations where a crash test can strike on purpose.

    KVLAB_FAILPOINTS="migrate.cutover.migrating=kill@0.1,migrate.complete.begin=kill-target"

makes the process kill itself with SIGKILL 0.1 s after it reaches `migrate.cutover.migrating`,
and kill the migration's target QEMU when it reaches `migrate.complete.begin`. Actions:
`kill` (SIGKILL this process: a crash), `int` (SIGINT to itself: Ctrl-C), `term` (SIGTERM),
`kill-target` (SIGKILL the process the caller names as `target_pid`, e.g. a migration's target
QEMU). `@SECONDS` delays the action (the operation goes on meanwhile). Unset, a fail point
costs one dictionary lookup. The names a module offers are listed in its docstring; the crash
tests (tests/netns/test_crash_safety.py) strike at each of them.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

ENV = "KVLAB_FAILPOINTS"
_SIGNALS = {"kill": signal.SIGKILL, "int": signal.SIGINT, "term": signal.SIGTERM}


def _parse(text: str) -> dict[str, tuple[str, float]]:
    out: dict[str, tuple[str, float]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, action = item.partition("=")
        action, _, delay = action.partition("@")
        if action not in (*_SIGNALS, "kill-target"):
            raise ValueError(f"{ENV}: unknown action {action!r} in {item!r}")
        out[name] = (action, float(delay or 0))
    return out


_armed = _parse(os.environ.get(ENV, ""))


def hit(name: str, *, target_pid: Callable[[], int | None] | None = None) -> None:
    """Strike if fail point `name` is armed (see the module docstring); otherwise nothing."""
    armed = _armed.get(name)
    if armed is None:
        return
    action, delay = armed

    def strike() -> None:
        if action == "kill-target":
            pid = target_pid() if target_pid is not None else None
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        else:
            os.kill(os.getpid(), _SIGNALS[action])

    if delay > 0:
        threading.Timer(delay, strike).start()
    else:
        strike()


def arm(spec: str) -> None:
    """Arm fail points in this process (what KVLAB_FAILPOINTS does at import)."""
    _armed.clear()
    _armed.update(_parse(spec))
