"""The guest SSH relay (harness.runtime.containerlab.guestssh) through a real container under plain Docker.

Two containers of the ToR image on an internal lab network: the second runs a TCP echo server
on 2222 (standing in for a guest's sshd), the first carries the relay. From the host, which has
no route into the lab, the relay's ProxyCommand reaches the second container's lab address and
bytes round-trip; no sshd is needed to prove the path SSH takes.

Skipped (with the reason) when not root or no Docker daemon answers, except under CI, where a
missing daemon is a failure (as tests/integration/test_docker_tor.py).
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import paramiko
import pytest

from harness.errors import LabError
from harness.runtime.containerlab.docker import DockerLab, docker_lab
from harness.runtime.containerlab.guestssh import GuestShell, RelayProxy
from harness.runtime.containerlab.images import build_tor_image
from harness.wait import eventually

ECHO_PORT = 2222
CLOSED_PORT = 2223
ECHO_SERVER = f"""\
import socket, threading
def serve(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
srv = socket.create_server(("0.0.0.0", {ECHO_PORT}))
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""


pytestmark = [
    pytest.mark.slow,
    pytest.mark.needs_docker,
    pytest.mark.netns_only("plain Docker, no lab"),
]


def _bird_config(name: str, addresses: Mapping[str, ipaddress.IPv4Address]) -> str:
    return f"router id {addresses[name]};\nprotocol device {{}}\n"  # BIRD idles; docker_lab waits for it


def _exec(container: str, *argv: str, detach: bool = False) -> subprocess.CompletedProcess[str]:
    flags = ["-d"] if detach else []
    return subprocess.run(
        ["docker", "exec", *flags, container, *argv], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def lab() -> Iterator[DockerLab]:
    """ext1 (carries the relay) and guest (an echo server on ECHO_PORT), as containers."""
    with docker_lab(build_tor_image(), ["ext1", "guest"], _bird_config) as lab:
        guest = lab["guest"].container
        assert _exec(guest, "python3", "-c", ECHO_SERVER, detach=True).returncode == 0
        probe = f"import socket; socket.create_connection(('127.0.0.1', {ECHO_PORT}), 1).close()"
        eventually(
            lambda: _exec(guest, "python3", "-c", probe).returncode == 0,
            timeout=30,
            what=f"the echo server on {guest}:{ECHO_PORT}",
        )
        yield lab


def _echoes_from_host(ip: str, port: int) -> bool:
    """Whether the echo server answers a direct connection from the host (it must not: the host
    has no route into the lab; some networks accept any TCP connection, hence the echo check)."""
    token = b"kvlab-direct-probe\n"
    try:
        with socket.create_connection((ip, port), timeout=2) as conn:
            conn.settimeout(2)
            conn.sendall(token)
            return conn.recv(len(token)) == token
    except OSError:
        return False


def _relays_running(container: str) -> list[str]:
    res = _exec(container, "ps", "-eo", "args")
    return [line for line in res.stdout.splitlines() if "selectors" in line]


def test_bytes_round_trip_through_the_relay_in_the_first_container(lab: DockerLab) -> None:
    guest_ip = str(lab["guest"].address)
    assert not _echoes_from_host(guest_ip, ECHO_PORT)  # lab traffic stays inside the lab
    proxy = RelayProxy(lab["ext1"].container, guest_ip, ECHO_PORT, timeout=10)
    try:
        proxy.settimeout(15)
        for payload in (b"SSH-2.0-kvlab\r\n", bytes(range(256)) * 64):
            assert proxy.send(payload) == len(payload)
            echoed = b""
            while len(echoed) < len(payload):
                chunk = proxy.recv(len(payload) - len(echoed))
                assert chunk, f"the relay ended: {proxy.error()}"
                echoed += chunk
            assert echoed == payload
        assert _relays_running(lab["ext1"].container)  # it runs in the external host container
    finally:
        proxy.close()
    assert proxy.process.returncode is not None
    eventually(
        lambda: _relays_running(lab["ext1"].container) == [],
        timeout=15,
        what="the relay in ext1 to end once its client closed",
    )


def test_nothing_listening_is_reported_by_the_relay(lab: DockerLab, tmp_path: Path) -> None:
    guest_ip = str(lab["guest"].address)
    proxy = RelayProxy(lab["ext1"].container, guest_ip, CLOSED_PORT, timeout=10)
    try:
        proxy.settimeout(15)
        assert proxy.recv(1) == b""  # EOF: the relay gave up
    finally:
        proxy.close()
    assert f"relay: cannot connect to {guest_ip}:{CLOSED_PORT}" in proxy.error()
    key = tmp_path / "id_rsa"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(key))
    shell = GuestShell(
        "vm1",
        guest_ip,
        via="ext1",
        container=lab["ext1"].container,
        user="root",
        key_file=key,
        known_hosts=tmp_path / "ssh" / "known_hosts",
        port=CLOSED_PORT,
        connect_timeout=15,
    )
    with pytest.raises(LabError, match=rf"^ssh to vm1 \({guest_ip}\) through ext1: .*relay: cannot connect"):
        shell.open()
