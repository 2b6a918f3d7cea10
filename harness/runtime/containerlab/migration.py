"""KubeVirt's account of one live migration as a harness `MigrationRecord` (pure: JSON in, record out).

    record = record_from_kubevirt(vmim, vmi, vm="vm1", ip="203.0.113.10", source="r1-n1",
                                  target="r2-n1", started=t0, node_names={"kvlab-worker2": "r2-n1"})

`vmim` is the VirtualMachineInstanceMigration and `vmi` the VirtualMachineInstance as the API
server returned them (the last observed VMIM when it was deleted to abort). The record has the
netns runtime's format (`MigrationRecord.to_json()`); its events:

- `{"source": "kubevirt", "kind": "phase", "phase": P}` for each entry of the VMIM's
  `status.phaseTransitionTimestamps` (Pending, Scheduling, Scheduled, PreparingTarget,
  TargetReady, Running, Succeeded or Failed);
- `{"source": "kubevirt", "kind": "migration", "event": E, ...}` from the VMI's
  `status.migrationState`, when it belongs to this VMIM (`migrationUid`): `start`
  (startTimestamp, with sourceNode/targetNode), `target-domain-ready`
  (targetNodeDomainReadyTimestamp), `end` (endTimestamp, with completed/failed/abortStatus);
- the caller's own (harness) events, e.g. when the VMIM was created or its abort requested.

KubeVirt's timestamps have one-second resolution: the record starts at the earlier of `started`
and the first KubeVirt timestamp, so no event lies before it. Status is `completed` when the
VMIM reached Succeeded (or the migration state says completed and neither failed nor aborted),
else `failed`, with the reason: the abort reason the caller gave, else migrationState's
failureReason, else the VMIM's failure condition, else the phase it ended in.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from typing import Any

from harness.record import MigrationRecord

SOURCE = "kubevirt"
SUCCEEDED, FAILED = "Succeeded", "Failed"
TERMINAL_PHASES = (SUCCEEDED, FAILED)
PHASES = ("Pending", "Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running", *TERMINAL_PHASES)
"""VirtualMachineInstanceMigration phases, in order."""
ABORT_SUCCEEDED = "Succeeded"
ABORT_REQUESTED = "migrationAbortRequested"  # a VMIM condition type


def parse_time(value: str | None) -> float | None:
    """A Kubernetes timestamp ('2026-05-01T10:00:03Z', with or without fractions) as epoch seconds."""
    if not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    stamp = _dt.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=_dt.UTC)
    return stamp.timestamp()


def _status(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict((obj or {}).get("status") or {})


def migration_state(vmim: Mapping[str, Any], vmi: Mapping[str, Any] | None) -> dict[str, Any]:
    """The migration state of this migration: the VMI's `status.migrationState` when its
    migrationUid is the VMIM's (else the VMIM's own `status.migrationState`, newer KubeVirt), or {}."""
    uid = (vmim.get("metadata") or {}).get("uid")
    state = _status(vmi).get("migrationState") or {}
    if state and (uid is None or state.get("migrationUid") in (None, uid)):
        return dict(state)
    own = _status(vmim).get("migrationState") or {}
    return dict(own)


def phase_of(vmim: Mapping[str, Any]) -> str | None:
    return _status(vmim).get("phase")


def is_terminal(vmim: Mapping[str, Any] | None) -> bool:
    return vmim is not None and phase_of(vmim) in TERMINAL_PHASES


def outcome(
    vmim: Mapping[str, Any], vmi: Mapping[str, Any] | None, *, abort_reason: str | None = None
) -> tuple[str, str | None]:
    """('completed', None) or ('failed', reason) for a migration that has ended."""
    phase = phase_of(vmim)
    state = migration_state(vmim, vmi)
    aborted = state.get("abortStatus") == ABORT_SUCCEEDED or abort_reason is not None
    if phase == SUCCEEDED or (
        phase != FAILED and state.get("completed") and not state.get("failed") and not aborted
    ):
        return "completed", None
    if abort_reason is not None:
        return "failed", abort_reason
    if state.get("failureReason"):
        return "failed", str(state["failureReason"])
    failed_cond = next(
        (
            c
            for c in _status(vmim).get("conditions") or []
            if phase == FAILED
            and c.get("type") != ABORT_REQUESTED
            and c.get("status") == "True"
            and (c.get("message") or c.get("reason"))
        ),
        None,
    )
    if failed_cond is not None:
        return "failed", str(failed_cond.get("message") or failed_cond.get("reason"))
    if state.get("abortStatus"):
        return "failed", f"aborted (abortStatus {state['abortStatus']})"
    return "failed", f"migration ended in phase {phase or 'unknown'}"


def kubevirt_events(
    vmim: Mapping[str, Any], vmi: Mapping[str, Any] | None, node_names: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The VMIM's phase transitions and the VMI's migration milestones as record events."""
    names = dict(node_names or {})
    events: list[dict[str, Any]] = []
    for entry in _status(vmim).get("phaseTransitionTimestamps") or []:
        t = parse_time(entry.get("phaseTransitionTimestamp"))
        if t is not None and entry.get("phase"):
            events.append({"t": t, "source": SOURCE, "kind": "phase", "phase": entry["phase"]})
    state = migration_state(vmim, vmi)

    def node(key: str) -> str | None:
        value = state.get(key)
        return names.get(value, value) if value else None

    milestones = (
        ("start", "startTimestamp", {"source_node": node("sourceNode"), "target_node": node("targetNode")}),
        ("target-domain-ready", "targetNodeDomainReadyTimestamp", {"target_node": node("targetNode")}),
        (
            "end",
            "endTimestamp",
            {
                "completed": bool(state.get("completed")),
                "failed": bool(state.get("failed")),
                "abort_status": state.get("abortStatus"),
                "failure_reason": state.get("failureReason"),
                "mode": state.get("mode"),
            },
        ),
    )
    for name, key, extra in milestones:
        t = parse_time(state.get(key))
        if t is not None:
            fields = {k: v for k, v in extra.items() if v is not None}
            events.append({"t": t, "source": SOURCE, "kind": "migration", "event": name, **fields})
    return events


def record_from_kubevirt(
    vmim: Mapping[str, Any],
    vmi: Mapping[str, Any] | None,
    *,
    vm: str,
    ip: str,
    source: str,
    target: str,
    started: float,
    node_names: Mapping[str, str] | None = None,
    abort_reason: str | None = None,
    harness_events: Iterable[dict[str, Any]] = (),
    ended: float | None = None,
) -> MigrationRecord:
    """A MigrationRecord (spec node names) of a migration KubeVirt has finished (see module doc).

    `ended` is when the harness saw the end; without it, the migration state's endTimestamp
    or the terminal phase's timestamp is used.
    """
    events = kubevirt_events(vmim, vmi, node_names) + [dict(e) for e in harness_events]
    status, reason = outcome(vmim, vmi, abort_reason=abort_reason)
    first = min((e["t"] for e in events), default=started)
    record = MigrationRecord(vm=vm, ip=ip, source=source, target=target, started=min(started, first))
    record.status, record.reason = status, reason
    if ended is None:
        state = migration_state(vmim, vmi)
        ended = parse_time(state.get("endTimestamp"))
        if ended is None:
            terminal = [e["t"] for e in events if e["kind"] == "phase" and e.get("phase") in TERMINAL_PHASES]
            ended = max(terminal, default=None)
    record.ended = ended
    record.events = sorted(events, key=lambda e: e["t"])
    return record
