"""QEMU guests on the netns runtime: KubeVirt bridge-style VMs that really live-migrate.

A QEMU VM runs inside its node's namespace with a tap named like the Calico workload
interface (`cali<hash>`, host MAC ee:ee:ee:ee:ee:ee, proxy ARP, the node agent owns its /32).
A migration starts an identical QEMU on the target node with `-incoming tcp:<target>:49152`
(KubeVirt's migration port), then drives QEMU's own live migration over QMP across the lab
fabric. After RESUME, QEMU announces the VM's MAC with RARP on the target tap, which is what
the target's node agent waits for.

Guests outlive the process that started them (`kvlab up` exits), so everything here works from
files in the run directory: `<run>/<vm>/qemu-<node>/{qmp.sock,qemu.pid,serial.log,qemu.log}`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from harness import procs
from harness.errors import LabError, WaitTimeout
from harness.guestimage import GuestImage, ensure_image
from harness.qemu import GuestSpec, QemuGuest, QMPClient, create_tap, delete_tap
from harness.wait import eventually

MIGRATION_PORT = 49152  # KubeVirt/libvirt's live-migration port
BOOT_TIMEOUT = 90.0
MIGRATION_TIMEOUT = 60.0


class QemuVMs:
    """QEMU VM operations of one netns lab (stateless: reads the run directory)."""

    def __init__(self, runtime: Any):
        self.rt = runtime
        self._image: GuestImage | None = None

    def image(self) -> GuestImage:
        if self._image is None:
            self._image = ensure_image(self.rt.progress, pvh=True)
        return self._image

    def run_dir(self, vm: str, node: str) -> Path:
        return self.rt.entity_dir(vm) / f"qemu-{node}"

    def spec(self, w: Any) -> GuestSpec:
        from harness.runtime.netns import GUEST_PORT

        return GuestSpec(name=w.vm, ip=str(w.ip), mac=w.mac, tap=w.host_ifname, port=GUEST_PORT)

    def qmp(self, vm: str, node: str, timeout: float = 10.0) -> QMPClient:
        return QMPClient(self.run_dir(vm, node) / "qmp.sock", timeout=timeout).connect()

    def pid(self, vm: str, node: str) -> int | None:
        try:
            return int((self.run_dir(vm, node) / "qemu.pid").read_text())
        except (OSError, ValueError):
            return None

    # -- lifecycle -----------------------------------------------------------------------
    def plug(self, w: Any, node: str) -> None:
        """The node side of the VM's pod: a tap, Calico-style (the host side MAC, proxy ARP, neighbour)."""
        create_tap(self.rt.ns(node), w.host_ifname, mac="ee:ee:ee:ee:ee:ee")
        self.rt._host_side(node, w.host_ifname, w.ip, w.mac)

    def boot(self, w: Any) -> float:
        """Start the VM on its (already plugged) node and wait for its TCP server; seconds to ready."""
        guest = QemuGuest(self.rt.ns(w.node), self.image(), self.spec(w), self.run_dir(w.vm, w.node))
        guest.start()
        ready = guest.wait_ready(timeout=BOOT_TIMEOUT)
        guest.qmp.close()
        return ready

    def start_target(self, w: Any, target: str, target_ip: str) -> None:
        self.plug(w, target)
        guest = QemuGuest(
            self.rt.ns(target),
            self.image(),
            self.spec(w),
            self.run_dir(w.vm, target),
            incoming=f"tcp:{target_ip}:{MIGRATION_PORT}",
        )
        guest.start()
        guest.qmp.close()

    def stop(self, vm: str, node: str) -> None:
        """Quit a QEMU (QMP quit, then SIGKILL), then remove its run directory."""
        pid = self.pid(vm, node)
        with contextlib.suppress(Exception), self.qmp(vm, node, timeout=2) as q:
            q.execute("quit")
        if pid is not None:
            try:
                eventually(lambda: not procs.alive(pid), timeout=5, interval=0.05, what=f"QEMU {pid} to exit")
            except WaitTimeout:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for f in ("qmp.sock", "qemu.pid"):
            (self.run_dir(vm, node) / f).unlink(missing_ok=True)

    def unplug(self, w: Any, node: str) -> None:
        with contextlib.suppress(Exception):
            delete_tap(self.rt.ns(node), w.host_ifname)

    # -- migration -----------------------------------------------------------------------
    def migrate(
        self, w: Any, source: str, target: str, target_ip: str, *, timeout: float = MIGRATION_TIMEOUT
    ) -> list[dict[str, Any]]:
        """QEMU live migration source -> target over the lab network. Returns timeline events.

        Raises LabError when the migration fails (e.g. the target QEMU died); the source VM
        then keeps running where it was.
        """
        events: list[dict[str, Any]] = []
        try:
            dst = self.qmp(w.vm, target)  # connected first: QMP tells only connected clients of RESUME
        except OSError as e:
            raise LabError(f"QEMU migration failed: the target QEMU on {target} is gone ({e})") from None
        with dst, self.qmp(w.vm, source) as src:
            src.execute(
                "migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}
            )
            src.execute("migrate", {"uri": f"tcp:{target_ip}:{MIGRATION_PORT}"})
            events.append({"t": time.time(), "source": f"qemu:{source}", "kind": "qmp", "event": "migrate"})

            def finished() -> dict[str, Any] | None:
                info = src.execute("query-migrate")
                status = info.get("status")
                if status in ("failed", "cancelled"):
                    raise LabError(f"QEMU migration {status}: {info.get('error-desc', 'no reason given')}")
                # completed may be reported before the statistics are filled in: wait for them too
                return info if status == "completed" and "total-time" in info else None

            try:
                info = eventually(finished, timeout=timeout, interval=0.02, what="QEMU migration to complete")
            except BaseException:
                with contextlib.suppress(Exception):
                    src.execute("migrate_cancel")
                src.poll()
                events += _qmp_events(src, source)
                raise
            src.poll()
            events += _qmp_events(src, source)
            try:
                dst.wait_event("RESUME", timeout=10)
            except (OSError, LabError) as e:
                raise LabError(
                    f"QEMU migration failed: the target QEMU on {target} did not resume ({e})"
                ) from None
            events += _qmp_events(dst, target)
        events.append(
            {
                "t": time.time(),
                "source": f"qemu:{source}",
                "kind": "qmp",
                "event": "completed",
                "total_ms": info.get("total-time"),
                "downtime_ms": info.get("downtime"),
                "setup_ms": info.get("setup-time"),
            }
        )
        return events


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
