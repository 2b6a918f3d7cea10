"""The node agent: plays Felix's part for live migration on one node of the netns runtime.

It runs inside the node's namespace (`python -m harness.runtime.netns.agent --config FILE`), owns the /32
(and, dual stack, /128) routes of the VMs on its node, watches each VM's host-side interface
with a raw socket for what the VM announces, and drives one `livemigration.VMRoute` state
machine per VM IP: RARP (QEMU's, no address in it) activates every IP of the VM, a GARP its
IPv4 address, an unsolicited neighbour advertisement (ICMPv6 type 136, Solicited flag clear,
target = the VM's IPv6 address) its IPv6 address. IPv6 routes use the ipv6 priorities. For a
workload a localWorkloadSelector BGPPeer selects (`peering_ip` set), it provisions the
cluster's localWorkloadPeeringIPV4 as a /32 on the host side of the workload's interface, and
(`peering_ip6` set) its localWorkloadPeeringIPV6 as a /128 there.
The harness talks to it over a UNIX socket, one JSON request per connection:

    {"op": "ping"} | {"op": "status"}
    {"op": "add", "vm", "ip", "mac", "ifname", "running_here": bool,   # a VM pod on this node
     "peering_ip": str | None, "peering_ip6": str | None, "ip6": str | None}
    {"op": "target", "vm", "ip", "mac", "ifname", "peering_ip", "peering_ip6", "ip6"}  # target pod
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
from harness.netlink import Route, RouteChannel
from harness.safefile import FileRefused, unix_socket

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
ETH_P_RARP = 0x8035
ETH_P_IPV6 = 0x86DD
ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
NA_FLAG_SOLICITED = 0x40
RTPROT_BOOT = 3
IFA_F_NODAD = 0x02  # an IPv6 address used at once, without duplicate address detection
SCOPE_LINK = 253  # a workload route is on-link, like `ip route add IP dev caliX` (and can be a gateway)
IDLE_POLL = 0.25  # how often to retry opening a capture on an interface that is not there yet


def classify_frame(frame: bytes, vm_mac: bytes, vm_ip: bytes, vm_ip6: bytes | None = None) -> str | None:
    """'RARP', 'GARP' or 'NA' (an unsolicited neighbour advertisement for the VM's IPv6
    address) when `frame` is an announcement from the VM, else None."""
    if len(frame) < 42 or frame[6:12] != vm_mac:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype == ETH_P_RARP:
        return "RARP"
    if ethertype == ETH_P_ARP and frame[28:32] == vm_ip:  # ARP sender IP is the VM's own IP
        return "GARP"
    if (
        ethertype == ETH_P_IPV6
        and vm_ip6 is not None
        and len(frame) >= 78
        and frame[20] == ICMPV6  # IPv6 next header (no extension headers: an NA has none)
        and frame[54] == ND_NEIGHBOR_ADVERT
        and not frame[58] & NA_FLAG_SOLICITED
        and frame[62:78] == vm_ip6  # the target address
    ):
        return "NA"
    return None


TRIGGERS = {"RARP": (4, 6), "GARP": (4,), "NA": (6,)}
"""Which families' state machines an announcement activates."""


@dataclass
class FamilyRoute:
    """One IP of a VM: its state machine and the route installed for it."""

    family: int
    ip: str
    fsm: VMRoute
    installed_metric: int | None = None

    @property
    def prefix(self) -> str:
        return f"{self.ip}/{32 if self.family == 4 else 128}"


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
    peering_ip6: str | None = None  # localWorkloadPeeringIPV6 (a ULA, never link-local), likewise
    peering6_done: bool = False
    v6: FamilyRoute | None = None  # dual stack: the VM's IPv6 address

    @property
    def prefix(self) -> str:
        return f"{self.ip}/32"

    def peering_pending(self) -> bool:
        """Whether a workload peering IP still has to go on the interface."""
        return (self.peering_ip is not None and not self.peering_done) or (
            self.peering_ip6 is not None and not self.peering6_done
        )

    def machines(self) -> list[VMRoute]:
        return [self.fsm] + ([self.v6.fsm] if self.v6 else [])

    def in_target(self) -> bool:
        return any(m.state.value == "Target" for m in self.machines())


