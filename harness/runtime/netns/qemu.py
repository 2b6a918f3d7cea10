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

The QMP client is QEMU's own `qemu.qmp` behind a synchronous face (see QMPClient for why the
face is ours); one call at a time, no threads (kvlab avoids them). Events are taken in while a
call runs; each keeps QEMU's own timestamp (wall clock, microseconds), which is what pause
measurements should use (STOP on the source, RESUME on the target), plus the monotonic time
it was read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pyroute2 import NetlinkError
from qemu import qmp
from qemu.qmp.models import Greeting
from qemu.qmp.qmp_client import GreetingError

from harness import netlink
from harness.errors import LabError, WaitTimeout
from harness.runtime.netns.guestimage import READY_MARKER, GuestImage, kernel_cmdline
from harness.safefile import FileRefused, open_output, read_tail, replace_file, unix_socket
from harness.topology import GUEST_PORT
from harness.wait import eventually

# qemu.qmp logs a refused or vanished socket at ERROR level; here that is an answer (the QEMU is
# gone), which the callers report themselves.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

QEMU_BINARY = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
IFNAMSIZ = 15
UNIX_PATH_MAX = 107
CLOSE_TIMEOUT = 2.0  # seconds for a QMP hang-up (QEMU may be stopped or gone)
LOG_LIMIT = 16 * 1024 * 1024  # bytes of a log read back from the run directory (its end)
EVENT_SLICE = 0.5  # seconds wait_event waits for QEMU's next event before looking again
T = TypeVar("T")


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
    try:
        netlink.add_tap(namespace, ifname)
    except (OSError, NetlinkError) as e:
        raise QemuError(f"cannot create tap {ifname} in {namespace}: {e}") from None
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
    ip6: str | None = None  # dual stack: the VM's IPv6 address

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
        kernel_cmdline(spec.ip, port=spec.port, name=spec.name, extra=spec.append, ip6=spec.ip6),
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
    received: float  # time.monotonic() when this client took it in
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


def _event(msg: Mapping[str, Any]) -> QMPEvent:
    """A QMP event message as kvlab keeps it."""
    ts = msg.get("timestamp", {})
    return QMPEvent(
        name=msg["event"],
        data=dict(msg.get("data", {})),
        timestamp=ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6,
        received=time.monotonic(),
        raw=dict(msg),
    )


