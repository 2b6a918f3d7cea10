"""Real VMs on the netns runtime: a QEMU (TCG) guest inside a node's namespace, and a QMP client.

    create_tap(ns, "tap-vm1", mac=WORKLOAD_HOST_MAC)        # as root, before QEMU starts
    spec = GuestSpec(name="vm1", ip="203.0.113.10", mac="52:54:00:00:00:10", tap="tap-vm1")
    with QemuGuest(ns, ensure_image(), spec, run_dir) as vm:
        vm.wait_ready()                                     # READY_MARKER on the serial console
        vm.qmp.execute("query-status")                      # {'status': 'running', ...}

The command line is `qemu_argv(...)`: a migration target is the same command line plus
`-incoming tcp:ADDR:PORT` (`QemuGuest(..., incoming="tcp:198.18.0.1:4444")`), started first
and waiting in the "inmigrate" state.

Choices (see lab-mechanics.md, "QEMU live migration"):
- `-accel tcg` always: /dev/kvm may exist and still hang a Linux guest (kvm-pvm hosts).
- `-nodefaults`, no display, the serial console written to `serial.log`, `-no-reboot` so
  a guest that panics or powers off makes QEMU exit instead of looping.
- `virtio-net-pci,romfile=`: no iPXE option ROM to load (or to ship).
- The tap is created beforehand by root inside the namespace (`script=no,downscript=no`),
  because QEMU must not configure the host side: that is the node's (Calico's) business.

Each QemuGuest owns a run directory: `serial.log`, `qemu.log` (QEMU's stdout/stderr),
`qmp.sock`, `qemu.pid`. A migration's source and target need different directories.

The QMP client is synchronous and not thread-safe (pyroute2's namespaced sockets fork, so
kvlab avoids threads). Events are read whenever the client reads the socket; each keeps
QEMU's own timestamp (wall clock, microseconds), which is what pause measurements should
use (STOP on the source, RESUME on the target), plus the monotonic time it was read.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import netlink
from harness.errors import LabError, WaitTimeout
from harness.runtime.netns.guestimage import READY_MARKER, GuestImage, kernel_cmdline
from harness.topology import GUEST_PORT
from harness.wait import eventually

QEMU_BINARY = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
IFNAMSIZ = 15
UNIX_PATH_MAX = 107


class QemuError(LabError):
    """A QEMU guest could not be started, reached or stopped."""


class QMPError(QemuError):
    """QEMU answered a QMP command with an error."""

    def __init__(self, command: str, error: dict[str, Any]):
        self.command = command
        self.error_class = error.get("class", "GenericError")
        self.desc = error.get("desc", "")
        super().__init__(f"QMP {command}: {self.error_class}: {self.desc}")


def find_qemu() -> str | None:
    return shutil.which(QEMU_BINARY) or shutil.which(QEMU_BINARY, path="/usr/bin:/usr/local/bin")


def require_qemu() -> str:
    binary = find_qemu()
    if binary is None:
        raise QemuError(
            f"'{QEMU_BINARY}' not found (Debian package '{QEMU_PACKAGE}'; 'make setup' installs it)"
        )
    return binary


# -- taps -----------------------------------------------------------------------------------


def check_ifname(ifname: str) -> None:
    if not 0 < len(ifname) <= IFNAMSIZ or "/" in ifname or any(c.isspace() for c in ifname):
        raise ValueError(f"interface name {ifname!r} must be 1-{IFNAMSIZ} characters, no '/' or spaces")


def create_tap(namespace: str, ifname: str, *, mac: str | None = None) -> None:
    """A persistent tap device inside `namespace` (created there, never in the root namespace), up."""
    check_ifname(ifname)
    if not netlink.namespace_exists(namespace):
        raise QemuError(f"network namespace '{namespace}' does not exist")
    res = subprocess.run(
        ["ip", "netns", "exec", namespace, "ip", "tuntap", "add", "dev", ifname, "mode", "tap"],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise QemuError(f"cannot create tap {ifname} in {namespace}: {res.stderr.strip()}")
    netlink.link_up(namespace, ifname, mac=mac)


def delete_tap(namespace: str, ifname: str) -> None:
    if netlink.namespace_exists(namespace):
        netlink.link_delete(namespace, ifname)


# -- the command line -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestSpec:
    """What identifies a VM: the same on a migration's source and target."""

    name: str
    ip: str
    mac: str
    tap: str
    port: int = GUEST_PORT
    memory_mb: int = 128
    accel: str = "tcg"
    append: str = ""  # extra kernel command-line parameters

    def __post_init__(self) -> None:
        check_ifname(self.tap)
        if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", self.mac):
            raise ValueError(f"MAC {self.mac!r} must be lower-case aa:bb:cc:dd:ee:ff")


