"""The canary's harness side: start the client (harness.canary.client) inside a lab entity through
a runtime, follow its progress, collect its report, add its gaps to a migration record."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from harness.canary.client import DEFAULT_DRAIN, DEFAULT_GAP_THRESHOLD_MS, DEFAULT_RATE
from harness.canary.report import CanaryError, CanaryReport
from harness.errors import WaitTimeout
from harness.topology import GUEST_PORT
from harness.wait import eventually

if TYPE_CHECKING:
    from harness.record import MigrationRecord
    from harness.runtime.base import Runtime


# -- the harness side ------------------------------------------------------------------


class Canary:
    """The canary client running in lab entity `src` against `dst_ip:port`, as a context manager.

    `__enter__` starts it and waits for the first echo; `stop()` (or `__exit__`) stops it, collects
    its report, checks that a new connection works, and returns the `CanaryReport` (also `.report`).
    While it runs, `.progress` is its latest progress event and `wait_for()` waits on one.
    """

    def __init__(
        self,
        runtime: Runtime,
        src: str,
        dst_ip: str,
        port: int = GUEST_PORT,
        rate: float = DEFAULT_RATE,
        *,
        gap_threshold_ms: float = DEFAULT_GAP_THRESHOLD_MS,
        drain: float = DEFAULT_DRAIN,
        duration_max: float = 600.0,
        ready_timeout: float = 15.0,
        fresh_check: bool = True,
        fresh_timeout: float = 2.0,
    ):
        self.runtime, self.src, self.dst_ip, self.port, self.rate = runtime, src, dst_ip, port, rate
        self.gap_threshold_ms, self.drain, self.duration_max = gap_threshold_ms, drain, duration_max
        self.ready_timeout, self.fresh_check, self.fresh_timeout = ready_timeout, fresh_check, fresh_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.report: CanaryReport | None = None
        self.events: list[dict[str, Any]] = []  # every JSON event the client printed
        self.progress: dict[str, Any] = {}
        self._ready = threading.Event()
        self._stderr: deque[str] = deque(maxlen=50)
        self._other: deque[str] = deque(maxlen=20)  # non-JSON stdout lines
        self._threads: list[threading.Thread] = []

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "harness.canary.client",
            "--to", self.dst_ip, "--port", str(self.port), "--rate", str(self.rate),
            "--gap-threshold-ms", str(self.gap_threshold_ms), "--drain", str(self.drain),
            "--duration-max", str(self.duration_max), "--progress-interval", "0.1",
            "--control-stdin",
        ]  # fmt: skip

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> Canary:
        self.proc = self.runtime.popen(
            self.src,
            self.argv(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=1,
        )
        for stream, reader in ((self.proc.stdout, self._read_stdout), (self.proc.stderr, self._read_stderr)):
            th = threading.Thread(target=reader, args=(stream,), name="kvlab-canary-reader", daemon=True)
            th.start()
            self._threads.append(th)
        try:
            eventually(
                self._started,
                timeout=self.ready_timeout,
                interval=0.02,
                what=f"the canary's first echo {self.src} -> {self.dst_ip}:{self.port}",
            )
        except BaseException as e:
            self._kill()
            if isinstance(e, WaitTimeout):
                raise CanaryError(f"{e}{self._stderr_tail()}") from None
            raise
        return self

    def __enter__(self) -> Canary:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.stop()
        else:  # never mask the error in flight
            try:
                self.stop()
            except Exception:
                self._kill()

    def stop(self) -> CanaryReport:
        """Stop the client (it drains outstanding echoes first), then check a fresh connection."""
        if self.report is not None:
            return self.report
        proc = self.proc
        if proc is None:
            raise CanaryError("the canary was never started")
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.close()
        try:
            proc.wait(timeout=self.drain + 10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=self.drain + 5)
            except subprocess.TimeoutExpired:
                self._kill()
        for th in self._threads:
            th.join(timeout=5)
        doc = next((e["report"] for e in reversed(self.events) if e.get("event") == "report"), None)
        if doc is None:
            raise CanaryError(
                f"the canary client in {self.src} ended (exit {proc.returncode}) without a report"
                f"{self._stderr_tail()}"
            )
        report = CanaryReport.from_json(doc)
        if self.fresh_check:
            report.fresh_connection_ok, report.fresh_connection_error = self.fresh_connection()
        self.report = report
        return report

    def fresh_connection(self) -> tuple[bool, str | None]:
        """A new connection's round trip from the same namespace: (ok, error)."""
        from harness.tcpcheck import tcp_roundtrip

        payload = "kvlab-canary-fresh"
        try:
            got = tcp_roundtrip(
                self.runtime, self.src, self.dst_ip, self.port, payload=payload, timeout=self.fresh_timeout
            )
        except AssertionError as e:  # no answer (tcp_roundtrip turns a stuck client into this too)
            return False, str(e)
        return (True, None) if got == payload else (False, f"echoed {got!r}, sent {payload!r}")

    # waiting ---------------------------------------------------------------------------
    def wait_for(
        self, condition: Callable[[dict[str, Any]], bool], *, timeout: float, what: str
    ) -> dict[str, Any]:
        """Wait until `condition(progress)` holds for a progress event; returns that event."""

        def check() -> dict[str, Any] | None:
            self._alive()
            p = dict(self.progress)
            return p if p and condition(p) else None

        return eventually(check, timeout=timeout, interval=0.02, what=what)

    def wait_sent(self, n: int, timeout: float = 10.0) -> dict[str, Any]:
        return self.wait_for(
            lambda p: p["sent"] >= n, timeout=timeout, what=f"the canary to send {n} messages"
        )

    def wait_gap(self, ms: float, timeout: float) -> dict[str, Any]:
        """Wait until a gap of more than `ms` has been seen (finished or still going on)."""
        return self.wait_for(
            lambda p: max(p["max_gap_ms"], p["current_gap_ms"]) > ms,
            timeout=timeout,
            what=f"a canary gap over {ms:g} ms",
        )

    # internals -------------------------------------------------------------------------
    def _started(self) -> bool:
        self._alive()
        return self._ready.is_set()

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise CanaryError(
                f"the canary client in {self.src} exited ({self.proc.returncode}){self._stderr_tail()}"
            )

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                self._other.append(line.rstrip())
                continue
            if not isinstance(event, dict):
                continue
            kind = event.get("event")
            if kind == "progress":
                self.progress = event
            else:
                self.events.append(event)
            if kind == "ready":
                self._ready.set()

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr.append(line.rstrip())

    def _stderr_tail(self) -> str:
        """What the client said last (its last events, stray output, stderr), for error messages."""
        lines = [json.dumps(e) for e in self.events[-3:]] + list(self._other) + list(self._stderr)
        return ("; client output: " + " | ".join(lines[-10:])) if lines else ""

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)


def merge_into(record: MigrationRecord, report: CanaryReport) -> MigrationRecord:
    """Add the canary's gaps (and resets) to a migration record's timeline.

    Each gap over the threshold becomes an event `{"t": start, "source": "canary", "kind":
    "canary-gap", "end", "gap_ms", "open"}`; the longest gap is added even when under the
    threshold; each reset is a `canary-reset` event.
    """
    gaps = list(report.gaps)
    if report.max_gap is not None and report.max_gap not in gaps:
        gaps.append(report.max_gap)
    for g in gaps:
        record.events.append(
            {
                "t": g.start,
                "source": "canary",
                "kind": "canary-gap",
                "end": g.end,
                "gap_ms": g.ms,
                "open": g.open,
                "longest": g == report.max_gap,
                "target": report.target,
            }
        )
    for r in report.resets_detail:
        record.events.append(
            {
                "t": r["t"],
                "source": "canary",
                "kind": "canary-reset",
                "error": r["error"],
                "target": report.target,
            }
        )
    record.events.sort(key=lambda e: e["t"])
    return record


__all__ = ["Canary", "CanaryError", "CanaryReport", "merge_into"]
