"""Commands inside KubeVirt guests: SSH (paramiko) carried through an external host container.

The host machine has no route into a lab, so the SSH connection cannot start here. It is
relayed by a tiny stdlib Python program (RELAY_CODE) that runs inside one of the lab's external
host containers (`docker exec -i <container> python3 -c RELAY_CODE <ip> <port> <timeout>`):
it connects to the guest's lab address and copies bytes between its stdin/stdout and the TCP
connection. paramiko speaks SSH over that pipe (`sock=` a paramiko.ProxyCommand).

    with GuestShell("vm1", "203.0.113.10", via="ext1", container="clab-default-ext1",
                    user="root", key_file=Path(".../ssh/id_rsa"),
                    known_hosts=Path(".../ssh/known_hosts")) as shell:
        res = shell.run(["ip", "-j", "addr"], timeout=30)   # a CompletedProcess[str]

The lab's key is rendered per lab (harness.runtime.containerlab.sshkey) and authorized by the
VMs' cloud-init. A guest's host key is accepted on first contact and recorded in the lab-local
known_hosts (the run directory's), never in ~/.ssh; neither ~/.ssh keys nor an agent are used.
"""

from __future__ import annotations

import logging
import os
import select
import shlex
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko

from harness.errors import LabError

# paramiko logs a failed connection as an ERROR with its traceback; the LabError says it all.
# A NullHandler keeps Python's last-resort handler from printing that to stderr (handlers an
# application configures on the root logger still get the records).
logging.getLogger("paramiko").addHandler(logging.NullHandler())

SSH_PORT = 22
CONNECT_TIMEOUT = 30.0  # relay connect, TCP handshake through it, SSH banner, key exchange, auth
CLOSE_TIMEOUT = 5.0

# Runs inside the external host container (python3, stdlib only):
#   python3 -c RELAY_CODE <ip> <port> <connect timeout s>
# Connects to (ip, port), then copies stdin -> socket and socket -> stdout until either side
# closes (exit 0). A failed connect is one line on stderr and exit status 2; a connection
# that fails later (reset) one line and exit status 1.
RELAY_CODE = """\
import os, selectors, socket, sys

host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    conn = socket.create_connection((host, port), timeout=timeout)
except OSError as e:
    sys.stderr.write(f"relay: cannot connect to {host}:{port}: {e}\\n")
    sys.exit(2)
conn.settimeout(None)
sel = selectors.DefaultSelector()
sel.register(0, selectors.EVENT_READ, "stdin")
sel.register(conn, selectors.EVENT_READ, "conn")
try:
    while True:
        for key, _ in sel.select():
            if key.data == "stdin":
                data = os.read(0, 65536)
                if not data:
                    sys.exit(0)
                conn.sendall(data)
            else:
                data = conn.recv(65536)
                if not data:
                    sys.exit(0)
                view = memoryview(data)
                while view:
                    view = view[os.write(1, view):]
except OSError as e:
    sys.stderr.write(f"relay: {host}:{port}: {e}\\n")
    sys.exit(1)
"""


def relay_argv(
    container: str, host: str, port: int = SSH_PORT, timeout: float = CONNECT_TIMEOUT
) -> list[str]:
    """`docker exec -i <container> python3 -c RELAY_CODE <host> <port> <timeout>`."""
    return ["docker", "exec", "-i", container, "python3", "-c", RELAY_CODE, host, str(port), f"{timeout:g}"]


class RelayProxy(paramiko.ProxyCommand):
    """paramiko's ProxyCommand running the relay in `container`, with socket-like EOF: `recv`
    returns b"" once the relay has exited (the plain ProxyCommand keeps polling a closed pipe),
    and `close` reaps the process. `error()` is what the relay said on stderr."""

    def __init__(
        self, container: str, host: str, port: int = SSH_PORT, timeout: float = CONNECT_TIMEOUT
    ) -> None:
        self.argv = relay_argv(container, host, port, timeout)
        self._stderr_text: str | None = None
        try:
            super().__init__(shlex.join(self.argv))
        except OSError as e:
            raise LabError(f"cannot start the relay in {container} ({self.argv[0]}): {e}") from e

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes: what arrives before the timeout (socket.timeout if nothing did),
        all `size`, or what there was when the relay's output ended (b"": it has ended)."""
        out = self.process.stdout
        assert out is not None
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        buf = b""
        while len(buf) < size:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([out], [], [], wait)
            if not ready:
                if buf:
                    return buf
                raise TimeoutError("no data from the relay")  # socket.timeout is TimeoutError
            chunk = os.read(out.fileno(), size - len(buf))
            if not chunk:
                return buf  # end of the relay's output
            buf += chunk
        return buf

    def close(self) -> None:
        """End the relay (its stdin closes, so the process in the container ends too), keep what
        it said on stderr (`error()`), and reap it. Idempotent."""
        proc = self.process
        if proc.poll() is None:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
            try:
                proc.wait(timeout=CLOSE_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=CLOSE_TIMEOUT)
        self._stderr_text = self.error()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def error(self) -> str:
        """What the relay wrote on stderr (a connect failure, docker's complaint), once it has
        exited; '' while it runs."""
        if self._stderr_text is not None:
            return self._stderr_text
        proc = self.process
        if proc.poll() is None or proc.stderr is None or proc.stderr.closed:
            return ""
        try:
            text = proc.stderr.read().decode("utf-8", errors="replace")
        except (OSError, ValueError):
            return ""
        self._stderr_text = " ".join(text.split())[-500:]
        return self._stderr_text


