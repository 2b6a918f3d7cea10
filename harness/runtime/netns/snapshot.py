"""Saved guests: the state of a booted QEMU guest in a file, restored instead of a cold boot.

A cold boot of the guest takes ~2.7 s under TCG; QEMU loads a saved guest (its migration
stream, `-incoming fd:N` on the file) in a few tenths of a second. A snapshot is the guest of
one VM identity right after it printed READY_MARKER: the same kernel command line (its IPs,
name, port), the same MAC, the same machine. So it is keyed by everything the saved state
depends on (`snapshot_key`): the guest image's key and boot kind, the QEMU binary, and QEMU's
argv without what belongs to one instance (the console and QMP paths, the tap's name, which
is the host's side). A restored guest is that VM: its own IPv4/IPv6 addresses and MAC, and,
like any live-migration target, it announces itself when it resumes (QEMU's RARP; the guest's
virtio-net announce makes its kernel send a gratuitous ARP and an unsolicited neighbour
advertisement, `ndisc_notify` being on).

Snapshots live in the image cache, `<image dir>/snapshots/<key>.vmstate` (+ `<key>.json`, what
the key covers, and `<key>.console`, the console of the boot it was saved from), written to a
temporary file and renamed, the newest `KEEP` per image kept. A snapshot that fails to load is
removed and the guest boots cold (harness.runtime.netns.vms). `KVLAB_GUEST_SNAPSHOTS=0` turns
them off (every guest boots cold).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.errors import KvlabError, LabError
from harness.locking import private_dir
from harness.runtime.netns.guestimage import GuestImage
from harness.runtime.netns.qemu import GuestSpec, QemuError, QMPClient, qemu_argv
from harness.safefile import FileRefused, read_tail, replace_file
from harness.wait import eventually

FORMAT = "1"  # bump when what a snapshot holds changes in a way the key would not notice
SUFFIX = ".vmstate"
KEEP = 12  # snapshots kept per guest image (~70 MB each: the guest's memory, its kernel mostly)
SAVE_TIMEOUT = 60.0
CONSOLE_LIMIT = 16 * 1024 * 1024  # bytes of a saved boot console read back (its end)
SAVE_PARAMETERS = {"max-bandwidth": 8 << 30, "downtime-limit": 2000}  # one pass, no throttling
ENV = "KVLAB_GUEST_SNAPSHOTS"
_KEY = re.compile(r"[0-9a-f]{32}")


class SnapshotError(LabError):
    """A guest's state could not be saved."""


def enabled() -> bool:
    """Snapshots are on unless KVLAB_GUEST_SNAPSHOTS is '0' (or 'no', 'off', 'false')."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "no", "off", "false")


def qemu_identity(binary: str) -> str:
    """The QEMU binary as a snapshot depends on it: its real path, size and mtime (any QEMU
    upgrade replaces the file), without running it."""
    real = os.path.realpath(binary)
    st = os.stat(real)
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def snapshot_argv(image: GuestImage, spec: GuestSpec) -> list[str]:
    """QEMU's argv for `spec` as the saved state depends on it: the instance's own parts (console
    and QMP paths, tap name, binary path) and the image's location replaced by placeholders."""
    placeholder = replace(
        image,
        kernel=Path(f"@image/{image.kernel.name}"),
        initrd=Path(f"@image/{image.initrd.name}"),
    )
    return qemu_argv(
        placeholder,
        replace(spec, tap="@tap"),
        serial_log=Path("@serial"),
        qmp_socket=Path("@qmp"),
        binary="@qemu",
    )


