"""Processes of a lab: is one alive, and stopping a set of them."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from harness.safefile import FileRefused, read_regular


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3, the state, first); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat); with the
    pid it names one process, even after the pid is reused. None if there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def alive(pid: int, started: int | None = None) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by its parent) counts as gone.
    With `started` (from `start_time`), a new process that reuses the pid counts as gone too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if not fields or fields[0] == "Z":
        return False
    return started is None or (len(fields) > 19 and int(fields[19]) == started)


def _argv(pid: int | str) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")
    except OSError:
        return None


def _mentions(argv: list[bytes], directory: Path) -> bool:
    exact, below = str(directory).encode(), f"{directory}/".encode()
    return any(arg == exact or below in arg for arg in argv)


def mentioning(directory: Path, program: str | None = None) -> list[int]:
    """Processes with an argument that is `directory` or a path below it (e.g. `-c <dir>/bird.conf`
    or `-serial file:<dir>/serial.log`), optionally only those whose program ends with `program`."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        argv = _argv(entry.name)
        if argv is None:
            continue
        if program is not None and not argv[0].endswith(program.encode()):
            continue
        if _mentions(argv, directory):
            pids.append(int(entry.name))
    return pids


PID_FILE_LIMIT = 64


def in_namespace(pid: int, netns: Path) -> bool:
    """`pid` runs in the network namespace bound at `netns` (/run/netns/<name>)."""
    try:
        a, b = os.stat(f"/proc/{pid}/ns/net"), os.stat(netns)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def pid_from_file(path: Path, directory: Path, netns: Path | None = None) -> int | None:
    """The pid in pid file `path` (of a run directory: kvlab runs as root, so not believed) if it
    is a regular file, not a symlink, holding a decimal pid of a live process that is ours: one
    whose command line mentions `directory` (as `mentioning` finds them) or, given `netns`, that
    runs in that lab namespace; None otherwise, so that nothing is ever signalled on a planted
    pid file's word."""
    try:
        text = read_regular(path, PID_FILE_LIMIT, what="pid files", follow_symlinks=False).decode("ascii")
    except (FileRefused, UnicodeDecodeError):
        return None
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        return None
    pid = int(text)
    if pid <= 1 or not alive(pid):
        return None
    argv = _argv(pid)
    if argv is not None and _mentions(argv, directory):
        return pid
    return pid if netns is not None and in_namespace(pid, netns) else None


def kill_all(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM, wait up to `grace` seconds for them to exit, then SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if alive(p)]
        if left:
            time.sleep(0.05)  # polling the condition (processes gone) until the deadline
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then deliver them, so that a teardown or
    a recovery is not cut in half.

    Python runs signal handlers in the main thread whichever thread the kernel picks, so a
    per-thread signal mask would not hold them: the handlers themselves are swapped for ones that
    remember the signal. Outside the main thread (where handlers cannot be changed) the block
    runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    signums = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, _frame: held.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):  # each signal once, in the order they came
            handler = old[s]
            if callable(handler):
                handler(s, None)  # e.g. KeyboardInterrupt, raised here
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), s)
