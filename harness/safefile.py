"""Reading a file kvlab does not trust (it runs as root): only a regular file of bounded size is
read; it is opened non-blocking (a FIFO swapped in after the `stat` cannot block), and on request
never through a symlink; and writing a file of the run directory atomically, never through a
symlink planted there. One implementation for lab files, the state file and the status cache.
Imports nothing heavy (the CLI's fast path uses it)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from harness.errors import UnsafePathError


class FileRefused(Exception):
    """The file is not read: its reason is the message (no path: the caller names the file)."""


def kind(mode: int) -> str:
    """What a file of stat mode `mode` is, for a message ('a FIFO', 'a directory', ...)."""
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISREG, "a regular file"),
    ]
    return next((text for test, text in kinds if test(mode)), "not a regular file")


def read_regular(path: str | Path, limit: int, *, what: str = "files", follow_symlinks: bool = True) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes whose content agrees
    with its size; FileRefused otherwise (`what` names such files in the reason). Without
    `follow_symlinks`, a symlink in the path's last component is refused, not followed."""
    not_regular = "is {}: " + what + " must be regular files"
    too_big = f"larger than {limit // 1024 // 1024} MiB, the limit for {what}"
    nofollow = 0 if follow_symlinks else os.O_NOFOLLOW
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(not_regular.format(kind(st.st_mode)))
        if st.st_size > limit:
            raise FileRefused(too_big)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | nofollow)
    except OSError as e:
        raise FileRefused(f"cannot read file: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(not_regular.format(kind(st.st_mode)))
        if st.st_size > limit:
            raise FileRefused(too_big)
        chunks: list[bytes] = []
        got = 0
        while got <= st.st_size:
            chunk = os.read(fd, st.st_size + 1 - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as e:
        raise FileRefused(f"cannot read file: {e.strerror}") from None
    finally:
        os.close(fd)
    if got != st.st_size:
        raise FileRefused(
            f"its content ({'more' if got > st.st_size else 'less'} than its size of {st.st_size} bytes) "
            "does not match its size: a /proc or /sys file, or one being written; copy it to a regular file"
        )
    return b"".join(chunks)


def read_tail(path: str | Path, limit: int, *, what: str = "logs") -> bytes:
    """The last `limit` bytes (at most) of `path`, a regular file that may be growing (a log a
    process writes to): never through a symlink in its last component, never blocking on a FIFO
    swapped in; FileRefused otherwise, FileNotFoundError if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as e:
        reason = "it is a symlink" if e.errno == errno.ELOOP else e.strerror
        raise FileRefused(f"cannot read file: {reason}: {what} must be regular files") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"is {kind(st.st_mode)}: {what} must be regular files")
        os.lseek(fd, max(0, st.st_size - limit), os.SEEK_SET)
        chunks: list[bytes] = []
        got = 0
        while got < limit:
            chunk = os.read(fd, limit - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise FileRefused(f"cannot read file: {e.strerror}") from None
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = False) -> None:
    """Write `data` to `path` atomically: into a new file of a unique name beside it (created
    exclusively: never an existing file, never through a symlink planted there), renamed over
    `path` (a symlink at `path` is replaced, not followed). `durable`: the data reaches the disk
    before the rename, and the rename before returning (fsync of the file, then its directory)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def open_output(path: Path, *, append: bool = False, mode: int = 0o644) -> BinaryIO:
    """`path` opened for writing (a log a child process writes to, say), never through a symlink
    planted there nor onto a FIFO or device: FileRefused unless it is (or becomes, created) a
    regular file. Without `append` it is truncated, once known to be a regular file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | (os.O_APPEND if append else 0), mode)
    except OSError as e:
        reason = "it is a symlink" if e.errno == errno.ELOOP else e.strerror
        raise FileRefused(f"cannot write file: {reason}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"is {kind(st.st_mode)}: only a regular file is written")
        os.set_blocking(fd, True)
        if not append:
            os.ftruncate(fd, 0)
        return os.fdopen(fd, "ab" if append else "wb")
    except BaseException:
        os.close(fd)
        raise


def unix_socket(path: str | Path, root: Path | None = None) -> os.stat_result:
    """The lstat of `path` if it is a Unix socket, not a symlink; with `root`, `path` must also
    lie under `root` and every directory between them be a directory, not a symlink (so that a
    connect reaches this lab's socket, never another one a symlink planted in the run directory
    points at). FileNotFoundError if something is missing (nobody listens), FileRefused otherwise."""
    path = Path(path)
    if root is not None:
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            raise FileRefused(f"it is not under {root}") from None
        if not parts or any(p in ("..", ".") for p in parts):
            raise FileRefused(f"it is not under {root}")
        _directories(root, parts, missing="raise")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise FileRefused(f"cannot look at it: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise FileRefused(f"it is {kind(st.st_mode)}, not a socket")
    return st


def fresh_dir(parent: Path, name: str, *, tries: int = 100) -> Path:
    """A directory made anew under `parent` (made if missing): `name`, else `name-2`, `name-3`...
    Nothing in it was planted beforehand, so what is written into it stays in it."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, tries + 1):
        path = parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise UnsafePathError(f"{parent}: {name} and {tries - 1} numbered variants of it exist already")


def _directories(root: Path, parts: tuple[str, ...], *, missing: str) -> None:
    """Every directory from `root` to the last of `parts` (exclusive) must be a directory, not a
    symlink: FileRefused naming the one that is not. A missing one: `missing="raise"` raises
    FileNotFoundError, "stop" ends the walk there, "make" makes it."""
    step = root
    for part in parts[:-1]:
        step = step / part
        if missing == "make":
            with contextlib.suppress(FileExistsError):
                step.mkdir()
        try:
            mode = os.lstat(step).st_mode
        except FileNotFoundError:
            if missing == "stop":
                return
            raise
        except OSError as e:
            raise FileRefused(f"cannot look at {step}: {e.strerror}") from None
        if not stat.S_ISDIR(mode):
            raise FileRefused(f"{step} is {kind(mode)}, not a directory")


def _rel_parts(root: Path, rel: str | Path) -> tuple[str, ...]:
    rel = Path(rel)
    if rel.is_absolute() or not rel.parts or any(p in ("..", ".") for p in rel.parts):
        raise UnsafePathError(f"{rel} is no path under {root}")
    return rel.parts


def check_under(root: Path, rels: Iterable[str | Path]) -> None:
    """Before writing any of them: UnsafePathError if a directory on the way from `root` to one
    of `rels` exists as something else than a directory (a symlink, say), so that an output
    directory is not left half-written."""
    for rel in rels:
        try:
            _directories(root, _rel_parts(root, rel), missing="stop")
        except FileRefused as e:
            raise UnsafePathError(f"{e}: nothing is written through it") from None


def write_under(root: Path, rel: str | Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Write `data` to `root/rel`, a file of an output directory the user named: the directories
    between them are made if missing and must be directories, not symlinks (UnsafePathError
    naming the one that is not); a symlink or file at the end is replaced, never written through."""
    parts = _rel_parts(root, rel)
    root.mkdir(parents=True, exist_ok=True)
    try:
        _directories(root, parts, missing="make")
    except FileRefused as e:
        raise UnsafePathError(f"{e}: nothing is written through it") from None
    path = root.joinpath(*parts)
    replace_file(path, data.encode() if isinstance(data, str) else data, mode)
    return path


__all__ = [
    "FileRefused",
    "check_under",
    "fresh_dir",
    "kind",
    "open_output",
    "read_regular",
    "read_tail",
    "replace_file",
    "unix_socket",
    "write_under",
]
