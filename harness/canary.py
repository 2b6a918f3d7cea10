"""The TCP canary: one long-lived TCP connection to a VM, sequence-numbered messages at a fixed
rate, and an account of what a user needs to judge a live migration.

The client runs inside a lab entity's namespace (an external host) as its own process:

    python -m harness.canary client --to 203.0.113.10 --port 7007 --rate 100 \\
        [--gap-threshold-ms 50] [--drain 1.0] [--duration-max 600] \\
        [--progress-interval 0.1] [--control-stdin] [--report-file PATH|-]

It talks to any echo server (the mock guest, a QEMU guest): every message is one self-framed
line `seq=<N> t=<wall-clock send time>\\n`; echoes are matched to sequence numbers whatever
way the bytes arrive (split, coalesced), and duplicates, out-of-order and mangled echoes are
counted. A reset (ECONNRESET, EPIPE, EOF, ...) is counted and the client reconnects, so the
run goes on and the report says the connection did not stay the same.

It stops on SIGTERM/SIGINT, on a `stop` line (or EOF) on stdin with `--control-stdin`, or after
`--duration-max` seconds; then it waits up to `--drain` seconds for outstanding echoes and
writes one report. stdout is a stream of JSON lines: `{"event": "ready", ...}` after the first
echo, `{"event": "progress", ...}` every `--progress-interval` seconds (0: never), `{"event":
"connected", ...}`, `{"event": "connect-failed", ...}` (once per kind of error), `{"event":
"reset", ...}`, and at the end `{"event": "report", "report":
{...}}` (or, with `--report-file PATH`, the report in that file and `{"event": "done"}`).

A *gap* is a stretch of time during which at least one message was waiting for its echo and
no echo arrived (it starts when the oldest unanswered message was sent or at the last echo,
whichever is later, and ends at the next echo). Gaps are measured on a monotonic clock; their
`start`/`end` are wall-clock epoch seconds, like a MigrationRecord's. Gaps longer than the
threshold are listed; the longest one is always reported. A gap still open at the end (no echo
came back) is listed with `"open": true`.

The report (`CanaryReport.to_json()`, schema version 1):

    {"version": 1, "target": "203.0.113.10:7007", "rate": 100.0, "gap_threshold_ms": 50.0,
     "started": 1.7e9, "ended": 1.7e9, "duration_s": 3.2, "stop_reason": "stdin",
     "sent": 320, "echoed": 320, "lost": 0, "resets": 0, "same_connection": true,
     "max_gap_ms": 84.1, "max_gap": {"start": ..., "end": ..., "ms": 84.1, "open": false},
     "gaps": [{"start": ..., "end": ..., "ms": 84.1, "open": false}],
     "out_of_order": 0, "duplicates": 0, "corrupt": 0, "drained": true,
     "rtt_ms": {"min": .., "avg": .., "p50": .., "p99": .., "max": ..},
     "connections": [{"local": "198.19.0.5:40112", "opened": ..., "closed": ..., "reason": "stop"}],
     "resets_detail": [{"t": ..., "error": "ECONNRESET", "unanswered": 3}],
     "fresh_connection_ok": true}

`lost` = `sent` - `echoed` after the drain. `fresh_connection_ok` is filled in by the harness
(`Canary.stop()`: a new connection's round trip from the same namespace); the client leaves it null.

The harness side:

    with canary(lab, "ext1", "vm1") as c:          # waits for the first echo
        lab.migrate("vm1", "r2-n1")
    report = c.report                               # CanaryReport
    merge_into(record, report)                      # "canary-gap" events in the MigrationRecord
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any

from harness.errors import KvlabError, WaitTimeout
from harness.wait import eventually

if TYPE_CHECKING:
    from harness.lab import Lab
    from harness.migration import MigrationRecord

REPORT_VERSION = 1
DEFAULT_PORT = 7007  # harness.runtime.netns.GUEST_PORT: the mock guest's echo port
DEFAULT_RATE = 100.0
DEFAULT_GAP_THRESHOLD_MS = 50.0
DEFAULT_DRAIN = 1.0
MAX_LINE = 256  # a message line is ~35 bytes; anything longer without a newline is garbage
RTT_SAMPLES = 1_000_000  # beyond this, RTT statistics cover the first samples only


class CanaryError(KvlabError):
    """The canary client could not start, or ended without a report."""


# -- wire format -----------------------------------------------------------------------


def encode(seq: int, wall: float) -> bytes:
    """One message: `seq=<N> t=<wall-clock send time>\\n`."""
    return f"seq={seq} t={wall:.6f}\n".encode()


def decode(line: bytes) -> tuple[int, str] | None:
    """(seq, t as sent) of one line without its newline, or None if it is no canary message."""
    try:
        s, t = line.decode("ascii").split(" ")
        if not s.startswith("seq=") or not t.startswith("t="):
            return None
        seq = int(s[4:])
        float(t[2:])
    except ValueError:  # UnicodeDecodeError is a ValueError
        return None
    return seq, t[2:]


class LineBuffer:
    """Reassembles lines from bytes however they were split or coalesced.

    A run of more than MAX_LINE bytes without a newline comes out as one (garbage) line.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        if len(self._buf) > MAX_LINE:
            lines.append(self._buf)
            self._buf = bytearray()
        return [bytes(line) for line in lines]

    def clear(self) -> None:
        self._buf.clear()


