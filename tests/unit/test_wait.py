"""harness.wait.eventually: one waiting helper with a deadline and a useful timeout message."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from harness.errors import KvlabError, WaitTimeout
from harness.wait import eventually

FAST = {"timeout": 0.3, "interval": 0.01}


def _sequence(*steps: object) -> tuple[Callable[[], object], list[int]]:
    """A check that plays `steps` in order: exceptions are raised, values returned; the last repeats."""
    calls = [0]

    def check() -> object:
        step = steps[min(calls[0], len(steps) - 1)]
        calls[0] += 1
        if isinstance(step, BaseException):
            raise step
        return step

    return check, calls


def test_returns_first_truthy_value_at_once() -> None:
    check, calls = _sequence({"state": "Established"})
    assert eventually(check, **FAST) == {"state": "Established"}
    assert calls[0] == 1


def test_retries_falsy_values_and_returns_the_first_truthy_one() -> None:
    check, calls = _sequence(None, 0, [], "", "first", "second")
    assert eventually(check, **FAST) == "first"
    assert calls[0] == 5


def test_retries_assertion_errors() -> None:
    check, calls = _sequence(AssertionError("not yet"), AssertionError("still not"), 42)
    assert eventually(check, **FAST) == 42
    assert calls[0] == 3


def test_retries_transient_exceptions() -> None:
    check, calls = _sequence(FileNotFoundError("bird.ctl"), ConnectionRefusedError(), "up")
    assert eventually(check, transient=(FileNotFoundError, ConnectionRefusedError), **FAST) == "up"
    assert calls[0] == 3


def test_transient_matches_subclasses() -> None:
    check, _ = _sequence(ConnectionRefusedError(), "up")
    assert eventually(check, transient=(OSError,), **FAST) == "up"


def test_non_transient_exception_propagates_immediately() -> None:
    check, calls = _sequence(ValueError("bad input"), "never")
    started = time.monotonic()
    with pytest.raises(ValueError, match="bad input"):
        eventually(check, timeout=10, interval=0.01)
    assert calls[0] == 1
    assert time.monotonic() - started < 5  # not waited out


def test_exception_not_listed_as_transient_propagates() -> None:
    check, calls = _sequence(KeyError("x"), "never")
    with pytest.raises(KeyError):
        eventually(check, transient=(OSError,), **FAST)
    assert calls[0] == 1


def test_timeout_message_names_what_and_last_assertion() -> None:
    check, calls = _sequence(AssertionError("tor1 has 0 routes"), AssertionError("tor1 has 1 route"))
    with pytest.raises(WaitTimeout) as ei:
        eventually(check, timeout=0.1, interval=0.01, what="tor1 to learn 203.0.113.10/32")
    msg = str(ei.value)
    assert "tor1 to learn 203.0.113.10/32" in msg
    assert "tor1 has 1 route" in msg  # the last reason, not the first
    assert "tor1 has 0 routes" not in msg
    assert calls[0] >= 2


def test_timeout_message_names_last_falsy_value() -> None:
    check, _ = _sequence([])
    with pytest.raises(WaitTimeout) as ei:
        eventually(check, timeout=0.05, interval=0.01, what="sessions")
    assert "sessions" in str(ei.value)
    assert "[]" in str(ei.value)


def test_timeout_message_names_last_transient_exception() -> None:
    check, _ = _sequence(ConnectionRefusedError("bird.ctl refused"))
    with pytest.raises(WaitTimeout) as ei:
        eventually(check, timeout=0.05, interval=0.01, transient=(OSError,))
    assert "ConnectionRefusedError" in str(ei.value)
    assert "bird.ctl refused" in str(ei.value)


def test_default_what_is_the_function_name() -> None:
    def bgp_established() -> bool:
        return False

    with pytest.raises(WaitTimeout, match="bgp_established"):
        eventually(bgp_established, timeout=0.05, interval=0.01)


def test_wait_timeout_is_an_assertion_error_and_a_kvlab_error() -> None:
    with pytest.raises(AssertionError) as ei:
        eventually(lambda: False, timeout=0.05, interval=0.01)
    assert isinstance(ei.value, WaitTimeout)
    assert isinstance(ei.value, KvlabError)


def test_timeout_is_respected() -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        eventually(lambda: False, timeout=0.5, interval=0.01)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 2.5  # the deadline, then one interval and a loaded machine's slack


def test_check_is_called_repeatedly_until_the_deadline() -> None:
    check, calls = _sequence(False)
    with pytest.raises(WaitTimeout):
        eventually(check, timeout=1.0, interval=0.02)
    assert 3 <= calls[0] <= 51  # repeated, but never more often than every interval