class QMPClient:
    """QEMU's QMP through QEMU's own client library (`qemu.qmp`), called synchronously.

    qemu.qmp does the protocol: greeting, capabilities negotiation, command ids, error replies,
    events. What is ours is this synchronous face, because qemu.qmp's own synchronous wrapper
    (`qemu.qmp.legacy`, kept for QEMU's in-tree scripts) does not serve a crash-safe migration:
    its connect() has no deadline (a QEMU that accepts the socket but never greets, e.g. a
    stopped one, would hang kvlab), waiting for an event does not notice a QEMU that exits (the
    wait runs into its timeout instead), and it installs its event loop as the thread's. Here
    each client runs qemu.qmp's asyncio client on an event loop of its own, one call at a time
    (no threads), every call with a deadline.
    """

    def __init__(self, path: Path, *, timeout: float = 10.0, root: Path | None = None):
        self.path = Path(path)
        self.root = root  # the socket must lie under it, reached without symlinks
        self.timeout = timeout
        self.events: list[QMPEvent] = []
        self.greeting: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._qmp: _GreetedClient | None = None
        self._recorder = _Recorder(self.events)  # anew for each connection: asyncio binds it to a loop

    # connection
    def connect(self) -> QMPClient:
        """Connect and negotiate. OSError while nobody listens on the socket (not there yet,
        refused); QemuError when QEMU does not greet in time or hangs up."""
        if self._qmp is not None:
            raise QemuError(f"QMP client for {self.path} is already connected")
        try:  # a socket, not a symlink planted in the run directory to reach another QEMU's
            unix_socket(self.path, self.root)
        except FileRefused as e:
            raise QemuError(f"QMP socket {self.path} refused: {e}") from None
        self._loop, self._qmp = asyncio.new_event_loop(), _GreetedClient(self.path.name)
        self._recorder = _Recorder(self.events)
        self._qmp.register_listener(self._recorder)
        try:
            self._call(lambda c: c.connect(str(self.path)), self.timeout, "the QMP greeting")
        except AssertionError:  # qemu.qmp asserts it is still connected when connect() ends
            self.close()
            raise QemuError(f"QEMU closed the QMP connection {self.path} (did it exit?)") from None
        except BaseException:
            self.close()
            raise
        self.events.extend(_event(msg) for msg in self._qmp.early_events)
        greeting = self._qmp.greeting
        if greeting is not None:
            version, caps = greeting.QMP.version, greeting.QMP.capabilities
            self.greeting = {"QMP": {"version": dict(version), "capabilities": list(caps)}}
        return self

    def close(self) -> None:
        """Hang up and release the event loop. Idempotent; never raises (QEMU may be gone)."""
        client, loop = self._qmp, self._loop
        self._qmp = self._loop = None
        if loop is None:
            return
        try:
            if client is not None:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(asyncio.wait_for(client.disconnect(), CLOSE_TIMEOUT))
            loop.run_until_complete(_cancel_all())
        finally:
            loop.close()

    def __enter__(self) -> QMPClient:
        return self.connect() if self._qmp is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # commands
    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Run one command and return its `return` value; QMPError if QEMU reports an error,
        QemuError if it does not answer within `timeout` (default: the client's) or hangs up."""
        try:
            return self._call(
                lambda c: c.execute(command, arguments),
                self.timeout if timeout is None else timeout,
                f"the reply to QMP {command}",
            )
        except qmp.ExecuteError as e:
            raise QMPError(command, dict(e.received.get("error", {}))) from None

    def status(self) -> str:
        """'running', 'paused', 'inmigrate', 'postmigrate', ..."""
        return self.execute("query-status")["status"]

    def pass_fd(self, fd: int, name: str) -> None:
        """Hand QEMU an open file descriptor (SCM_RIGHTS) under `name` (QMP getfd), e.g. for
        `migrate` to `fd:<name>`. `fd` stays open here too."""
        if self._qmp is None:
            raise QemuError(f"QMP client for {self.path} is not connected")
        try:
            self._qmp.send_fd_scm(fd)
        except (OSError, qmp.QMPError) as e:
            raise QemuError(f"cannot pass a file descriptor to QEMU over {self.path}: {e}") from None
        self.execute("getfd", {"fdname": name})

    # events
    def poll(self) -> list[QMPEvent]:
        """The events QEMU has sent until now (one round trip: QEMU sends every event it emitted
        before a command's reply ahead of that reply); returns the new ones."""
        before = len(self.events)
        self.execute("query-status")
        return self.events[before:]

    def wait_event(self, name: str, *, timeout: float = 30.0, since: int = 0) -> QMPEvent:
        """The first event called `name` among events[since:], waiting for QEMU's next events
        until it arrives; WaitTimeout after `timeout` s, QemuError if QEMU hangs up first."""
        deadline = time.monotonic() + timeout

        def arrived() -> QMPEvent | None:
            found = next((ev for ev in self.events[since:] if ev.name == name), None)
            if found is None:
                wait = min(EVENT_SLICE, max(deadline - time.monotonic(), 0.0))
                self._call(lambda c: _next_event(c, self._recorder, wait), None, f"QMP event {name}")
            return found

        return eventually(arrived, timeout=timeout, interval=0.0, what=f"QMP event {name} from {self.path}")

    # qemu.qmp's coroutines, run on this client's loop
    def _call(self, step: Callable[[qmp.QMPClient], Awaitable[T]], timeout: float | None, what: str) -> T:
        """Run `step(client)` within `timeout` s (None: its own), its errors as kvlab's."""
        client, loop = self._qmp, self._loop
        if client is None or loop is None:
            raise QemuError(f"QMP client for {self.path} is not connected")
        try:
            return loop.run_until_complete(_within(step(client), timeout))
        except TimeoutError:
            raise QemuError(f"timed out waiting for {what} on {self.path}") from None
        except qmp.ConnectError as e:
            if isinstance(e.exc, OSError):  # nobody listens (yet): the caller may try again
                raise e.exc from None
            raise QemuError(f"{self.path}: {e}") from None
        except (qmp.ExecInterruptedError, qmp.StateError, EOFError):
            raise QemuError(f"QEMU closed the QMP connection {self.path} (did it exit?)") from None
        except qmp.ExecuteError:
            raise
        except qmp.QMPError as e:
            raise QemuError(f"{what} on {self.path}: {e}") from None
        finally:
            client.events.clear()  # qemu.qmp's default queue: ours is `self.events`


EVENTS_BEFORE_GREETING = 64  # events a fresh connection may see ahead of the greeting


class _GreetedClient(qmp.QMPClient):
    """qemu.qmp's client, tolerant of events that QEMU sends ahead of its greeting.

    QEMU 7.2 decides whether a QMP monitor gets an event from the monitor's command table,
    which is only set to "negotiating" by the handler of the connection's OPENED event. An
    event emitted (from the main loop) after the socket is accepted but before that handler
    ran (in the monitor's I/O thread) goes out first: on a fresh monitor the table is still
    unset, and on a reused one it still says "negotiated". qemu.qmp then takes the event for
    the greeting and gives up ("'Greeting' object requires 'QMP' member"). Here such events
    are kept (they are QEMU's, and a migration may care) and the greeting is read after them.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.early_events: list[qmp.Message] = []

    async def _get_greeting(self) -> Greeting:
        self.early_events = []
        for _ in range(EVENTS_BEFORE_GREETING):
            msg = await self._recv()
            if "event" in msg and "QMP" not in msg:
                self.early_events.append(msg)
                continue
            try:
                return Greeting(msg)
            except (KeyError, TypeError) as err:
                raise GreetingError("Did not understand Greeting", err) from err
        raise GreetingError(f"no greeting after {EVENTS_BEFORE_GREETING} events", ValueError("events only"))


class _Recorder(qmp.EventListener):
    """A connection's events as its reader takes them in: appended to `sink` (QEMU's timestamp,
    the time read), and `heard` set for whoever waits for the next one."""

    def __init__(self, sink: list[QMPEvent]) -> None:
        super().__init__()
        self.sink = sink
        self.heard = asyncio.Event()

    async def put(self, event: qmp.Message) -> None:
        self.sink.append(_event(event))
        self.heard.set()


async def _within(step: Awaitable[T], timeout: float | None) -> T:
    async with asyncio.timeout(timeout):
        return await step


async def _cancel_all() -> None:
    """Cancel every other task of the running loop (a hang-up that did not finish) and reap them."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _next_event(client: qmp.QMPClient, recorder: _Recorder, timeout: float) -> None:
    """Wait up to `timeout` s for QEMU's next event; StateError once QEMU has hung up."""
    if client.runstate == qmp.Runstate.RUNNING:
        recorder.heard.clear()
        heard = asyncio.ensure_future(recorder.heard.wait())
        changed = asyncio.ensure_future(client.runstate_changed())
        try:
            await asyncio.wait((heard, changed), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            heard.cancel()
            changed.cancel()
            await asyncio.gather(heard, changed, return_exceptions=True)
    if client.runstate != qmp.Runstate.RUNNING:
        raise qmp.StateError("QEMU hung up", client.runstate, qmp.Runstate.RUNNING)


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
        pass_fds: tuple[int, ...] = (),
    ):
        self.namespace = namespace
        self.image = image
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.incoming = incoming
        self.binary = binary
        self.pass_fds = pass_fds  # open in QEMU too (e.g. `-incoming fd:N` from a saved guest)
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

    def qmp_close(self) -> None:
        """Hang up QMP (QEMU runs on). Idempotent."""
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None

    # lifecycle
    def start(self, *, timeout: float = 20.0, connect: bool = True) -> QemuGuest:
        """Spawn QEMU and connect QMP (`connect=False`: later, `connect()`). It boots on its own
        (or waits for -incoming)."""
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
            with _output(self.qemu_log) as log:
                # `ip netns exec` execs QEMU in place: the Popen pid is QEMU's.
                self._proc = subprocess.Popen(
                    ["ip", "netns", "exec", self.namespace, *self.argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=self.pass_fds,
                )
            self.started_at = time.monotonic()
            replace_file(self.pid_file, str(self._proc.pid).encode())
        except BaseException:
            self.stop()
            raise
        return self.connect(timeout=timeout) if connect else self

    def connect(self, *, timeout: float = 20.0) -> QemuGuest:
        """Connect QMP to the started QEMU (once it listens), unless connected; QEMU is stopped if
        that fails."""
        if self._qmp is not None:
            return self
        try:
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
        return QMPClient(self.qmp_socket, root=self.run_dir).connect()

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
            return _log_text(self.serial_log)
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
                text = _log_text(path).splitlines()
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


def _log_text(path: Path) -> str:
    """A log of the run directory (its last LOG_LIMIT bytes), never through a symlink nor from a FIFO."""
    try:
        return read_tail(path, LOG_LIMIT).decode(errors="replace")
    except FileRefused as e:
        return f"({path}: {e})"


def _output(path: Path) -> BinaryIO:
    """`path` (QEMU's log in its run directory) truncated for writing, never through a symlink."""
    try:
        return open_output(path)
    except FileRefused as e:
        raise QemuError(f"{path}: {e}") from None