# -- accounting (pure: every call carries its own clock readings) ----------------------


@dataclass(frozen=True)
class Gap:
    start: float  # wall clock, epoch seconds
    end: float
    ms: float
    open: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "ms": self.ms, "open": self.open}


@dataclass
class _Sent:
    mono: float
    wall: float


class Tracker:
    """Sent messages, their echoes, gaps and resets. Times: `mono` (monotonic) and `wall` (epoch)."""

    def __init__(self, *, gap_threshold_ms: float = DEFAULT_GAP_THRESHOLD_MS):
        self.gap_threshold_ms = gap_threshold_ms
        self.outstanding: dict[int, _Sent] = {}  # insertion order = send order
        self.last_seq = 0
        self.sent = self.echoed = 0
        self.duplicates = self.out_of_order = self.corrupt = 0
        self.highest_echoed = 0
        self.resets: list[dict[str, Any]] = []
        self.connections: list[dict[str, Any]] = []
        self.gaps: list[Gap] = []
        self.max_gap: Gap | None = None
        self.rtts: list[float] = []
        self.warmup_ms: float | None = None  # send of the first message -> its echo
        self._waiting_since: _Sent | None = None  # start of the current wait for an echo

    # events --------------------------------------------------------------------------
    def next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    def on_sent(self, seq: int, mono: float, wall: float) -> None:
        self.outstanding[seq] = _Sent(mono, wall)
        self.sent += 1
        if self._waiting_since is None:
            self._waiting_since = _Sent(mono, wall)

    def on_line(self, line: bytes, mono: float, wall: float) -> int | None:
        """One echoed line; returns its sequence number if it answered an outstanding message."""
        msg = decode(line)
        if msg is None:
            self.corrupt += 1
            return None
        seq, _ = msg
        sent = self.outstanding.get(seq)
        if sent is None:
            if 0 < seq <= self.last_seq:
                self.duplicates += 1  # answered already
            else:
                self.corrupt += 1  # never sent
            return None
        if encode(seq, sent.wall) != line + b"\n":
            self.corrupt += 1  # the right seq with other content: not our message
            return None
        del self.outstanding[seq]
        if seq < self.highest_echoed:
            self.out_of_order += 1
        self.highest_echoed = max(self.highest_echoed, seq)
        first = self.echoed == 0
        self.echoed += 1
        if len(self.rtts) < RTT_SAMPLES:
            self.rtts.append((mono - sent.mono) * 1000)
        if first:  # the wait for the very first echo is warm-up (the server forks its echo), not a gap
            self.warmup_ms = round((mono - sent.mono) * 1000, 3)
        elif self._waiting_since is not None:
            self._close_gap(mono, wall)
        self._waiting_since = _Sent(mono, wall) if self.outstanding else None
        return seq

    def on_connected(self, local: str, wall: float) -> None:
        self.connections.append({"local": local, "opened": wall, "closed": None, "reason": None})

    def on_reset(self, error: str, mono: float, wall: float) -> None:
        """The connection broke: what it had outstanding will never be answered."""
        self.resets.append({"t": wall, "error": error, "unanswered": len(self.outstanding)})
        self.outstanding.clear()
        self._end_connection(wall, error)
        if self._waiting_since is None:  # the outage starts now, even with nothing in flight
            self._waiting_since = _Sent(mono, wall)

    def current_gap_ms(self, mono: float) -> float:
        return 0.0 if self._waiting_since is None else (mono - self._waiting_since.mono) * 1000

    def finish(self, mono: float, wall: float, reason: str = "stop") -> None:
        """End of the run (after the drain): a wait still going on is an open gap."""
        if self._waiting_since is not None:
            self._close_gap(mono, wall, still_open=True)
            self._waiting_since = None
        self._end_connection(wall, reason)

    # internals -----------------------------------------------------------------------
    def _close_gap(self, mono: float, wall: float, *, still_open: bool = False) -> None:
        assert self._waiting_since is not None
        gap = Gap(
            start=self._waiting_since.wall,
            end=wall,
            ms=round((mono - self._waiting_since.mono) * 1000, 3),
            open=still_open,
        )
        if self.max_gap is None or gap.ms > self.max_gap.ms:
            self.max_gap = gap
        if gap.ms > self.gap_threshold_ms or still_open:
            self.gaps.append(gap)

    def _end_connection(self, wall: float, reason: str) -> None:
        if self.connections and self.connections[-1]["closed"] is None:
            self.connections[-1].update(closed=wall, reason=reason)

    # report --------------------------------------------------------------------------
    def rtt_summary(self) -> dict[str, float] | None:
        if not self.rtts:
            return None
        s = sorted(self.rtts)

        def pct(p: float) -> float:
            return round(s[min(len(s) - 1, int(p * len(s)))], 3)

        return {
            "min": round(s[0], 3),
            "avg": round(sum(s) / len(s), 3),
            "p50": pct(0.50),
            "p99": pct(0.99),
            "max": round(s[-1], 3),
        }

    def progress(self, mono: float, wall: float) -> dict[str, Any]:
        return {
            "t": wall,
            "sent": self.sent,
            "echoed": self.echoed,
            "outstanding": len(self.outstanding),
            "resets": len(self.resets),
            "max_gap_ms": self.max_gap.ms if self.max_gap else 0.0,
            "current_gap_ms": round(self.current_gap_ms(mono), 3),
        }

    def report(self, **meta: Any) -> dict[str, Any]:
        """The report document (see the module docstring); `meta`: target, rate, started, ..."""
        return {
            "version": REPORT_VERSION,
            **meta,
            "sent": self.sent,
            "echoed": self.echoed,
            "lost": self.sent - self.echoed,
            "resets": len(self.resets),
            "same_connection": not self.resets and len(self.connections) == 1,
            "max_gap_ms": self.max_gap.ms if self.max_gap else 0.0,
            "max_gap": self.max_gap.to_json() if self.max_gap else None,
            "gaps": [g.to_json() for g in self.gaps],
            "warmup_ms": self.warmup_ms,
            "out_of_order": self.out_of_order,
            "duplicates": self.duplicates,
            "corrupt": self.corrupt,
            "rtt_ms": self.rtt_summary(),
            "connections": list(self.connections),
            "resets_detail": list(self.resets),
            "fresh_connection_ok": None,
        }


