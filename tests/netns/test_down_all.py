"""`kvlab down --all` takes down this run root's labs, never a running lab of another run root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import netlink
from harness.instances import labs_to_take_down
from harness.state import lab_lock
from harness.wait import eventually

pytestmark = [pytest.mark.netns, pytest.mark.netns_only("creates namespaces of a foreign run root")]


def test_a_lab_of_another_run_root_is_not_ours_to_take_down(tmp_path: Path) -> None:
    lab = f"foreign-{os.getpid()}"
    ns = f"kvlab.{lab}.n1"
    other_root = tmp_path / "other-root"
    netlink.create_namespace(ns)
    proc = None
    try:
        # a process of that lab naming a file of the other run root, as its BIRDs and agents do
        code = "import time\nwhile True: time.sleep(60)"
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code, f"{other_root}/{lab}/bird.conf"]
        )
        eventually(lambda: netlink.namespace_pids(ns), timeout=10, interval=0.05, what="the process inside")
        assert lab not in labs_to_take_down()
        proc.kill()
        proc.wait(10)
        # nothing runs in it now, but an `up` holds the name (machine-wide): it is being built
        with lab_lock(lab):
            assert lab not in labs_to_take_down()
        # a namespace nobody owns or builds: a leftover (unless a concurrent reaper took it first)
        assert lab in labs_to_take_down() or not netlink.namespace_exists(ns)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if netlink.namespace_exists(ns):
            netlink.remove_namespace(ns)
