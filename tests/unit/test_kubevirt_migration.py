"""harness.runtime.containerlab.migration: KubeVirt's VMIM + VMI JSON as a MigrationRecord (the netns
runtime's format), from real-shaped objects in tests/data/containerlab/."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from harness.runtime.containerlab import migration as km

DATA = Path(__file__).resolve().parents[1] / "data" / "containerlab"
NAMES = {"kv-control-plane": "r1-n1", "kv-worker": "r1-n2", "kv-worker2": "r2-n1", "kv-worker3": "r2-n2"}


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def record(vmim: str, vmi: str, **kw: Any) -> km.MigrationRecord:
    defaults: dict[str, Any] = {
        "vm": "vm1",
        "ip": "203.0.113.10",
        "source": "r1-n1",
        "target": "r2-n1",
        "started": ts("2026-06-02T03:14:07.4Z"),
        "node_names": NAMES,
    }
    return km.record_from_kubevirt(load(vmim), load(vmi), **{**defaults, **kw})


def test_parse_time() -> None:
    assert km.parse_time("2026-06-02T03:14:07Z") == ts("2026-06-02T03:14:07+00:00")
    assert km.parse_time("2026-06-02T03:14:07.250000Z") == pytest.approx(ts("2026-06-02T03:14:07Z") + 0.25)
    assert km.parse_time("2026-06-02T05:14:07+02:00") == ts("2026-06-02T03:14:07Z")
    assert km.parse_time(None) is None
    assert km.parse_time("") is None


def test_a_successful_migration() -> None:
    rec = record("vmim-succeeded.json", "vmi-after-success.json")
    assert (rec.status, rec.reason) == ("completed", None)
    assert (rec.vm, rec.ip, rec.source, rec.target) == ("vm1", "203.0.113.10", "r1-n1", "r2-n1")
    phases = [e["phase"] for e in rec.events if e["kind"] == "phase"]
    assert phases == list(km.PHASES[:-1])  # Pending ... Running, Succeeded (not Failed)
    assert rec.first(kind="phase", phase="Succeeded")["t"] == ts("2026-06-02T03:14:19Z")
    milestones = {e["event"]: e for e in rec.events if e["kind"] == "migration"}
    assert list(milestones) == ["start", "target-domain-ready", "end"]
    assert milestones["start"]["source_node"] == "r1-n1"  # kind node names mapped to the spec's
    assert milestones["start"]["target_node"] == "r2-n1"
    assert milestones["target-domain-ready"]["t"] == ts("2026-06-02T03:14:18Z")
    assert milestones["end"]["completed"] is True
    assert milestones["end"]["failed"] is False
    assert milestones["end"]["mode"] == "PreCopy"
    assert all(e["source"] == "kubevirt" for e in rec.events)
    assert rec.ended == ts("2026-06-02T03:14:19Z")
    # KubeVirt's whole seconds: the record starts at the earlier of harness start and the first stamp.
    assert rec.started == ts("2026-06-02T03:14:07Z")
    doc = rec.to_json()
    assert doc["duration_ms"] == 12000.0
    assert [e["ms"] for e in doc["events"]] == sorted(e["ms"] for e in doc["events"])
    assert min(e["ms"] for e in doc["events"]) >= 0


def test_a_failed_migration_carries_kubevirts_failure_reason() -> None:
    rec = record(
        "vmim-failed.json",
        "vmi-after-failure.json",
        source="r2-n1",
        target="r2-n2",
        started=ts("2026-06-02T03:20:31Z"),
    )
    assert rec.status == "failed"
    assert rec.reason is not None
    assert rec.reason.startswith("Live migration failed error encountered")
    assert [e["phase"] for e in rec.events if e["kind"] == "phase"][-1] == "Failed"
    end = rec.first(kind="migration", event="end")
    assert end is not None
    assert end["failed"] is True
    assert end["failure_reason"] == rec.reason
    assert rec.first(kind="migration", event="target-domain-ready") is None  # the target never got there
    assert rec.ended == ts("2026-06-02T03:20:44Z")


def test_an_aborted_migration() -> None:
    kw = {"source": "r2-n1", "target": "r1-n2", "started": ts("2026-06-02T03:31:02Z")}
    rec = record("vmim-aborted.json", "vmi-after-abort.json", abort_reason="target pod failed", **kw)
    assert (rec.status, rec.reason) == ("failed", "target pod failed")  # the harness's reason, as on netns
    end = rec.first(kind="migration", event="end")
    assert end is not None
    assert end["abort_status"] == "Succeeded"
    assert rec.ended == ts("2026-06-02T03:31:10Z")
    # Without the harness's reason, KubeVirt's abort status explains it.
    rec = record("vmim-aborted.json", "vmi-after-abort.json", **kw)
    assert (rec.status, rec.reason) == ("failed", "aborted (abortStatus Succeeded)")


def test_an_abort_that_came_too_late_is_reported_as_a_completed_migration() -> None:
    """A VMIM deleted after KubeVirt finished: the record says what happened, not what was asked."""
    vmim = load("vmim-succeeded.json")
    assert km.outcome(vmim, load("vmi-after-success.json"), abort_reason="too late") == ("completed", None)


def test_only_this_migrations_state_counts() -> None:
    vmim = load("vmim-succeeded.json")
    vmi = load("vmi-after-failure.json")  # the VMI's state is of another (failed) migration
    assert km.migration_state(vmim, vmi)["migrationUid"] == vmim["metadata"]["uid"]  # the VMIM's own
    del vmim["status"]["migrationState"]
    assert km.migration_state(vmim, vmi) == {}
    assert km.outcome(vmim, vmi) == ("completed", None)  # the VMIM phase decides


def test_a_failed_phase_without_migration_state() -> None:
    vmim = load("vmim-failed.json")
    del vmim["status"]["migrationState"]
    failed_early = {"phase": "Failed", "phaseTransitionTimestamp": "2026-06-02T03:20:35Z"}
    vmim["status"]["phaseTransitionTimestamps"] = [
        *vmim["status"]["phaseTransitionTimestamps"][:2],
        failed_early,
    ]
    rec = km.record_from_kubevirt(
        vmim,
        None,
        vm="vm1",
        ip="203.0.113.10",
        source="r2-n1",
        target="r2-n2",
        started=ts("2026-06-02T03:20:31Z"),
    )
    assert (rec.status, rec.reason) == ("failed", "migration ended in phase Failed")
    assert rec.ended == ts("2026-06-02T03:20:35Z")
    vmim["status"]["conditions"] = [
        {"type": "migrationRejectedByResourceQuota", "status": "True", "message": "quota exceeded"}
    ]
    assert km.outcome(vmim, None) == ("failed", "quota exceeded")


def test_terminal_phases() -> None:
    assert km.is_terminal(load("vmim-succeeded.json"))
    assert km.is_terminal(load("vmim-failed.json"))
    assert not km.is_terminal(load("vmim-aborted.json"))
    assert not km.is_terminal(None)
    pending = copy.deepcopy(load("vmim-succeeded.json"))
    pending["status"] = {}
    assert km.phase_of(pending) is None


def test_harness_events_are_merged_in_time_order() -> None:
    t0 = ts("2026-06-02T03:14:07.4Z")
    mine = [
        {"t": t0, "source": "harness", "kind": "phase", "phase": "migration requested"},
        {"t": ts("2026-06-02T03:14:18.5Z"), "source": "bird:tor2", "kind": "route", "router": "tor2"},
    ]
    rec = record("vmim-succeeded.json", "vmi-after-success.json", harness_events=mine, ended=t0 + 12.0)
    assert rec.ended == t0 + 12.0
    times = [e["t"] for e in rec.events]
    assert times == sorted(times)
    assert rec.first(source="bird:tor2")["t"] > rec.first(kind="migration", event="target-domain-ready")["t"]
    assert rec.first(phase="migration requested") is not None


def test_the_record_draws_as_a_timeline(tmp_path: Path) -> None:
    from harness.timeline import write_artifacts

    rec = record("vmim-failed.json", "vmi-after-failure.json", source="r2-n1", target="r2-n2")
    rec.started = ts("2026-06-02T03:20:31Z")
    json_path, png_path = write_artifacts(rec.to_json(), tmp_path, "failed")
    assert json.loads(json_path.read_text())["status"] == "failed"
    assert png_path.stat().st_size > 1000
