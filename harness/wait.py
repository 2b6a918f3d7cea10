"""Waiting on conditions with deadlines (one concept, one helper).

`eventually(check, timeout=..., what=...)` calls `check` until it returns a truthy value
or stops raising AssertionError, then returns that value. On timeout it raises WaitTimeout
whose message names what was awaited, how long, and the last reason it was not yet true.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from harness.errors import WaitTimeout

T = TypeVar("T")


class _NotYet(Exception):
    pass


def eventually(
    check: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.1,
    what: str | None = None,
    transient: tuple[type[BaseException], ...] = (),
) -> T:
    """Retry `check` until it returns truthy (and raises nothing) or `timeout` seconds pass.

    `transient` exceptions (e.g. a BIRD socket that is not there yet) are retried like
    AssertionError. The returned value is the first truthy result.
    """
    # tenacity is imported here, not at module level: harness.canary imports this module and
    # its client runs in containers whose python3 has the standard library only.
    from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

    description = what or getattr(check, "__name__", "condition")
    last: list[str] = ["never evaluated"]
    started = time.monotonic()

    def attempt() -> T:
        try:
            value = check()
        except (AssertionError, *transient) as e:
            last[0] = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise _NotYet from e
        if not value:
            last[0] = f"returned {value!r}"
            raise _NotYet
        return value

    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_exception_type(_NotYet),
        reraise=False,
    )
    try:
        return retrying(attempt)
    except RetryError:
        elapsed = time.monotonic() - started
        raise WaitTimeout(
            f"timed out after {elapsed:.1f}s waiting for {description}; last: {last[0]}"
        ) from None
