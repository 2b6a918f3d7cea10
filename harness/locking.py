"""Lock files that vanish with their holder, in directories kvlab owns (one implementation).

`file_lock(path)` takes an exclusive flock on `path` and deletes the file when released, so
the run directory and the image caches hold no `.lock` files nobody holds. The safe pattern:
open without following symlinks (a regular file only), flock, then check the path still
names the inode we locked (a releaser may have unlinked it meanwhile: then retry); unlink
while still holding the lock. A holder killed with SIGKILL leaves the file (the kernel drops
the flock); the next holder reuses and removes it.

`private_dir(path)` creates a directory kvlab writes as root and refuses one that another
user could swap files in (a symlink, someone else's, group- or world-writable).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from harness.errors import KvlabError, UnsafePathError

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class LockBusy(KvlabError):
    """A non-blocking `file_lock` found the lock held by another process."""


def private_dir(path: Path, mode: int = 0o755) -> Path:
    """Create `path` (and parents) if missing; refuse it unless it is a real directory owned by
    this user that nobody else can write to. Returns `path`."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise UnsafePathError(f"cannot create directory {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{path} is not a directory (a symlink?): kvlab will not write there")
    if st.st_uid != os.geteuid():
        raise UnsafePathError(f"{path} belongs to uid {st.st_uid}, not to this user: kvlab will not use it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePathError(f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})")
    return path


def _open_locked(path: Path, blocking: bool) -> int:
    """An fd holding the flock on the file `path` names now (created if missing)."""
    while True:
        try:
            fd = os.open(path, _OPEN_FLAGS, 0o600)
        except OSError as e:
            raise UnsafePathError(f"cannot open lock file {path}: {e.strerror}") from None
        try:
            held = os.fstat(fd)
            if not stat.S_ISREG(held.st_mode):
                raise UnsafePathError(f"lock file {path} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                raise LockBusy(f"{path} is held by another process") from None
            try:
                now = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the previous holder removed it between our open and flock: again


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block; the file is gone afterwards.

    Non-blocking (`blocking=False`) raises LockBusy at once if another process holds it.
    The directory must exist (see `private_dir`)."""
    fd = _open_locked(path, blocking)
    try:
        yield
    finally:
        try:
            os.unlink(path)  # still holding the lock: nobody else can own this inode now
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)


def lock_held(path: Path) -> bool:
    """True while another process holds the lock on `path`. Creates nothing that stays."""
    if not os.path.lexists(path):
        return False
    try:
        with file_lock(path, blocking=False):
            return False
    except LockBusy:
        return True


__all__ = ["LockBusy", "file_lock", "lock_held", "private_dir"]
