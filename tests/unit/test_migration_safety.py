"""The pieces that make a migration recoverable: its journal and lock, fail points, deferred
signals, the canary's verdict, and QEMU's migration statistics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from harness import failpoints, procs
from harness.canary.client import Gap
from harness.canary.controller import CanaryReport
from harness.lab import canary_verdict
from harness.runtime.netns.journal import MigrationInProgress, MigrationJournal, migration_lock
from harness.runtime.netns.vms import _with_statistics, boot_instance, new_instance


def journal(**kw: Any) -> MigrationJournal:
    base = dict(vm="vm1", source="r1-n1", target="r2-n1", source_if="eth0", target_if="eth1", backend="qemu")
    return MigrationJournal(**{**base, **kw})


def test_journal_survives_a_round_trip_and_records_each_phase(tmp_path: Path) -> None:
    j = journal(source_guest="qemu-r1-n1", target_guest="qemu-r2-n1-abcdef")
    j.enter("prepare", tmp_path)
    assert MigrationJournal.pending(tmp_path) == ["vm1"]
    j.enter("cutover", tmp_path)
    loaded = MigrationJournal.load(tmp_path, "vm1")
    assert loaded == j
    assert loaded is not None
    assert loaded.phase == "cutover"
    assert not list(MigrationJournal.directory(tmp_path).glob("*.tmp"))  # written by rename
    j.remove(tmp_path)
    assert MigrationJournal.pending(tmp_path) == []


def test_journal_refuses_an_unknown_phase(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown migration phase"):
        journal().enter("teleport", tmp_path)


@pytest.mark.parametrize("content", ["", "{not json", '{"vm": "vm1"}', "[]"])
def test_an_unreadable_journal_loads_as_none(tmp_path: Path, content: str) -> None:
    path = MigrationJournal.path(tmp_path, "vm1")
    path.parent.mkdir()
    path.write_text(content)
    assert MigrationJournal.load(tmp_path, "vm1") is None


def test_the_lock_tells_a_live_migration_from_a_dead_one(tmp_path: Path) -> None:
    journal(pid=12345).enter("cutover", tmp_path)
    in_progress = pytest.raises(MigrationInProgress, match=r"vm1 r1-n1 -> r2-n1 \(phase cutover, pid 12345\)")
    with migration_lock(tmp_path, "vm1"), in_progress, migration_lock(tmp_path, "vm1"):
        pass
    with migration_lock(tmp_path, "vm1"):  # free again once its holder let go
        pass


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    """The lock is the kernel's: a SIGKILLed holder leaves the journal but not the lock."""
    code = (
        "import sys, time; from pathlib import Path\n"
        "from harness.runtime.netns.journal import migration_lock\n"
        "with migration_lock(Path(sys.argv[1]), 'vm1'):\n    print('held', flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(MigrationInProgress), migration_lock(tmp_path, "vm1"):
            pass
        child.kill()
        child.wait(timeout=10)
        with migration_lock(tmp_path, "vm1"):
            pass
    finally:
        child.kill()
        child.wait(timeout=10)


def test_instance_directories_are_unique_per_start() -> None:
    assert boot_instance("r1-n1") == "qemu-r1-n1"
    names = {new_instance("r1-n1") for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith("qemu-r1-n1-") for n in names)


def test_failpoints_parse_actions_and_delays() -> None:
    assert failpoints._parse("a.b=kill, c=int@0.25,d=kill-target") == {
        "a.b": ("kill", 0.0),
        "c": ("int", 0.25),
        "d": ("kill-target", 0.0),
    }
    with pytest.raises(ValueError, match="unknown action 'explode'"):
        failpoints._parse("a=explode")


def test_an_unarmed_failpoint_does_nothing_and_kill_target_kills_the_named_process() -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        failpoints.arm("")
        failpoints.hit("x", target_pid=lambda: victim.pid)
        assert victim.poll() is None
        failpoints.arm("x=kill-target")
        failpoints.hit("y", target_pid=lambda: victim.pid)  # another name: nothing
        assert victim.poll() is None
        failpoints.hit("x", target_pid=lambda: victim.pid)
        assert victim.wait(timeout=10) == -signal.SIGKILL
    finally:
        failpoints.arm("")
        victim.kill()
        victim.wait(timeout=10)


def test_signals_are_held_until_the_block_ends_even_when_another_thread_receives_them() -> None:
    reached_end = []

    def block() -> None:
        with procs.signals_deferred():
            t = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
            t.start()
            t.join()
            for _ in range(1000):  # give Python every chance to run a handler in this thread
                sum(range(100))
            reached_end.append(True)

    with pytest.raises(KeyboardInterrupt):
        block()
    assert reached_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _report(**kw: Any) -> CanaryReport:
    base: dict[str, Any] = dict(
        target="203.0.113.10:7007", sent=100, echoed=100, lost=0, resets=0, same_connection=True,
        max_gap_ms=40.0, gaps=[],
    )  # fmt: skip
    return CanaryReport(**{**base, **kw})


def test_the_canary_verdict_fails_on_loss_resets_a_new_connection_or_an_open_gap() -> None:
    assert canary_verdict(_report()) is None
    assert canary_verdict(_report(lost=3, echoed=97)) == "3 message(s) lost"
    assert canary_verdict(_report(resets=1, same_connection=False)) == (
        "1 reset(s), the connection was replaced"
    )
    open_gap = Gap(start=1.0, end=3.0, ms=2000.0, open=True)
    assert canary_verdict(_report(gaps=[open_gap], max_gap=open_gap)) == (
        "still waiting for echoes when it stopped"
    )


class _Replies:
    """Stands in for a QMP client: query-migrate answers in turn."""

    def __init__(self, *answers: dict[str, Any]):
        self.answers = list(answers)

    def execute(self, command: str) -> dict[str, Any]:
        assert command == "query-migrate"
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_migration_statistics_are_waited_for_never_reported_as_zero() -> None:
    first = {"status": "completed", "total-time": 0, "downtime": 0}
    filled = {"status": "completed", "total-time": 431, "downtime": 3, "setup-time": 2}
    assert _with_statistics(_Replies(first, filled), first) == filled  # type: ignore[arg-type]
    never = _with_statistics(_Replies(first), first, timeout=0.05)  # type: ignore[arg-type]
    assert (never["total-time"], never["downtime"]) == (None, None)