# -- the client (runs inside a lab namespace) -------------------------------------------


@dataclass
class ClientOptions:
    ip: str
    port: int = DEFAULT_PORT
    rate: float = DEFAULT_RATE
    gap_threshold_ms: float = DEFAULT_GAP_THRESHOLD_MS
    drain: float = DEFAULT_DRAIN
    duration_max: float = 600.0
    progress_interval: float = 0.0
    connect_timeout: float = 1.0
    reconnect_interval: float = 0.1


def _error_name(e: OSError) -> str:
    """ECONNRESET, EPIPE, ECONNREFUSED, ... (or the exception's name, e.g. TimeoutError)."""
    return errno.errorcode.get(e.errno or 0) or type(e).__name__


class Client:
    """The canary's event loop: one non-blocking socket, a send schedule, a tracker.

    `request_stop(reason)` (from a signal handler or a watched fd) takes effect within 50 ms;
    `emit(dict)` receives the JSON events.
    """

    def __init__(self, opts: ClientOptions, *, emit: Callable[[dict[str, Any]], None] = lambda e: None):
        self.opts = opts
        self.emit = emit
        self.mono, self.wall = time.monotonic, time.time
        self.tracker = Tracker(gap_threshold_ms=opts.gap_threshold_ms)
        self.sel = selectors.DefaultSelector()
        self.sock: socket.socket | None = None
        self.want_write = False
        self.lines = LineBuffer()
        self.out = bytearray()
        self.queued: deque[tuple[int, int, float, float]] = deque()  # (end offset, seq, mono, wall)
        self.written = 0  # bytes written on this connection
        self.queued_bytes = 0
        self.ready = False
        self.stop_reason: str | None = None
        self.connect_error: str | None = None
        self.extra_fds: dict[int, Callable[[], None]] = {}

    # connection ------------------------------------------------------------------------
    def _connect(self) -> bool:
        try:
            s = socket.create_connection((self.opts.ip, self.opts.port), timeout=self.opts.connect_timeout)
        except OSError as e:
            if _error_name(e) != self.connect_error:  # say so once per kind of failure
                self.connect_error = _error_name(e)
                self.emit({"event": "connect-failed", "t": self.wall(), "error": self.connect_error})
            return False
        self.connect_error = None
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        self.sock = s
        self.out.clear()
        self.queued.clear()
        self.written = self.queued_bytes = 0
        self.lines.clear()
        self.sel.register(s, selectors.EVENT_READ)
        self.want_write = False
        local = "{}:{}".format(*s.getsockname()[:2])
        self.tracker.on_connected(local, self.wall())
        self.emit(
            {"event": "connected", "t": self.wall(), "local": local, "n": len(self.tracker.connections)}
        )
        return True

    def _drop(self, error: str) -> None:
        self._close()
        self.tracker.on_reset(error, self.mono(), self.wall())
        self.emit({"event": "reset", "t": self.wall(), "error": error, "resets": len(self.tracker.resets)})

    def _close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None

    # I/O -------------------------------------------------------------------------------
    def _queue(self) -> None:
        seq = self.tracker.next_seq()
        mono, wall = self.mono(), self.wall()
        data = encode(seq, wall)
        self.out += data
        self.queued_bytes += len(data)
        self.queued.append((self.queued_bytes, seq, mono, wall))

    def _flush(self) -> None:
        """Write what is queued; a message counts as sent once the kernel has all of it."""
        if self.sock is None:
            return
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._drop(_error_name(e))
                return
            del self.out[:n]
            self.written += n
        while self.queued and self.queued[0][0] <= self.written:
            _, seq, mono, wall = self.queued.popleft()
            self.tracker.on_sent(seq, mono, wall)
        if self.want_write != bool(self.out):  # wake up when the socket takes more
            self.want_write = bool(self.out)
            self.sel.modify(self.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0))

    def _receive(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._drop(_error_name(e))
            return
        if not data:
            self._drop("EOF")
            return
        mono, wall = self.mono(), self.wall()
        for line in self.lines.feed(data):
            self.tracker.on_line(line, mono, wall)
        if not self.ready and self.tracker.echoed:
            self.ready = True
            self.emit({"event": "ready", "t": wall, "local": self.tracker.connections[-1]["local"]})

    # the loop --------------------------------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Watch another file descriptor (stdin control) from the loop."""
        self.extra_fds[fd] = callback
        self.sel.register(fd, selectors.EVENT_READ)

    def remove_reader(self, fd: int) -> None:
        if self.extra_fds.pop(fd, None) is not None:
            self.sel.unregister(fd)

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def run(self) -> dict[str, Any]:
        o, t = self.opts, self.tracker
        interval = 1.0 / o.rate
        started_wall, started = self.wall(), self.mono()
        deadline = started + o.duration_max
        next_send = next_connect = next_progress = started
        drain_until: float | None = None
        while True:
            now = self.mono()
            if self.stop_reason is None and now >= deadline:
                self.request_stop("duration")
            if self.stop_reason is not None and drain_until is None:
                drain_until = now + o.drain
            if drain_until is not None:
                idle = not t.outstanding and not self.out
                if self.sock is None or idle or now >= drain_until:
                    break
            if self.sock is None and now >= next_connect:
                if not self._connect():
                    next_connect = self.mono() + o.reconnect_interval
                    continue
                now = next_send = self.mono()
            if self.sock is not None and drain_until is None and now >= next_send:
                if now - next_send > 1.0:  # the loop was held up: resume the schedule, no burst
                    next_send = now
                while next_send <= now:
                    self._queue()
                    next_send += interval
                self._flush()
            if o.progress_interval > 0 and now >= next_progress:
                self.emit({"event": "progress", **t.progress(now, self.wall())})
                next_progress = now + o.progress_interval
            wake = [0.05]
            if self.sock is None:
                wake.append(next_connect - now)
            elif drain_until is None:
                wake.append(next_send - now)
            else:
                wake.append(drain_until - now)
            if o.progress_interval > 0:
                wake.append(next_progress - now)
            for key, events in self.sel.select(max(0.0, min(wake))):
                if key.fd in self.extra_fds:
                    self.extra_fds[key.fd]()
                elif self.sock is not None and key.fileobj is self.sock:
                    if events & selectors.EVENT_READ:
                        self._receive()
                    if self.sock is not None and events & selectors.EVENT_WRITE:
                        self._flush()
        t.finish(self.mono(), self.wall(), self.stop_reason or "stop")
        self._close()
        ended = self.wall()
        return t.report(
            target=f"{o.ip}:{o.port}",
            rate=o.rate,
            gap_threshold_ms=o.gap_threshold_ms,
            started=started_wall,
            ended=ended,
            duration_s=round(ended - started_wall, 3),
            stop_reason=self.stop_reason,
            drained=not t.outstanding,
        )


def run_client(args: argparse.Namespace) -> int:
    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    opts = ClientOptions(
        ip=args.to,
        port=args.port,
        rate=args.rate,
        gap_threshold_ms=args.gap_threshold_ms,
        drain=args.drain,
        duration_max=args.duration_max,
        progress_interval=args.progress_interval,
    )
    client = Client(opts, emit=emit)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: client.request_stop(signal.Signals(signum).name))
    if args.control_stdin:
        fd = sys.stdin.fileno()
        os.set_blocking(fd, False)

        def on_stdin() -> None:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            if not data or b"stop" in data:  # EOF: whoever controlled us is gone
                client.request_stop("stdin" if data else "stdin-eof")
                client.remove_reader(fd)

        client.add_reader(fd, on_stdin)
    report = client.run()
    if args.report_file and args.report_file != "-":
        tmp = f"{args.report_file}.tmp"
        with open(tmp, "w") as fh:
            json.dump(report, fh, indent=2)
        os.replace(tmp, args.report_file)
        emit({"event": "done", "report_file": args.report_file})
    else:
        emit({"event": "report", "report": report})
    return 0


