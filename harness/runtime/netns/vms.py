"""QEMU guests on the netns runtime: KubeVirt bridge-style VMs that really live-migrate.

A QEMU VM runs inside its node's namespace with a tap named like the Calico workload
interface (`cali<hash>`, host MAC ee:ee:ee:ee:ee:ee, proxy ARP, the node agent owns its /32).
A migration starts an identical QEMU on the target node with `-incoming tcp:<target>:49152`
(KubeVirt's migration port), then drives QEMU's own live migration over QMP across the lab
fabric. After RESUME, QEMU announces the VM's MAC with RARP on the target tap, which is what
the target's node agent waits for.

Guests outlive the process that started them (`kvlab up` exits), so everything here works from
files in the run directory. Each QEMU process is an *instance* with a directory of its own,
`<run>/<vm>/<instance>/{qmp.sock,qemu.pid,serial.log,qemu.log}`: `qemu-<node>` for the first
boot, `qemu-<node>-<id>` for a migration target (or a guest booted again). The lab state says
which instance is the VM; a migration's journal names the instances it started, so nothing here
ever stops a QEMU by its node alone.

A VM's first QEMU (`launch`, then `ready`) loads the saved guest of its identity when the image
cache has one (harness.runtime.netns.snapshot: ~0.3 s instead of a ~2.7 s cold boot); else it
boots cold, and once ready its guest is saved and restored from that file right away, so the
snapshot is known to load. A snapshot that does not load is removed and the guest boots cold.
A VM hosting a nested node (an initrd of its own) always boots cold. `snapshot.log` in the
instance directory says which way it went.

Fail points (harness.failpoints) of a QEMU migration: `migrate.cutover.migrating` (QMP
`migrate` issued, memory being copied), `migrate.cutover.migrated` (the source says completed,
the target has not resumed yet), `migrate.cutover.resumed` (the target resumed).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import failpoints, netlink, procs
from harness.errors import KvlabError, LabError, WaitTimeout
from harness.names import NAME_PATTERN
from harness.runtime.netns import snapshot
from harness.runtime.netns.guestimage import GuestImage, ensure_image, nested_initrd
from harness.runtime.netns.qemu import (
    GuestSpec,
    QemuError,
    QemuGuest,
    QMPClient,
    create_tap,
    delete_tap,
    require_qemu,
)
from harness.safefile import FileRefused, open_output, replace_file
from harness.topology import GUEST_PORT
from harness.wait import eventually

MIGRATION_PORT = 49152  # KubeVirt/libvirt's live-migration port
NESTED_INITRD = "initrd-nested.gz"  # <run>/<vm>/: the guest image's initrd plus a nested node's files
BOOT_TIMEOUT = 90.0
RESTORE_TIMEOUT = 30.0  # QEMU loads a saved guest (~70 MB) in well under a second when idle
BOOT_CONSOLE = "boot-serial.log"  # <instance>/: the console of the boot a restored guest was saved from
SNAPSHOT_LOG = "snapshot.log"  # <instance>/: what became of the snapshot (restored, saved, fell back)
MIGRATION_TIMEOUT = 60.0
RESUME_TIMEOUT = 10.0  # a target that has all the state resumes within this
# migrate-set-parameters for every migration. The VM's pause (STOP on the source -> RESUME on the
# target) is mostly the target working through what is still in flight when the source stops: the
# source finishes in 1-3 ms, the target resumes 10-80 ms later. QEMU stops the source once what
# is left fits `downtime-limit` at the bandwidth it measured (defaults 300 ms, 128 MiB/s: tens of
# MB); a lower limit and bandwidth leave less in flight (pause and canary gap about halved on the
# default lab, total time 0.45 -> 0.9 s). A far lower limit (20 ms) iterates much longer and the
# TCG guest then panicked after some migrations (2 of 30): not below 100 ms.
MIGRATION_PARAMETERS: dict[str, int] = {
    "downtime-limit": 100,  # ms
    "max-bandwidth": 64 << 20,  # bytes/s
}
# query-migrate states in which memory may still be moving (QEMU's MigrationStatus)
MIGRATING = {"setup", "active", "pre-switchover", "device", "cancelling", "wait-unplug"} | {
    "postcopy-active",
    "postcopy-paused",
    "postcopy-recover",
}
# run states of a QEMU that holds the VM but does not run it; `cont` brings it back
RESUMABLE = {"paused", "postmigrate", "finish-migrate"}


def boot_instance(node: str) -> str:
    """The instance directory of a VM's first boot on `node` (`kvlab up`)."""
    return f"qemu-{node}"


