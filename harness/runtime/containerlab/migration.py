"""The containerlab runtime's migration driver: a KubeVirt VirtualMachineInstanceMigration, and
KubeVirt's account of it as a harness `MigrationRecord` (the netns runtime's format).

    record = KubevirtMigration(runtime, "vm1", "r2-n1").run(watch=True)

The driver creates the VMIM (with `addedNodeSelector` for the target from KubeVirt v1.6.0 on; before
that it cordons the cluster's other nodes while the migration runs), waits for the target pod
(KubeVirt phase TargetReady, a deadline of its own: it may pull images), then for the end within
the lab's `timers.migration`, while a RouteWatcher records the routers' view of the VM's /32. With
`fail=REASON` it deletes the VMIM once the target is scheduled (KubeVirt aborts). A completed
migration moves the VM in the lab state, waits for the VMI's status to name its new node and
checks its pods' MAC.

    record = record_from_kubevirt(vmim, vmi, vm="vm1", ip="203.0.113.10", source="r1-n1",
                                  target="r2-n1", started=t0, node_names={"kvlab-worker2": "r2-n1"})

(pure: JSON in, record out). `vmim` is the VirtualMachineInstanceMigration and `vmi` the
VirtualMachineInstance as the API server returned them (the last observed VMIM when it was deleted
to abort). The record's events:

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

import contextlib
import datetime as _dt
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from harness.errors import LabError
from harness.record import MigrationRecord
from harness.routewatch import RouteWatcher
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab.host import ClabHost
from harness.runtime.containerlab.versions import minor_version
from harness.wait import eventually

SOURCE = "kubevirt"
SUCCEEDED, FAILED = "Succeeded", "Failed"
TERMINAL_PHASES = (SUCCEEDED, FAILED)
PHASES = ("Pending", "Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running", *TERMINAL_PHASES)
"""VirtualMachineInstanceMigration phases, in order."""
ABORT_SUCCEEDED = "Succeeded"
ABORT_REQUESTED = "migrationAbortRequested"  # a VMIM condition type
ADDED_NODE_SELECTOR_SINCE = (1, 6)  # KubeVirt serves VMIM spec.addedNodeSelector from v1.6.0
DEADLINES = {
    # The target pod scheduled and ready (KubeVirt phase TargetReady): the part that may pull
    # images; the migration itself then has the lab's timers.migration.
    "migration target": 300.0,
    "moved": 60.0,  # a migrated VMI's status naming its new node
}


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


def added_node_selector_supported(kubevirt: str) -> bool:
    """KubeVirt serves VirtualMachineInstanceMigration `spec.addedNodeSelector` (v1.6.0 on)."""
    minor = minor_version(kubevirt)
    return minor is not None and minor >= ADDED_NODE_SELECTOR_SINCE


class KubevirtMigration:
    """One live migration of a lab VM to spec node `to` through KubeVirt (module doc)."""

    def __init__(self, host: ClabHost, vm: str, to: str):
        manifest = host.manifest()
        assert manifest is not None  # required=True raises instead
        if vm not in manifest.get("vms", {}):
            raise LabError(f"no VM '{vm}' in lab '{host.lab}'")
        entry = manifest["vms"][vm]
        self.cluster, self.ip = entry["cluster"], entry["ip"]
        self.ip6: str | None = entry.get("ip6")  # dual stack: its /128 is watched too
        nodes = host.kind_clusters()[self.cluster]["nodes"]
        if to not in nodes:
            raise LabError(
                f"no node '{to}' in cluster '{self.cluster}' of lab '{host.lab}' (nodes: {', '.join(nodes)})"
            )
        self.host, self.manifest, self.vm, self.to = host, manifest, vm, to
        self.target_kind: str = nodes[to]
        self.kube = host.kube(self.cluster)
        self.name = f"kvlab-{vm}-{secrets.token_hex(3)}"
        self.last: dict[str, Any] = {}  # the last VMIM seen ("vmim"), when the harness saw the end ("ended")
        self.events: list[dict[str, Any]] = []  # the harness's own phases

    def run(self, *, fail: str | None = None, watch: bool = True) -> MigrationRecord:
        """Migrate; `fail=REASON` aborts once the target is scheduled, `watch=False` skips the
        route watcher. Returns the record (status `failed` for an aborted or failed migration)."""
        host, kube, vm = self.host, self.kube, self.vm
        vmi = kube.get(kv.API_VERSION, "VirtualMachineInstance", vm, kv.VM_NAMESPACE)
        current = ((vmi or {}).get("status") or {}).get("nodeName")
        if current is None:
            raise LabError(f"VMI {vm} runs on no node ({k.describe_conditions(vmi)})")
        source = host.spec_node(current)
        if source == self.to:
            raise LabError(f"{vm} already runs on {self.to}")
        selector = added_node_selector_supported(self.manifest["versions"]["kubevirt"])
        obj = kv.migration_object(vm, self.name, target_node=self.target_kind if selector else None)
        routers = list(self.manifest["bird_sockets"]) if watch else []
        started = time.time()
        prefixes = [f"{self.ip}/32", *([f"{self.ip6}/128"] if self.ip6 else [])]
        with contextlib.ExitStack() as watching:
            watchers = [watching.enter_context(RouteWatcher(host, routers, p)) for p in prefixes]
            self._migrate(obj, selector, fail, watchers)
        record = self._record(source, started, fail, watchers)
        return record

    def _migrate(self, obj: dict[str, Any], selector: bool, fail: str | None, watchers: list[Any]) -> None:
        """Request the migration and wait for its end, the routers watched by `watchers`."""
        kube = self.kube
        host = self.host
        try:
            with self._only_schedulable(enabled=not selector):
                self.last["vmim"] = kube.create(obj)
                self._note("migration requested", vmim=self.name, target_node=self.target_kind)
                if fail is not None:
                    self.abort_when_scheduled(fail)
                else:
                    self.wait_target()
                self.wait_end(host.spec.timers.migration, aborting=fail is not None)
        except BaseException:
            with contextlib.suppress(Exception):
                kube.delete(kv.API_VERSION, "VirtualMachineInstanceMigration", self.name, kv.VM_NAMESPACE)
            raise
        finally:
            for watcher in watchers:
                with contextlib.suppress(Exception):
                    watcher.sync()

    def _record(self, source: str, started: float, fail: str | None, watchers: list[Any]) -> MigrationRecord:
        """The migration's record from KubeVirt's objects, the harness's phases and the watchers."""
        host, kube, vm = self.host, self.kube, self.vm
        record = record_from_kubevirt(
            self.last["vmim"],
            self._final_vmi(),
            vm=vm,
            ip=self.ip,
            source=source,
            target=self.to,
            started=started,
            node_names=self.manifest["kind_nodes"],
            abort_reason=fail,
            harness_events=self.events,
            ended=self.last.get("ended"),
        )
        end = {"t": record.ended or time.time(), "source": "harness", "kind": "phase", "phase": record.status}
        if record.reason:
            end["reason"] = record.reason
        seen = [e for watcher in watchers for e in watcher.events]
        record.events = sorted([*record.events, end, *seen], key=lambda e: e["t"])
        if self.ip6:
            record.ip6 = self.ip6
        if record.status == "completed":
            host.set_vm_location(vm, self.to, "eth0")
            record.convergence_until = (record.ended or time.time()) + host.priorities(self.to).convergence
            # KubeVirt moves the VMI's node with the migration state's end (virt-handler
            # migration-target.go ackMigrationCompletion); then the pods' MACs are checked.
            self._wait(
                f"VMI {vm} on {self.to} ({self.target_kind}) after its migration",
                lambda: kv.vm_placed(kube, vm, self.target_kind, self.to),
                timeout=DEADLINES["moved"],
                interval=0.5,
            )
            kv.check_vm(kube, vm, self.target_kind, self.to)
        return record

    def abort_when_scheduled(self, reason: str) -> None:
        """Delete the VMIM (KubeVirt aborts the migration) once its target pod is scheduled."""
        scheduled = PHASES[PHASES.index("Scheduled") :]

        def check() -> tuple[bool, str]:
            got = self._vmim()
            if got is not None:
                self.last["vmim"] = got
            phase = phase_of(self.last["vmim"])
            return phase in scheduled, f"VMIM {self.name} phase {phase}"

        self._wait(f"migration {self.name} to schedule its target", check, timeout=120, interval=0.2)
        self.kube.delete(kv.API_VERSION, "VirtualMachineInstanceMigration", self.name, kv.VM_NAMESPACE)
        self._note("abort requested", reason=reason, at_phase=phase_of(self.last["vmim"]))

    def wait_target(self) -> None:
        """Until KubeVirt has the migration's target pod ready (phase TargetReady or later): the
        part that schedules a pod and may pull images, with its own deadline."""
        ready = PHASES[PHASES.index("TargetReady") :]

        def check() -> tuple[bool, str]:
            got = self._vmim()
            if got is None:  # deleted by someone else: wait_end says so
                return True, f"VMIM {self.name} is gone"
            self.last["vmim"] = got
            phase = phase_of(got)
            return phase in ready, f"VMIM {self.name} phase {phase}; {k.describe_conditions(got)}"

        self._wait(
            f"migration {self.name}: target pod on {self.target_kind} ready (KubeVirt phase TargetReady)",
            check,
            timeout=DEADLINES["migration target"],
            interval=0.25,
        )

    def wait_end(self, timeout: float, *, aborting: bool) -> None:
        """Until the VMIM is Succeeded/Failed (or, when aborting, gone); `last` keeps what was
        seen, and `last["ended"]` the moment the harness saw it end: KubeVirt's own end time
        (migrationState.endTimestamp, a metav1.Time) has whole seconds, so an event in the last
        second of the migration would lie after it."""

        def check() -> tuple[bool, str]:
            got = self._vmim()
            if got is None:
                done = aborting
                state = f"VMIM {self.name} is gone (last phase {phase_of(self.last['vmim'])})"
            else:
                self.last["vmim"] = got
                done = is_terminal(got)
                state = f"VMIM {self.name} phase {phase_of(got)}; {k.describe_conditions(got)}"
            if done:
                self.last.setdefault("ended", time.time())
            return done, state

        self._wait(
            f"migration {self.name} to finish (spec timers.migration)", check, timeout=timeout, interval=0.25
        )

    def _final_vmi(self) -> dict[str, Any] | None:
        """The VMI once its migrationState for this VMIM has ended (briefly waited for; the VMIM
        can reach its last phase a moment before the VMI's state says so)."""
        uid = (self.last["vmim"].get("metadata") or {}).get("uid")
        seen: dict[str, Any] = {}

        def ended() -> bool:
            vmi = self.kube.get(kv.API_VERSION, "VirtualMachineInstance", self.vm, kv.VM_NAMESPACE)
            seen["vmi"] = vmi
            state = ((vmi or {}).get("status") or {}).get("migrationState") or {}
            return state.get("migrationUid") == uid and bool(state.get("endTimestamp"))

        with contextlib.suppress(Exception):
            eventually(ended, timeout=10, interval=0.25, what=f"VMI {self.vm}'s migration state to end")
        return seen.get("vmi")

    @contextlib.contextmanager
    def _only_schedulable(self, *, enabled: bool) -> Iterator[None]:
        """KubeVirt before v1.6 has no VMIM addedNodeSelector: cordon every other node of the
        cluster while the migration runs, so the target pod can only go to the target."""
        if not enabled:
            yield
            return
        cordoned = []
        try:
            for node in self.kube.list("v1", "Node"):
                name = node["metadata"]["name"]
                if name != self.target_kind and not (node.get("spec") or {}).get("unschedulable"):
                    self.kube.patch("v1", "Node", name, {"spec": {"unschedulable": True}})
                    cordoned.append(name)
            yield
        finally:
            for name in cordoned:
                with contextlib.suppress(Exception):
                    self.kube.patch("v1", "Node", name, {"spec": {"unschedulable": False}})

    def _vmim(self) -> dict[str, Any] | None:
        return self.kube.get(kv.API_VERSION, "VirtualMachineInstanceMigration", self.name, kv.VM_NAMESPACE)

    def _note(self, phase: str, **fields: Any) -> None:
        self.events.append({"t": time.time(), "source": "harness", "kind": "phase", "phase": phase, **fields})

    def _wait(
        self, what: str, check: Callable[[], tuple[bool, str]], *, timeout: float, interval: float
    ) -> None:
        k.wait_until(self.host.progress, what, check, timeout=timeout, interval=interval)