# -- the harness side ------------------------------------------------------------------


@dataclass
class CanaryReport:
    """What the canary saw (see the module docstring for the JSON document)."""

    target: str
    sent: int
    echoed: int
    lost: int
    resets: int
    same_connection: bool
    max_gap_ms: float
    gaps: list[Gap]
    max_gap: Gap | None = None
    fresh_connection_ok: bool | None = None
    fresh_connection_error: str | None = None
    rate: float = DEFAULT_RATE
    gap_threshold_ms: float = DEFAULT_GAP_THRESHOLD_MS
    started: float | None = None
    ended: float | None = None
    duration_s: float | None = None
    stop_reason: str | None = None
    drained: bool = True
    warmup_ms: float | None = None  # first message -> first echo (not counted as a gap)
    out_of_order: int = 0
    duplicates: int = 0
    corrupt: int = 0
    rtt_ms: dict[str, float] | None = None
    connections: list[dict[str, Any]] = field(default_factory=list)
    resets_detail: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CanaryReport:
        if doc.get("version", REPORT_VERSION) != REPORT_VERSION:
            raise CanaryError(
                f"canary report version {doc.get('version')} (this harness reads {REPORT_VERSION})"
            )
        known = set(cls.__dataclass_fields__)
        fields = {k: v for k, v in doc.items() if k in known}
        fields["gaps"] = [Gap(**g) for g in doc.get("gaps", [])]
        fields["max_gap"] = Gap(**doc["max_gap"]) if doc.get("max_gap") else None
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["gaps"] = [g.to_json() for g in self.gaps]
        doc["max_gap"] = self.max_gap.to_json() if self.max_gap else None
        return {"version": REPORT_VERSION, **doc}

    def gaps_over(self, ms: float) -> list[Gap]:
        return [g for g in self.gaps if g.ms > ms]

    def summary(self) -> str:
        fresh = {True: "ok", False: "FAILED", None: "not checked"}[self.fresh_connection_ok]
        return (
            f"canary -> {self.target}: sent {self.sent}, echoed {self.echoed}, lost {self.lost}, "
            f"resets {self.resets}, same connection {self.same_connection}, "
            f"max gap {self.max_gap_ms:.1f} ms, {len(self.gaps)} gap(s) > {self.gap_threshold_ms:g} ms, "
            f"fresh connection {fresh}"
        )


