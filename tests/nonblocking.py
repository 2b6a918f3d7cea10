"""Calling something that must not block: from another thread, with a deadline; and a Unix
socket that tells, without blocking, whether anybody connected to it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def answer_within(call: Callable[[], Any], timeout: float = 10.0, what: str = "the call") -> Any:
    """What `call` returns (or raises), run in another thread: it must not block (on a FIFO, say)
    for `timeout` seconds, else AssertionError naming `what`."""
    got: dict[str, Any] = {}

    def run() -> None:
        try:
            got["value"] = call()
        except Exception as e:
            got["raised"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"{what} blocked (on a FIFO?)"
    if "raised" in got:
        raise got["raised"]
    return got["value"]


def unix_listener(path: Path) -> socket.socket:
    """A Unix socket listening at `path` (a stand-in for some other daemon's socket), non-blocking:
    its backlog tells whether anybody connected (`was_connected`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(4)
    s.setblocking(False)
    return s


def was_connected(listener: socket.socket) -> bool:
    """Whether a connection waits in `listener`'s backlog (it is taken and closed)."""
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        return False
    return True
