"""A lab is healthy only if its guests are: `kvlab up` never calls a lab with a dead VM "reused",
and never destroys a lab of the same name built from another spec without being asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from labfiles import lab_data, write_lab_data

from harness import tcpcheck
from harness.generate import fabric_lab, write_lab
from harness.instances import down_lab
from harness.lab import Lab
from harness.wait import eventually

pytestmark = pytest.mark.netns_only("kills the netns runtime's guests and reads its namespaces")
REPO = Path(__file__).resolve().parents[2]
KVLAB = [sys.executable, "-m", "harness.cli"]


def kvlab(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KVLAB, *argv], capture_output=True, text=True, timeout=180, cwd=REPO, check=False)


@pytest.fixture
def name() -> str:
    """A unique instance name, torn down whatever the test did."""
    lab_name = Lab.unique_name("health")
    yield lab_name
    down_lab(lab_name)


def test_up_rebuilds_a_lab_whose_qemu_vm_died_and_says_so(name: str, tmp_path: Path) -> None:
    path = write_lab_data(lab_data("default"), tmp_path / "default.yml")
    assert kvlab("up", str(path), "--name", name).returncode == 0
    lab = Lab.attach(name)
    assert lab.is_running()
    pid = lab.runtime.qemu.pid("vm1", lab.vm_location("vm1")["guest"])  # type: ignore[attr-defined]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    eventually(
        lambda: any("vm1: its QEMU" in p for p in lab.runtime.problems()),
        timeout=5,
        what="the dead QEMU to count as a problem",
    )
    res = kvlab("up", str(path), "--name", name)
    assert res.returncode == 0, res.stderr
    assert "reused" not in res.stderr
    assert f"lab '{name}' was not healthy (vm1: its QEMU" in res.stderr
    assert Lab.attach(name).is_running()
    tcpcheck.assert_reachable(lab, "ext1", lab.vm("vm1").ip)


def test_a_mock_vm_whose_guest_died_is_not_healthy(name: str, tmp_path: Path) -> None:
    lab = Lab.from_file(write_lab(fabric_lab(1, 2, name="hmock"), tmp_path / "hmock.yml"), name=name).up()
    assert lab.runtime.problems() == []
    pid = int((lab.runtime.entity_dir("vm1") / "guest.pid").read_text())  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGKILL)
    eventually(
        lambda: lab.runtime.problems() == ["vm1: its mock guest's echo server is not running"],
        timeout=5,
        what="the dead mock guest to count as the lab's one problem",
    )
    assert not lab.is_running()


def test_another_spec_under_a_running_name_is_refused_unless_replaced(name: str, tmp_path: Path) -> None:
    first = write_lab(fabric_lab(1, 1, name="hfirst"), tmp_path / "first.yml")
    second = write_lab(fabric_lab(2, 1, name="hsecond"), tmp_path / "second.yml")
    assert kvlab("up", str(first), "--name", name).returncode == 0
    refused = kvlab("up", str(second), "--name", name)
    assert refused.returncode == 2, refused.stderr
    assert f"a lab named '{name}' already exists, built from another spec" in refused.stderr
    assert "--replace" in refused.stderr
    still = Lab.attach(name)
    assert still.spec.source == str(first.resolve())
    assert all(s.established for s in still.sessions())
    replaced = kvlab("up", str(second), "--name", name, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert "was replaced" in replaced.stderr
    assert Lab.attach(name).spec.source == str(second.resolve())
