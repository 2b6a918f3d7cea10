"""The pure parts of guest snapshots (harness/runtime/netns/snapshot.py): what the key covers,
the argv it is computed from, where files go, pruning. No QEMU, no root."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from harness.runtime.netns import snapshot
from harness.runtime.netns.guestimage import GuestImage
from harness.runtime.netns.qemu import GuestSpec

IMAGE = GuestImage(Path("/cache/k1/vmlinux"), Path("/cache/k1/initrd.gz"), "k1", {}, boot="pvh")
SPEC = GuestSpec(name="vm1", ip="203.0.113.10", mac="52:54:00:00:00:10", tap="cali0123456789a")
QEMU = "/usr/bin/qemu-system-x86_64:123:456"


def key(image: GuestImage = IMAGE, spec: GuestSpec = SPEC, qemu: str = QEMU) -> str:
    return snapshot.snapshot_key(image, spec, qemu)


def test_the_key_is_32_hex_digits_and_stable() -> None:
    assert len(key()) == 32
    assert int(key(), 16) >= 0
    assert key() == key()


@pytest.mark.parametrize(
    "changed",
    [
        {"spec": replace(SPEC, ip="203.0.113.11")},
        {"spec": replace(SPEC, ip6="2001:db8::10")},
        {"spec": replace(SPEC, mac="52:54:00:00:00:11")},
        {"spec": replace(SPEC, name="vm2")},
        {"spec": replace(SPEC, port=7008)},
        {"spec": replace(SPEC, memory_mb=256)},
        {"spec": replace(SPEC, append="quiet")},
        {"image": replace(IMAGE, key="k2")},
        {"image": replace(IMAGE, boot="bzImage")},
        {"image": replace(IMAGE, initrd=Path("/cache/k1/initrd-nested.gz"))},
        {"qemu": "/usr/bin/qemu-system-x86_64:124:456"},
    ],
)
def test_whatever_the_saved_guest_depends_on_changes_the_key(changed: dict) -> None:
    assert key(**changed) != key()


def test_what_belongs_to_one_instance_does_not_change_the_key() -> None:
    """The tap's name is the host's side; console, QMP and image paths differ per instance or cache."""
    assert key(spec=replace(SPEC, tap="tap-other")) == key()
    moved = replace(IMAGE, kernel=Path("/other/k1/vmlinux"), initrd=Path("/other/k1/initrd.gz"))
    assert key(image=moved) == key()


def test_the_argv_keeps_the_guest_identity_and_drops_the_instance_paths() -> None:
    argv = snapshot.snapshot_argv(IMAGE, replace(SPEC, ip6="2001:db8::10"))
    text = " ".join(argv)
    assert argv[0] == "@qemu"
    assert "mac=52:54:00:00:00:10" in text
    assert "kvlab.ip=203.0.113.10" in text
    assert "kvlab.ip6=2001:db8::10" in text
    assert "ifname=@tap" in text
    assert SPEC.tap not in text
    assert "/cache" not in text
    assert "@image/vmlinux" in argv
    assert "-incoming" not in argv


def test_paths_are_keys_only(tmp_path: Path) -> None:
    assert snapshot.snapshot_path(tmp_path, key()) == tmp_path / f"{key()}.vmstate"
    for hostile in ("../../etc/passwd", "a" * 31, key().upper(), f"{key()}/x", ""):
        with pytest.raises(ValueError, match="not a snapshot key"):
            snapshot.snapshot_path(tmp_path, hostile)


def test_lookup_finds_files_and_refuses_symlinks(tmp_path: Path) -> None:
    k = key()
    assert snapshot.lookup(tmp_path, k) is None
    (tmp_path / "target").write_bytes(b"x")
    (tmp_path / f"{k}.vmstate").symlink_to(tmp_path / "target")
    assert snapshot.lookup(tmp_path, k) is None
    (tmp_path / f"{k}.vmstate").unlink()
    (tmp_path / f"{k}.vmstate").write_bytes(b"state")
    assert snapshot.lookup(tmp_path, k) == tmp_path / f"{k}.vmstate"


def test_prune_keeps_the_most_recently_used(tmp_path: Path) -> None:
    keys = [f"{i:032x}" for i in range(5)]
    for age, k in enumerate(keys):
        for suffix in (".vmstate", ".json", ".console"):
            p = tmp_path / f"{k}{suffix}"
            p.write_text(k)
            os.utime(p, (1000 + age, 1000 + age))
    snapshot.lookup(tmp_path, keys[0])  # used now: the newest
    removed = snapshot.prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == [f"{k}.vmstate" for k in keys[1:4]]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(f"{k}{s}" for k in (keys[0], keys[4]) for s in (".vmstate", ".json", ".console"))


def test_snapshots_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(snapshot.ENV, raising=False)
    assert snapshot.enabled()
    for off in ("0", "off", "no", "False"):
        monkeypatch.setenv(snapshot.ENV, off)
        assert not snapshot.enabled()
    monkeypatch.setenv(snapshot.ENV, "1")
    assert snapshot.enabled()


def test_qemu_identity_changes_with_the_binary(tmp_path: Path) -> None:
    binary = tmp_path / "qemu"
    binary.write_bytes(b"v1")
    first = snapshot.qemu_identity(str(binary))
    binary.write_bytes(b"v2 longer")
    assert snapshot.qemu_identity(str(binary)) != first
    link = tmp_path / "link"
    link.symlink_to(binary)
    assert snapshot.qemu_identity(str(link)) == snapshot.qemu_identity(str(binary))


def test_lookup_and_open_refuse_files_others_can_write(tmp_path: Path) -> None:
    k = key()
    path = tmp_path / f"{k}.vmstate"
    path.write_bytes(b"state")
    path.chmod(0o666)
    assert snapshot.lookup(tmp_path, k) is None
    with pytest.raises(OSError, match="not a regular file of this user's"):
        snapshot.open_snapshot(path)
    path.chmod(0o600)
    tmp_path.chmod(0o777)
    try:
        assert snapshot.lookup(tmp_path, k) is None
    finally:
        tmp_path.chmod(0o700)
    assert snapshot.lookup(tmp_path, k) == path
    os.close(snapshot.open_snapshot(path))
