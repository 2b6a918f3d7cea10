"""Felix's live-migration state machine (pure) and the agent's frame classifier."""

from __future__ import annotations

import socket

import pytest

from harness.calico import felix
from harness.calico import resources as cr
from harness.calico.livemigration import Priorities, State, VMRoute
from harness.runtime.netns.agent import classify_frame
from harness.runtime.netns.mockguest import garp_frame, rarp_frame

P = Priorities(normal=1024, elevated=512, convergence=30.0)
MAC, IP = "52:54:00:aa:bb:cc", "203.0.113.10"


def test_vm_running_here_has_the_normal_route() -> None:
    vm = VMRoute("vm1", P)
    t = vm.start(0.0, running_here=True)
    assert (t.state, t.metric) == (State.BASE, 1024)


def test_successful_migration_target_path() -> None:
    vm = VMRoute("vm1", P)
    vm.start(0.0, running_here=False)
    assert vm.metric is None
    assert vm.target_created(1.0).metric is None  # Target: suppressed
    assert vm.state is State.TARGET
    live = vm.activity(2.0, "RARP")
    assert live is not None
    assert (live.state, live.metric) == (State.LIVE, 512)
    tw = vm.migration_ended(3.0, succeeded=True)
    assert tw is not None
    assert (tw.state, tw.metric, vm.deadline) == (State.TIME_WAIT, 512, 33.0)
    assert vm.tick(32.9) is None
    back = vm.tick(33.0)
    assert back is not None
    assert (back.state, back.metric) == (State.BASE, 1024)


def test_announcements_only_count_in_target_state() -> None:
    vm = VMRoute("vm1", P)
    vm.start(0.0, running_here=True)
    assert vm.activity(1.0, "GARP") is None
    assert vm.state is State.BASE


def test_failed_migration_never_installs_a_route() -> None:
    vm = VMRoute("vm1", P)
    vm.start(0.0, running_here=False)
    vm.target_created(1.0)
    t = vm.migration_ended(2.0, succeeded=False)
    assert t is not None
    assert (t.state, t.metric) == (State.BASE, None)
    assert all(tr.metric is None for tr in vm.history)


def test_missed_garp_still_elevates_for_the_convergence_time() -> None:
    vm = VMRoute("vm1", P)
    vm.target_created(0.0)
    t = vm.migration_ended(1.0, succeeded=True)
    assert t is not None
    assert (t.state, t.metric) == (State.TIME_WAIT, 512)


def test_becoming_a_source_resets_to_base() -> None:
    vm = VMRoute("vm1", P)
    vm.target_created(0.0)
    vm.activity(1.0, "GARP")
    vm.migration_ended(2.0, succeeded=True)
    t = vm.became_source(3.0)
    assert (t.state, t.metric, vm.deadline) == (State.BASE, 1024, None)
    assert vm.tick(100.0) is None


def test_removed_vm_has_no_route() -> None:
    vm = VMRoute("vm1", P)
    vm.start(0.0, running_here=True)
    assert vm.removed(1.0).metric is None


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (garp_frame(MAC, IP), "GARP"),
        (rarp_frame(MAC), "RARP"),
        (garp_frame("52:54:00:aa:bb:cd", IP), None),  # another MAC
        (garp_frame(MAC, "203.0.113.11"), None),  # ARP for another sender IP
        (b"\x00" * 20, None),  # runt
    ],
)
def test_classify_frame(frame: bytes, expected: str | None) -> None:
    hw = bytes.fromhex(MAC.replace(":", ""))
    assert (
        classify_frame(frame.ljust(60, b"\x00") if len(frame) > 20 else frame, hw, socket.inet_aton(IP))
        == expected
    )


def test_priorities_from_felix_configuration() -> None:
    fc = cr.FelixConfiguration.model_validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"ipv4ElevatedRoutePriority": 100, "liveMigrationRouteConvergenceTime": "1m30s"},
        }
    )
    assert felix.priorities([fc]) == Priorities(normal=1024, elevated=100, convergence=90.0)
    assert felix.priorities([]) == Priorities(1024, 512, 30.0)


@pytest.mark.parametrize("bad", ["30", "s", "1x", "", "1m 30s"])
def test_bad_durations_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        cr.parse_duration(bad)
