"""Calling something that must not block: from another thread, with a deadline."""

from __future__ import annotations

import threading
from collections.abc import Callable
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