def snapshot_key(image: GuestImage, spec: GuestSpec, qemu: str) -> str:
    """32 hex digits naming the snapshot of guest `spec` on `image` under QEMU `qemu`
    (`qemu_identity`): any change to what the saved state depends on changes it."""
    h = hashlib.sha256()
    for part in (FORMAT, image.key, image.boot, qemu, *snapshot_argv(image, spec)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def snapshot_dir(image: GuestImage) -> Path:
    """Where `image`'s snapshots live: next to its kernel, in the image cache."""
    return image.kernel.parent / "snapshots"


def snapshot_path(directory: Path, key: str) -> Path:
    """The file of snapshot `key` in `directory` (ValueError for anything but a key)."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a snapshot key: {key!r}")
    return directory / f"{key}{SUFFIX}"


def lookup(directory: Path, key: str) -> Path | None:
    """The snapshot file of `key`, None if there is none or `directory` is not safely ours
    (marked used: pruning keeps it)."""
    path = snapshot_path(directory, key)
    try:
        if not _ours(os.lstat(directory), stat.S_ISDIR) or not _ours(os.lstat(path), stat.S_ISREG):
            return None
        os.utime(path)
    except OSError:
        return None
    return path


def open_snapshot(path: Path) -> int:
    """A read-only descriptor of a snapshot file for `-incoming fd:N`: never through a symlink,
    only a regular file of this user's (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not _ours(os.fstat(fd), stat.S_ISREG):
        os.close(fd)
        raise OSError(f"{path} is not a regular file of this user's, writable by nobody else")
    return fd


def _ours(st: os.stat_result, kind: Callable[[int], bool]) -> bool:
    """A file of kind `kind` owned by this user that nobody else can write to."""
    return kind(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def discard(path: Path) -> None:
    """Remove a snapshot (one that failed to load) and its side files."""
    for f in (path, path.with_suffix(".json"), path.with_suffix(".console")):
        with contextlib.suppress(OSError):
            f.unlink()


def prune(directory: Path, keep: int = KEEP) -> list[Path]:
    """Remove all but the `keep` most recently used snapshots in `directory`; returns the removed."""
    try:
        found = sorted(directory.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return []
    for old in found[keep:]:
        discard(old)
    return found[keep:]


def save(
    qmp: QMPClient,
    directory: Path,
    key: str,
    *,
    about: dict[str, Any],
    console: str = "",
    timeout: float = SAVE_TIMEOUT,
) -> Path:
    """Save the running guest behind `qmp` as snapshot `key` in `directory` (its migration stream,
    sent over a descriptor of a new file); the guest is stopped afterwards (QEMU's 'postmigrate').
    The file appears under its name only once complete. SnapshotError if QEMU fails."""
    path = snapshot_path(directory, key)
    tmp = directory / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        private_dir(directory)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except (KvlabError, OSError) as e:
        raise SnapshotError(f"guest snapshots in {directory}: {e}") from None
    try:
        try:
            qmp.pass_fd(fd, "kvlab-snapshot")
        finally:
            os.close(fd)
        qmp.execute("migrate-set-parameters", SAVE_PARAMETERS)
        qmp.execute("migrate", {"uri": "fd:kvlab-snapshot"})

        def finished() -> bool:
            info = qmp.execute("query-migrate")
            status = info.get("status")
            if status in ("failed", "cancelled"):
                raise SnapshotError(f"saving the guest {status}: {info.get('error-desc', 'no reason given')}")
            return status == "completed"

        eventually(finished, timeout=timeout, interval=0.02, what="QEMU to save the guest")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        meta = {"key": key, "about": about, "saved_at": time.time(), "bytes": tmp.stat().st_size}
        _write_atomic(path.with_suffix(".json"), json.dumps(meta, indent=2))
        _write_atomic(path.with_suffix(".console"), console)
        tmp.replace(path)
    except (QemuError, OSError, AssertionError) as e:
        raise SnapshotError(f"saving the guest as {path} failed: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    prune(directory)
    return path


def saved_console(path: Path) -> str:
    """The console of the boot a snapshot was saved from ('' if unknown)."""
    try:
        text = read_tail(path.with_suffix(".console"), CONSOLE_LIMIT, what="saved consoles")
    except (OSError, FileRefused):
        return ""
    return text.decode(errors="replace")


def _write_atomic(path: Path, text: str) -> None:
    replace_file(path, text.encode())  # a new file of a unique name: never a planted symlink
