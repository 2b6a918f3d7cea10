"""The control socket of a nested node's BIRD that runs inside a QEMU guest, on the host.

BIRD's control socket is a Unix socket inside the guest. The guest serves BIRD's control
protocol on TCP port `BIRDCTL_PORT` of the VM's address (see guestimage), reachable on the lab
network only. This relay listens on the Unix socket the probes use for every speaker
(`<run>/<node>/bird.ctl`) and, per connection, connects to the guest from the namespace of the
node the VM runs on now (the lab state says which, so it follows migrations), then copies bytes
both ways until either side closes.

    python -m harness.runtime.netns.birdrelay --socket PATH --run-dir DIR --lab LAB \\
        --vm VM --node NODE --ip IP --port PORT

`--node` is where the VM runs when the lab state does not say (before the first migration).
`--netns PATH` instead connects from that fixed network namespace (a container's
/proc/<pid>/ns/net on the containerlab runtime: the lab's external host, which routes to every VM).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from harness import netlink
from harness.state import LabState, namespace_name

CONNECT_TIMEOUT = 5.0
CHUNK = 65536


@dataclass(frozen=True)
class Target:
    """Where the guest's control port is: the VM, its address and port, and how to find its node."""

    run_dir: Path
    lab: str
    vm: str
    node: str  # where it runs unless the lab state says otherwise
    ip: str
    port: int
    netns: str | None = None  # a fixed namespace to connect from instead of the VM's node

    def __post_init__(self) -> None:
        ipaddress.IPv4Address(self.ip)
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")

    def namespace(self) -> str:
        if self.netns is not None:
            return self.netns
        state = LabState.load(self.run_dir)
        node = state.vms.get(self.vm, {}).get("node", self.node) if state is not None else self.node
        return namespace_name(self.lab, str(node))

    def connect(self) -> socket.socket:
        with netlink.inside(self.namespace()):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect((self.ip, self.port))
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        return sock


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := src.recv(CHUNK):
            dst.sendall(chunk)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _serve_one(client: socket.socket, target: Target) -> None:
    with client:
        try:
            guest = target.connect()
        except OSError:
            return  # the client sees the connection close: BIRD unavailable
        with guest:
            back = threading.Thread(target=_pump, args=(guest, client), daemon=True)
            back.start()
            _pump(client, guest)
            back.join()


def serve(path: Path, target: Target) -> None:
    """Accept on Unix socket `path` forever, one thread per connection."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    server.listen(16)
    while True:
        client, _ = server.accept()
        threading.Thread(target=_serve_one, args=(client, target), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="birdrelay", description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True, type=Path)
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--lab", required=True)
    ap.add_argument("--vm", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--ip", required=True)
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--netns", help="connect from this network namespace (a path), not the VM's node's")
    args = ap.parse_args(argv)
    try:
        target = Target(args.run_dir, args.lab, args.vm, args.node, args.ip, args.port, args.netns)
    except ValueError as e:
        ap.error(str(e))
    serve(args.socket, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
