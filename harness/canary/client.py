"""The canary client: what runs inside a lab entity (see harness.canary). The standard library
only: it also runs with a container image's bare python3, the harness mounted read-only.

    python -m harness.canary.client --to 203.0.113.10 --port 7007 [--rate 100] [--control-stdin] ...
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
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.safefile import replace_file

REPORT_VERSION = 1
DEFAULT_RATE = 100.0
DEFAULT_GAP_THRESHOLD_MS = 50.0
DEFAULT_DRAIN = 1.0
MAX_LINE = 256  # a message line is ~35 bytes; anything longer without a newline is garbage
RTT_SAMPLES = 1_000_000  # beyond this, RTT statistics cover the first samples only


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
    port: int
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
        self._ack_now()
        for line in self.lines.feed(data):
            self.tracker.on_line(line, mono, wall)
        if not self.ready and self.tracker.echoed:
            self.ready = True
            self.emit({"event": "ready", "t": wall, "local": self.tracker.connections[-1]["local"]})

    def _ack_now(self) -> None:
        """Acknowledge what just came in at once instead of after the delayed-ACK timer.

        An echo server with Nagle's algorithm on (busybox `nc -e cat` in the guest) holds a
        small echo back while its previous one is unacknowledged. The kernel's delayed ACK
        then decides when echoes leave: piggybacked on the next message (one send interval
        later) or, when none follows (the last message before a stop), after the 40 ms timer.
        The canary would count that as an outage. TCP_QUICKACK is not sticky: re-armed here
        after every read."""
        if self.sock is not None and hasattr(socket, "TCP_QUICKACK"):
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

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
        # a unique new file renamed into place: never through a symlink planted at a fixed name
        replace_file(Path(args.report_file), json.dumps(report, indent=2).encode())
        emit({"event": "done", "report_file": args.report_file})
    else:
        emit({"event": "report", "report": report})
    return 0


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.canary.client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c = ap
    c.add_argument("--to", required=True, help="the VM's IP")
    c.add_argument("--port", type=int, required=True, help="the VM's echo port")
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
