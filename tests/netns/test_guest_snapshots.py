"""A lab's QEMU guest starts from a snapshot of its booted guest (harness.runtime.netns.snapshot):
the first `up` of a VM identity boots it cold, saves it and restores it from the file; the next
ones restore it; a snapshot that does not load is removed and the guest boots cold. Whichever
way, the VM answers on its address from outside its node.

The VM here has an address no other lab file uses, so its snapshot is this test's alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labfiles import lab_data, write_lab_data

from harness import tcpcheck
from harness.instances import down_lab
from harness.lab import Lab
from harness.runtime.netns import snapshot
from harness.runtime.netns.qemu import require_qemu
from harness.runtime.netns.vms import SNAPSHOT_LOG, boot_instance

pytestmark = [
    pytest.mark.netns,
    pytest.mark.netns_only("reads the netns runtime's QEMU instance directories and the guest snapshots"),
]

VM_IP = "203.0.113.42"  # in r1-n1's block, used by no lab file


@pytest.fixture
def lab_file(tmp_path: Path) -> Path:
    data = lab_data("default")
    data["vms"] = [{"name": "vm1", "node": "r1-n1", "ip": VM_IP, "backend": "qemu"}]
    return write_lab_data(data, tmp_path / "snap.yml")


@pytest.fixture
def names() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        down_lab(name)


def up(path: Path, names: list[str]) -> tuple[Lab, str]:
    """The lab up under a new name, reachable; returns it and its guest's snapshot.log."""
    name = Lab.unique_name("snap")
    names.append(name)
    lab = Lab.from_file(path, name=name).up()
    tcpcheck.assert_reachable(lab, "ext1", VM_IP)
    log = lab.runtime.qemu.run_dir("vm1", boot_instance("r1-n1")) / SNAPSHOT_LOG  # type: ignore[attr-defined]
    text = log.read_text() if log.exists() else ""
    lab.down()
    return lab, text


def snapshot_file(path: Path) -> Path:
    lab = Lab.from_file(path, name=Lab.unique_name("snapkey"))
    vms: Any = lab.runtime.qemu  # type: ignore[attr-defined]
    w = lab.topo.workload("vm1")
    key = snapshot.snapshot_key(vms.image(), vms.spec(w), snapshot.qemu_identity(require_qemu()))
    return snapshot.snapshot_path(snapshot.snapshot_dir(vms.image()), key)


def test_a_guest_is_saved_once_restored_after_and_a_broken_snapshot_falls_back_to_a_cold_boot(
    lab_file: Path, names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(snapshot.ENV, raising=False)
    saved = snapshot_file(lab_file)
    snapshot.discard(saved)

    _, log = up(lab_file, names)  # no snapshot: a cold boot, saved, restored from the file
    assert "booted cold" in log
    assert f"saved snapshot {saved}" in log
    assert "restored, running" in log
    assert saved.is_file()
    assert "kvlab-guest: ready" in snapshot.saved_console(saved)

    _, log = up(lab_file, names)  # restored straight away
    assert "booted cold" not in log
    assert f"restoring snapshot {saved}" in log
    assert "restored, running" in log

    saved.write_bytes(saved.read_bytes()[: 4 << 20])  # a snapshot QEMU cannot load
    _, log = up(lab_file, names)
    assert "did not load" in log
    assert "load of migration failed" in log
    assert not saved.exists()  # removed; the next up saves a new one

    monkeypatch.setenv(snapshot.ENV, "0")
    _, log = up(lab_file, names)  # snapshots off: a cold boot, nothing saved
    assert "snapshot" not in log
    assert not saved.exists()