def qemu_argv(
    image: GuestImage,
    spec: GuestSpec,
    *,
    serial_log: Path,
    qmp_socket: Path,
    incoming: str | None = None,
    binary: str = QEMU_BINARY,
) -> list[str]:
    """QEMU's argv (without the `ip netns exec` prefix). `incoming`: e.g. 'tcp:198.18.0.1:4444'."""
    argv = [
        binary,
        "-name",
        f"guest={spec.name}",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "pc",
        "-accel",
        spec.accel,
        "-smp",
        "1",
        "-m",
        str(spec.memory_mb),
        "-no-reboot",
        "-serial",
        f"file:{serial_log}",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        kernel_cmdline(spec.ip, port=spec.port, name=spec.name, extra=spec.append),
        "-netdev",
        f"tap,id=net0,ifname={spec.tap},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev=net0,mac={spec.mac},romfile=",
        "-qmp",
        f"unix:{qmp_socket},server=on,wait=off",
    ]
    if incoming:
        argv += ["-incoming", incoming]
    return argv


# -- QMP ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QMPEvent:
    name: str
    data: dict[str, Any]
    timestamp: float  # QEMU's clock: seconds since the epoch, microsecond resolution
    received: float  # time.monotonic() when this client read it
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


class QMPClient:
    """JSON over QEMU's QMP unix socket: greeting, capabilities negotiation, commands, events."""

    def __init__(self, path: Path, *, timeout: float = 10.0):
        self.path = Path(path)
        self.timeout = timeout
        self.events: list[QMPEvent] = []
        self.greeting: dict[str, Any] = {}
        self._sock: socket.socket | None = None
        self._buf = b""
        self._replies: deque[dict[str, Any]] = deque()
        self._next_id = 0

    # connection
    def connect(self) -> QMPClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            raise
        self._sock, self._buf = sock, b""
        self._replies.clear()
        try:
            self.greeting = self._read(time.monotonic() + self.timeout)
            if "QMP" not in self.greeting:
                raise QemuError(f"{self.path} did not greet like QMP: {self.greeting!r}")
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> QMPClient:
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # commands
    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Run one command and return its `return` value; QMPError if QEMU reports an error."""
        if self._sock is None:
            raise QemuError(f"QMP client for {self.path} is not connected")
        self._next_id += 1
        msg_id = f"kvlab-{self._next_id}"
        msg: dict[str, Any] = {"execute": command, "id": msg_id}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise QemuError(f"QMP {command}: cannot send to {self.path}: {e}") from None
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            reply = self._read(deadline, what=f"the reply to QMP {command}")
            if reply.get("id") != msg_id:
                continue  # events are recorded by _read
            if "error" in reply:
                raise QMPError(command, reply["error"])
            return reply.get("return")

    def status(self) -> str:
        """'running', 'paused', 'inmigrate', 'postmigrate', ..."""
        return self.execute("query-status")["status"]

    # events
    def poll(self, timeout: float = 0.0) -> list[QMPEvent]:
        """Read whatever QEMU has sent, waiting at most `timeout` s for the first bytes; the new events."""
        before = len(self.events)
        if self._recv(timeout):
            while self._recv(0.0):
                pass
        return self.events[before:]

    def wait_event(self, name: str, *, timeout: float = 30.0, since: int = 0) -> QMPEvent:
        """The first event called `name` among events[since:], reading until it arrives."""

        def arrived() -> QMPEvent | None:
            for ev in self.events[since:]:
                if ev.name == name:
                    return ev
            self.poll(0.05)
            return None

        return eventually(arrived, timeout=timeout, interval=0.0, what=f"QMP event {name} from {self.path}")

    # wire: bytes -> newline-delimited JSON; events go to self.events, everything else to _replies
    def _recv(self, timeout: float) -> bool:
        """Wait up to `timeout` s for bytes from QEMU; False if none came."""
        if self._sock is None:
            raise QemuError(f"QMP client for {self.path} is not connected")
        self._sock.settimeout(max(timeout, 0.0))
        try:
            chunk = self._sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return False
        if not chunk:
            raise QemuError(f"QEMU closed the QMP connection {self.path} (did it exit?)")
        self._buf += chunk
        while b"\n" in self._buf:
            line, _, self._buf = self._buf.partition(b"\n")
            if line.strip():
                self._dispatch(json.loads(line))
        return True

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "event" not in msg:
            self._replies.append(msg)
            return
        ts = msg.get("timestamp", {})
        self.events.append(
            QMPEvent(
                name=msg["event"],
                data=msg.get("data", {}),
                timestamp=ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6,
                received=time.monotonic(),
                raw=msg,
            )
        )

    def _read(self, deadline: float, *, what: str = "a QMP message") -> dict[str, Any]:
        """The next message that is not an event."""
        while not self._replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QemuError(f"timed out waiting for {what} on {self.path}")
            self._recv(remaining)
        return self._replies.popleft()


# -- the guest --------------------------------------------------------------------------------


class QemuGuest:
    """One QEMU process running `image` inside network namespace `namespace`."""

    def __init__(
        self,
        namespace: str,
        image: GuestImage,
        spec: GuestSpec,
        run_dir: Path,
        *,
        incoming: str | None = None,
        binary: str | None = None,
    ):
        self.namespace = namespace
        self.image = image
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.incoming = incoming
        self.binary = binary
        self.serial_log = self.run_dir / "serial.log"
        self.qemu_log = self.run_dir / "qemu.log"
        self.qmp_socket = self.run_dir / "qmp.sock"
        self.pid_file = self.run_dir / "qemu.pid"
        self.started_at: float | None = None  # time.monotonic() when QEMU was spawned
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: QMPClient | None = None

    @property
    def argv(self) -> list[str]:
        return qemu_argv(
            self.image,
            self.spec,
            serial_log=self.serial_log,
            qmp_socket=self.qmp_socket,
            incoming=self.incoming,
            binary=self.binary or find_qemu() or QEMU_BINARY,
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def qmp(self) -> QMPClient:
        if self._qmp is None:
            raise QemuError(f"QEMU guest {self.spec.name} is not started")
        return self._qmp

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # lifecycle
    def start(self, *, timeout: float = 20.0) -> QemuGuest:
        """Spawn QEMU and connect QMP. It boots on its own (or waits for -incoming)."""
        if self._proc is not None:
            raise QemuError(f"QEMU guest {self.spec.name} is already started")
        self.binary = self.binary or require_qemu()
        if not netlink.namespace_exists(self.namespace):
            raise QemuError(f"network namespace '{self.namespace}' does not exist")
        # A root QEMU would silently create a missing tap, without the node's (Calico) host side.
        with netlink.ipr(self.namespace) as ip:
            if not ip.link_lookup(ifname=self.spec.tap):
                raise QemuError(
                    f"tap {self.spec.tap} does not exist in {self.namespace} (create_tap() it first)"
                )
        if len(str(self.qmp_socket).encode()) > UNIX_PATH_MAX:
            raise QemuError(f"QMP socket path too long for a unix socket: {self.qmp_socket}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.qmp_socket, self.serial_log):
            stale.unlink(missing_ok=True)
        try:
            with open(self.qemu_log, "wb") as log:
                # `ip netns exec` execs QEMU in place: the Popen pid is QEMU's.
                self._proc = subprocess.Popen(
                    ["ip", "netns", "exec", self.namespace, *self.argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.started_at = time.monotonic()
            self.pid_file.write_text(str(self._proc.pid))
            self._qmp = eventually(
                self._connect_qmp,
                timeout=timeout,
                interval=0.02,
                what=f"QMP socket of {self.spec.name} in {self.namespace}",
                transient=(OSError,),
            )
        except WaitTimeout as e:
            self.stop()
            raise WaitTimeout(f"{e}\n{self.diagnostics()}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def _connect_qmp(self) -> QMPClient:
        self._check_running()
        return QMPClient(self.qmp_socket).connect()

    def _check_running(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            raise QemuError(f"QEMU guest {self.spec.name} exited with status {code}\n{self.diagnostics()}")

    def wait_ready(self, *, timeout: float = 90.0) -> float:
        """Wait until the guest's echo server listens (READY_MARKER on the serial console).

        Returns the seconds since QEMU was spawned. Not for a migration target: its guest
        booted on the source, so its console stays silent until it resumes.
        """

        def ready() -> bool:
            self._check_running()
            return READY_MARKER in self.serial_text()

        try:
            eventually(ready, timeout=timeout, interval=0.05, what=f"guest {self.spec.name} to boot")
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}\n{self.diagnostics()}") from None
        return time.monotonic() - (self.started_at or time.monotonic())

    def stop(self, *, timeout: float = 10.0) -> None:
        """Kill QEMU (SIGTERM, then SIGKILL after `timeout`) and reap it. Idempotent."""
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self.qmp_socket.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> QemuGuest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # diagnostics
    def serial_text(self) -> str:
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def rss_bytes(self) -> int | None:
        """QEMU's resident set size, None if it is not running."""
        if self.pid is None:
            return None
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        m = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.M)
        return int(m.group(1)) * 1024 if m else None

    def diagnostics(self, lines: int = 30) -> str:
        def tail(path: Path) -> str:
            try:
                text = path.read_text(errors="replace").splitlines()
            except FileNotFoundError:
                return "(none)"
            return "\n".join(text[-lines:]) or "(empty)"

        return (
            f"--- {self.spec.name} in {self.namespace}: qemu.log ---\n{tail(self.qemu_log)}\n"
            f"--- serial console ---\n{tail(self.serial_log)}"
        )

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.alive() else "stopped"
        return f"QemuGuest({self.spec.name} in {self.namespace}, {state})"
