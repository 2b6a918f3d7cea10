"""The agent host: every node agent of a lab in one process, each in its node's namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import netlink
from harness.runtime.netns.agent import AgentClient
from harness.wait import eventually

pytestmark = [pytest.mark.netns, pytest.mark.netns_only("runs node agents in namespaces of its own")]
HOST = [sys.executable, "-m", "harness.runtime.netns.agenthost", "--config"]


def thread_namespaces(pid: int) -> set[int]:
    """The network namespaces (inode numbers) the process's threads are in."""
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.add(Path(task / "ns" / "net").stat().st_ino)
        except OSError:
            continue
    return out


def _node(tmp: Path, name: str, netns: str) -> dict[str, str]:
    d = tmp / name
    d.mkdir()
    config = {"node": name, "socket": str(d / "agent.ctl"), "workloads": []}
    (d / "agent.json").write_text(json.dumps(config))
    return {"node": name, "netns": netns, "config": str(d / "agent.json")}


def test_each_node_answers_from_its_own_namespace_and_a_failed_node_ends_the_host(tmp_path: Path) -> None:
    names = [f"kvtest-agh-{i}" for i in range(2)]
    for ns in names:
        netlink.create_namespace(ns)
    proc = None
    try:
        nodes = [_node(tmp_path, f"n{i}", ns) for i, ns in enumerate(names)]
        (tmp_path / "agents.json").write_text(json.dumps({"nodes": nodes}))
        argv = [
            sys.executable,
            "-m",
            "harness.runtime.netns.agenthost",
            "--config",
            str(tmp_path / "agents.json"),
        ]
        proc = subprocess.Popen(argv)
        for node in nodes:
            client = AgentClient(Path(node["config"]).with_name("agent.ctl"))
            reply = eventually(
                lambda c=client: c.call("ping"), timeout=20, interval=0.05, what="ping", transient=(OSError,)
            )
            assert reply["node"] == node["node"]
        inodes = {netlink.ns_path(ns).stat().st_ino for ns in names}
        assert inodes <= thread_namespaces(proc.pid)  # a thread in each node's namespace
        assert proc.poll() is None
        netlink.remove_namespace(names[1])
        bad = _node(tmp_path, "gone", names[1])  # a namespace that no longer exists
        (tmp_path / "agents2.json").write_text(json.dumps({"nodes": [nodes[0], bad]}))
        proc.terminate()
        proc.wait(10)
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.runtime.netns.agenthost",
                "--config",
                str(tmp_path / "agents2.json"),
            ],
            timeout=30,
        )
        assert res.returncode == 1
        log = (tmp_path / "gone" / "agent.log").read_text()
        assert "node agent of gone ended" in log
        assert "FileNotFoundError" in log
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for ns in names:
            netlink.remove_namespace(ns)
