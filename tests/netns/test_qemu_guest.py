"""A real QEMU guest (TCG) on a Calico-style tap: it boots, announces itself and serves TCP.

Two throwaway namespaces, wired by hand with harness.netlink (no lab, no BIRD):

    client ns  to-host 198.18.250.2/24 --veth-- to-client 198.18.250.1/24  host ns
               route 203.0.113.0/24 via .1                                 forwarding on, default via .2
                                                                           tap cali…: ee:ee:ee:ee:ee:ee,
                                                                           proxy_arp, 203.0.113.10/32 dev tap,
                                                                           permanent neighbour -> VM MAC
    QEMU runs inside the host ns; the guest is 203.0.113.10/32, default via 169.254.1.1 on-link.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
from pyroute2 import netns as pyroute2_netns

from harness import netlink
from harness.runtime.netns import snapshot
from harness.runtime.netns.agent import classify_frame
from harness.runtime.netns.guestimage import GuestImage, GuestImageError, ensure_image
from harness.runtime.netns.qemu import GuestSpec, QemuError, QemuGuest, create_tap, find_qemu
from harness.topology import WORKLOAD_HOST_MAC
from harness.wait import eventually

pytestmark = [
    pytest.mark.netns,
    pytest.mark.netns_only("boots the netns runtime's QEMU guest image by hand in namespaces (QMP, taps)"),
]

VM_IP = "203.0.113.10"
VM_MAC = "52:54:00:cb:00:0a"
PORT = 7007
HOST_ADDR, CLIENT_ADDR = "198.18.250.1", "198.18.250.2"
ETH_P_ALL = 0x0003


def _missing(reason: str) -> None:
    """Outside CI a missing prerequisite skips with a reason; in CI it fails."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the QEMU guest tests: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def in_namespace(ns: str) -> Iterator[None]:
    """Sockets created inside this block belong to `ns` (and stay there once it is left)."""
    pyroute2_netns.pushns(ns)
    try:
        yield
    finally:
        pyroute2_netns.popns()


@dataclass
class Net:
    host: str
    client: str
    tap: str
    capture: socket.socket
    frames: list[bytes] = field(default_factory=list)

    def read_frames(self) -> list[bytes]:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.frames.append(self.capture.recv(65535))
        return self.frames

    def connect(self, timeout: float = 2.0) -> socket.socket:
        with in_namespace(self.client):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.connect((VM_IP, PORT))
        except OSError:
            s.close()
            raise
        return s


def echo(s: socket.socket, payload: bytes) -> None:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        assert chunk, f"connection closed after {len(got)} of {len(payload)} echoed bytes"
        got += chunk
    assert got == payload


@pytest.fixture(scope="module")
def image() -> GuestImage:
    if find_qemu() is None:
        _missing("qemu-system-x86_64 is not installed (Debian package 'qemu-system-x86'; 'make setup')")
    try:
        return ensure_image()
    except GuestImageError as e:
        _missing(f"cannot build the guest image: {e}")
        raise


