"""The node agent: plays Felix's part for live migration on one node of the netns runtime.

It runs inside the node's namespace (`python -m harness.runtime.netns.agent --config FILE`), owns the /32
routes of the VMs on its node, watches each VM's host-side interface for RARP and GARP from
the VM with a raw socket, and drives one `livemigration.VMRoute` state machine per VM. For a
workload a localWorkloadSelector BGPPeer selects (`peering_ip` set), it provisions the
cluster's localWorkloadPeeringIPV4 as a /32 on the host side of the workload's interface.
The harness talks to it over a UNIX socket, one JSON request per connection:

    {"op": "ping"} | {"op": "status"}
    {"op": "add", "vm", "ip", "mac", "ifname", "running_here": bool,   # a VM pod on this node
     "peering_ip": str | None}
    {"op": "target", "vm", "ip", "mac", "ifname", "peering_ip"}        # migration target pod created
    {"op": "source", "vm"}                                             # this node is a migration source
    {"op": "ended", "vm", "succeeded": bool}                           # the migration finished
    {"op": "remove", "vm"}                                             # the VM's pod left this node

Every state change and route operation is logged with wall-clock time for migration records.
An emulation of Felix's behaviour (shared/design/calico-semantics.md), not Felix.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, NetlinkError

from harness.calico.livemigration import Priorities, Transition, VMRoute

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
ETH_P_RARP = 0x8035
RTPROT_BOOT = 3
SCOPE_LINK = 253  # a workload route is on-link, like `ip route add IP dev caliX` (and can be a gateway)
IDLE_POLL = 0.25  # how often to retry opening a capture on an interface that is not there yet


def classify_frame(frame: bytes, vm_mac: bytes, vm_ip: bytes) -> str | None:
    """'RARP' or 'GARP' when `frame` is an announcement from the VM, else None."""
    if len(frame) < 42 or frame[6:12] != vm_mac:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype == ETH_P_RARP:
        return "RARP"
    if ethertype == ETH_P_ARP and frame[28:32] == vm_ip:  # ARP sender IP is the VM's own IP
        return "GARP"
    return None


@dataclass
class Workload:
    vm: str
    ip: str
    mac: str
    ifname: str
    fsm: VMRoute
    capture: socket.socket | None = None
    installed_metric: int | None = None
    peering_ip: str | None = None  # localWorkloadPeeringIPV4 to provision on `ifname`
    peering_done: bool = False

    @property
    def prefix(self) -> str:
        return f"{self.ip}/32"


@dataclass
class Agent:
    node: str
    priorities: Priorities
    workloads: dict[str, Workload] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    netlink: IPRoute | None = None  # one socket for the agent's life (it runs inside the node namespace)

    # -- routes ------------------------------------------------------------------------
    def _ipr(self) -> IPRoute:
        if self.netlink is None:
            self.netlink = IPRoute()
        return self.netlink

    def _route(self, op: str, w: Workload, metric: int) -> None:
        ip = self._ipr()
        try:
            if op == "add":
                idx = ip.link_lookup(ifname=w.ifname)
                if not idx:
                    raise RuntimeError(f"interface {w.ifname} of {w.vm} is missing")
                ip.route(
                    "replace", dst=w.prefix, oif=idx[0], priority=metric, proto=RTPROT_BOOT, scope=SCOPE_LINK
                )
            else:
                ip.route("del", dst=w.prefix, priority=metric, scope=SCOPE_LINK)
        except NetlinkError as e:
            if e.code not in (errno.ESRCH, errno.ENOENT):
                raise
        self.log(w.vm, "route", op=op, prefix=w.prefix, metric=metric)

    def provision_peering(self, w: Workload) -> None:
        """The workload peering IP as a /32 on the workload's host-side interface (once it exists)."""
        if w.peering_ip is None or w.peering_done:
            return
        ip = self._ipr()
        idx = ip.link_lookup(ifname=w.ifname)
        if not idx:
            return  # retried on the next tick
        try:
            ip.addr("add", index=idx[0], address=w.peering_ip, prefixlen=32)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise
        w.peering_done = True
        self.log(w.vm, "peering-ip", ifname=w.ifname, address=f"{w.peering_ip}/32")

    def program(self, w: Workload) -> None:
        """Make the kernel match the state machine: add the new route first, then drop the old."""
        want = w.fsm.metric
        if want == w.installed_metric:
            return
        old = w.installed_metric
        if want is not None:
            self._route("add", w, want)
        w.installed_metric = want
        if old is not None:
            self._route("del", w, old)

    # -- events ------------------------------------------------------------------------
    def log(self, vm: str, kind: str, **fields: Any) -> None:
        self.events.append({"t": time.time(), "node": self.node, "vm": vm, "kind": kind, **fields})

    def apply(self, w: Workload, t: Transition | None) -> None:
        if t is None:
            return
        self.log(w.vm, "state", state=t.state.value, reason=t.reason, metric=t.metric)
        self.program(w)
        if t.state.value == "Target":
            self._open_capture(w)

    def _open_capture(self, w: Workload) -> None:
        if w.capture is not None:
            return
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            s.bind((w.ifname, 0))
        except OSError:
            s.close()
            return
        s.setblocking(False)
        w.capture = s
        self.log(w.vm, "capture", ifname=w.ifname)

    def _close_capture(self, w: Workload) -> None:
        if w.capture is not None:
            w.capture.close()
            w.capture = None

    def on_frame(self, w: Workload) -> None:
        assert w.capture is not None
        try:
            while True:
                frame = w.capture.recv(2048)
                kind = classify_frame(frame, bytes.fromhex(w.mac.replace(":", "")), socket.inet_aton(w.ip))
                if kind:
                    self.log(w.vm, "seen", what=kind)
                    self.apply(w, w.fsm.activity(time.monotonic(), kind))
                    if w.fsm.state.value != "Target":
                        self._close_capture(w)
                        return
        except BlockingIOError:
            return
        except OSError:  # interface went away
            self._close_capture(w)

    # -- control -----------------------------------------------------------------------
    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        now = time.monotonic()
        if op == "ping":
            return {"ok": True, "node": self.node}
        if op == "status":
            return {
                "ok": True,
                "node": self.node,
                "events": self.events,
                "workloads": {
                    vm: {
                        "state": w.fsm.state.value,
                        "metric": w.installed_metric,
                        "ip": w.ip,
                        "ifname": w.ifname,
                        "peering_ip": w.peering_ip if w.peering_done else None,
                    }
                    for vm, w in self.workloads.items()
                },
            }
        if op in ("add", "target"):
            old = self.workloads.get(req["vm"])
            if old is not None:
                self._close_capture(old)
            w = Workload(
                req["vm"],
                req["ip"],
                req["mac"],
                req["ifname"],
                VMRoute(req["vm"], self.priorities),
                peering_ip=req.get("peering_ip"),
            )
            if old is not None:
                w.installed_metric = old.installed_metric
            self.workloads[w.vm] = w
            t = (
                w.fsm.start(now, running_here=bool(req.get("running_here")))
                if op == "add"
                else w.fsm.target_created(now)
            )
            self.apply(w, t)
            self.provision_peering(w)
            return {"ok": True, "state": w.fsm.state.value}
        w = self.workloads.get(req.get("vm", ""))
        if w is None:
            return {"ok": False, "error": f"no workload {req.get('vm')!r} on {self.node}"}
        if op == "source":
            self.apply(w, w.fsm.became_source(now))
        elif op == "ended":
            self.apply(w, w.fsm.migration_ended(now, succeeded=bool(req.get("succeeded"))))
            self._close_capture(w)
        elif op == "remove":
            self._close_capture(w)
            self.apply(w, w.fsm.removed(now))
            del self.workloads[w.vm]
        else:
            return {"ok": False, "error": f"unknown op {op!r}"}
        return {"ok": True, "state": w.fsm.state.value}

    def tick(self) -> float:
        """Fire due timers, retry pending captures; return seconds until the next deadline."""
        now = time.monotonic()
        wait = IDLE_POLL * 4
        for w in list(self.workloads.values()):
            self.apply(w, w.fsm.tick(now))
            if w.peering_ip is not None and not w.peering_done:
                self.provision_peering(w)
                wait = min(wait, IDLE_POLL)
            if w.fsm.state.value == "Target" and w.capture is None:
                self._open_capture(w)
                wait = min(wait, IDLE_POLL)
            if w.fsm.deadline is not None:
                wait = min(wait, max(0.0, w.fsm.deadline - now))
        return wait