@dataclass
class Agent:
    node: str
    priorities: Priorities
    priorities6: Priorities = field(default_factory=Priorities)
    workloads: dict[str, Workload] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    netlink: IPRoute | None = None  # one socket for the agent's life (it runs inside the node namespace)
    route_channel: RouteChannel | None = None  # the same for adding routes, without pyroute2

    # -- routes ------------------------------------------------------------------------
    def _ipr(self) -> IPRoute:
        if self.netlink is None:
            self.netlink = IPRoute()
        return self.netlink

    def _routes(self) -> RouteChannel:
        if self.route_channel is None:
            self.route_channel = RouteChannel()
        return self.route_channel

    def _route(self, op: str, w: Workload, metric: int, prefix: str | None = None, family: int = 4) -> None:
        dst = prefix or w.prefix
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        try:
            if op == "add":
                try:  # an ioctl in this thread's namespace: pyroute2's link_lookup dumps links (~1 ms)
                    idx = socket.if_nametoindex(w.ifname)
                except OSError:
                    raise RuntimeError(f"interface {w.ifname} of {w.vm} is missing") from None
                scope = SCOPE_LINK if family == 4 else 0  # IPv6 routes have no link scope
                route = Route(dst=dst, dev=w.ifname, metric=metric, proto=RTPROT_BOOT, scope=scope)
                self._routes().replace(route, idx)
            elif family == 4:  # pyroute2 (made on the first delete): off the activation's path
                self._ipr().route("del", dst=dst, priority=metric, scope=SCOPE_LINK)
            else:
                self._ipr().route("del", dst=dst, family=af, priority=metric)
        except NetlinkError as e:
            if e.code not in (errno.ESRCH, errno.ENOENT):
                raise
        self.log(w.vm, "route", op=op, prefix=dst, metric=metric, family=family)

    def provision_peering(self, w: Workload) -> None:
        """The workload peering IPs on the workload's host-side interface (once it exists): the
        IPv4 one as a /32, the IPv6 one as a /128 without duplicate address detection (the same
        address sits on every selected workload's interface, as Felix provisions it)."""
        if not w.peering_pending():
            return
        ip = self._ipr()
        idx = ip.link_lookup(ifname=w.ifname)
        if not idx:
            return  # retried on the next tick
        for family, address in ((4, w.peering_ip), (6, w.peering_ip6)):
            if address is None or (w.peering_done if family == 4 else w.peering6_done):
                continue
            extra = {} if family == 4 else {"family": socket.AF_INET6, "flags": IFA_F_NODAD}
            length = 32 if family == 4 else 128
            try:
                ip.addr("add", index=idx[0], address=address, prefixlen=length, **extra)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
            if family == 4:
                w.peering_done = True
            else:
                w.peering6_done = True
            self.log(w.vm, "peering-ip", ifname=w.ifname, address=f"{address}/{length}", family=family)

    def program(self, w: Workload) -> None:
        """Make the kernel match the state machines: add the new route first, then drop the old."""
        want = w.fsm.metric
        if want != w.installed_metric:
            old = w.installed_metric
            if want is not None:
                self._route("add", w, want)
            w.installed_metric = want
            if old is not None:
                self._route("del", w, old)
        r = w.v6
        if r is not None and r.fsm.metric != r.installed_metric:
            old, want = r.installed_metric, r.fsm.metric
            if want is not None:
                self._route("add", w, want, r.prefix, 6)
            r.installed_metric = want
            if old is not None:
                self._route("del", w, old, r.prefix, 6)

    # -- events ------------------------------------------------------------------------
    def log(self, vm: str, kind: str, **fields: Any) -> None:
        self.events.append({"t": time.time(), "node": self.node, "vm": vm, "kind": kind, **fields})

    def apply(self, w: Workload, t: Transition | None, family: int = 4) -> None:
        if t is None:
            return
        self.log(w.vm, "state", state=t.state.value, reason=t.reason, metric=t.metric, family=family)
        self.program(w)
        if t.state.value == "Target":
            self._open_capture(w)

    def apply_all(self, w: Workload, step: Any) -> None:
        """Feed one input to every family's machine: `step(fsm)` returns its transition."""
        self.apply(w, step(w.fsm), 4)
        if w.v6 is not None:
            self.apply(w, step(w.v6.fsm), 6)

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
                ip6 = socket.inet_pton(socket.AF_INET6, w.v6.ip) if w.v6 else None
                mac = bytes.fromhex(w.mac.replace(":", ""))
                kind = classify_frame(frame, mac, socket.inet_aton(w.ip), ip6)
                if kind:
                    self.log(w.vm, "seen", what=kind)
                    now = time.monotonic()
                    if 4 in TRIGGERS[kind]:
                        self.apply(w, w.fsm.activity(now, kind), 4)
                    if 6 in TRIGGERS[kind] and w.v6 is not None:
                        self.apply(w, w.v6.fsm.activity(now, kind), 6)
                    if not w.in_target():
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
                        "peering_ip6": w.peering_ip6 if w.peering6_done else None,
                        **(
                            {"ip6": w.v6.ip, "state6": w.v6.fsm.state.value, "metric6": w.v6.installed_metric}
                            if w.v6
                            else {}
                        ),
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
                peering_ip6=req.get("peering_ip6"),
            )
            if req.get("ip6"):
                w.v6 = FamilyRoute(6, str(req["ip6"]), VMRoute(req["vm"], self.priorities6))
            if old is not None:
                w.installed_metric = old.installed_metric
                if w.v6 is not None and old.v6 is not None and old.v6.ip == w.v6.ip:
                    w.v6.installed_metric = old.v6.installed_metric
            self.workloads[w.vm] = w
            running = bool(req.get("running_here"))
            self.apply_all(
                w, lambda m: m.start(now, running_here=running) if op == "add" else m.target_created(now)
            )
            self.provision_peering(w)
            return {"ok": True, "state": w.fsm.state.value}
        w = self.workloads.get(req.get("vm", ""))
        if w is None:
            return {"ok": False, "error": f"no workload {req.get('vm')!r} on {self.node}"}
        if op == "source":
            self.apply_all(w, lambda m: m.became_source(now))
        elif op == "ended":
            ok = bool(req.get("succeeded"))
            self.apply_all(w, lambda m: m.migration_ended(now, succeeded=ok))
            self._close_capture(w)
        elif op == "remove":
            self._close_capture(w)
            self.apply_all(w, lambda m: m.removed(now))
            del self.workloads[w.vm]
        else:
            return {"ok": False, "error": f"unknown op {op!r}"}
        return {"ok": True, "state": w.fsm.state.value}

    def tick(self) -> float:
        """Fire due timers, retry pending captures; return seconds until the next deadline."""
        now = time.monotonic()
        wait = IDLE_POLL * 4
        for w in list(self.workloads.values()):
            self.apply_all(w, lambda m: m.tick(now))
            if w.peering_pending():
                self.provision_peering(w)
                wait = min(wait, IDLE_POLL)
            if w.in_target() and w.capture is None:
                self._open_capture(w)
                wait = min(wait, IDLE_POLL)
            for m in w.machines():
                if m.deadline is not None:
                    wait = min(wait, max(0.0, m.deadline - now))
        return wait


def serve(config: dict[str, Any], *, main_thread: bool = True) -> None:
    """Serve one node until SIGTERM/SIGINT (`main_thread`), or forever in a thread of an agent
    host (harness.runtime.netns.agenthost), which handles the signals for all its nodes."""
    pr, pr6 = config.get("priorities", {}), config.get("priorities6", {})
    agent = Agent(
        config["node"],
        Priorities(pr.get("normal", 1024), pr.get("elevated", 512), float(pr.get("convergence", 30.0))),
        Priorities(pr6.get("normal", 1024), pr6.get("elevated", 512), float(pr.get("convergence", 30.0))),
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
        try:
            unix_socket(self.path)  # never through a symlink planted in the run directory
        except FileRefused as e:
            raise ConnectionRefusedError(f"node agent socket {self.path} refused: {e}") from None
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
