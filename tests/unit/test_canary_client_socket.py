"""The canary client's own TCP behaviour, against an echo server on loopback (no namespaces)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from harness.canary.client import Client, ClientOptions


@pytest.fixture
def nagle_echo_server() -> Iterator[int]:
    """An echo server with Nagle's algorithm on (like busybox `nc -e cat`) that writes each
    echoed line in two pieces: its first byte, then the rest. Nagle holds the rest until the
    first byte is acknowledged, so the client's ACK timing decides when each echo completes."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            buf = b""
            while not done.is_set():
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    conn.sendall(line[:1])
                    conn.sendall(line[1:] + b"\n")

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield port
    finally:
        done.set()
        srv.close()
        th.join(timeout=5)


def test_echoes_held_by_the_servers_nagle_are_not_counted_as_outages(nagle_echo_server: int) -> None:
    """Without immediate ACKs every echo would wait for the client's next message (one send
    interval, 20 ms here) and the last one for the 40 ms delayed-ACK timer: RTTs of ~20 ms and
    a ~40 ms "gap" at the stop that no network caused."""
    opts = ClientOptions(ip="127.0.0.1", port=nagle_echo_server, rate=50.0, duration_max=1.5, drain=1.0)
    report = Client(opts).run()
    assert report["echoed"] == report["sent"] >= 50, report
    assert report["rtt_ms"]["p50"] < 8.0, report["rtt_ms"]
    assert report["max_gap_ms"] < 30.0, (report["max_gap"], report["rtt_ms"])