class Canary:
    """The canary client running in lab entity `src` against `dst_ip:port`, as a context manager.

    `__enter__` starts it and waits for the first echo; `stop()` (or `__exit__`) stops it, collects
    its report, checks that a new connection works, and returns the `CanaryReport` (also `.report`).
    While it runs, `.progress` is its latest progress event and `wait_for()` waits on one.
    """

    def __init__(
        self,
        lab: Lab,
        src: str,
        dst_ip: str,
        port: int = DEFAULT_PORT,
        rate: float = DEFAULT_RATE,
        *,
        gap_threshold_ms: float = DEFAULT_GAP_THRESHOLD_MS,
        drain: float = DEFAULT_DRAIN,
        duration_max: float = 600.0,
        ready_timeout: float = 15.0,
        fresh_check: bool = True,
        fresh_timeout: float = 2.0,
    ):
        self.lab, self.src, self.dst_ip, self.port, self.rate = lab, src, dst_ip, port, rate
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
            sys.executable, "-m", "harness.canary", "client",
            "--to", self.dst_ip, "--port", str(self.port), "--rate", str(self.rate),
            "--gap-threshold-ms", str(self.gap_threshold_ms), "--drain", str(self.drain),
            "--duration-max", str(self.duration_max), "--progress-interval", "0.1",
            "--control-stdin",
        ]  # fmt: skip

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> Canary:
        self.proc = self.lab.popen(
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
                self.lab, self.src, self.dst_ip, self.port, payload=payload, timeout=self.fresh_timeout
            )
        except (AssertionError, subprocess.TimeoutExpired) as e:
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


