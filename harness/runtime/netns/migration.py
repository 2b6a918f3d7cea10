"""The netns runtime's migration driver: a VM moves between two nodes' namespaces.

A migration goes through the phases KubeVirt and Calico go through:
1. prepare  - the target "pod" exists: the target node gets the VM's interface and its agent
              enters Target (no route, capture armed); the source agent is told it is a source;
2. activate - the VM resumes on the target and announces itself (GARP, or RARP as QEMU does);
              the target agent sees it and goes Live (/32 at the elevated metric);
3. complete - the migration ends: target TimeWait (elevated for the convergence time), the
              source pod goes away after `timers.migration_source_cleanup` (route first, then
              the interface);
or fail     - the target is torn down before activation: no target route, the VM stays put.

Each step is journalled first (harness.migration_journal). Whatever stops a migration (an error,
Ctrl-C, SIGKILL, the target QEMU dying) is settled by `Migration.recover`: the VM's real place
decides whether the migration is finished or rolled back, and the lab state says where it runs.

The `harness.record.MigrationRecord` it returns merges harness phases, both node agents' state
changes and route operations, QEMU's events, and every change of the VM's /32 seen at the
routers (`harness.routewatch`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness import failpoints, procs
from harness.birdc import BirdError
from harness.calico import confd
from harness.errors import InvalidRequest, LabError, WaitTimeout
from harness.record import MigrationFailed, MigrationRecord
from harness.routewatch import RouteWatcher
from harness.runtime.netns.journal import MigrationJournal, migration_lock
from harness.speakers import BirdSpeaker, Probed
from harness.wait import eventually

if TYPE_CHECKING:
    from harness.runtime.netns.agent import AgentClient
    from harness.topology import Topology, Workload


class MigrationHost(Probed, Protocol):
    """What this driver asks of the runtime it drives (the netns runtime): the probes, where VMs
    run, and the migration primitives of its pods (node agents, guest interfaces, QEMU instances)."""

    run_dir: Path
    spec: Any
    topo: Topology
    context: Any

    def agent(self, node: str) -> AgentClient: ...
    def new_guest(self, w: Workload, node: str) -> str | None: ...
    def guest_pid(self, w: Workload, guest: str | None) -> int | None: ...
    def migration_prepare(
        self, w: Workload, target: str, target_ip: str, new_if: str, guest: str | None
    ) -> None: ...
    def migration_cutover(
        self,
        w: Workload,
        journal: MigrationJournal,
        target_ip: str,
        *,
        rarp: bool = False,
        timeout: float = 60.0,
    ) -> list[dict[str, Any]]: ...
    def guest_running(self, w: Workload, node: str, guest: str | None, vm_if: str) -> bool: ...
    def settle(self, w: Workload, journal: MigrationJournal) -> str | None: ...
    def reboot_guest(self, w: Workload, node: str, guest: str | None) -> None: ...
    def migration_release_source(self, w: Workload, source: str, old_if: str, guest: str | None) -> None: ...
    def migration_abort(self, w: Workload, target: str, new_if: str, guest: str | None) -> None: ...
    def plug_guest(self, vm: str, vm_if: str, ip: Any, mac: str, *, ip6: Any = None) -> None: ...
    def refresh_birds(self, topo: Topology, resources: dict[str, list[Any]], nodes: list[str]) -> None: ...
    def vm_location(self, vm: str) -> dict[str, Any]: ...
    def set_vm_location(self, vm: str, node: str, ifname: str, guest: str | None = None) -> None: ...
    def pods(self, extra: dict[str, str] | None = None) -> Topology: ...
    def priorities(self, node: str) -> Any: ...


class Migration:
    """One migration of a VM; call the phases yourself, or `run()` for all of them.

    Every step is journalled before it is taken (harness.runtime.netns.journal), under the VM's
    migration lock, so that an error, Ctrl-C or a crash at any moment can be settled: `recover()`
    looks at where the VM really runs and finishes the migration or rolls it back, here or in the
    next kvlab command (`Lab.reconcile`).

    Fail points (harness.failpoints): `migrate.prepare.begin`, `migrate.prepare.target-started`,
    `migrate.prepare.done`, `migrate.cutover.begin` (and the QEMU ones in
    harness.runtime.netns.vms), `migrate.activate.live`, `migrate.complete.begin`,
    `migrate.complete.source-released`, `migrate.complete.located`.
    """

    def __init__(self, rt: MigrationHost, vm: str, target: str, *, journal: MigrationJournal | None = None):
        self.rt = rt
        self.vm = vm
        self.workload = rt.topo.workload(vm)
        if journal is None:
            loc = rt.vm_location(vm)
            if target not in rt.topo.node_address:
                raise InvalidRequest(f"no node '{target}' in lab '{rt.lab}'")
            if target == loc["node"]:
                raise InvalidRequest(f"{vm} already runs on {target}")
            cluster_of = {n.name: c.name for c, n in rt.spec.all_nodes()}
            if target not in cluster_of or cluster_of[target] != cluster_of[loc["node"]]:
                raise InvalidRequest(f"{target} is not in {vm}'s cluster '{cluster_of[loc['node']]}'")
            journal = MigrationJournal(
                vm=vm,
                source=loc["node"],
                target=target,
                source_if=loc["ifname"],
                target_if="eth1" if loc["ifname"] == "eth0" else "eth0",
                backend=self.workload.backend,
                source_guest=loc.get("guest"),
            )
        self.journal = journal
        self.source, self.target = journal.source, journal.target
        self.source_if, self.target_if = journal.source_if, journal.target_if
        self.target_ip = str(rt.topo.node_address[journal.target].ip)
        self.record = MigrationRecord(vm, str(self.workload.ip), self.source, self.target)
        if self.workload.ip6 is not None:
            self.record.ip6 = str(self.workload.ip6)
        self._lock: contextlib.ExitStack | None = None

    @classmethod
    def interrupted(cls, rt: MigrationHost, vm: str) -> Migration | None:
        """The migration of `vm` whose process died, ready to `recover()` (holding its lock);
        None if its journal is unreadable (it is removed). MigrationInProgress if it is alive."""
        run_dir = rt.run_dir
        with contextlib.ExitStack() as stack:
            stack.enter_context(migration_lock(run_dir, vm))
            journal = MigrationJournal.load(run_dir, vm)
            if journal is None or journal.vm != vm or vm not in {w.vm for w in rt.topo.workloads}:
                MigrationJournal.path(run_dir, vm).unlink(missing_ok=True)
                return None
            m = cls(rt, vm, journal.target, journal=journal)
            m._lock = stack.pop_all()
            return m
        return None  # pragma: no cover - the with block returns

    @property
    def run_dir(self) -> Path:
        return self.rt.run_dir

    # -- the journal and its lock --------------------------------------------------------
    def _begin(self) -> None:
        """Take the VM's migration lock and write the journal: from now on, any end is recoverable."""
        stack = contextlib.ExitStack()
        stack.enter_context(migration_lock(self.run_dir, self.vm))
        self._lock = stack
        self.journal.target_guest = self.rt.new_guest(self.workload, self.target)
        self.journal.enter("prepare", self.run_dir)

    def _end(self) -> None:
        """The VM runs where the lab state says: drop the journal, then the lock."""
        self.journal.remove(self.run_dir)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- phases ------------------------------------------------------------------------
    def prepare(self) -> None:
        w, rt = self.workload, self.rt
        self._begin()
        self.record.phase("prepare")
        failpoints.hit("migrate.prepare.begin")
        rt.agent(self.source).call("source", vm=self.vm)
        rt.migration_prepare(w, self.target, self.target_ip, self.target_if, self.journal.target_guest)
        failpoints.hit("migrate.prepare.target-started", target_pid=self._target_pid)
        self._tell_target()
        self._refresh_peering([self.target], {self.vm: self.target})
        self.record.phase("target ready")
        failpoints.hit("migrate.prepare.done", target_pid=self._target_pid)

    def activate(self, announce: str = "GARP") -> None:
        """The VM resumes on the target and announces itself; wait for the target to go Live.

        Mock VMs announce with GARP (or RARP); a QEMU guest is live-migrated over QMP and QEMU
        itself announces with RARP after RESUME.
        """
        w = self.workload
        self.journal.enter("cutover", self.run_dir)
        failpoints.hit("migrate.cutover.begin", target_pid=self._target_pid)
        if w.backend == "mock":
            self.record.phase("resume on target", announce=announce)
        else:
            self.record.phase("QEMU migration", announce="RARP (QEMU self-announce)")
        self.record.events += self.rt.migration_cutover(
            w,
            self.journal,
            self.target_ip,
            rarp=announce == "RARP",
            timeout=self.rt.spec.timers.migration,
        )
        eventually(
            lambda: self._live(self.target),
            timeout=10,
            interval=0.01,
            what=f"{self.target}'s agent to see {self.vm} activate (every address family)",
        )
        failpoints.hit("migrate.activate.live", target_pid=self._target_pid)

    def complete(self) -> MigrationRecord:
        rt, timers = self.rt, self.rt.spec.timers
        rt.agent(self.target).call("ended", vm=self.vm, succeeded=True)
        self.journal.enter("complete", self.run_dir)
        self.record.phase("completed")
        self.record.ended = time.time()
        failpoints.hit("migrate.complete.begin", target_pid=self._target_pid)
        # Models KubeVirt's source pod lingering after completion: a duration, not a wait on a condition.
        time.sleep(timers.migration_source_cleanup)
        self._finish()
        self.record.status = "completed"
        return self.record

    def fail(self, reason: str) -> MigrationRecord:
        """Abort before activation: the target pod goes away, the VM stays on the source."""
        self._undo()
        self.record.phase("failed", reason=reason)
        self.record.status, self.record.reason, self.record.ended = "failed", reason, time.time()
        return self.record

    # -- finishing and undoing (idempotent: also what recovery runs) -----------------------
    def _finish(self) -> None:
        """Roll forward: the VM runs on the target; release the source, record the new place."""
        rt, w = self.rt, self.workload
        if not rt.guest_running(w, self.target, self.journal.target_guest, self.target_if):
            raise LabError(f"{self.vm} does not run on {self.target}: the source is kept")
        target_agent = rt.agent(self.target)
        if self.vm not in target_agent.call("status")["workloads"]:
            self._tell_target()
        target_agent.call("ended", vm=self.vm, succeeded=True)
        self._quietly(lambda: rt.agent(self.source).call("remove", vm=self.vm))  # route first, then the pod
        rt.migration_release_source(w, self.source, self.source_if, self.journal.source_guest)
        self.record.phase("source cleaned up")
        failpoints.hit("migrate.complete.source-released")
        self.rt.set_vm_location(self.vm, self.target, self.target_if, guest=self.journal.target_guest)
        failpoints.hit("migrate.complete.located")
        self._refresh_peering([self.source])
        self.collect_agents()
        self.record.convergence_until = (self.record.ended or time.time()) + self.rt.priorities(
            self.target
        ).convergence
        self._end()

    def _undo(self) -> None:
        """Roll back: the VM runs on the source; remove the target pod, restore the source's route."""
        rt, w = self.rt, self.workload
        self._quietly(lambda: rt.agent(self.target).call("ended", vm=self.vm, succeeded=False))
        self._quietly(lambda: rt.agent(self.target).call("remove", vm=self.vm))
        rt.migration_abort(w, self.target, self.target_if, self.journal.target_guest)
        if w.backend == "mock" and not rt.guest_running(w, self.source, None, self.source_if):
            rt.plug_guest(self.vm, self.source_if, w.ip, w.mac, ip6=w.ip6)
        rt.agent(self.source).call(
            "add",
            vm=self.vm,
            ip=str(w.ip),
            ip6=str(w.ip6) if w.ip6 else None,
            mac=w.mac,
            ifname=w.host_ifname,
            running_here=True,
            peering_ip=self._peering_ip(self.source),
            peering_ip6=self._peering_ip(self.source, family=6),
        )
        self.rt.set_vm_location(self.vm, self.source, self.source_if, guest=self.journal.source_guest)
        self._refresh_peering([self.source, self.target])
        self.collect_agents()
        self._end()

    def recover(self, cause: str) -> str:
        """Settle an interrupted migration: look where the VM really runs, then finish the
        migration (returns "completed") or roll it back ("rolled back"). If neither copy of the
        VM runs any more, boot it again on the source ("restarted": its memory is lost, it runs).
        Ctrl-C and SIGTERM wait until this is done."""
        rt, w = self.rt, self.workload
        with procs.signals_deferred(), self._released_on_error():
            where = rt.settle(w, self.journal)
            self.record.phase("recovery", cause=cause, found=where or "nowhere")
            if where == "target":
                self._finish()
                return "completed"
            outcome = "rolled back"
            if where is None:
                # journalled before it starts: a crash while it boots must not start a second one
                self.journal.source_guest = rt.new_guest(w, self.source)
                self.journal.save(self.run_dir)
                rt.reboot_guest(w, self.source, self.journal.source_guest)
                outcome = "restarted"
            self._undo()
            return outcome

    # -- running it ------------------------------------------------------------------------
    def run(self, *, fail: str | None = None, announce: str = "GARP", watch: bool = True) -> MigrationRecord:
        """All phases. Returns the record (status "completed", or "failed" for `fail=`). An error
        or interrupt on the way is recovered from first; an error then raises MigrationFailed
        (carrying the record) unless recovery found the VM on the target and finished the
        migration; an interrupt is re-raised."""
        routers = [r.name for r in self.rt.spec.routers] if watch else []
        prefixes = [f"{self.workload.ip}/32"] + ([f"{self.workload.ip6}/128"] if self.workload.ip6 else [])
        with contextlib.ExitStack() as watching:
            watchers = [watching.enter_context(RouteWatcher(self.rt, routers, p)) for p in prefixes]
            self._run_phases(watchers, fail, announce)
        return self.record

    def _run_phases(self, watchers: list[RouteWatcher], fail: str | None, announce: str) -> None:
        """`run`'s body, the routers watched for the VM's /32 (and /128) by `watchers`."""
        try:
            self.prepare()
            if fail:
                self.fail(fail)
            else:
                self.activate(announce)
                self.complete()
                self.follow_nested()
        except BaseException as e:
            cause = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            outcome = self.recover(cause) if self._lock is not None else "rolled back"
            self.record.ended = self.record.ended or time.time()
            if outcome == "completed":
                self.record.status, self.record.reason = "completed", f"finished after {cause}"
            else:
                self.record.status, self.record.reason = "failed", f"{cause} ({outcome})"
            if not isinstance(e, Exception):  # Ctrl-C, SIGTERM, exit: settled, then on its way
                raise
            if outcome != "completed":
                raise MigrationFailed(self.record) from e
        finally:
            for watcher in watchers:
                watcher.sync()
                self.record.events = sorted(self.record.events + watcher.events, key=lambda e: e["t"])
                watcher.events = []

    # -- helpers ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _released_on_error(self) -> Iterator[None]:
        """If recovery itself fails, keep the journal but let go of the lock, so that the next
        kvlab command can try again."""
        try:
            yield
        except BaseException:
            if self._lock is not None:
                self._lock.close()
                self._lock = None
            raise

    def _target_pid(self) -> int | None:
        return self.rt.guest_pid(self.workload, self.journal.target_guest)

    def _tell_target(self) -> None:
        w = self.workload
        self.rt.agent(self.target).call(
            "target",
            vm=self.vm,
            ip=str(w.ip),
            ip6=str(w.ip6) if w.ip6 else None,
            mac=w.mac,
            ifname=w.host_ifname,
            peering_ip=self._peering_ip(self.target, {self.vm: self.target}),
            peering_ip6=self._peering_ip(self.target, {self.vm: self.target}, family=6),
        )

    @staticmethod
    def _quietly(step: Any) -> None:
        """A step whose only failure is that there is nothing left to do (an agent without the VM)."""
        with contextlib.suppress(RuntimeError):
            step()

    # -- workload peering (nested clusters) ----------------------------------------------
    def follow_nested(self) -> None:
        """If the VM is a nested cluster's node: wait (up to timers.bgp_established) until its
        session to the parent is back on the target node and the target's ToR routes the nested
        pools via the target, and record both as phases (the nested routing outage on the
        timeline). A deadline passed is recorded in `reason`, not raised: the VM did migrate."""
        nested = self.rt.spec.nested_node_in(self.vm)
        if nested is None:
            return
        cluster, node = nested
        _, target_node = self.rt.spec.node(self.target)
        tor = self.rt.spec.rack(target_node.rack).tor if target_node.rack else None
        # Each family the nested node speaks: its session to the parent, its pools at the ToR.
        families = [(4, self.workload.ip, cluster.pools)]
        if self.workload.ip6 is not None and node.name in self.rt.topo.node_address6:
            families.append((6, self.workload.ip6, cluster.pools6))

        def session_back() -> bool:
            for family, ip, _ in families:
                peer = f"Local_Workload_{str(ip).replace('.', '_').replace(':', '_')}"
                sessions = {s.name: s.state for s in BirdSpeaker(self.rt, self.target, family).sessions()}
                if sessions.get(peer) != "Established":
                    return False
            return True

        def pools_via_target() -> bool:
            if tor is None:
                return False
            for family, _, pools in families:
                via = str(self.rt.topo.node_ip(self.target, family))
                for pool in pools:
                    best = BirdSpeaker(self.rt, tor, family).best_route(str(pool))
                    if best is None or best.via != via:
                        return False
            return True

        for what, check in (
            (f"nested session back on {self.target}", session_back),
            (f"{tor}: nested pool via {self.target}", pools_via_target),
        ):
            try:
                eventually(
                    check,
                    timeout=self.rt.spec.timers.bgp_established,
                    interval=0.05,
                    what=what,
                    transient=(BirdError, OSError),
                )
            except WaitTimeout as e:
                self.record.reason = str(e)
                self.record.phase(f"NOT: {what}")
                return
            self.record.phase(what)

    def _resources(self) -> dict[str, list[Any]]:
        return self.rt.context.resources

    def _peering_ip(self, node: str, extra: dict[str, str] | None = None, family: int = 4) -> str | None:
        """The workload peering IP of a family `node` provisions on this VM's interface, if it
        peers with it."""
        resources = self._resources().get(self.workload.cluster, [])
        ip = self.workload.ip if family == 4 else self.workload.ip6
        if ip is None:
            return None
        return confd.peering_ip_on(self.rt.pods(extra), node, resources, str(ip), family)

    def _refresh_peering(self, nodes: list[str], extra: dict[str, str] | None = None) -> None:
        """Reload the BIRD of `nodes` for the VM's pods now (calico-node re-renders its
        Local_Workload peers when workload endpoints come and go)."""
        resources = self._resources()
        mine = resources.get(self.workload.cluster, [])
        if confd.workload_peering_ip(mine) is None and confd.workload_peering_ip(mine, 6) is None:
            return
        self.rt.refresh_birds(self.rt.pods(extra), resources, nodes)
        self.record.phase("workload peering reloaded", nodes=nodes)

    def collect_agents(self) -> None:
        """Merge both node agents' events about this VM since the migration started (best effort:
        an agent that does not answer adds nothing)."""
        for node in (self.source, self.target):
            try:
                events = self.rt.agent(node).call("status")["events"]
            except (OSError, RuntimeError):
                continue
            for e in events:
                if e["t"] >= self.record.started and e.get("vm") == self.vm:
                    self.record.events.append({**e, "source": f"agent:{node}"})
        self.record.events.sort(key=lambda e: e["t"])

    def _state(self, node: str) -> str | None:
        return self.rt.agent(node).call("status")["workloads"].get(self.vm, {}).get("state")

    def _live(self, node: str) -> bool:
        """Whether `node`'s agent has the VM active (Live or TimeWait) for every family it has."""
        w = self.rt.agent(node).call("status")["workloads"].get(self.vm, {})
        active = ("Live", "TimeWait")
        return w.get("state") in active and ("state6" not in w or w["state6"] in active)
