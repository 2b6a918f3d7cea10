"""A nested node in a QEMU guest boots from a per-VM initrd, `<run>/<lab>/<vm>/initrd-nested.gz`,
written as root: names with path tricks never make it a path elsewhere, and symlinks planted in
the run directory are never followed to write a file elsewhere (real files, a real run directory;
the guest image is a stand-in initrd, as in test_guestimage)."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from labfiles import cluster_of, issues_of

from harness.errors import UnsafePathError
from harness.lab import Lab
from harness.labfile import load_lab
from harness.runtime.netns import guestimage as gi
from harness.runtime.netns.guestimage import CpioEntry, GuestImage, cpio_newc
from harness.runtime.netns.vms import NESTED_INITRD
from harness.state import lab_dir, private_dir

LABS = Path(__file__).resolve().parents[2] / "labs"
CONF = "router id 203.0.113.10;\n"
POD = "198.51.100.1"


@pytest.fixture
def vms(run_root: Path) -> Any:
    """The QEMU VMs of labs/nested-qemu.yml (vm-red hosts red-n1), its run directory made."""
    lab = Lab(load_lab(LABS / "nested-qemu.yml"), name="initrd")
    private_dir(run_root, 0o700)
    private_dir(lab_dir(lab.name))
    return lab.runtime.qemu  # type: ignore[attr-defined]


@pytest.fixture
def image(tmp_path: Path) -> GuestImage:
    base = tmp_path / "initrd.gz"
    base.write_bytes(gzip.compress(cpio_newc([CpioEntry("init", stat.S_IFREG | 0o755, b"x")])))
    return GuestImage(kernel=base, initrd=base, key="k", packages={"bird": "1.6.8-2.1+b1"})


@pytest.mark.parametrize(
    ("where", "name"),
    [("vm", "../../etc"), ("vm", "vm/../../x"), ("vm", "/etc"), ("node", "../red-n1"), ("node", "a/b")],
)
def test_vm_and_node_names_with_path_tricks_are_refused_by_the_lab_file(
    tmp_path: Path, where: str, name: str
) -> None:
    """The names a nested initrd's path is made of are names (the lab file's rule), never paths."""

    def change(data: dict[str, Any]) -> None:
        red = cluster_of(data, "red")["nodes"][0]
        if where == "vm":
            next(v for v in data["vms"] if v["name"] == "vm-red")["name"] = name
            red["vm"] = name
        else:
            red["name"] = name

    got = issues_of(tmp_path, "nested-qemu", change)
    field = "clusters[1].nodes[0].vm" if where == "vm" else "clusters[1].nodes[0].name"
    assert any(f" {field}: invalid name" in line for line in got), got


@pytest.mark.parametrize("vm", ["../../etc", "vm-red/../..", "/etc", "", "."])
def test_the_initrd_path_of_a_non_name_is_refused(vms: Any, vm: str) -> None:
    with pytest.raises(ValueError, match="not a VM name"):
        vms.nested_initrd(vm)


def test_the_initrd_of_a_vm_is_written_in_its_directory(vms: Any, image: GuestImage) -> None:
    out = gi.nested_initrd(image, CONF, POD, vms.nested_initrd("vm-red"))
    assert out == lab_dir("initrd") / "vm-red" / NESTED_INITRD
    assert stat.S_ISREG(os.lstat(out).st_mode)


def test_a_symlink_planted_as_the_vms_directory_is_not_written_through(
    vms: Any, image: GuestImage, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (lab_dir("initrd") / "vm-red").symlink_to(elsewhere)
    with pytest.raises(UnsafePathError, match="vm-red is not a directory"):
        gi.nested_initrd(image, CONF, POD, vms.nested_initrd("vm-red"))
    assert list(elsewhere.iterdir()) == []


def test_symlinks_planted_beside_the_initrd_are_not_written_through(
    vms: Any, image: GuestImage, tmp_path: Path
) -> None:
    """At the initrd's name and at the temporary names a writer would use (the old one: the
    name plus this pid): each symlink's target stays as it was."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = vms.nested_initrd("vm-red")
    private_dir(out.parent)
    for name in (out.name, f".{out.name}.{os.getpid()}", f"{out.name}.tmp"):
        (out.parent / name).symlink_to(victim)
    gi.nested_initrd(image, CONF, POD, out)
    assert victim.read_text() == "precious\n"
    assert stat.S_ISREG(os.lstat(out).st_mode)
    assert out.read_bytes().startswith(image.initrd.read_bytes())
