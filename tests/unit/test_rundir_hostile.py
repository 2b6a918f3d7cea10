"""The slow path against a tampered run directory or image cache: kvlab runs as root, so a
symlink, FIFO, oversized file or foreign pid planted where a lab's BIRD socket, migration journal,
pid files, logs, state file or guest image cache live is never followed, never blocks and never
gets a process signalled: BIRD is reached only through its own socket, files are written through
a fresh file renamed into place, pid files name a process of the lab or nothing.

Real files, FIFOs, Unix sockets and processes in a private run directory; no lab is brought up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labfiles import LABS
from nonblocking import answer_within, unix_listener, was_connected

from harness import procs
from harness.birdc import BirdClient, BirdUnavailable
from harness.errors import LabError
from harness.lab import Lab
from harness.labfile import load_lab
from harness.runtime.netns import guestimage as gi
from harness.runtime.netns.journal import MigrationJournal
from harness.state import LabState, lab_dir, private_dir

LAB = "rundir"
GREETING = b"0001 BIRD 1.6.8 ready.\n"


@pytest.fixture
def lab(run_root: Path) -> Lab:
    """The default netns lab's runtime over an empty run directory (nothing brought up)."""
    lab = Lab(load_lab(LABS / "default.yml"), name=LAB)
    private_dir(run_root, 0o700)
    private_dir(lab_dir(LAB))
    return lab


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the run directory that planted symlinks point at: it must stay as it is."""
    path = tmp_path / "victim"
    path.write_text("precious\n")
    return path


def _answer(call: Callable[[], Any], timeout: float = 10.0) -> Any:
    return answer_within(call, timeout, "kvlab")


class _Bird:
    """A Unix socket listening at `path` that greets as BIRD does (some other lab's BIRD, say);
    `connections` counts who connected."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.sendall(GREETING)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def other_bird(tmp_path: Path) -> Iterator[_Bird]:
    bird = _Bird(tmp_path / "other-lab" / "tor1" / "bird.ctl")
    yield bird
    bird.close()


# -- 1. BIRD control sockets ----------------------------------------------------------------------


def test_a_bird_socket_of_the_lab_is_connected(lab: Lab) -> None:
    """The control: BIRD's own socket in the run directory is reached."""
    bird = _Bird(lab.runtime.bird_socket("tor1"))
    try:
        with BirdClient(lab.runtime.bird_socket("tor1"), timeout=5) as client:
            assert client.greeting == "BIRD 1.6.8 ready."
        assert bird.connections == 1
    finally:
        bird.close()


def test_a_symlinked_bird_socket_is_not_connected(lab: Lab, other_bird: _Bird, tmp_path: Path) -> None:
    """A symlink planted at `<run>/tor1/bird.ctl` to another lab's BIRD: refused, never connected."""
    (lab_dir(LAB) / "tor1").mkdir()
    (lab_dir(LAB) / "tor1" / "bird.ctl").symlink_to(tmp_path / "other-lab" / "tor1" / "bird.ctl")
    with (
        pytest.raises((LabError, BirdUnavailable), match="symlink"),
        BirdClient(lab.runtime.bird_socket("tor1"), timeout=2) as client,
    ):
        client.protocols()
    with pytest.raises(BirdUnavailable, match="symlink"):
        BirdClient(lab_dir(LAB) / "tor1" / "bird.ctl", timeout=2).connect()
    assert other_bird.connections == 0


def test_a_symlinked_entity_directory_reaches_no_other_bird(
    lab: Lab, other_bird: _Bird, tmp_path: Path
) -> None:
    """`<run>/tor1` a symlink to another lab's entity directory: the lookup refuses it."""
    (lab_dir(LAB) / "tor1").symlink_to(tmp_path / "other-lab" / "tor1")
    with (
        pytest.raises(LabError, match="symlink"),
        BirdClient(lab.runtime.bird_socket("tor1"), timeout=2) as client,
    ):
        client.protocols()
    assert other_bird.connections == 0


@pytest.mark.parametrize("entity", ["../other-lab/tor1", "tor1/../../other-lab/tor1"])
def test_an_entity_name_with_dot_dot_reaches_no_socket_outside(
    lab: Lab, other_bird: _Bird, tmp_path: Path, entity: str
) -> None:
    lab_dir(LAB).joinpath("tor1").mkdir()
    (tmp_path / "run" / "other-lab").symlink_to(tmp_path / "other-lab")  # so ../other-lab resolves
    with (
        pytest.raises(LabError, match="not under"),
        BirdClient(lab.runtime.bird_socket(entity), timeout=2) as client,
    ):
        client.protocols()
    assert other_bird.connections == 0


@pytest.mark.parametrize("make", ["fifo", "file"])
def test_a_bird_socket_that_is_no_socket_is_refused_without_blocking(lab: Lab, make: str) -> None:
    path = lab_dir(LAB) / "tor1" / "bird.ctl"
    path.parent.mkdir()
    if make == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("not a socket\n")
    with pytest.raises(LabError, match="not a socket"):
        _answer(lambda: BirdClient(lab.runtime.bird_socket("tor1"), timeout=2).connect())
    with pytest.raises(BirdUnavailable, match="not a socket"):
        _answer(lambda: BirdClient(path, timeout=2).connect())


def test_a_missing_bird_socket_is_bird_not_running(lab: Lab) -> None:
    with pytest.raises(BirdUnavailable, match="does not exist"):
        BirdClient(lab.runtime.bird_socket("tor1"), timeout=2).connect()


# -- 2. writes through fixed temporary names ------------------------------------------------------


def _journal() -> MigrationJournal:
    return MigrationJournal("vm1", "r1-n1", "r1-n2", "eth0", "eth1", "mock")


def test_the_journal_is_never_written_through_a_planted_symlink(lab: Lab, victim: Path) -> None:
    """Symlinks planted at the journal's name and at its old fixed temporary name: the victim
    stays as it was, the journal is a regular file that loads back."""
    run = lab_dir(LAB)
    d = MigrationJournal.directory(run)
    d.mkdir()
    for name in ("vm1.tmp", "vm1.json"):
        (d / name).symlink_to(victim)
    journal = _journal()
    journal.save(run)
    journal.enter("cutover", run)
    assert victim.read_text() == "precious\n"
    assert not MigrationJournal.path(run, "vm1").is_symlink()
    assert MigrationJournal.load(run, "vm1") == journal
    assert sorted(p.name for p in d.iterdir() if not p.is_symlink()) == ["vm1.json"]  # no temp left


def test_the_journal_stays_durable(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal reaches the disk before it is renamed into place (fsync of the file), and the
    rename before save returns (fsync of the directory)."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    _journal().save(lab_dir(LAB))
    d = MigrationJournal.directory(lab_dir(LAB))
    assert len(synced) == 2
    assert Path(synced[0]).parent == d
    assert Path(synced[0]).name.startswith(".vm1.json.")
    assert Path(synced[1]) == d


@pytest.mark.parametrize("make", ["symlink", "fifo", "huge"])
def test_a_planted_journal_is_not_believed(lab: Lab, victim: Path, make: str) -> None:
    run = lab_dir(LAB)
    path = MigrationJournal.path(run, "vm1")
    path.parent.mkdir()
    good = json.dumps(_journal().__dict__)
    if make == "symlink":
        victim.write_text(good)
        path.symlink_to(victim)
    elif make == "fifo":
        os.mkfifo(path)
    else:
        path.write_text(good[:-1] + ", " + '"pad": "' + "x" * (2 << 20) + '"}')
    assert _answer(lambda: MigrationJournal.load(run, "vm1")) is None


def test_the_apt_memo_is_never_written_through_a_planted_symlink(
    tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packages = {"linux-image-6.1.0-56-amd64": "6.1.192-2", gi.BUSYBOX_PACKAGE: "1", gi.BIRD_PACKAGE: "1.6.8"}
    monkeypatch.setattr(gi, "_apt_candidates", lambda: dict(packages))
    monkeypatch.setattr(gi, "apt_fingerprint", lambda paths=(): "fp")
    memo = tmp_path / "cache" / ".apt-candidates.json"
    memo.parent.mkdir()
    memo.with_name(f"{memo.name}.{os.getpid()}").symlink_to(victim)  # the old fixed temporary name
    assert gi.resolve_packages(memo) == packages
    assert victim.read_text() == "precious\n"
    assert json.loads(memo.read_text()) == {"fingerprint": "fp", "packages": packages}
    memo.unlink()
    memo.symlink_to(victim)  # a planted memo: not read through, replaced
    assert gi.resolve_packages(memo) == packages
    assert victim.read_text() == "precious\n"
    assert not memo.is_symlink()


# -- 3. readers of the run directory and the image cache ------------------------------------------


@pytest.mark.parametrize("make", ["symlink", "fifo", "list"])
def test_a_planted_state_file_is_not_believed(lab: Lab, victim: Path, make: str) -> None:
    run = lab_dir(LAB)
    state = LabState(LAB, "spec", "digest", "netns", "session", ready=True)
    if make == "symlink":
        victim.write_text(json.dumps(state.__dict__))
        (run / "state.json").symlink_to(victim)
    elif make == "fifo":
        os.mkfifo(run / "state.json")
    else:
        (run / "state.json").write_text("[1, 2]")
    assert _answer(lambda: LabState.load(run)) is None


@pytest.mark.parametrize("where", ["manifest", "kernel", "initrd"])
def test_a_cached_image_leading_outside_its_directory_is_not_used(
    tmp_path: Path, victim: Path, where: str
) -> None:
    d = tmp_path / "cache" / "key"
    d.mkdir(parents=True)
    (d / "vmlinuz").write_bytes(b"K")
    (d / "initrd.gz").write_bytes(b"I")
    manifest = {"key": "key", "packages": {}, "kernel": "vmlinuz", "initrd": "initrd.gz"}
    (d / "manifest.json").write_text(json.dumps(manifest))
    assert gi._load(d) is not None  # the control
    if where == "manifest":
        (d / "manifest.json").write_text(json.dumps({**manifest, "kernel": os.path.relpath(victim, d)}))
    else:
        (d / ("vmlinuz" if where == "kernel" else "initrd.gz")).unlink()
        (d / ("vmlinuz" if where == "kernel" else "initrd.gz")).symlink_to(victim)
    assert gi._load(d) is None


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not the lab's (its command line names no run directory)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield proc
    proc.kill()
    proc.wait()


def _ours(directory: Path) -> subprocess.Popen[bytes]:
    """A live process whose command line names a file under `directory`, as the lab's daemons do."""
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", str(directory / "bird.conf")],
        stdin=subprocess.PIPE,
    )


def _qemu_instance(run_root: Path) -> tuple[Any, Path]:
    """The nested QEMU lab's VM helpers and the (empty, made) directory of an instance of vm-red."""
    lab = Lab(load_lab(LABS / "nested-qemu.yml"), name=LAB)
    private_dir(run_root, 0o700)
    private_dir(lab_dir(LAB))
    vms = lab.runtime.qemu  # type: ignore[attr-defined]
    d = vms.run_dir("vm-red", "qemu-test")
    d.mkdir(parents=True)
    return vms, d


def test_a_qemu_pid_file_naming_another_process_gets_it_no_signal(
    run_root: Path, stranger: subprocess.Popen[bytes]
) -> None:
    """qemu.pid of a VM's instance naming a live process that is no QEMU of that instance: it is
    not the VM's pid, and stopping the VM leaves that process alone."""
    vms, d = _qemu_instance(run_root)
    (d / "qemu.pid").write_text(str(stranger.pid))
    assert vms.pid("vm-red", "qemu-test") is None
    vms.stop("vm-red", "qemu-test")
    assert stranger.poll() is None, "a process not of the lab was signalled"
    ours = _ours(d)
    try:
        (d / "qemu.pid").write_text(f"{ours.pid}\n")
        assert vms.pid("vm-red", "qemu-test") == ours.pid  # the control
    finally:
        ours.kill()
        ours.wait()


@pytest.mark.parametrize("content", ["not a pid", "-1", "1", "12 13", "0x10", ""])
def test_a_pid_file_that_is_no_pid_names_no_process(lab: Lab, content: str) -> None:
    d = lab_dir(LAB) / "tor1"
    d.mkdir()
    (d / "bird.pid").write_text(content)
    assert not lab.runtime._pid_alive("tor1", "bird")  # type: ignore[attr-defined]


@pytest.mark.parametrize("make", ["stranger", "symlink", "fifo"])
def test_a_planted_pid_file_is_not_alive(
    lab: Lab, tmp_path: Path, stranger: subprocess.Popen[bytes], make: str
) -> None:
    d = lab_dir(LAB) / "tor1"
    d.mkdir()
    ours = _ours(d)
    try:
        (d / "bird.pid").write_text(str(ours.pid))
        assert lab.runtime._pid_alive("tor1", "bird")  # type: ignore[attr-defined]  # the control
        (d / "bird.pid").unlink()
        if make == "stranger":
            (d / "bird.pid").write_text(str(stranger.pid))
        elif make == "symlink":
            (tmp_path / "elsewhere.pid").write_text(str(ours.pid))
            (d / "bird.pid").symlink_to(tmp_path / "elsewhere.pid")
        else:
            os.mkfifo(d / "bird.pid")
        assert not _answer(lambda: lab.runtime._pid_alive("tor1", "bird"))  # type: ignore[attr-defined]
    finally:
        ours.kill()
        ours.wait()


def test_pid_from_file_names_only_processes_mentioning_the_directory(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    (tmp_path / "x.pid").write_text(str(stranger.pid))
    assert procs.pid_from_file(tmp_path / "x.pid", tmp_path) is None
    ours = _ours(tmp_path)
    try:
        (tmp_path / "x.pid").write_text(str(ours.pid))
        assert procs.pid_from_file(tmp_path / "x.pid", tmp_path) == ours.pid
        assert procs.pid_from_file(tmp_path / "x.pid", tmp_path / "other") is None
    finally:
        ours.kill()
        ours.wait()


def test_daemon_logs_and_pid_files_are_never_written_through_planted_symlinks(lab: Lab, victim: Path) -> None:
    """A daemon's log (appended to) and pid file planted as symlinks: the daemon is not started
    through them, the victim stays as it was."""
    d = lab_dir(LAB) / "tor1"
    d.mkdir()
    (d / "probe.log").symlink_to(victim)
    with pytest.raises(LabError, match="symlink"):
        lab.runtime._daemon("tor1", "probe", ["true"], inside=False)  # type: ignore[attr-defined]
    (d / "probe.log").unlink()
    (d / "probe.pid").symlink_to(victim)
    lab.runtime._daemon("tor1", "probe", [sys.executable, "-c", "pass"], inside=False)  # type: ignore[attr-defined]
    assert victim.read_text() == "precious\n"
    assert not (d / "probe.pid").is_symlink()
    assert (d / "probe.pid").read_text().isdigit()


def test_diagnostics_copy_no_planted_symlink_nor_fifo(lab: Lab, tmp_path: Path, victim: Path) -> None:
    """Files of the run directory copied into a diagnostics bundle: a symlink to a file elsewhere
    and a FIFO are named in the errors, not copied (nor waited on)."""
    node = next(n for _, n in lab.spec.all_nodes())
    d = lab_dir(LAB) / node.name
    d.mkdir()
    (d / "agent.log").symlink_to(victim)
    os.mkfifo(d / "agent.json")
    out = tmp_path / "bundle"
    errors = _answer(lambda: lab.runtime.diagnostics(out), timeout=30)  # type: ignore[attr-defined]
    assert not (out / node.name / "agent.log").exists()
    assert not (out / node.name / "agent.json").exists()
    assert any("agent.log" in e and "symlink" in e for e in errors), errors
    assert any("agent.json" in e and "FIFO" in e for e in errors), errors


def test_a_symlinked_node_agent_socket_is_not_connected(lab: Lab, other_bird: _Bird, tmp_path: Path) -> None:
    """`<run>/<node>/agent.ctl` a symlink to some other socket: refused (ConnectionRefusedError,
    an OSError as when nobody listens), never connected."""
    node = next(n for _, n in lab.spec.all_nodes())
    (lab_dir(LAB) / node.name).mkdir()
    (lab_dir(LAB) / node.name / "agent.ctl").symlink_to(tmp_path / "other-lab" / "tor1" / "bird.ctl")
    with pytest.raises(ConnectionRefusedError, match="symlink"):
        lab.runtime.agent(node.name).call("ping")  # type: ignore[attr-defined]
    assert other_bird.connections == 0


@pytest.mark.parametrize("make", ["symlink", "fifo"])
def test_a_planted_saved_console_is_not_read(tmp_path: Path, victim: Path, make: str) -> None:
    """A snapshot's saved boot console (in the image cache) planted as a symlink or a FIFO: read as
    empty, without blocking; the control reads a regular one."""
    from harness.runtime.netns import snapshot

    path = tmp_path / "abc.vmstate"
    (tmp_path / "abc.console").write_text("booted\n")
    assert snapshot.saved_console(path) == "booted\n"
    (tmp_path / "abc.console").unlink()
    if make == "symlink":
        (tmp_path / "abc.console").symlink_to(victim)
    else:
        os.mkfifo(tmp_path / "abc.console")
    assert _answer(lambda: snapshot.saved_console(path)) == ""


def test_the_snapshot_log_is_never_appended_through_a_planted_symlink(run_root: Path, victim: Path) -> None:
    from harness.runtime.netns.vms import SNAPSHOT_LOG

    vms, d = _qemu_instance(run_root)
    (d / SNAPSHOT_LOG).symlink_to(victim)
    vms._note("vm-red", "qemu-test", "restored")
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("plant", ["socket", "directory"])
def test_a_symlinked_qmp_socket_reaches_no_other_qemu(run_root: Path, tmp_path: Path, plant: str) -> None:
    """qmp.sock (or the instance directory) planted as a symlink to another QEMU's monitor: no
    command (stopping the VM sends `quit`) reaches it."""
    from harness.runtime.netns.qemu import QemuError

    vms, d = _qemu_instance(run_root)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    with unix_listener(elsewhere / "qmp.sock") as other:
        if plant == "socket":
            (d / "qmp.sock").symlink_to(elsewhere / "qmp.sock")
        else:
            d.rmdir()
            d.symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(QemuError, match="refused"):
            answer_within(lambda: vms.qmp("vm-red", "qemu-test", timeout=1))
        vms.stop("vm-red", "qemu-test")
        assert not was_connected(other), "a QMP connection went through a planted symlink"


def test_the_qmp_socket_of_the_instance_is_connected(run_root: Path) -> None:
    """The control: a socket in the instance directory itself is connected to."""
    from harness.runtime.netns.qemu import QemuError

    vms, d = _qemu_instance(run_root)
    with unix_listener(d / "qmp.sock") as mine:
        with pytest.raises(QemuError, match="timed out waiting for the QMP greeting"):
            answer_within(lambda: vms.qmp("vm-red", "qemu-test", timeout=0.3))
        assert was_connected(mine)