@dataclass
class Launch:
    """A QEMU instance started for VM `w` on `node`; `QemuVMs.ready` waits for its guest.

    `restored`: it loads a saved guest (`snapshot`) instead of booting; `key`: the snapshot key
    of this guest when snapshots apply to it (a cold boot then saves one)."""

    w: Any
    node: str
    instance: str
    guest: QemuGuest
    key: str | None = None
    snapshot: Path | None = None
    restored: bool = False
    outcome: str = ""  # once ready: 'restored', 'cold boot' or 'cold boot, snapshot saved'


def new_instance(node: str) -> str:
    """A fresh instance directory on `node` (a migration target, a guest booted again)."""
    return f"qemu-{node}-{secrets.token_hex(3)}"


class QemuVMs:
    """QEMU VM operations of one netns lab (stateless: reads the run directory)."""

    def __init__(self, runtime: Any):
        self.rt = runtime
        self._image: GuestImage | None = None

    def image(self) -> GuestImage:
        if self._image is None:
            self._image = ensure_image(self.rt.progress, pvh=True)
        return self._image

    def nested_initrd(self, vm: str) -> Path:
        """`<run>/<vm>/initrd-nested.gz`: `vm` a name (the lab file's rule), never a path."""
        if not isinstance(vm, str) or re.fullmatch(NAME_PATTERN, vm) is None:
            raise ValueError(f"not a VM name: {vm!r}")
        return self.rt.entity_dir(vm) / NESTED_INITRD

    def prepare_nested(self, vm: str, bird_conf: str, pod_ip: str) -> Path:
        """The initrd VM `vm` boots from when a nested node runs in it (every instance, the
        migration targets too: QEMU needs the same ROM on both ends)."""
        return nested_initrd(self.image(), bird_conf, pod_ip, self.nested_initrd(vm))

    def image_for(self, w: Any) -> GuestImage:
        """The image VM `w` boots: the guest image, with a nested node's files if it hosts one."""
        if self.rt.spec.nested_node_in(w.vm) is None:
            return self.image()
        initrd = self.nested_initrd(w.vm)
        if not initrd.is_file():
            raise LabError(f"{w.vm} runs a nested node but its initrd {initrd} was never written")
        return replace(self.image(), initrd=initrd)

    def run_dir(self, vm: str, instance: str) -> Path:
        if not instance.startswith("qemu-") or "/" in instance or instance in ("qemu-", ".", ".."):
            raise ValueError(f"not a QEMU instance directory: {instance!r}")
        return self.rt.entity_dir(vm) / instance

    def spec(self, w: Any) -> GuestSpec:
        return GuestSpec(
            name=w.vm,
            ip=str(w.ip),
            mac=w.mac,
            tap=w.host_ifname,
            port=GUEST_PORT,
            ip6=str(w.ip6) if w.ip6 else None,
        )

    def qmp(self, vm: str, instance: str, timeout: float = 10.0) -> QMPClient:
        sock = self.run_dir(vm, instance) / "qmp.sock"
        return QMPClient(sock, timeout=timeout, root=self.rt.run_dir).connect()

    def pid(self, vm: str, instance: str) -> int | None:
        """The pid of a running instance, None once it is gone."""
        d = self.run_dir(vm, instance)
        return procs.pid_from_file(d / "qemu.pid", d)  # a pid of a QEMU of this instance, or None

    def status(self, vm: str, instance: str | None) -> str | None:
        """QEMU's run state of an instance ('running', 'inmigrate', 'postmigrate', ...), None if
        it does not run or does not answer."""
        if instance is None or self.pid(vm, instance) is None:
            return None
        try:
            with self.qmp(vm, instance, timeout=3) as q:
                return q.status()
        except (OSError, QemuError):
            return None

    # -- lifecycle -----------------------------------------------------------------------
    def plug(self, w: Any, node: str) -> None:
        """The node side of the VM's pod: a tap, Calico-style (the host side MAC, proxy ARP,
        neighbour). Idempotent: an existing tap is kept."""
        with netlink.ipr(self.rt.ns(node)) as ip:
            exists = bool(ip.link_lookup(ifname=w.host_ifname))
        if not exists:
            create_tap(self.rt.ns(node), w.host_ifname, mac="ee:ee:ee:ee:ee:ee")
        self.rt._host_side(node, w.host_ifname, w.ip, w.mac, ip6=w.ip6)

    def boot(self, w: Any, node: str, instance: str) -> float:
        """Start the VM on `node` (plugged) as `instance`, wait for its TCP server; seconds to ready."""
        return self.ready(self.launch(w, node, instance))

    def launch(self, w: Any, node: str, instance: str) -> Launch:
        """Start QEMU for VM `w` on `node` (plugged) as `instance`, without waiting for its guest:
        from its snapshot if there is one, else a cold boot (which `ready` then saves as one).
        A VM hosting a nested node (an initrd of its own) always boots cold."""
        key = self._snapshot_key(w)
        path = snapshot.lookup(snapshot.snapshot_dir(self.image()), key) if key is not None else None
        if key is not None and path is not None:
            try:
                return self._restore(w, node, instance, key, path)
            except (KvlabError, OSError) as e:  # QEMU did not start: not the snapshot's fault
                self._note(w.vm, instance, f"QEMU did not start with snapshot {path.name} ({e}): cold boot")
        return Launch(w, node, instance, self._cold(w, node, instance).start(connect=False), key=key)

    def ready(self, launch: Launch) -> float:
        """Wait until `launch`'s guest serves; seconds since its QEMU started. A cold-booted one
        is then saved and restored once, so its snapshot is known to load. Whatever fails on the
        snapshot's side ends in a cold boot, never in a QEMU left behind. `launch.outcome` says
        which way it went."""
        started = launch.guest.started_at
        t0 = started if started is not None else time.monotonic()
        launch.outcome = self._ready(launch)
        return time.monotonic() - t0

    def _ready(self, launch: Launch) -> str:
        w, instance = launch.w, launch.instance
        t0 = launch.guest.started_at or time.monotonic()
        if launch.restored:
            try:
                launch.guest.connect()
                self._wait_restored(launch.guest)
                launch.guest.qmp_close()
                self._note(w.vm, instance, f"restored, running after {time.monotonic() - t0:.2f}s")
                return "restored"
            except (KvlabError, OSError) as e:
                launch.guest.stop()
                self._note(w.vm, instance, f"snapshot {launch.snapshot} did not load ({e}): cold boot")
                if launch.snapshot is not None:
                    snapshot.discard(launch.snapshot)
                self._cold_again(launch)
        guest = launch.guest.connect()
        guest.wait_ready(timeout=BOOT_TIMEOUT)
        if launch.key is None:
            guest.qmp_close()
            return "cold boot"
        booted, saving = time.monotonic() - t0, time.monotonic()
        try:
            path = snapshot.save(
                guest.qmp,
                snapshot.snapshot_dir(self.image()),
                launch.key,
                about={
                    "vm": w.vm,
                    "image": self.image().key,
                    "qemu": guest.qmp.greeting.get("QMP", {}).get("version", {}),
                    "argv": snapshot.snapshot_argv(self.image(), self.spec(w)),
                },
                console=guest.serial_text(),
            )
        except (KvlabError, OSError) as e:
            self._note(w.vm, instance, f"saving a snapshot failed ({e}): cold boot")
            guest.stop()
            self._cold_again(launch)
            return self._ready(launch)
        saved = time.monotonic() - saving
        guest.stop()
        self._note(w.vm, instance, f"booted cold in {booted:.2f}s, saved snapshot {path} in {saved:.2f}s")
        try:
            restored = self._restore(w, launch.node, instance, launch.key, path)
        except (KvlabError, OSError) as e:  # QEMU did not start: not the snapshot's fault
            self._note(w.vm, instance, f"QEMU did not start with snapshot {path.name} ({e}): cold boot")
            self._cold_again(launch)
            return self._ready(launch)
        launch.guest, launch.snapshot, launch.restored = restored.guest, path, True
        how = self._ready(launch)
        return "cold boot, snapshot saved" if how == "restored" else how

    def _cold_again(self, launch: Launch) -> None:
        """`launch` becomes a cold boot without a snapshot (its QEMU was stopped)."""
        launch.guest = self._cold(launch.w, launch.node, launch.instance).start(connect=False)
        launch.key, launch.snapshot, launch.restored = None, None, False

    def _snapshot_key(self, w: Any) -> str | None:
        if not snapshot.enabled() or self.rt.spec.nested_node_in(w.vm) is not None:
            return None
        return snapshot.snapshot_key(self.image(), self.spec(w), snapshot.qemu_identity(require_qemu()))

    def _cold(self, w: Any, node: str, instance: str) -> QemuGuest:
        return QemuGuest(self.rt.ns(node), self.image_for(w), self.spec(w), self.run_dir(w.vm, instance))

    def _restore(self, w: Any, node: str, instance: str, key: str, path: Path) -> Launch:
        """Start QEMU loading snapshot `path` (no waiting); its boot's console goes beside it."""
        run_dir = self.run_dir(w.vm, instance)
        run_dir.mkdir(parents=True, exist_ok=True)
        replace_file(run_dir / BOOT_CONSOLE, snapshot.saved_console(path).encode())
        fd = snapshot.open_snapshot(path)
        try:
            guest = QemuGuest(
                self.rt.ns(node), self.image(), self.spec(w), run_dir, incoming=f"fd:{fd}", pass_fds=(fd,)
            )
            guest.start(connect=False)
        finally:
            os.close(fd)
        self._note(w.vm, instance, f"restoring snapshot {path}")
        return Launch(w, node, instance, guest, key=key, snapshot=path, restored=True)

    @staticmethod
    def _wait_restored(guest: QemuGuest, timeout: float = RESTORE_TIMEOUT) -> None:
        """Until the restored guest runs; QemuError as soon as QEMU exits (a stream it cannot load)."""

        def running() -> bool:
            if not guest.alive():
                raise QemuError(f"QEMU exited loading the snapshot\n{guest.diagnostics()}")
            return guest.qmp.status() == "running"

        what = f"guest {guest.spec.name} to be restored"
        try:
            eventually(running, timeout=timeout, interval=0.02, what=what)
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}\n{guest.diagnostics()}") from None

    def _note(self, vm: str, instance: str, line: str) -> None:
        with (
            contextlib.suppress(OSError, FileRefused),
            open_output(self.run_dir(vm, instance) / SNAPSHOT_LOG, append=True) as f,
        ):
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n".encode())

    def start_target(self, w: Any, target: str, target_ip: str, instance: str) -> None:
        """Plug the VM into `target` and start QEMU there as `instance`, waiting for the stream."""
        self.plug(w, target)
        guest = QemuGuest(
            self.rt.ns(target),
            self.image_for(w),
            self.spec(w),
            self.run_dir(w.vm, instance),
            incoming=f"tcp:{target_ip}:{MIGRATION_PORT}",
        )
        guest.start()
        guest.qmp_close()

    def stop(self, vm: str, instance: str | None) -> None:
        """Quit one QEMU instance (QMP quit, then SIGKILL). Logs stay for diagnostics."""
        if instance is None:
            return
        pid = self.pid(vm, instance)
        if pid is not None:
            with contextlib.suppress(Exception), self.qmp(vm, instance, timeout=2) as q:
                q.execute("quit")
            try:
                eventually(lambda: not procs.alive(pid), timeout=5, interval=0.05, what=f"QEMU {pid} to exit")
            except WaitTimeout:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for f in ("qmp.sock", "qemu.pid"):
            (self.run_dir(vm, instance) / f).unlink(missing_ok=True)

    def unplug(self, w: Any, node: str) -> None:
        with contextlib.suppress(Exception):
            delete_tap(self.rt.ns(node), w.host_ifname)

    def running(self, vm: str, instance: str | None) -> bool:
        return self.status(vm, instance) == "running"

    # -- migration -----------------------------------------------------------------------
    def migrate(
        self,
        w: Any,
        source: tuple[str, str],
        target: tuple[str, str],
        target_ip: str,
        *,
        timeout: float = MIGRATION_TIMEOUT,
    ) -> list[dict[str, Any]]:
        """QEMU live migration from `source` to `target` ((node, instance) each) over the lab
        network. Returns timeline events.

        Raises LabError when the migration fails (e.g. the target QEMU died); what runs where
        afterwards is for the caller to settle (`settle`).
        """
        (src_node, src_inst), (dst_node, dst_inst) = source, target
        events: list[dict[str, Any]] = []

        def target_pid() -> int | None:
            return self.pid(w.vm, dst_inst)

        try:
            dst = self.qmp(w.vm, dst_inst)  # connected first: QMP tells only connected clients of RESUME
        except OSError as e:
            raise LabError(f"QEMU migration failed: the target QEMU on {dst_node} is gone ({e})") from None
        with dst, self.qmp(w.vm, src_inst) as src:
            src.execute(
                "migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}
            )
            src.execute("migrate-set-parameters", MIGRATION_PARAMETERS)
            src.execute("migrate", {"uri": f"tcp:{target_ip}:{MIGRATION_PORT}"})
            events.append({"t": time.time(), "source": f"qemu:{src_node}", "kind": "qmp", "event": "migrate"})
            failpoints.hit("migrate.cutover.migrating", target_pid=target_pid)

            def finished() -> dict[str, Any] | None:
                info = src.execute("query-migrate")
                status = info.get("status")
                if status in ("failed", "cancelled"):
                    raise LabError(f"QEMU migration {status}: {info.get('error-desc', 'no reason given')}")
                return info if status == "completed" else None

            try:
                info = eventually(finished, timeout=timeout, interval=0.02, what="QEMU migration to complete")
            except BaseException:
                with contextlib.suppress(Exception):
                    src.execute("migrate_cancel")
                with contextlib.suppress(Exception):
                    src.poll()
                events += _qmp_events(src, src_node)
                raise
            failpoints.hit("migrate.cutover.migrated", target_pid=target_pid)
            info = _with_statistics(src, info)
            src.poll()
            events += _qmp_events(src, src_node)
            try:
                dst.wait_event("RESUME", timeout=RESUME_TIMEOUT)
            except (OSError, LabError) as e:
                raise LabError(
                    f"QEMU migration failed: the target QEMU on {dst_node} did not resume ({e})"
                ) from None
            events += _qmp_events(dst, dst_node)
            failpoints.hit("migrate.cutover.resumed", target_pid=target_pid)
        events.append(
            {
                "t": time.time(),
                "source": f"qemu:{src_node}",
                "kind": "qmp",
                "event": "completed",
                "total_ms": info.get("total-time"),
                "downtime_ms": info.get("downtime"),
                "setup_ms": info.get("setup-time"),
            }
        )
        return events

    def settle(self, w: Any, source: str | None, target: str | None) -> str | None:
        """After a migration was interrupted: make the VM run in exactly one of two instances and
        say which, 'source' or 'target' (None: neither holds it any more).

        A QEMU migration goes on without the process that started it, so one still copying
        memory is cancelled first. Then: the source running wins (the target never took over);
        else the target running (it took over; a target that has all the state gets a few
        seconds to resume); else a source that holds the VM paused after the switchover is
        resumed (as libvirt resumes the source when the destination fails).
        """
        self._stop_outgoing(w.vm, source)
        src = self.status(w.vm, source)
        if src == "running":
            return "source"
        dst = self.status(w.vm, target)
        if dst == "inmigrate" and src in RESUMABLE:
            with contextlib.suppress(WaitTimeout):
                eventually(
                    lambda: self.status(w.vm, target) != "inmigrate",
                    timeout=RESUME_TIMEOUT,
                    interval=0.05,
                    what="the migration target to resume",
                )
            dst = self.status(w.vm, target)
        if dst == "running":
            return "target"
        if src in RESUMABLE and source is not None:
            with contextlib.suppress(OSError, QemuError), self.qmp(w.vm, source, timeout=5) as q:
                q.execute("cont")
            if self.running(w.vm, source):
                return "source"
        return None

    def _stop_outgoing(self, vm: str, instance: str | None) -> None:
        """Cancel a migration still moving memory out of `instance`, and wait until it ended."""
        if instance is None or self.pid(vm, instance) is None:
            return
        with contextlib.suppress(OSError, QemuError), self.qmp(vm, instance, timeout=3) as q:

            def ended() -> bool:
                return q.execute("query-migrate").get("status") not in MIGRATING

            if not ended():
                q.execute("migrate_cancel")
                with contextlib.suppress(WaitTimeout):
                    eventually(ended, timeout=10, interval=0.02, what="the QEMU migration to stop")


def _with_statistics(client: QMPClient, info: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
    """query-migrate once QEMU has filled in the statistics of a completed migration.

    QEMU can report `completed` before it has computed total-time and downtime (they read 0 or
    are absent for a moment): ask again until both are there and non-zero, for up to `timeout`
    seconds. If they never are, the figures are recorded as unknown (None), never as 0.
    """
    deadline = time.monotonic() + timeout
    while True:
        if info.get("total-time") and info.get("downtime") is not None:
            return info
        if time.monotonic() >= deadline:
            return {**info, "total-time": info.get("total-time") or None, "downtime": None}
        time.sleep(0.01)  # polling QEMU's statistics until the deadline
        info = client.execute("query-migrate")


def _qmp_events(client: QMPClient, node: str) -> list[dict[str, Any]]:
    return [
        {
            "t": ev.timestamp,
            "source": f"qemu:{node}",
            "kind": "qmp",
            "event": ev.name,
            **({"status": ev.data["status"]} if ev.data.get("status") else {}),
        }
        for ev in client.events
    ]