class GuestShell:
    """An SSH session to a guest, relayed by an external host container; a context manager."""

    def __init__(
        self,
        vm: str,
        ip: str,
        *,
        via: str,
        container: str,
        user: str,
        key_file: Path,
        known_hosts: Path,
        port: int = SSH_PORT,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.vm, self.ip, self.via, self.container = vm, ip, via, container
        self.user, self.key_file, self.known_hosts = user, Path(key_file), Path(known_hosts)
        self.port, self.connect_timeout = port, connect_timeout
        self.client: paramiko.SSHClient | None = None
        self.proxy: RelayProxy | None = None

    def _fail(self, reason: str) -> LabError:
        return LabError(f"ssh to {self.vm} ({self.ip}) through {self.via}: {reason}")

    def __enter__(self) -> GuestShell:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        """Start the relay and log in (every step within `connect_timeout`); LabError saying why not."""
        try:
            key = paramiko.PKey.from_path(self.key_file)
        except Exception as e:
            raise self._fail(f"cannot load the lab's key {self.key_file}: {type(e).__name__}: {e}") from e
        try:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            self.known_hosts.touch(mode=0o600, exist_ok=True)
        except OSError as e:
            raise self._fail(f"cannot create the lab's known_hosts {self.known_hosts}: {e}") from e
        client = paramiko.SSHClient()
        # Only the lab's own known_hosts: load_host_keys() also makes it the file AutoAddPolicy
        # saves new keys to. The guest was created by this lab, so its first key is accepted.
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        self.proxy = RelayProxy(self.container, self.ip, self.port, self.connect_timeout)
        self.client = client
        try:
            client.connect(
                self.ip,
                port=self.port,
                username=self.user,
                pkey=key,
                sock=self.proxy,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException as e:
            self.close()
            raise self._fail(
                f"its host key changed ({e.key.get_name()} {e.key.get_fingerprint().hex()}, "
                f"{self.known_hosts} has another): was the VM re-created? Then remove its line "
                f"from {self.known_hosts}"
            ) from e
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            why = self.proxy.error() if self.proxy is not None else ""
            detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise self._fail(f"{detail}" + (f" (relay: {why})" if why else "")) from e
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proxy is not None:
            self.proxy.close()

    def run(self, argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the guest (quoted with shlex.join for the login shell), stdin empty.
        subprocess.TimeoutExpired after `timeout` s (the remote command is abandoned), as
        subprocess.run would; LabError when the session fails."""
        if self.client is None:
            raise self._fail("the session is not open (use GuestShell as a context manager)")
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise self._fail("the SSH connection is closed")
        command = shlex.join(argv)
        try:
            chan = transport.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise self._fail(f"cannot open a session for {command!r}: {type(e).__name__}: {e}") from e
        try:
            chan.exec_command(command)
            chan.shutdown_write()  # EOF on the command's stdin
        except (paramiko.SSHException, OSError, EOFError) as e:
            chan.close()
            raise self._fail(f"cannot start {command!r}: {type(e).__name__}: {e}") from e
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                busy = False
                if chan.recv_ready():
                    out += chan.recv(65536)
                    busy = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    busy = True
                if not busy and chan.exit_status_ready():
                    break
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(argv, timeout, bytes(out), bytes(err))
                if not busy:
                    chan.status_event.wait(0.02)
            code = chan.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise self._fail(f"{command!r}: {type(e).__name__}: {e}") from e
        finally:
            chan.close()
        return subprocess.CompletedProcess(
            argv,
            code,
            out.decode("utf-8", errors="replace"),
            err.decode("utf-8", errors="replace"),
        )


def guest_shell(manifest: dict[str, Any], render_dir: Path, vm: str) -> GuestShell:
    """A GuestShell to lab VM `vm` from a rendered manifest (harness.runtime.containerlab.render): through
    the lab's first external host, as its guest user, with the lab's key and known_hosts."""
    vms = manifest.get("vms", {})
    if vm not in vms:
        raise LabError(f"no VM '{vm}' in lab '{manifest.get('lab')}'")
    ip = str(vms[vm]["ip"])
    ssh = manifest.get("guest_ssh")
    if not ssh:
        raise LabError(
            f"ssh to {vm} ({ip}): lab '{manifest.get('lab')}' was rendered without an SSH key "
            "(bring it up again: 'kvlab down', 'kvlab up')"
        )
    via = ssh.get("via")
    if not via:
        raise LabError(f"ssh to {vm} ({ip}): lab '{manifest.get('lab')}' has no external host to relay SSH")
    container = manifest.get("containers", {}).get(via)
    if not container:
        raise LabError(f"ssh to {vm} ({ip}) through {via}: no container for {via} in the manifest")
    return GuestShell(
        vm,
        ip,
        via=via,
        container=str(container),
        user=str(ssh["user"]),
        key_file=render_dir / ssh["private_key"],
        known_hosts=Path(ssh["known_hosts"]),
        port=int(ssh.get("port", SSH_PORT)),
    )