def serve(config: dict[str, Any], *, main_thread: bool = True) -> None:
    """Serve one node until SIGTERM/SIGINT (`main_thread`), or forever in a thread of an agent
    host (harness.runtime.netns.agenthost), which handles the signals for all its nodes."""
    pr = config.get("priorities", {})
    agent = Agent(
        config["node"],
        Priorities(pr.get("normal", 1024), pr.get("elevated", 512), float(pr.get("convergence", 30.0))),
    )
    for w in config.get("workloads", []):
        agent.handle({"op": "add", **w})
    path = Path(config["socket"])
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)

    def _stop(*_: object) -> None:
        raise SystemExit(0)  # leave select() now; Python would otherwise resume it after a handler

    if main_thread:
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    while True:
        timeout = agent.tick()
        captures = {w.capture: w for w in agent.workloads.values() if w.capture is not None}
        try:
            ready, _, _ = select.select([server, *captures], [], [], timeout)
        except InterruptedError:
            continue
        for s in ready:
            if s is server:
                conn, _ = server.accept()
                with conn:
                    _serve_one(agent, conn)
            else:
                agent.on_frame(captures[s])


def _serve_one(agent: Agent, conn: socket.socket) -> None:
    conn.settimeout(5)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    try:
        reply = agent.handle(json.loads(data or b"{}"))
    except Exception as e:  # a bad request must not kill the agent
        reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    conn.sendall(json.dumps(reply).encode() + b"\n")


class AgentClient:
    """The harness side of the control socket."""

    def __init__(self, socket_path: str | os.PathLike[str], timeout: float = 5.0):
        self.path = str(socket_path)
        self.timeout = timeout

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            s.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
        if not reply.get("ok"):
            raise RuntimeError(f"node agent at {self.path}: {reply.get('error')}")
        return reply


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="kvlab node agent (Felix's live-migration part)")
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    serve(json.loads(Path(args.config).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
