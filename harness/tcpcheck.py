"""One-shot TCP reachability between lab entities: an echo server in one namespace, a
client in another. (The long-running, sequence-numbered canary is a separate probe.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from harness.topology import GUEST_PORT
from harness.wait import eventually


class Runner(Protocol):
    """Runs commands inside lab entities: a `Lab` or a `Runtime`."""

    def run(
        self, entity: str, argv: list[str], *, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]: ...

    def popen(self, entity: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]: ...


_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    with c:
        data = c.recv(4096)
        c.sendall(data)
"""

_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as c:
    c.sendall(sys.argv[4].encode()); print(c.recv(4096).decode())
"""


@contextmanager
def echo_server(lab: Runner, entity: str, port: int = GUEST_PORT) -> Iterator[subprocess.Popen[str]]:
    """A TCP echo server inside `entity` for the duration of the block."""
    proc = lab.popen(
        entity, [sys.executable, "-c", _SERVER, str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if "listening" not in line:
            raise RuntimeError(
                f"echo server in {entity} did not start: {proc.stderr.read() if proc.stderr else ''}"
            )
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=5)


def client_argv(
    ip: str, port: int = GUEST_PORT, *, payload: str = "kvlab", timeout: float = 2.0
) -> list[str]:
    """A one-shot client (this interpreter) that sends `payload` to ip:port and prints the answer."""
    return [sys.executable, "-c", _CLIENT, ip, str(port), str(timeout), payload]


def tcp_roundtrip(
    lab: Runner, entity: str, ip: str, port: int = GUEST_PORT, *, payload: str = "kvlab", timeout: float = 2.0
) -> str:
    """Connect from `entity` to ip:port, send `payload`, return what came back (AssertionError
    when there is no answer, so `eventually` retries it)."""
    try:
        res = lab.run(entity, client_argv(ip, port, payload=payload, timeout=timeout), timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"TCP {entity} -> {ip}:{port}: the client did not finish in {timeout + 5:g} s"
        ) from None
    if res.returncode != 0:
        raise AssertionError(f"TCP {entity} -> {ip}:{port} failed: {res.stderr.strip().splitlines()[-1:]}")
    return res.stdout.strip()


def assert_reachable(
    lab: Runner, entity: str, ip: str, port: int = GUEST_PORT, timeout: float = 10.0
) -> None:
    """Eventually a TCP round trip from `entity` to ip:port echoes its payload."""
    eventually(
        lambda: tcp_roundtrip(lab, entity, ip, port) == "kvlab",
        timeout=timeout,
        what=f"TCP echo {entity} -> {ip}:{port}",
    )
