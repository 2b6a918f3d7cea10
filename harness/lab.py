"""The `Lab` handle: one running lab instance, the same for every runtime.

    with Lab.from_file("labs/default.yml") as lab:        # up on enter, down on exit
        lab.router("tor1").routes("203.0.113.0/26")
        lab.node("r1-n1").kernel_routes("203.0.113.10/32")

`Lab.attach(name)` returns a handle on a lab some other process brought up (`kvlab up`).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import fastpath
from harness.birdc import BirdUnavailable
from harness.canary.controller import Canary, CanaryReport, merge_into
from harness.errors import InvalidRequest, LabError, LabExists, UnknownLabError
from harness.instances import running_lab_names
from harness.labfile import load_lab
from harness.procs import start_time
from harness.progress import NullProgress, Progress
from harness.record import MigrationRecord
from harness.runtime import get_runtime
from harness.runtime.base import LabContext, ProbeRoute, Runtime, RuntimeOptions
from harness.safefile import FileRefused
from harness.speakers import SPEAKER_KINDS, BirdSpeaker, Session, bird_daemons
from harness.spec import LabSpec, cluster_resources
from harness.state import LabState, check_lab_name, lab_dir, lab_lock
from harness.topology import Topology
from harness.wait import eventually


def spec_digest(spec: LabSpec) -> str:
    """Identifies what a lab was built from (model + Calico resources), not its comments."""
    h = hashlib.sha256(spec.model_dump_json().encode())
    for cluster, items in sorted(cluster_resources(spec).items()):
        h.update(cluster.encode())
        for res in items:
            h.update(res.model_dump_json().encode())
    return h.hexdigest()[:16]


SESSION_POLLERS = 16  # BIRDs asked side by side for their sessions
SESSION_POLL_INTERVAL = 0.1  # seconds between two rounds of asking the BIRDs not yet settled


class VM:
    """A VM of a lab (mock VM endpoint on the netns runtime)."""

    def __init__(self, lab: Lab, name: str):
        self.lab = lab
        self.name = name

    @property
    def ip(self) -> str:
        return str(self.lab.topo.workload(self.name).ip)

    @property
    def node(self) -> str:
        return self.lab.vm_location(self.name)["node"]

    def migrate(self, to: str, **kwargs: Any) -> MigrationRecord:
        return self.lab.migrate(self.name, to, **kwargs)


class Lab:
    """A lab instance: spec + topology + runtime. Usable without pytest."""

    def __init__(
        self,
        spec: LabSpec,
        *,
        name: str | None = None,
        runtime: str = "netns",
        options: RuntimeOptions | None = None,
        progress: Progress | None = None,
        owner_pid: int | None = None,
        keep: bool = False,
    ):
        self.spec = spec
        self.name = spec.name if name is None else check_lab_name(name, "name")
        self.progress = progress or NullProgress()
        context = LabContext.of(spec)
        self.topo: Topology = context.topo
        self.runtime: Runtime = get_runtime(runtime)(
            self.name, self.progress, context=context, options=options
        )
        self.runtime_name = runtime
        self.owner_pid = owner_pid
        self.keep = keep
        self.reused = False
        # where migrate() writes its records, if set; whoever set it draws their timelines
        # (`harness.timeline.draw_pending`), so drawing never counts in a migration's time
        self.artifacts_dir: Path | None = None
        # What the harness found and did on the way that a user should hear about (a settled
        # migration, a rebuilt lab), a line each; the CLI prints them, the library never does.
        self.notes: list[str] = []

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> Lab:
        """A lab from its lab file (not up yet: `up()`, or `with` it). Its counterpart for a lab
        that already runs, brought up by another process, is `Lab.attach(name)`."""
        return cls(load_lab(path), **kwargs)

    @classmethod
    def attach(cls, name: str, progress: Progress | None = None) -> Lab:
        """A handle on a lab that is already running (brought up by another process)."""
        state = LabState.load(lab_dir(check_lab_name(name)))
        if state is None:
            raise UnknownLabError(
                f"no lab named '{name}' is running (known: {', '.join(running_lab_names()) or 'none'})"
            )
        spec = load_lab(state.spec_path)
        options = RuntimeOptions(stack=state.stack)
        lab = cls(
            spec,
            name=name,
            runtime=state.runtime,
            options=options,
            progress=progress,
            owner_pid=state.owner_pid,
        )
        if spec_digest(spec) != state.spec_digest:
            raise LabError(
                f"lab '{name}' was brought up from an older version of {state.spec_path}; "
                f"run 'kvlab down {name}' and bring it up again"
            )
        lab.reused = True
        lab.notes += lab.reconcile()
        return lab

    @staticmethod
    def unique_name(base: str) -> str:
        """A lab name for a private instance (e.g. a pytest session): '<base>-<4 hex>'."""
        return check_lab_name(f"{base[:26]}-{secrets.token_hex(2)}", "unique_name base")

    # -- lifecycle ---------------------------------------------------------------------
    def up(self, *, wait: bool = True, replace: bool = False) -> Lab:
        """Bring the lab up, or reuse it if the same lab is already running healthy. Idempotent.

        A lab of this name built from another spec is never destroyed silently: LabExists
        (bad input) unless `replace=True`. A lab of the same spec that is not healthy (a dead
        guest, a missing BIRD) is rebuilt, and `notes` says why.
        """
        self.runtime.preflight()
        digest = spec_digest(self.spec)
        with lab_lock(self.name):
            existing = LabState.load(lab_dir(self.name))
            if existing is not None and existing.spec_digest != digest and not replace:
                raise LabExists(
                    f"a lab named '{self.name}' already exists, built from another spec "
                    f"({existing.spec_path}); 'kvlab down {self.name}' it, give this one another "
                    "--name, or --replace it"
                )
            problems: list[str] = []
            same = existing is not None and existing.spec_digest == digest
            if same and existing is not None and existing.ready and not existing.abandoned():
                self.notes += self.reconcile()
                problems = self.runtime.problems()
                if not problems:
                    self.reused = True
            if not self.reused:
                if problems:
                    self.notes.append(f"lab '{self.name}' was not healthy ({'; '.join(problems)}): rebuilt")
                elif existing is not None and existing.spec_digest != digest:
                    self.notes.append(f"lab '{self.name}' (from {existing.spec_path}) was replaced")
                self.runtime.down()  # leftovers of a crashed run, if any
                state = LabState(
                    lab=self.name,
                    spec_path=self.spec.source,
                    spec_digest=digest,
                    runtime=self.runtime_name,
                    stack=self.runtime.options.stack,
                    session_id=secrets.token_hex(8),
                    owner_pid=self.owner_pid,
                    builder_pid=os.getpid(),  # a lab whose builder died before it was ready gets reaped
                    builder_started=start_time(os.getpid()),
                    entities=dict(self.topo.entities),
                )
                try:
                    self.runtime.up(state)
                finally:
                    self.notes += self.runtime.notes  # what it changed on the way (host limits raised)
                try:
                    if wait:
                        self.wait_established()
                    state.ready = True
                    state.builder_pid = state.builder_started = None
                    state.save(lab_dir(self.name))
                    self._save_status_frame(state)
                except BaseException:
                    if self.keep:  # kept for inspection on purpose: not abandoned, never reaped
                        state.builder_pid = state.builder_started = None
                        state.save(lab_dir(self.name))
                    else:
                        self.runtime.down()
                    raise
        return self

    def down(self) -> None:
        with lab_lock(self.name):
            self.runtime.down()

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        if not self.keep and not self.reused:
            self.down()

    def is_running(self) -> bool:
        """Healthy: every resource of the lab runs, its guests included."""
        return not self.runtime.problems()

    # -- entities ----------------------------------------------------------------------
    def _family(self, name: str, family: int) -> int:
        """`family` checked against the lab: 6 only in a dual-stack lab (KeyError otherwise)."""
        if not self.topo.runs_family(name, family):
            raise KeyError(f"'{name}' of lab '{self.name}' runs no BIRD for IPv{family}")
        return family

    def router(self, name: str, family: int = 4) -> BirdSpeaker:
        """A router's BIRD (family 4) or bird6 (family 6, dual-stack labs)."""
        if name not in {r.name for r in self.spec.routers}:
            raise KeyError(f"no router '{name}' in lab '{self.name}'")
        return BirdSpeaker(self.runtime, name, self._family(name, family))

    def node(self, name: str, family: int = 4) -> BirdSpeaker:
        if name not in self.topo.node_address:
            raise KeyError(f"no node '{name}' in lab '{self.name}'")
        return BirdSpeaker(self.runtime, name, self._family(name, family))

    def speaker(self, name: str, family: int = 4) -> BirdSpeaker:
        """A router or a node by name."""
        kind = self.topo.entities.get(name)
        if kind not in SPEAKER_KINDS:
            raise KeyError(f"'{name}' is no router or node of lab '{self.name}'")
        return BirdSpeaker(self.runtime, name, self._family(name, family))

    def speakers(self) -> list[BirdSpeaker]:
        """Every BIRD of the lab: each router's and node's, then (dual stack) each one's bird6."""
        birds = bird_daemons(self.topo.entities, self.topo.families, self.topo.v4_only_nested)
        return [BirdSpeaker(self.runtime, e, family) for e, family in birds]

    def run(self, entity: str, argv: list[str], *, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        """Run a command inside a lab entity (router, node, host, VM endpoint)."""
        if entity not in self.topo.entities:
            raise KeyError(f"no entity '{entity}' in lab '{self.name}'")
        return self.runtime.run(entity, argv, timeout=timeout)

    def popen(self, entity: str, argv: list[str], **kwargs: Any):  # type: ignore[no-untyped-def]
        if entity not in self.topo.entities:
            raise KeyError(f"no entity '{entity}' in lab '{self.name}'")
        return self.runtime.popen(entity, argv, **kwargs)

    @contextlib.contextmanager
    def add_test_route(
        self, node: str, prefix: str, *, dev: str = "kvt0", metric: int = 1024
    ) -> Iterator[ProbeRoute]:
        """For the block: a Felix-style kernel route for `prefix` on `node` (device `dev`, made
        as a veth pair if the node lacks it; `metric` 1024 normal, 512 elevated), for the node's
        BIRD to export as calico-node would; on leaving, what it added goes again (the device
        too, if it made it). Through `ip` inside the node: the same on every runtime.
        InvalidRequest for an unknown node or a bad prefix, device or metric."""
        if node not in self.topo.node_address:
            raise InvalidRequest(f"no node '{node}' in lab '{self.name}'")
        route = ProbeRoute(prefix, dev, metric)
        made = self.runtime.add_probe_route(node, route)
        try:
            yield route
        finally:
            self.runtime.remove_probe_route(node, route, device=made)

    # -- VMs and migration ---------------------------------------------------------------
    def vm(self, name: str) -> VM:
        if name not in {w.vm for w in self.topo.workloads}:
            raise KeyError(f"no VM '{name}' in lab '{self.name}'")
        return VM(self, name)

    def vm_location(self, vm: str) -> dict[str, Any]:
        """Where a VM runs now: {"node", "ifname", "guest"} (see `Runtime.vm_location`)."""
        return self.runtime.vm_location(vm)

    def reconcile(self) -> list[str]:
        """Settle migrations that were interrupted (their process crashed or was killed): each
        VM ends up running in one place, and the lab state says which. Returns what was done, a
        line per VM. Run by `attach` and before every migration; a migration that is still
        running in a live process is left alone."""
        return self.runtime.reconcile()

    def priorities(self, node: str, family: int = 4) -> Any:
        """Felix route priorities (IPv4's, or IPv6's) and convergence time of a node's cluster."""
        return self.runtime.priorities(node, family)

    def migrate(
        self, vm: str, to: str, *, canary: str | None = None, family: int | None = None, **kwargs: Any
    ) -> MigrationRecord:
        """Live-migrate a VM to node `to`; returns the record (harness.record.MigrationRecord).

        With `canary="ext1"`, a TCP canary from that host to the VM runs through the migration
        and its report and gaps become part of the record; a canary that lost messages, saw a
        reset or a new connection, or still waits for echoes at the end makes the migration
        "failed" (the VM did move: the claim "its TCP sessions survive" did not hold).
        `family` picks the canary's address family (4 or 6); by default a VM with an IPv6
        address gets one canary per family at once (`record.canaries`, keyed "4" and "6";
        `record.canary` is the first one's report).
        Raises InvalidRequest for an unknown VM, node or host, and MigrationFailed (with the
        record) when the migration broke and was rolled back.
        """
        if vm not in {w.vm for w in self.topo.workloads}:
            raise InvalidRequest(f"no VM '{vm}' in lab '{self.name}'")
        if to not in self.topo.node_address:
            raise InvalidRequest(f"no node '{to}' in lab '{self.name}'")
        if canary is not None and canary not in {h.name for h in self.spec.hosts}:
            raise InvalidRequest(f"no external host '{canary}' in lab '{self.name}' for the canary")
        families = self._canary_families(vm, family)
        self.reconcile()
        if canary is None:
            record = self.runtime.migrate(vm, to, **kwargs)
        else:
            with contextlib.ExitStack() as stack:
                probes = {f: stack.enter_context(self.canary(canary, vm, family=f)) for f in families}
                record = self.runtime.migrate(vm, to, **kwargs)
                reports = {f: p.stop() for f, p in probes.items()}
            for f, report in reports.items():
                merge_into(record, report)
                verdict = canary_verdict(report)
                if verdict and record.status == "completed":
                    six = " (IPv6)" if f == 6 else ""
                    record.status, record.reason = "failed", f"canary{six}: {verdict}"
            record.canary = reports[families[0]]
            if families != (4,):
                record.canaries = {str(f): r for f, r in reports.items()}
        if self.artifacts_dir is not None:  # the record only: drawing it is not the migration's time
            self.write_timeline(record, self.artifacts_dir, draw=False)
        return record

    def workload_interface(self, vm: str, node: str | None = None) -> str:
        """The host-side interface of `vm`'s pod on `node` (default: where it runs now)."""
        return self.runtime.workload_interface(vm, node or self.vm_location(vm)["node"])

    def node_blocks(self) -> dict[str, list[ipaddress.IPv4Network]]:
        """Each node's affine IPAM blocks as the cluster assigned them, for expectations about
        blocks and aggregation: the topology's plan on netns; on the real stack Calico's
        BlockAffinities, since Calico IPAM starts each node's search at a pseudo-random block
        seeded by its hostname (so r1-n1 need not own the first block, and a VM's address may
        lie in another node's block and be announced as a /32 from the start)."""
        return self.runtime.node_blocks()

    def restore_placement(self) -> list[str]:
        """Live-migrate every VM that runs away from its spec node back there (a shared lab
        handed to a test that expects the initial placement); returns the VMs moved."""
        moved = []
        for w in self.topo.workloads:
            if self.vm_location(w.vm)["node"] != w.node:
                self.migrate(w.vm, w.node)
                moved.append(w.vm)
        return moved

    def write_timeline(
        self, record: MigrationRecord, directory: str | Path, *, draw: bool = True
    ) -> tuple[Path, Path]:
        """The migration record as `<stem>.json` and a drawn `<stem>.png` timeline in `directory`
        (`draw=False`: the record only; `harness.timeline.draw_pending` draws it later)."""
        from harness.timeline import write_artifacts  # matplotlib: only when drawing

        stamp = time.strftime("%H%M%S", time.localtime(record.started))
        stem = f"{self.name}-{record.vm}-{record.source}-to-{record.target}-{stamp}"
        return write_artifacts(record.to_json(), Path(directory), stem, draw=draw)

    def _canary_families(self, vm: str, family: int | None) -> tuple[int, ...]:
        """The families a migration's canary runs over: `family`, or every family the VM has."""
        has6 = self.topo.workload(vm).ip6 is not None
        if family is None:
            return (4, 6) if has6 else (4,)
        if family not in (4, 6):
            raise InvalidRequest(f"family {family!r}: 4 or 6")
        if family == 6 and not has6:
            raise InvalidRequest(f"{vm} has no IPv6 address (ip6) for an IPv6 canary")
        return (family,)

    def canary(self, src: str, dst: str, *, family: int = 4, **kwargs: Any) -> Canary:
        """A TCP canary (context manager) from host `src` to a VM (over IPv4, or IPv6 with
        `family=6`), or to the test pod of a nested cluster's node (through the nested pool; its
        IPv6 pod with `family=6` when the nested cluster has IPv6 pools),
        named by `dst` (see harness.canary)."""
        if src not in {h.name for h in self.spec.hosts}:
            raise InvalidRequest(f"no external host '{src}' in lab '{self.name}' for the canary")
        if family == 6 and dst in self.topo.nested_pod6:
            ip = str(self.topo.nested_pod6[dst])
        elif family == 6:
            if dst not in {w.vm for w in self.topo.workloads} or self.topo.workload(dst).ip6 is None:
                raise InvalidRequest(
                    f"no VM '{dst}' with an IPv6 address in lab '{self.name}' for the canary"
                )
            ip = str(self.topo.workload(dst).ip6)
        elif dst in self.topo.nested_pod:
            ip = str(self.topo.nested_pod[dst])
        elif dst in {w.vm for w in self.topo.workloads}:
            ip = str(self.topo.workload(dst).ip)
        else:
            raise InvalidRequest(f"no VM or nested node '{dst}' in lab '{self.name}' for the canary")
        return Canary(self.runtime, src, ip, **kwargs)

    def sessions(self) -> list[Session]:
        return [s for _, found in self._poll_sessions(self.speakers()) for s in found]

    @staticmethod
    def _poll_sessions(
        speakers: list[BirdSpeaker], pool: ThreadPoolExecutor | None = None
    ) -> list[tuple[BirdSpeaker, list[Session]]]:
        """Each speaker's BGP sessions, asked of the BIRDs side by side (a BIRD that does not
        answer: one session '<bird>' Down saying why), in the speakers' order; `pool`: the
        threads to ask them with (else a pool made for this call)."""

        def ask(s: BirdSpeaker) -> list[Session]:
            try:
                return s.sessions()
            except BirdUnavailable as e:
                daemon = "<bird>" if s.family == 4 else "<bird6>"
                return [Session(s.name, daemon, None, "Down", str(e), s.family)]

        if len(speakers) <= 1:
            return [(s, ask(s)) for s in speakers]
        if pool is not None:
            return list(zip(speakers, pool.map(ask, speakers), strict=True))
        with ThreadPoolExecutor(max_workers=min(SESSION_POLLERS, len(speakers))) as own:
            return list(zip(speakers, own.map(ask, speakers), strict=True))

    def wait_established(self, timeout: float | None = None) -> list[Session]:
        """Wait until every BGP session of every BIRD is Established (seen in one pass over all
        of them at the end). Meanwhile only the BIRDs not yet all Established are asked again."""
        timeout = timeout if timeout is not None else self.spec.timers.bgp_established
        speakers = self.speakers()
        per_bird: dict[tuple[str, int], int] = {}  # (router, family) -> its expected sessions
        for name in self.sessions_expected():
            router, protocol = name.split(":", 1)
            key = (router, 6 if protocol.endswith("/6") else 4)
            per_bird[key] = per_bird.get(key, 0) + 1
        done: set[tuple[str, int]] = set()

        def settled(s: BirdSpeaker, found: list[Session]) -> bool:
            bgp = [x for x in found if x.name not in ("<bird>", "<bird6>")]
            return len(bgp) >= per_bird.get((s.name, s.family), 0) and all(x.established for x in found)

        def all_up() -> list[Session]:
            pending = [s for s in speakers if (s.name, s.family) not in done]
            polled = self._poll_sessions(pending or speakers, pool)
            newly = [(s.name, s.family) for s, found in polled if settled(s, found)]
            newly = [key for key in newly if key not in done]
            done.update(newly)
            step.advance(len(newly))
            if pending:
                down = [x for s, found in polled if not settled(s, found) for x in found if not x.established]
                short = [
                    s.name if s.family == 4 else f"{s.name} (bird6)"
                    for s, found in polled
                    if not settled(s, found) and not down
                ]
                detail = "; ".join(
                    f"{x.router}/{x.name}{'' if x.family == 4 else ' (bird6)'} (peer {x.peer}): {x.state}"
                    + (f", {x.last_error}" if x.last_error else "")
                    for x in down
                )
                if short:
                    detail += f"; {', '.join(short)}: fewer BGP sessions than expected"
                if len(done) < len(speakers):
                    raise AssertionError(
                        f"{len(speakers) - len(done)} of {len(speakers)} BIRDs not all Established: {detail}"
                    )
                polled = self._poll_sessions(speakers, pool)  # every BIRD once more, as one picture
            sessions = [x for _, found in polled for x in found]
            if not all(settled(s, found) for s, found in polled):
                done.clear()  # a session dropped meanwhile: start over
                raise AssertionError("a BGP session dropped while the others came up")
            return sessions

        with (
            self.progress.step("BIRDs with every BGP session Established", total=len(speakers)) as step,
            ThreadPoolExecutor(max_workers=max(1, min(SESSION_POLLERS, len(speakers)))) as pool,
        ):
            return eventually(
                all_up,
                timeout=timeout,
                interval=SESSION_POLL_INTERVAL,
                what="every BGP session to be Established",
                transient=(BirdUnavailable,),
            )

    def sessions_expected(self) -> list[str]:
        """Every router session, `router:protocol` (bird6's `router:protocol/6`)."""
        return [
            f"{r.name}:{n.protocol}{'' if family == 4 else '/6'}"
            for family in self.spec.families
            for r in self.spec.routers
            for n in self.topo.router_neighbors(r.name, family)
        ]

    # -- reporting ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The `kvlab status --json` document (a stable contract, see README)."""
        doc = self._status_frame()
        for vm in doc["vms"]:
            vm["node"] = self.vm_location(vm["name"])["node"]
        doc["sessions"] = [s.to_json() for s in self.sessions()]
        return doc

    def _status_frame(self) -> dict[str, Any]:
        """The status document but its sessions, VMs on their first nodes (what never changes)."""
        return {
            "lab": self.name,
            "runtime": self.runtime_name,
            "spec": self.spec.source,
            "routers": [{"name": r.name, "asn": r.asn, "role": r.role} for r in self.spec.routers],
            "clusters": [
                {
                    "name": c.name,
                    "asn": c.asn,
                    "pools": [str(p) for p in c.pools],
                    **({"pools6": [str(p) for p in c.pools6]} if c.pools6 else {}),
                    "parent": c.parent,
                }
                for c in self.spec.clusters
            ],
            "nodes": [
                {
                    "name": n.name,
                    "cluster": c.name,
                    "rack": n.rack,
                    "asn": self.topo.node_asn[n.name],
                    "ip": str(self.topo.node_address[n.name].ip),
                    **({"ip6": str(ip6)} if (ip6 := self.topo.node_ip(n.name, 6)) else {}),
                    **({"vm": self.topo.nested_vm[n.name]} if n.name in self.topo.nested_vm else {}),
                }
                for c, n in self.spec.all_nodes()
            ],
            "vms": [
                {"name": w.vm, "ip": str(w.ip), **({"ip6": str(w.ip6)} if w.ip6 else {}), "node": w.node}
                for w in self.topo.workloads
            ],
            "hosts": [
                {
                    "name": h.name,
                    "ip": str(self.topo.host_link(h.name).b.address.ip),
                    **({"ip6": str(a6.ip)} if (a6 := self.topo.host_link(h.name).b.address6) else {}),
                }
                for h in self.spec.hosts
            ],
        }

    def _save_status_frame(self, state: LabState) -> None:
        """Cache the status frame for the CLI's fast path (harness.fastpath); best effort."""
        base = Path(self.spec.source).parent
        files = [self.spec.source] + [
            str(base / c.resources) for c in self.spec.clusters if isinstance(c.resources, str)
        ]
        with contextlib.suppress(OSError, FileRefused):
            fastpath.save_frame(self.name, state, self._status_frame(), files)


def canary_verdict(report: CanaryReport) -> str | None:
    """Why a canary report breaks the claim "the VM keeps its TCP sessions", or None if it holds."""
    problems = []
    if report.lost:
        problems.append(f"{report.lost} message(s) lost")
    if report.resets:
        problems.append(f"{report.resets} reset(s)")
    if not report.same_connection:
        problems.append("the connection was replaced")
    if any(g.open for g in report.gaps) or (report.max_gap is not None and report.max_gap.open):
        problems.append("still waiting for echoes when it stopped")
    return ", ".join(problems) or None


__all__ = ["Lab", "canary_verdict", "spec_digest"]