def remove_namespaces(*names: str) -> None:
    """Kill whatever still runs in the namespaces, then delete them (idempotent)."""
    for pid in [pid for ns in names for pid in netlink.namespace_pids(ns)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    eventually(
        lambda: not any(netlink.namespace_pids(ns) for ns in names),
        timeout=10,
        what=f"processes in {', '.join(names)} to exit",
    )
    for ns in names:
        netlink.remove_namespace(ns)


def wire(host: str, client: str, tap: str) -> None:
    for ns in (host, client):
        netlink.create_namespace(ns)
    netlink.set_sysctls(
        host,
        {
            "net.ipv4.ip_forward": "1",
            "net.ipv4.conf.all.rp_filter": "0",
            "net.ipv4.conf.default.rp_filter": "0",
        },
    )
    netlink.add_veth(host, "to-client", client, "to-host")
    netlink.add_address(host, "to-client", IPv4Interface(f"{HOST_ADDR}/24"))
    netlink.add_address(client, "to-host", IPv4Interface(f"{CLIENT_ADDR}/24"))
    netlink.link_up(host, "to-client")
    netlink.link_up(client, "to-host")
    netlink.add_route(client, "203.0.113.0/24", gateway=HOST_ADDR)
    # Proxy ARP answers for 169.254.1.1 only if the host has a route to it: a default route, as a node has.
    netlink.add_route(host, "0.0.0.0/0", gateway=CLIENT_ADDR)
    # The Calico-style host side of the VM's tap.
    create_tap(host, tap, mac=WORKLOAD_HOST_MAC)
    netlink.set_sysctls(
        host, {f"net.ipv4.conf.{tap}.proxy_arp": "1", f"net.ipv4.neigh.{tap}.proxy_delay": "0"}
    )
    netlink.add_route(host, f"{VM_IP}/32", dev=tap)
    netlink.add_permanent_neighbour(host, tap, VM_IP, VM_MAC)


def reap_crashed_runs() -> None:
    """Remove namespaces left by a test process that died without its finalizers (SIGKILL, OOM)."""
    for ns in netlink.list_namespaces():
        m = re.fullmatch(r"kvqemu-(\d+)-[0-9a-f]+-(?:host|client)", ns)
        if m and int(m.group(1)) != os.getpid() and not process_alive(int(m.group(1))):
            remove_namespaces(ns)


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie is dead, just not reaped yet


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    reap_crashed_runs()
    tag = secrets.token_hex(3)
    # The pid in the name lets a later run reap what a killed run left behind.
    host, client, tap = (
        f"kvqemu-{os.getpid()}-{tag}-host",
        f"kvqemu-{os.getpid()}-{tag}-client",
        f"caliq{tag}",
    )
    try:
        wire(host, client, tap)
        with in_namespace(host):
            capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        with capture:
            capture.bind((tap, 0))
            capture.setblocking(False)
            yield Net(host, client, tap, capture)
    finally:  # also when wiring failed halfway
        remove_namespaces(host, client)


@dataclass
class Booted:
    guest: QemuGuest
    ready_after: float  # s from spawning QEMU to the ready marker on the serial console
    tcp_after: float  # s from spawning QEMU to the first echoed byte from the client namespace


@pytest.fixture(scope="module", params=["bzImage", "pvh"])
def booted(
    request: pytest.FixtureRequest, image: GuestImage, net: Net, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Booted]:
    """The guest booted from the bzImage (the default) or straight into the uncompressed kernel (PVH)."""
    if request.param == "pvh":
        image = ensure_image(pvh=True)
    spec = GuestSpec(name="vm1", ip=VM_IP, mac=VM_MAC, tap=net.tap, port=PORT)
    guest = QemuGuest(net.host, image, spec, tmp_path_factory.mktemp(f"qemu-vm1-{request.param}"))
    net.read_frames().clear()  # only this boot's frames count
    with guest:

        def first_echo() -> bool:
            with net.connect(timeout=0.5) as s:
                echo(s, b"ping\n")
            return True

        ready_after = guest.wait_ready(timeout=120)
        eventually(first_echo, timeout=10, interval=0.05, what="an echo from the guest", transient=(OSError,))
        tcp_after = time.monotonic() - (guest.started_at or 0.0)
        yield Booted(guest, ready_after, tcp_after)


def test_guest_boots_and_echoes_on_one_long_lived_connection(booted: Booted, net: Net) -> None:
    with net.connect() as s:
        for i in range(50):
            echo(s, f"line {i} from the client namespace\n".encode())
        echo(s, bytes(range(256)) * 64)  # 16 KiB, every byte value
    rss = (booted.guest.rss_bytes() or 0) / 2**20
    print(
        f"\n{booted.guest.image.boot} boot: ready marker {booted.ready_after:.2f}s, "
        f"first TCP echo {booted.tcp_after:.2f}s after spawning QEMU; RSS {rss:.0f} MiB"
    )


def test_a_second_connection_works_while_the_first_stays_open(booted: Booted, net: Net) -> None:
    with net.connect() as first:
        echo(first, b"first\n")
        with net.connect() as second:
            echo(second, b"second\n")
            echo(first, b"first again\n")
        with net.connect() as third:  # after one closed, new connections are still accepted
            echo(third, b"third\n")
        echo(first, b"first still\n")


def test_guest_announces_itself_with_a_gratuitous_arp_on_the_tap(booted: Booted, net: Net) -> None:
    mac, ip = bytes.fromhex(VM_MAC.replace(":", "")), socket.inet_aton(VM_IP)
    eventually(
        lambda: "GARP" in [classify_frame(f, mac, ip) for f in net.read_frames()],
        timeout=10,
        what="a GARP from the guest on the tap",
    )


def test_qmp_answers_the_commands_migration_needs(booted: Booted) -> None:
    qmp = booted.guest.qmp
    assert qmp.greeting["QMP"]["version"]["qemu"]["major"] >= 7
    assert qmp.status() == "running"
    assert qmp.execute("query-migrate") == {}  # no migration yet
    qmp.execute("migrate-set-parameters", {"downtime-limit": 300, "max-bandwidth": 128 * 2**20})
    params = qmp.execute("query-migrate-parameters")
    assert params["downtime-limit"] == 300


def test_the_same_command_line_with_incoming_waits_for_a_migration(
    image: GuestImage, net: Net, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A migration target: same guest, its own tap, `-incoming` on the lab network; it does not boot."""
    tap = f"{net.tap}t"
    create_tap(net.host, tap, mac=WORKLOAD_HOST_MAC)
    spec = GuestSpec(name="vm1", ip=VM_IP, mac=VM_MAC, tap=tap, port=PORT)
    target = QemuGuest(
        net.host, image, spec, tmp_path_factory.mktemp("qemu-vm1-in"), incoming=f"tcp:{HOST_ADDR}:4444"
    )
    with target:
        assert target.argv[-2:] == ["-incoming", f"tcp:{HOST_ADDR}:4444"]
        assert target.qmp.status() == "inmigrate"
        assert target.serial_text() == ""
    assert not target.alive()
    assert Path(target.qmp_socket).exists() is False


def test_a_guest_that_cannot_start_powers_off_and_its_console_is_reported(
    image: GuestImage, net: Net, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tap = f"{net.tap}f"
    create_tap(net.host, tap, mac=WORKLOAD_HOST_MAC)
    spec = GuestSpec(name="vm1", ip=VM_IP, mac=VM_MAC, tap=tap, append="kvlab.ip=")  # the last one wins
    with QemuGuest(net.host, ensure_image(pvh=True), spec, tmp_path_factory.mktemp("qemu-bad")) as guest:
        with pytest.raises(QemuError, match="exited") as err:
            guest.wait_ready(timeout=120)
        assert "FATAL: no kvlab.ip=" in str(err.value)
        assert not guest.alive()


def test_qemu_refuses_a_tap_that_was_not_created_first(
    image: GuestImage, net: Net, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A root QEMU would create it itself, without the Calico host side: traffic would silently go nowhere."""
    spec = GuestSpec(name="vm1", ip=VM_IP, mac=VM_MAC, tap="nosuchtap0")
    guest = QemuGuest(net.host, image, spec, tmp_path_factory.mktemp("qemu-notap"))
    with pytest.raises(QemuError, match="does not exist"):
        guest.start()
    assert not guest.alive()


def test_a_saved_guest_restores_as_itself_and_announces_itself(
    net: Net, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A snapshot of a booted guest (harness.runtime.netns.snapshot) loaded by a new QEMU is the
    same guest, running at once: its address and MAC, its echo server, and it announces itself as
    after a live migration (QEMU's RARP, the guest's gratuitous ARP and unsolicited neighbour
    advertisement), without booting again. Its own tap and address: the `booted` guests keep theirs."""
    if find_qemu() is None:
        _missing("qemu-system-x86_64 is not installed")
    pvh = ensure_image(pvh=True)
    ip, ip6, mac, tap = "203.0.113.11", "2001:db8::11", "52:54:00:cb:00:0b", f"{net.tap}s"
    create_tap(net.host, tap, mac=WORKLOAD_HOST_MAC)
    netlink.set_sysctls(
        net.host, {f"net.ipv4.conf.{tap}.proxy_arp": "1", f"net.ipv4.neigh.{tap}.proxy_delay": "0"}
    )
    netlink.add_route(net.host, f"{ip}/32", dev=tap)
    netlink.add_permanent_neighbour(net.host, tap, ip, mac)
    spec = GuestSpec(name="vm2", ip=ip, mac=mac, tap=tap, port=PORT, ip6=ip6)
    store = tmp_path_factory.mktemp("snapshots")
    key = snapshot.snapshot_key(pvh, spec, snapshot.qemu_identity(find_qemu() or ""))

    with QemuGuest(net.host, pvh, spec, tmp_path_factory.mktemp("qemu-vm2-cold")) as cold:
        cold.wait_ready(timeout=120)
        path = snapshot.save(cold.qmp, store, key, about={"vm": "vm2"}, console=cold.serial_text())
        assert cold.qmp.status() == "postmigrate"  # saved and stopped: never two of the same guest
    assert not cold.alive()
    assert snapshot.lookup(store, key) == path
    assert path.stat().st_size > 2**20
    assert not [p.name for p in store.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert "kvlab-guest: ready" in snapshot.saved_console(path)

    with in_namespace(net.host):
        capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    frames: list[bytes] = []
    fd = snapshot.open_snapshot(path)
    restored = QemuGuest(
        net.host, pvh, spec, tmp_path_factory.mktemp("qemu-vm2-restored"), incoming=f"fd:{fd}", pass_fds=(fd,)
    )
    with capture:
        capture.bind((tap, 0))
        capture.setblocking(False)
        try:
            restored.start()
            os.close(fd)
            eventually(
                lambda: restored.qmp.status() == "running",
                timeout=30,
                interval=0.02,
                what="the guest restored",
            )
            loaded_after = time.monotonic() - (restored.started_at or 0.0)

            def announced() -> set[str | None]:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        frames.append(capture.recv(65535))
                vm_mac, vm_ip = bytes.fromhex(mac.replace(":", "")), socket.inet_aton(ip)
                vm_ip6 = socket.inet_pton(socket.AF_INET6, ip6)
                kinds = {classify_frame(f, vm_mac, vm_ip, vm_ip6) for f in frames}
                assert {"RARP", "GARP", "NA"} <= kinds, f"seen: {kinds - {None}}"
                return kinds

            eventually(announced, timeout=10, interval=0.05, what="RARP, GARP and NA from the restored guest")

            def first_echo() -> bool:
                with in_namespace(net.client):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                with s:
                    s.settimeout(0.5)
                    s.connect((ip, PORT))
                    echo(s, b"restored\n")
                return True

            eventually(
                first_echo,
                timeout=10,
                interval=0.05,
                what="an echo from the restored guest",
                transient=(OSError,),
            )
            assert "init started" not in restored.serial_text()  # it did not boot again
            size = path.stat().st_size >> 20
            print(f"\nrestored guest running {loaded_after:.2f}s after spawning QEMU ({size} MiB)")
        finally:
            restored.stop()
            with contextlib.suppress(OSError):
                os.close(fd)