def canary(lab: Lab, src: str, vm: str, **kwargs: Any) -> Canary:
    """A Canary from lab entity `src` (an external host) to VM `vm`'s IP on the guest port."""
    return Canary(lab, src, lab.vm(vm).ip, **kwargs)


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


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.canary",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client", help="run the canary client (inside a lab namespace)")
    c.add_argument("--to", required=True, help="the VM's IP")
    c.add_argument("--port", type=int, default=DEFAULT_PORT)
    c.add_argument("--rate", type=float, default=DEFAULT_RATE, help="messages per second (default 100)")
    c.add_argument("--gap-threshold-ms", type=float, default=DEFAULT_GAP_THRESHOLD_MS)
    c.add_argument("--drain", type=float, default=DEFAULT_DRAIN, help="seconds to wait for echoes at stop")
    c.add_argument("--duration-max", type=float, default=600.0, help="stop after this many seconds")
    c.add_argument("--progress-interval", type=float, default=0.0, help="seconds between progress events")
    c.add_argument("--control-stdin", action="store_true", help="stop on a 'stop' line or EOF on stdin")
    c.add_argument("--report-file", default="-", help="where the report goes (default '-': stdout)")
    args = ap.parse_args(argv)
    if args.rate <= 0:
        ap.error("--rate must be positive")
    return run_client(args)


if __name__ == "__main__":
    sys.exit(main())
