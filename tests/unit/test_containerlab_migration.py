"""harness.runtime.containerlab.migration: KubeVirt's VMIM + VMI JSON as a MigrationRecord (the
netns runtime's format), from real-shaped objects in tests/data/containerlab/; and the driver
against a fake cluster (its waits, its end as the harness saw it, the VM's new place)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from clab_fakes import (
    KIND_NAMES,
    FakeCluster,
    load,
)

from harness.errors import LabError, WaitTimeout
from harness.record import MigrationRecord
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import migration as mg
from harness.runtime.containerlab import runtime as cl
from harness.state import LabState

pytestmark = pytest.mark.usefixtures("run_root")  # tests/unit/conftest.py

# -- the record -------------------------------------------------------------------------------------


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def record(vmim: str, vmi: str, **kw: Any) -> MigrationRecord:
    defaults: dict[str, Any] = {
        "vm": "vm1",
        "ip": "203.0.113.10",
        "source": "r1-n1",
        "target": "r2-n1",
        "started": ts("2026-06-02T03:14:07.4Z"),
        "node_names": KIND_NAMES,
    }
    return mg.record_from_kubevirt(load(vmim), load(vmi), **{**defaults, **kw})


def test_parse_time() -> None:
    assert mg.parse_time("2026-06-02T03:14:07Z") == ts("2026-06-02T03:14:07+00:00")
    assert mg.parse_time("2026-06-02T03:14:07.250000Z") == pytest.approx(ts("2026-06-02T03:14:07Z") + 0.25)
    assert mg.parse_time("2026-06-02T05:14:07+02:00") == ts("2026-06-02T03:14:07Z")
    assert mg.parse_time(None) is None
    assert mg.parse_time("") is None


def test_a_successful_migration() -> None:
    rec = record("vmim-succeeded.json", "vmi-after-success.json")
    assert (rec.status, rec.reason) == ("completed", None)
    assert (rec.vm, rec.ip, rec.source, rec.target) == ("vm1", "203.0.113.10", "r1-n1", "r2-n1")
    phases = [e["phase"] for e in rec.events if e["kind"] == "phase"]
    assert phases == list(mg.PHASES[:-1])  # Pending ... Running, Succeeded (not Failed)
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
    assert mg.outcome(vmim, load("vmi-after-success.json"), abort_reason="too late") == ("completed", None)


def test_only_this_migrations_state_counts() -> None:
    vmim = load("vmim-succeeded.json")
    vmi = load("vmi-after-failure.json")  # the VMI's state is of another (failed) migration
    assert mg.migration_state(vmim, vmi)["migrationUid"] == vmim["metadata"]["uid"]  # the VMIM's own
    del vmim["status"]["migrationState"]
    assert mg.migration_state(vmim, vmi) == {}
    assert mg.outcome(vmim, vmi) == ("completed", None)  # the VMIM phase decides


def test_a_failed_phase_without_migration_state() -> None:
    vmim = load("vmim-failed.json")
    del vmim["status"]["migrationState"]
    failed_early = {"phase": "Failed", "phaseTransitionTimestamp": "2026-06-02T03:20:35Z"}
    vmim["status"]["phaseTransitionTimestamps"] = [
        *vmim["status"]["phaseTransitionTimestamps"][:2],
        failed_early,
    ]
    rec = mg.record_from_kubevirt(
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
    assert mg.outcome(vmim, None) == ("failed", "quota exceeded")


def test_terminal_phases() -> None:
    assert mg.is_terminal(load("vmim-succeeded.json"))
    assert mg.is_terminal(load("vmim-failed.json"))
    assert not mg.is_terminal(load("vmim-aborted.json"))
    assert not mg.is_terminal(None)
    pending = copy.deepcopy(load("vmim-succeeded.json"))
    pending["status"] = {}
    assert mg.phase_of(pending) is None


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


def test_the_record_ends_when_the_harness_saw_the_end() -> None:
    vmim, vmi = load("vmim-succeeded.json"), load("vmi-after-success.json")
    end = mg.parse_time(vmim["status"]["migrationState"]["endTimestamp"])
    assert end is not None
    gap_start = end + 0.6  # a canary gap that began in the migration's last second
    whole_seconds = mg.record_from_kubevirt(
        vmim, vmi, vm="vm1", ip="203.0.113.10", source="r1-n1", target="r2-n1", started=end - 12
    )
    assert whole_seconds.ended == end
    assert not gap_start <= (whole_seconds.ended or 0)  # the failure the review found
    seen = mg.record_from_kubevirt(
        vmim, vmi, vm="vm1", ip="203.0.113.10", source="r1-n1", target="r2-n1", started=end - 12,
        ended=end + 0.85,
    )  # fmt: skip
    assert seen.started <= gap_start <= (seen.ended or 0)


# -- the driver -------------------------------------------------------------------------------------


def test_migrate_refuses_unknown_vms_and_nodes(clab: cl.ContainerlabRuntime) -> None:
    with pytest.raises(LabError, match="no VM 'vm9'"):
        clab.migrate("vm9", "r2-n1")
    with pytest.raises(LabError, match="no node 'x1' in cluster 'kv'"):
        clab.migrate("vm1", "x1")
    with pytest.raises(TypeError, match="bogus"):
        clab.migrate("vm1", "r2-n1", bogus=1)


def test_added_node_selector_by_kubevirt_version() -> None:
    assert mg.added_node_selector_supported("v1.8.4")
    assert mg.added_node_selector_supported("v1.6.0")
    assert not mg.added_node_selector_supported("v1.5.2")
    assert not mg.added_node_selector_supported("main")


class _Migrations(k.Kube):
    """A VMIM going through `phases`, one per get()."""

    def __init__(self, phases: list[str | None]):
        super().__init__(api_client=None, name="kv")
        self.phases = phases
        self.vmim = load("vmim-succeeded.json")

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        assert kind == "VirtualMachineInstanceMigration"
        phase = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
        if phase is None:
            return None
        return {**self.vmim, "status": {**self.vmim["status"], "phase": phase}}


def _migration(clab: cl.ContainerlabRuntime, kube: k.Kube) -> mg.KubevirtMigration:
    """The driver of a migration of vm1 to r2-n1 (kind node kv-worker2) named "m", on `kube`."""
    clab._kubes["kv"] = kube
    m = mg.KubevirtMigration(clab, "vm1", "r2-n1")
    m.name, m.last = "m", {"vmim": {}}
    return m


def test_the_migration_wait_notes_when_it_saw_the_end(clab: cl.ContainerlabRuntime) -> None:
    m = _migration(clab, _Migrations(["Running", "Running", "Succeeded"]))
    before = time.time()
    m.wait_end(10, aborting=False)
    assert before <= m.last["ended"] <= time.time()
    assert m.last["vmim"]["status"]["phase"] == "Succeeded"
    gone = _migration(clab, _Migrations([None]))
    gone.last = {"vmim": load("vmim-succeeded.json")}
    gone.wait_end(10, aborting=True)
    assert "ended" in gone.last
    with pytest.raises(WaitTimeout, match="VMIM m is gone"):
        _migration(clab, _Migrations([None])).wait_end(0.3, aborting=False)  # not ours to delete


def test_the_target_pod_has_its_own_deadline(
    clab: cl.ContainerlabRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = _migration(clab, _Migrations(["Scheduling", "Scheduled", "PreparingTarget", "TargetReady"]))
    m.wait_target()
    assert m.last["vmim"]["status"]["phase"] == "TargetReady"
    _migration(clab, _Migrations(["Failed"])).wait_target()  # ended before: not awaited
    monkeypatch.setitem(mg.DEADLINES, "migration target", 0.3)
    with pytest.raises(WaitTimeout, match=r"migration m: target pod on kv-worker2 ready .*phase Scheduling"):
        _migration(clab, _Migrations(["Scheduling"])).wait_target()


class MigratingCluster(FakeCluster):
    """vm1 on kv-control-plane; a VMIM created goes through `phases`, then the VMI is on kv-worker2."""

    def __init__(self, phases: list[str], *, moves: bool = True) -> None:
        super().__init__()
        self.phases = phases
        self.moves = moves
        self.created: list[dict[str, Any]] = []
        self.launchers = load("virt-launcher-pods-after-migration.json")["items"]

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.created.append(doc)
        return doc

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        if kind == "VirtualMachineInstanceMigration":
            phase = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
            vmim = load("vmim-succeeded.json")
            vmim["status"]["phase"] = phase
            return vmim
        if kind == "VirtualMachineInstance" and self.created and self.phases == ["Succeeded"] and self.moves:
            return load("vmi-after-success.json")
        return super().get(api_version, kind, name, namespace)


def _up(clab: cl.ContainerlabRuntime) -> cl.ContainerlabRuntime:
    """The lab state `up` records (where the migration records the VM's new place)."""
    clab.run_dir.mkdir(parents=True, exist_ok=True)
    LabState(lab="tlab", spec_path="x", spec_digest="x", runtime="containerlab", session_id="s").save(
        clab.run_dir
    )
    return clab


def test_a_migration_through_the_runtime(clab: cl.ContainerlabRuntime) -> None:
    kube = MigratingCluster(["Scheduling", "Scheduled", "TargetReady", "Running", "Succeeded"])
    clab._kubes["kv"] = kube
    before = time.time()
    record = _up(clab).migrate("vm1", "r2-n1", watch=False)
    assert (record.status, record.source, record.target) == ("completed", "r1-n1", "r2-n1")
    (vmim,) = kube.created
    assert vmim["spec"] == {"vmiName": "vm1", "addedNodeSelector": {"kubernetes.io/hostname": "kv-worker2"}}
    assert before <= (record.ended or 0) <= time.time()  # seen by the harness, not KubeVirt's seconds
    convergence = clab.priorities("r2-n1").convergence
    assert record.convergence_until == pytest.approx((record.ended or 0) + convergence)
    assert clab.vm_location("vm1") == {"node": "r2-n1", "ifname": "eth0", "guest": None}
    phases = [e["phase"] for e in record.events if e["source"] == "harness" and e["kind"] == "phase"]
    assert phases == ["migration requested", "completed"]


def test_a_migrated_vm_whose_pod_lacks_the_mac_fails_the_migration(clab: cl.ContainerlabRuntime) -> None:
    kube = MigratingCluster(["TargetReady", "Succeeded"])
    del kube.launchers[1]["metadata"]["annotations"][kv.CALICO_MAC_ANNOTATION]
    clab._kubes["kv"] = kube
    with pytest.raises(LabError, match=r"virt-launcher pod virt-launcher-vm1-tq7fd on kv-worker2 has"):
        _up(clab).migrate("vm1", "r2-n1", watch=False)


def test_a_migration_whose_vmi_stays_put_says_so(
    clab: cl.ContainerlabRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(mg.DEADLINES, "moved", 0.3)
    clab._kubes["kv"] = MigratingCluster(["TargetReady", "Succeeded"], moves=False)
    with pytest.raises(
        WaitTimeout, match=r"VMI vm1 on r2-n1 \(kv-worker2\) after its migration.*runs on kv-control"
    ):
        _up(clab).migrate("vm1", "r2-n1", watch=False)
