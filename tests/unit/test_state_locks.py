"""Lock files (harness.locking): exclusive, gone when released, never through a symlink; the
image-cache locks use the same helper; a lab's builder is recognised even after pid reuse."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from harness import netlink, procs
from harness.errors import LabError, UnsafePathError
from harness.imagecache import cache_lock, ensure_cache_dir
from harness.instances import reap_stale
from harness.locking import LockBusy, file_lock, lock_held, private_dir
from harness.runtime.containerlab.images import build_tor_image
from harness.runtime.netns.guestimage import GuestImageError
from harness.state import LabState, lab_lock, lock_path
from harness.wait import eventually

HOLDER = """
import sys
from pathlib import Path
from harness.locking import file_lock
with file_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


def hold_in_subprocess(path: Path) -> subprocess.Popen[str]:
    """Another process holding the lock on `path` until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    return proc


def blocked_waiters(path: Path) -> int:
    """flock waiters on `path`'s inode right now (the `->` lines of /proc/locks)."""
    ino = os.stat(path).st_ino
    return sum(
        1 for line in Path("/proc/locks").read_text().splitlines() if "->" in line and f":{ino} " in line
    )


def test_a_lock_file_is_gone_after_release(tmp_path: Path) -> None:
    path = tmp_path / ".x.lock"
    with file_lock(path):
        assert stat.S_ISREG(os.lstat(path).st_mode)
    assert list(tmp_path.iterdir()) == []


def test_held_by_another_process_then_free_and_gone(tmp_path: Path) -> None:
    path = tmp_path / ".x.lock"
    holder = hold_in_subprocess(path)
    try:
        assert lock_held(path)
        with pytest.raises(LockBusy), file_lock(path, blocking=False):
            pass
        assert path.exists()  # a failed try leaves the holder's file alone
    finally:
        holder.communicate("\n", timeout=10)
    assert holder.returncode == 0
    assert not path.exists()
    assert not lock_held(path)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_holders_file_is_reused_and_removed(tmp_path: Path) -> None:
    path = tmp_path / ".x.lock"
    holder = hold_in_subprocess(path)
    holder.kill()
    holder.wait(timeout=10)
    assert path.exists()  # SIGKILL: the kernel drops the flock, the file stays
    assert not lock_held(path)  # ... and the next look removes it
    assert not path.exists()


def test_a_waiter_never_locks_an_unlinked_file(tmp_path: Path) -> None:
    """A waiter blocked on the old file when the holder unlinks it must retry on a new one;
    otherwise it would "hold" a lock that no other process can see."""
    path = tmp_path / ".x.lock"
    got_it, release = threading.Event(), threading.Event()

    def waiter() -> None:
        with file_lock(path):
            got_it.set()
            release.wait(10)

    with file_lock(path):
        thread = threading.Thread(target=waiter)
        thread.start()
        eventually(lambda: blocked_waiters(path) == 1, timeout=5, what="the waiter to block on the lock")
    try:
        assert got_it.wait(10)
        assert path.exists(), "the waiter holds a lock on a file that is no longer there"
        assert lock_held(path)  # flock locks conflict across open files, even in one process
    finally:
        release.set()
        thread.join(10)
    assert not path.exists()


def test_a_symlink_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("precious")
    path = tmp_path / ".x.lock"
    path.symlink_to(target)
    with pytest.raises(UnsafePathError, match="cannot open lock file"), file_lock(path):
        pass
    assert target.read_text() == "precious"
    dangling = tmp_path / ".y.lock"
    dangling.symlink_to(tmp_path / "created-by-the-lock")
    with pytest.raises(UnsafePathError), file_lock(dangling):
        pass
    assert not (tmp_path / "created-by-the-lock").exists()


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / ".x.lock"
    os.mkfifo(path)
    with pytest.raises(UnsafePathError, match="not a regular file"), file_lock(path):
        pass


def test_private_dir_refuses_what_others_could_swap(tmp_path: Path) -> None:
    assert private_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UnsafePathError, match="not a directory"):
        private_dir(tmp_path / "link")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafePathError, match="writable by other users"):
        private_dir(shared)
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        os.chown(foreign, 65534, 65534)
        with pytest.raises(UnsafePathError, match="belongs to uid 65534"):
            private_dir(foreign)


def test_lab_lock_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVLAB_RUN_DIR", str(tmp_path / "run"))
    with lab_lock("lab1"):
        assert lock_path("lab1").exists()
        with pytest.raises(LockBusy), lab_lock("lab1", blocking=False):
            pass
    assert list((tmp_path / "run").iterdir()) == []


def test_image_cache_locks_use_a_safe_directory_and_no_tmp_fallback(tmp_path: Path) -> None:
    fallback = Path(tempfile.gettempdir()) / "kvlab-docker-images.lock"
    with cache_lock(tmp_path / "cache", ".docker-images.lock"):
        assert (tmp_path / "cache" / ".docker-images.lock").exists()
    assert list((tmp_path / "cache").iterdir()) == []
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    unsafe.chmod(0o777)
    with pytest.raises(GuestImageError, match="writable by other users"):
        ensure_cache_dir(unsafe, GuestImageError)
    existed = fallback.exists()
    # The ToR image build takes its lock before talking to Docker: an unsafe cache stops it there.
    with pytest.raises(LabError, match="image cache"):
        build_tor_image(client=object(), cache_dir=unsafe)
    assert fallback.exists() == existed
    assert list(unsafe.iterdir()) == []


def test_start_time_tells_a_reused_pid_apart() -> None:
    me = os.getpid()
    started = procs.start_time(me)
    assert started is not None
    assert procs.alive(me, started)
    assert not procs.alive(me, started + 1)  # same pid, another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert procs.start_time(child.pid) is None
    assert not procs.alive(child.pid)


def _state(**kw: object) -> LabState:
    return LabState(lab="x", spec_path="x.yml", spec_digest="d", runtime="netns", session_id="s", **kw)  # type: ignore[arg-type]


def test_a_half_built_lab_is_abandoned_once_its_builder_is_gone() -> None:
    me, started = os.getpid(), procs.start_time(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert not _state(builder_pid=me, builder_started=started).abandoned()  # building right now
    assert _state(builder_pid=child.pid, builder_started=1).abandoned()  # builder died
    assert _state(builder_pid=me, builder_started=(started or 0) + 1).abandoned()  # pid reused
    # A ready CLI lab (no owner) lives until named; an owned lab goes with its owner.
    assert not _state(ready=True, builder_pid=child.pid).abandoned()
    assert _state(ready=True, owner_pid=child.pid).abandoned()
    # Kept on failure (--keep-on-failure): no builder recorded, the CLI owns it: kept.
    assert not _state(ready=False).abandoned()


def test_reaping_removes_lock_files_nobody_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVLAB_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(netlink, "list_namespaces", list)  # the machine's labs are not this test's
    (tmp_path / ".ghost-1.lock").write_text("")  # left by a killed holder
    holder = hold_in_subprocess(tmp_path / ".busy-1.lock")
    try:
        assert reap_stale() == []  # nothing but lock files: nothing reported
        assert not (tmp_path / ".ghost-1.lock").exists()
        assert (tmp_path / ".busy-1.lock").exists()
    finally:
        holder.communicate("\n", timeout=10)
    assert list(tmp_path.iterdir()) == []
