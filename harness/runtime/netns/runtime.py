"""The embedded runtime: every lab entity is a Linux network namespace, links are veth pairs,
routers and nodes run real BIRD 1.6.

Layout of one lab instance `<lab>`:
- namespaces `kvlab.<lab>.<entity>` for routers, nodes, external hosts and VM endpoints;
- a rack is a bridge `br-rack` in its ToR's namespace; each node's `eth0` is a veth whose
  other end (named after the node) is a bridge port; the ToR's address sits on the bridge;
- router links and host links are veth pairs named after the far end;
- a VM endpoint is attached Calico-style: host side `cali<hash>` with MAC ee:ee:ee:ee:ee:ee,
  proxy ARP, a /32 route at the normal metric and a permanent neighbour entry; VM side
  `eth0` with the VM's /32 and a default route via 169.254.1.1 on-link;
- BIRD's config, control socket, pid file and log are in `<run dir>/<lab>/<entity>/`;
- a nested cluster's node has no namespace of its own: its BIRD runs in its VM's namespace
  (no node agent: nested pods don't migrate), with a test pod address on its `lo`; in a QEMU
  VM, BIRD runs in the guest (config and pod address from the VM's initrd) and a relay
  (`birdrelay`) gives it a control socket on the host like every other speaker's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from harness import netlink, procs
from harness.birdc import BirdClient
from harness.calico import confd, felix
from harness.errors import LabError, PreflightError
from harness.kernel import KernelRoute, address_family, kernel_routes
from harness.record import MigrationRecord
from harness.render.bird import (
    BIRD6_SUFFIX,
    check_rendered,
    daemon_of,
    render_node,
    rendered_configs,
)
from harness.runtime.base import RenderReport, Runtime
from harness.runtime.netns import mockguest
from harness.runtime.netns.agent import AgentClient
from harness.runtime.netns.guestimage import BIRDCTL_PORT, GUEST_BIRD_LOG
from harness.runtime.netns.journal import MigrationInProgress, MigrationJournal
from harness.runtime.netns.migration import Migration
from harness.runtime.netns.vms import (
    BOOT_CONSOLE,
    SNAPSHOT_LOG,
    Launch,
    QemuVMs,
    boot_instance,
    new_instance,
)
from harness.safefile import (
    FileRefused,
    check_under,
    open_output,
    read_regular,
    read_tail,
    replace_file,
    unix_socket,
    write_under,
)
from harness.state import LabState, lab_dir, namespace_name, parse_namespace
from harness.topology import (
    GUEST_PORT,
    RACK_BRIDGE,
    UPLINK,
    WORKLOAD_GATEWAY,
    WORKLOAD_GATEWAY6,
    WORKLOAD_HOST_MAC,
    Topology,
)
from harness.wait import eventually

MOCKGUEST = "harness.runtime.netns.mockguest"  # the module a mock VM runs as its guest
BIRDRELAY = "harness.runtime.netns.birdrelay"  # a nested node's control socket when it runs in QEMU
AGENT_HOST = "harness.runtime.netns.agenthost"  # the process running every node agent of a lab
BIRD_STARTERS = 8  # BIRD daemons started at a time
NEIGHBOUR_MARGIN = 256  # neighbour entries a lab may need beyond its links' (guests, probes)
TEARDOWN_TIMEOUT = 15.0  # seconds to keep killing what still runs in a lab's namespaces
NESTED_POD_IF = "lo"  # inside a nested node's VM: carries its test pod's address
DIAGNOSTICS_LIMIT = 64 * 1024 * 1024  # bytes of one run directory file copied into a diagnostics bundle
CONFIG_LIMIT = 16 * 1024 * 1024  # bytes of a BIRD config read back from the run directory
BASE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}
# Dual stack: every namespace skips duplicate address detection (lab addresses are unique by
# construction; DAD would keep each new address "tentative", unusable, for a second or more);
# routers and nodes forward IPv6 too.
V6_SYSCTLS = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"}
V6_FORWARDING = {"net.ipv6.conf.all.forwarding": "1", "net.ipv6.conf.default.forwarding": "1"}
DAEMONS = {4: "bird", 6: "bird6"}


def find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


class NetnsRuntime(Runtime):
    name = "netns"

    # -- instances on this machine ---------------------------------------------------------
    @classmethod
    def present(cls) -> set[str]:
        """Labs with at least one namespace `kvlab.<lab>.*` on this machine."""
        return {parsed[0] for ns in netlink.list_namespaces() if (parsed := parse_namespace(ns))}

    @classmethod
    def owned_elsewhere(cls, lab: str) -> bool:
        """Whether lab `lab`'s namespaces run processes of another run root (a lab brought up
        with another KVLAB_RUN_DIR): their command lines name files of `<other root>/<lab>/`,
        never of ours. (A lab another run root is still building holds the machine-wide lock
        of its name, harness.state.lab_lock: the reaper never gets that far.)"""
        ours, marker = f"{lab_dir(lab)}/", f"/{lab}/"
        for ns in netlink.list_namespaces():
            parsed = parse_namespace(ns)
            if parsed is None or parsed[0] != lab:
                continue
            for pid in netlink.namespace_pids(ns):
                try:
                    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                except OSError:
                    continue
                if any(marker in a and ours not in a for a in args):
                    return True
        return False

    # -- paths -------------------------------------------------------------------------
    def ns(self, entity: str) -> str:
        return namespace_name(self.lab, self.hosted.get(entity, entity))

    def entity_dir(self, entity: str) -> Path:
        return self.run_dir / entity

    def bird_socket(self, entity: str, family: int = 4) -> Path:
        """`<run>/<entity>/bird.ctl` (bird6.ctl), refused (LabError) if something planted in the
        run directory would lead a connect elsewhere: it must lie under the lab's run directory and
        it and its directory be no symlinks, the socket (if there) a socket. BirdClient checks the
        socket again when it connects."""
        path = self.entity_dir(entity) / f"{DAEMONS[family]}.ctl"
        try:
            unix_socket(path, self.run_dir)
        except FileNotFoundError:
            pass  # not there (yet): BIRD is not running, BirdClient says so
        except FileRefused as e:
            raise LabError(f"BIRD control socket {path} refused: {e}") from None
        return path

    def bird_files(self, entity: str, family: int = 4) -> dict[str, Path]:
        d, name = self.entity_dir(entity), DAEMONS[family]
        return {"config": d / f"{name}.conf", "log": d / f"{name}.log", "pid": d / f"{name}.pid"}

    def command(self, entity: str, argv: list[str]) -> list[str]:
        if not netlink.namespace_exists(self.ns(entity)):
            raise LabError(f"'{entity}' has no namespace in lab '{self.lab}' (is the lab up?)")
        return ["ip", "netns", "exec", self.ns(entity), *argv]

    def kernel_routes(
        self, entity: str, prefix: str | None = None, family: int | None = None
    ) -> list[KernelRoute]:
        return kernel_routes(self.ns(entity), prefix, family=address_family(prefix, family))

    def netns_path(self, entity: str) -> str | None:
        return self.ns(entity)

    # -- lifecycle ---------------------------------------------------------------------
    def preflight(self) -> None:
        missing = []
        if os.geteuid() != 0:
            missing.append("root privileges (network namespaces and veth pairs need CAP_NET_ADMIN)")
        if find_binary("bird") is None:
            missing.append("BIRD 1.6 daemon 'bird' (Debian package 'bird'; 'make setup' installs it)")
        if self.spec.dual_stack and find_binary("bird6") is None:
            missing.append("BIRD 1.6 IPv6 daemon 'bird6' (Debian package 'bird') for this dual-stack lab")
        if find_binary("ip") is None:
            missing.append("'ip' from iproute2 (Debian package 'iproute2')")
        if missing:
            raise PreflightError(self.name, missing)

    def up(self, state: LabState) -> None:
        """Create the lab. Any failure (or Ctrl-C) removes everything created so far."""
        topo, resources = self.topo, self.context.resources
        self.preflight()
        configs = self._bird_configs()  # every one passes `bird -p` before anything exists
        launches: list[Launch] = []
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            state.save(self.run_dir)
            agent_host = self._spawn_agent_host(topo)  # Python starts while the lab is built
            self._neighbour_room(topo)
            self._create_namespaces(topo)
            self._wire_racks(topo)
            self._wire_links(topo)
            self._attach_workloads(topo)
            self._nested_pods(topo)
            launches = self._launch_guests(topo)  # they boot while the fabric comes up
            agents = self._start_agents(topo, resources, agent_host)
            # BIRDs next, not after the agents answer: nodes first connect Calico's `connect delay
            # time` (2 s) after their BIRD started, the longest wait of a lab's bring-up
            self._start_birds(topo, configs)  # BGP converges while the guests boot
            self._wait_agents(agents)
            self._start_guests(topo, launches)
        except BaseException:
            for launch in launches:
                launch.guest.qmp_close()
            self.down()
            raise

    def in_guest(self, entity: str) -> bool:
        """Whether `entity` is a nested node whose BIRD runs inside a QEMU guest."""
        vm = self.hosted.get(entity)
        return vm is not None and self.topo.workload(vm).backend == "qemu"

    def healthy(self) -> bool:
        state = LabState.load(self.run_dir)
        if state is None:
            return False
        for entity, kind in state.entities.items():
            if not self.in_guest(entity) and not netlink.namespace_exists(self.ns(entity)):
                return False
            if self.in_guest(entity):
                if not self._pid_alive(entity, "birdctl"):
                    return False
            elif kind in ("router", "node") and not all(
                self._pid_alive(entity, DAEMONS[f]) for f in self._families(entity)
            ):
                return False
            if kind == "node" and entity not in self.hosted and not self._pid_alive(entity, "agent"):
                return False
        return True

    def problems(self) -> list[str]:
        """`healthy()` plus the guests: each VM's QEMU instance (or mock guest) runs where the
        lab state says and its echo port answers from that node."""
        if not self.healthy():
            return [f"lab '{self.lab}' is not fully running (a namespace, BIRD or node agent is missing)"]
        out = []
        for w in self.topo.workloads:
            loc = self.vm_location(w.vm)
            if w.backend == "qemu" and self.qemu.pid(w.vm, loc["guest"]) is None:
                out.append(f"{w.vm}: its QEMU ({loc['guest']} on {loc['node']}) is not running")
            elif w.backend == "mock" and not self._pid_alive(w.vm, "guest"):
                out.append(f"{w.vm}: its mock guest's echo server is not running")
            elif not _echo_answers(self.ns(loc["node"]), str(w.ip), GUEST_PORT):
                out.append(f"{w.vm}: no answer on {w.ip}:{GUEST_PORT} from {loc['node']}")
        return out

    def reconcile(self) -> list[str]:
        """Settle every migration whose process died (its journal is on disk, its lock free)."""
        notes = []
        for vm in MigrationJournal.pending(self.run_dir):
            try:
                m = Migration.interrupted(self, vm)
            except MigrationInProgress:
                continue  # a live process is migrating it
            if m is None:
                notes.append(f"{vm}: an unreadable migration journal was removed")
                continue
            j = m.journal
            outcome = m.recover(f"its process {j.pid} ended in phase {j.phase}")
            where = self.vm_location(vm)["node"]
            notes.append(
                f"{vm}: the interrupted migration {j.source} -> {j.target} (pid {j.pid}, phase {j.phase}) "
                f"was {outcome}: {vm} runs on {where}"
            )
        return notes

    def first_guest(self, w: Any) -> str | None:
        return boot_instance(w.node) if w.backend == "qemu" else None

    def down(self) -> None:
        """Kill every process in the lab's namespaces, delete them, remove the run directory.

        Killed until none is left: a builder killed while it started a daemon leaves an `ip
        netns exec` in flight, whose daemon (BIRD forks) appears after the first look."""
        mine = [ns for ns in netlink.list_namespaces() if (p := parse_namespace(ns)) and p[0] == self.lab]
        deadline = time.monotonic() + TEARDOWN_TIMEOUT
        while pids := [pid for ns in mine for pid in netlink.namespace_pids(ns)]:
            procs.kill_all(pids)  # all at once
            if time.monotonic() > deadline:
                break
        for ns in mine:
            netlink.remove_namespace(ns)
        # A daemon started into a namespace just before it was deleted lives on outside any named
        # one: every lab process names a file of the run directory on its command line.
        procs.kill_all(procs.mentioning(self.run_dir))
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def diagnostics(self, out_dir: Path) -> list[str]:
        """Each node agent's status, log and config; each QEMU instance's serial console and log
        (one directory per node the guest ran or was started on); migration journals left."""
        errors: list[str] = []

        def copy(src: Path, dst: Path) -> None:
            """A run directory file into the bundle: a regular file, not a symlink; its end if large."""
            try:
                data = read_tail(src, DIAGNOSTICS_LIMIT, what="files copied for diagnostics")
            except FileNotFoundError:
                return
            except FileRefused as e:
                errors.append(f"{src} not copied: {e}")
                return
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)

        for _, node in self.spec.all_nodes():
            if node.name in self.hosted:
                continue  # a nested node has BIRD but no node agent
            d = out_dir / node.name
            try:
                d.mkdir(parents=True, exist_ok=True)
                (d / "agent-status.json").write_text(
                    json.dumps(self.agent(node.name).call("status"), indent=2)
                )
            except (OSError, RuntimeError, ValueError) as e:
                errors.append(f"{node.name} agent status: {type(e).__name__}: {e}")
            for name in ("agent.log", "agent.json"):
                copy(self.entity_dir(node.name) / name, d / name)
        for w in self.topo.workloads:
            if w.backend == "qemu":
                for qdir in sorted(self.entity_dir(w.vm).glob("qemu-*")):
                    for name in ("serial.log", "qemu.log", BOOT_CONSOLE, SNAPSHOT_LOG):
                        copy(qdir / name, out_dir / w.vm / qdir.name / name)
        for vm in MigrationJournal.pending(self.run_dir):
            copy(MigrationJournal.path(self.run_dir, vm), out_dir / "migrations" / f"{vm}.json")
        return errors

    def render(self, out_dir: Path) -> RenderReport:
        """The BIRD config of every router and node under `out_dir/bird/`, written only once
        `bird -p` takes every one of them (SpecError naming the one it refuses)."""
        configs = rendered_configs(self.spec)
        try:
            checked = [f"{check_rendered(self.spec, configs)} BIRD configs pass bird -p"]
            skipped: list[str] = []
        except LabError as e:  # no BIRD on this machine: render anyway, say so
            checked, skipped = [], [f"BIRD configs not checked: {e}"]
        paths = {Path("bird") / f"{entity.replace('/', '.')}.conf": text for entity, _, text in configs}
        check_under(out_dir, paths)  # all or nothing: no output directory left half-written
        files = [write_under(out_dir, rel, text) for rel, text in paths.items()]
        return RenderReport(
            files=files,
            checked=checked,
            skipped=skipped,
            summary=f"lab '{self.spec.name}': {len(files)} BIRD configs",
            main=out_dir,
        )

    # -- steps -------------------------------------------------------------------------
    def _neighbour_room(self, topo: Topology) -> None:
        """The kernel's neighbour tables (shared by every namespace) get room for the lab's: two
        entries a link or rack port (one each end), one a workload's host side, one a guest, with
        a margin of 256 (a large lab would overflow the default 1024 and converge tens of
        seconds late). A raise is noted; one refused is noted too, and the lab goes on."""
        need = 2 * (len(topo.rack_ports) + len(topo.links) + len(topo.host_links) + len(topo.workloads))
        for family in topo.families:
            try:
                raised = netlink.ensure_neighbour_room(need + NEIGHBOUR_MARGIN, family)
            except (OSError, ValueError, IndexError) as e:
                raised = f"IPv{family} neighbour table limits not raised for {need} entries: {e}"
            if raised is not None:
                self.notes.append(raised)

    def _create_namespaces(self, topo: Topology) -> None:
        entities = topo.entities
        with self.progress.step("namespaces", total=len(entities)) as step, netlink.NamespaceMaker() as maker:
            for entity, kind in entities.items():
                if entity in self.hosted:
                    step.advance(detail=f"{entity} (in {self.hosted[entity]})")
                    continue
                ns = self.ns(entity)
                if netlink.namespace_exists(ns):
                    raise LabError(f"namespace {ns} already exists (a leftover? run 'kvlab down {self.lab}')")
                sysctls = dict(V6_SYSCTLS) if topo.dual_stack else {}
                if kind in ("router", "node"):
                    sysctls |= BASE_SYSCTLS | (V6_FORWARDING if topo.dual_stack else {})
                maker.create(ns, sysctls)
                step.advance(detail=entity)

    def _wire_racks(self, topo: Topology) -> None:
        """Each ToR's bridge and its ports' veth pairs made in one batch, then configured: the
        ToR's side in one batch, each node's side in one (harness.netlink.apply)."""
        ports: dict[str, list[Any]] = {}
        for port in topo.rack_ports:
            ports.setdefault(port.tor, []).append(port)
        with self.progress.step("rack links", total=len(topo.rack_ports)) as step:
            for tor, addr in topo.tor_address.items():
                tor_ns, mine = self.ns(tor), ports.get(tor, [])
                tor_side: list[netlink.Request] = [netlink.Bridge(RACK_BRIDGE)]
                tor_side += [netlink.Veth(p.tor_port, UPLINK, self.ns(p.node)) for p in mine]
                tor_side += [netlink.LinkSet(RACK_BRIDGE, up=True), netlink.Address(RACK_BRIDGE, addr)]
                if tor in topo.tor_address6:
                    tor_side.append(netlink.Address(RACK_BRIDGE, topo.tor_address6[tor]))
                for p in mine:
                    tor_side += [
                        netlink.LinkSet(p.tor_port, master=RACK_BRIDGE),
                        netlink.LinkSet(p.tor_port, up=True),
                    ]
                netlink.apply(tor_ns, tor_side)
                for port in mine:
                    node_side: list[netlink.Request] = [netlink.Address(UPLINK, port.node_address)]
                    if port.node_address6 is not None:
                        node_side.append(netlink.Address(UPLINK, port.node_address6))
                    node_side.append(netlink.LinkSet(UPLINK, up=True))
                    # A node's default gateway is its ToR, as on a real rack. Proxy ARP for the
                    # workloads' 169.254.1.1 gateway only answers when the node has a route to it.
                    node_side.append(netlink.Route("0.0.0.0/0", gateway=str(addr.ip)))
                    if tor in topo.tor_address6:
                        node_side.append(netlink.Route("::/0", gateway=str(topo.tor_address6[tor].ip)))
                    netlink.apply(self.ns(port.node), node_side)
                    step.advance(detail=port.node)

    def _wire_links(self, topo: Topology) -> None:
        """Router links and host links: the veth pairs each namespace makes in one batch, then
        each namespace's addresses, links up and (hosts) routes in one."""
        links = topo.links + topo.host_links
        with self.progress.step("fabric links", total=len(links)) as step:
            made: dict[str, list[netlink.Request]] = {}
            config: dict[str, list[netlink.Request]] = {}
            for link in links:
                a_ns, b_ns = self.ns(link.a.entity), self.ns(link.b.entity)
                made.setdefault(a_ns, []).append(netlink.Veth(link.a.ifname, link.b.ifname, b_ns))
                for ns, end in ((a_ns, link.a), (b_ns, link.b)):
                    side = config.setdefault(ns, [])
                    side.append(netlink.Address(end.ifname, end.address))
                    if end.address6 is not None:
                        side.append(netlink.Address(end.ifname, end.address6))
                    side.append(netlink.LinkSet(end.ifname, up=True))
            for link in topo.host_links:  # external hosts route everything via their router
                side = config.setdefault(self.ns(link.b.entity), [])
                side.append(netlink.Route("0.0.0.0/0", gateway=str(link.a.address.ip)))
                if link.a.address6 is not None:
                    side.append(netlink.Route("::/0", gateway=str(link.a.address6.ip)))
            for ns, requests in made.items():
                netlink.apply(ns, requests)
            for ns, requests in config.items():
                netlink.apply(ns, requests)
            step.advance(len(links))

    def _attach_workloads(self, topo: Topology) -> None:
        with self.progress.step("VM endpoints", total=len(topo.workloads)) as step:
            for w in topo.workloads:
                if w.backend == "qemu":
                    self.qemu.plug(w, w.node)
                else:
                    self.attach_workload(w.vm, w.node, w.ip, w.mac, w.host_ifname, ip6=w.ip6)
                step.advance(detail=w.vm)

    @property
    def qemu(self) -> QemuVMs:
        if not hasattr(self, "_qemu"):
            self._qemu = QemuVMs(self)
        return self._qemu

    def attach_workload(
        self, vm: str, node: str, ip: Any, mac: str, host_if: str, vm_if: str = UPLINK, *, ip6: Any = None
    ) -> None:
        """Plug a VM endpoint namespace into a node the way Calico's CNI plugs a pod.

        The VM's /32 route on the node is the node agent's business (Felix's part), not this one's.
        """
        node_ns, vm_ns = self.ns(node), self.ns(vm)
        netlink.add_veth(node_ns, host_if, vm_ns, vm_if)
        netlink.link_up(node_ns, host_if, mac=WORKLOAD_HOST_MAC)
        self.plug_guest(vm, vm_if, ip, mac, ip6=ip6)
        self._host_side(node, host_if, ip, mac, ip6=ip6)

    def plug_guest(self, vm: str, vm_if: str, ip: Any, mac: str, *, ip6: Any = None) -> None:
        """Guest side: the VM's MAC and /32 on `vm_if`, gateway 169.254.1.1 on-link through it;
        dual stack: its /128 too, default route via the host side's link-local address (the same
        on every node: it derives from the MAC ee:ee:ee:ee:ee:ee)."""
        vm_ns = self.ns(vm)
        netlink.link_up(vm_ns, vm_if, mac=mac)
        netlink.add_address(vm_ns, vm_if, _host_iface(ip))
        netlink.add_route(vm_ns, f"{WORKLOAD_GATEWAY}/32", dev=vm_if)
        netlink.add_route(vm_ns, "0.0.0.0/0", gateway=str(WORKLOAD_GATEWAY), dev=vm_if, onlink=True)
        if ip6 is not None:
            netlink.add_address(vm_ns, vm_if, _host_iface(ip6))
            netlink.add_route(vm_ns, "::/0", gateway=str(WORKLOAD_GATEWAY6), dev=vm_if)

    def _host_side(self, node: str, host_if: str, ip: Any, mac: str, *, ip6: Any = None) -> None:
        node_ns = self.ns(node)
        sysctls = {f"net.ipv4.conf.{host_if}.proxy_arp": "1", f"net.ipv4.neigh.{host_if}.proxy_delay": "0"}
        if ip6 is not None:  # Felix: proxy NDP on the host side of an IPv6 workload
            sysctls |= {
                f"net.ipv6.conf.{host_if}.proxy_ndp": "1",
                f"net.ipv6.neigh.{host_if}.proxy_delay": "0",
            }
        netlink.set_sysctls(node_ns, sysctls)
        netlink.add_permanent_neighbour(node_ns, host_if, str(ip), mac)
        if ip6 is not None:
            netlink.add_permanent_neighbour(node_ns, host_if, str(ip6), mac)

    def workload_interface(self, vm: str, node: str) -> str:
        return self.topo.workload(vm).host_ifname  # the same name on every node, as the CNI names it

    # -- migration -----------------------------------------------------------------------
    def migrate(self, vm: str, to: str, **kwargs: Any) -> MigrationRecord:
        return Migration(self, vm, to).run(**kwargs)

    def migration(self, vm: str, to: str) -> Migration:
        """A migration whose phases (prepare, activate, complete, fail) the caller drives, to look
        at the lab in between (this runtime's own tests)."""
        return Migration(self, vm, to)

    # -- migration primitives -----------------------------------------------------------
    def new_guest(self, w: Any, node: str) -> str | None:
        """The QEMU instance a migration to `node` will start (None for a mock VM): chosen, and
        journalled, before it starts."""
        return new_instance(node) if w.backend == "qemu" else None

    def guest_pid(self, w: Any, guest: str | None) -> int | None:
        return self.qemu.pid(w.vm, guest) if w.backend == "qemu" and guest else None

    def migration_prepare(self, w: Any, target: str, target_ip: str, new_if: str, guest: str | None) -> None:
        """The target pod: its interface (mock) or tap + an `-incoming` QEMU instance (qemu)."""
        if w.backend == "qemu":
            assert guest is not None
            self.qemu.start_target(w, target, target_ip, guest)
        else:
            self.prepare_target(w.vm, target, w.ip, w.mac, w.host_ifname, new_if, ip6=w.ip6)

    def migration_cutover(
        self, w: Any, journal: Any, target_ip: str, *, rarp: bool = False, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Move the running VM to the target; returns backend events (QMP) for the record."""
        if w.backend == "qemu":
            return self.qemu.migrate(
                w,
                (journal.source, journal.source_guest),
                (journal.target, journal.target_guest),
                target_ip,
                timeout=timeout,
            )
        self.activate_guest(w.vm, journal.source_if, journal.target_if, w.ip, w.mac, rarp=rarp, ip6=w.ip6)
        return []

    def guest_running(self, w: Any, node: str, guest: str | None, vm_if: str) -> bool:
        """Whether the VM runs as `guest` (QEMU instance) on `node`, or, for a mock VM, whether
        its guest side is `vm_if` (up, with the VM's address)."""
        if w.backend == "qemu":
            return self.qemu.running(w.vm, guest)
        return self._guest_on(w, vm_if)

    def settle(self, w: Any, journal: Any) -> str | None:
        """Where an interrupted migration left the VM: 'source', 'target', or None (nowhere),
        having made sure it runs in one place only (see QemuVMs.settle)."""
        if w.backend == "qemu":
            return self.qemu.settle(w, journal.source_guest, journal.target_guest)
        if journal.phase != "prepare" and self._guest_on(w, journal.target_if):
            return "target"
        return "source"  # a mock VM's namespace survives anything; its source side is re-plugged

    def reboot_guest(self, w: Any, node: str, guest: str | None) -> None:
        """Boot the VM again on `node` as instance `guest` (both copies are gone: its memory is
        lost, it runs again). A mock VM's namespace cannot be lost: nothing to do."""
        if w.backend == "qemu" and guest is not None:
            self.qemu.plug(w, node)
            self.qemu.boot(w, node, guest)

    def migration_release_source(self, w: Any, source: str, old_if: str, guest: str | None) -> None:
        """The source pod goes away (after the agent removed its route)."""
        if w.backend == "qemu":
            self.qemu.stop(w.vm, guest)
            self.qemu.unplug(w, source)
        else:
            with contextlib.suppress(LookupError):
                self.detach_guest(w.vm, old_if)

    def migration_abort(self, w: Any, target: str, new_if: str, guest: str | None) -> None:
        """The target pod goes away: only the QEMU instance this migration started, its tap, or
        the mock's target interface."""
        if w.backend == "qemu":
            self.qemu.stop(w.vm, guest)
            self.qemu.unplug(w, target)
        else:
            with contextlib.suppress(LookupError):
                self.detach_guest(w.vm, new_if)

    def _guest_on(self, w: Any, vm_if: str) -> bool:
        try:
            ns = self.ns(w.vm)
            return netlink.is_up(ns, vm_if) and f"{w.ip}/32" in netlink.addresses(ns, vm_if)
        except LookupError:
            return False

    # -- migration primitives (mock VMs) -------------------------------------------------
    def prepare_target(
        self, vm: str, target: str, ip: Any, mac: str, host_if: str, vm_if: str, *, ip6: Any = None
    ) -> None:
        """The target pod's interface: a new veth target<->VM, guest side still down."""
        netlink.add_veth(self.ns(target), host_if, self.ns(vm), vm_if)
        netlink.link_up(self.ns(target), host_if, mac=WORKLOAD_HOST_MAC)
        self._host_side(target, host_if, ip, mac, ip6=ip6)

    def activate_guest(
        self, vm: str, old_if: str, new_if: str, ip: Any, mac: str, *, rarp: bool = False, ip6: Any = None
    ) -> None:
        """The VM resumes behind the target: same guest, same ARP cache, traffic through `new_if`.

        A migrated guest keeps its NIC and its neighbour cache (the gateway's MAC); the mock
        moves to a new interface, so it carries the resolved entries over before announcing.
        """
        vm_ns = self.ns(vm)
        cache: list[tuple[str, str]] = []
        with contextlib.suppress(LookupError):
            cache = netlink.neighbours(vm_ns, old_if)
            if ip6 is not None:
                cache += netlink.neighbours(vm_ns, old_if, family=6)
            netlink.link_down(vm_ns, old_if)
        self.plug_guest(vm, new_if, ip, mac, ip6=ip6)
        for addr, lladdr in cache:
            netlink.set_neighbour(vm_ns, new_if, addr, lladdr)
        # RARP (QEMU's) announces the NIC, both families; a guest's own GARP announces its
        # IPv4 address, its unsolicited neighbour advertisement its IPv6 address.
        frames = [mockguest.rarp_frame(mac) if rarp else mockguest.garp_frame(mac, str(ip))]
        if ip6 is not None and not rarp:
            frames.append(mockguest.na_frame(mac, str(ip6)))
        with netlink.inside(vm_ns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        with sock:
            sock.bind((new_if, 0))
            for frame in frames:
                sock.send(frame.ljust(60, b"\x00"))

    def detach_guest(self, vm: str, vm_if: str) -> None:
        """Remove one of the VM's interfaces (and with it the node-side end of that veth)."""
        netlink.link_delete(self.ns(vm), vm_if)

    def agent(self, node: str) -> AgentClient:
        return AgentClient(self.entity_dir(node) / "agent.ctl")

    def _daemon(self, entity: str, name: str, argv: list[str], *, inside: bool = True) -> None:
        """Start a long-running helper process inside an entity (`inside=False`: in this
        process's namespace, for the entity); pid and log in its run dir."""
        d = self.entity_dir(entity)
        d.mkdir(parents=True, exist_ok=True)
        with _log(d / f"{name}.log") as log:
            proc = subprocess.Popen(
                self.command(entity, argv) if inside else argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        replace_file(d / f"{name}.pid", str(proc.pid).encode())

    def _agent_nodes(self, topo: Topology) -> list[tuple[Any, Any]]:
        """(cluster, node) of every node with a node agent (a nested node has none)."""
        return [(c, n) for c, n in topo.spec.all_nodes() if n.name not in topo.nested_vm]

    def _start_agents(
        self, topo: Topology, resources: dict[str, list[Any]], host: subprocess.Popen[bytes] | None
    ) -> list[str]:
        """Hand the node agents their configs (not waiting for them: `_wait_agents`); returns
        their nodes."""
        nodes = self._agent_nodes(topo)
        hosted: list[dict[str, str]] = []
        with self.progress.step("node agents", total=len(nodes)) as step:
            for cluster, node in nodes:
                pr = felix.priorities(resources.get(cluster.name, []))
                pr6 = felix.priorities(resources.get(cluster.name, []), family=6)
                config = {
                    "node": node.name,
                    "socket": str(self.entity_dir(node.name) / "agent.ctl"),
                    "priorities": {
                        "normal": pr.normal,
                        "elevated": pr.elevated,
                        "convergence": pr.convergence,
                    },
                    "priorities6": {"normal": pr6.normal, "elevated": pr6.elevated},
                    "workloads": [
                        {
                            "vm": w.vm,
                            "ip": str(w.ip),
                            "mac": w.mac,
                            "ifname": w.host_ifname,
                            "running_here": True,
                            "ip6": str(w.ip6) if w.ip6 else None,
                            "peering_ip": confd.peering_ip_on(
                                topo, node.name, resources.get(cluster.name, []), str(w.ip)
                            ),
                            "peering_ip6": confd.peering_ip_on(
                                topo, node.name, resources.get(cluster.name, []), str(w.ip6), 6
                            )
                            if w.ip6
                            else None,
                        }
                        for w in topo.workloads
                        if w.node == node.name
                    ],
                }
                path = self.entity_dir(node.name) / "agent.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                replace_file(path, json.dumps(config, indent=2).encode())
                hosted.append({"node": node.name, "netns": self.ns(node.name), "config": str(path)})
                step.advance(detail=node.name)
            self._release_agent_host(host, hosted)
        return [node.name for _, node in nodes]

    def _wait_agents(self, nodes: list[str]) -> None:
        with self.progress.step("node agents answering", total=len(nodes)) as step:
            for node in nodes:
                eventually(
                    lambda n=node: self.agent(n).call("ping"),
                    timeout=20,
                    interval=0.05,
                    what=f"node agent of {node} to answer",
                    transient=(OSError,),
                )
                step.advance(detail=node)

    def _spawn_agent_host(self, topo: Topology) -> subprocess.Popen[bytes] | None:
        """The process that runs every node agent of the lab in a thread inside that node's
        namespace (harness.runtime.netns.agenthost), outside the lab's namespaces. Started
        first: it imports its modules while the lab is built, and reads its config once its
        standard input closes (`_release_agent_host`). None for a lab without node agents."""
        if not self._agent_nodes(topo):
            return None
        config = self.run_dir / "agents.json"
        with _log(self.run_dir / "agents.log") as log:
            return subprocess.Popen(
                [sys.executable, "-m", AGENT_HOST, "--config", str(config), "--after-stdin"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _release_agent_host(self, host: subprocess.Popen[bytes] | None, nodes: list[dict[str, str]]) -> None:
        """Write the agent host's config and let it read it; each node's agent.pid names the
        host, so a node's agent is alive while it runs."""
        if host is None or host.stdin is None:
            return
        replace_file(self.run_dir / "agents.json", json.dumps({"nodes": nodes}, indent=2).encode())
        host.stdin.close()
        for node in nodes:
            replace_file(self.entity_dir(node["node"]) / "agent.pid", str(host.pid).encode())

    def _nested_pods(self, topo: Topology) -> None:
        """A pod per nested node: its address on the VM's loopback, so traffic to
        the nested pool reaches a process (the mock guest's echo server listens on all addresses)."""
        for node, ip in topo.nested_pod.items():
            if self.in_guest(node):
                continue  # the guest's /init puts it on its lo
            ns = self.ns(node)
            netlink.link_up(ns, NESTED_POD_IF)
            netlink.add_address(ns, NESTED_POD_IF, _host_iface(ip))
            ip6 = topo.nested_pod6.get(node)
            if ip6 is not None:
                netlink.add_address(ns, NESTED_POD_IF, _host_iface(ip6))

    def refresh_birds(self, topo: Topology, resources: dict[str, list[Any]], nodes: list[str]) -> None:
        """Re-render `nodes`' BIRD configs for `topo`'s workload locations and reload them, as
        calico-node's confd does when workload endpoints come and go (workload peering)."""
        for node in nodes:
            cluster, _ = topo.spec.node(node)
            for family in self._families(node):
                files = self.bird_files(node, family)
                text = render_node(
                    topo, node, resources.get(cluster.name, []), str(files["log"]), family=family
                )
                try:
                    current = read_regular(
                        files["config"], CONFIG_LIMIT, what="BIRD configs", follow_symlinks=False
                    )
                except FileRefused:
                    current = None  # rewritten below
                if current == text.encode():
                    continue
                replace_file(files["config"], text.encode())
                with BirdClient(self.bird_socket(node, family)) as bird:
                    bird.configure()

    def _launch_guests(self, topo: Topology) -> list[Launch]:
        """Start the QEMU guests whose tap is plugged and whose files are all there (not those
        hosting a nested node: their initrd comes with the BIRD configs), not waiting for them."""
        early = [w for w in topo.workloads if w.backend == "qemu" and self.spec.nested_node_in(w.vm) is None]
        if not early:
            return []
        self.qemu.image()  # build or reuse the guest image before the boot clock starts
        launches: list[Launch] = []
        with self.progress.step("QEMU guests starting", total=len(early)) as step:
            for w in early:
                launches.append(self.qemu.launch(w, w.node, boot_instance(w.node)))
                step.advance(detail=w.vm)
        return launches

    def _start_guests(self, topo: Topology, launches: list[Launch]) -> None:
        started = {launch.w.vm for launch in launches}
        late = [w for w in topo.workloads if w.backend == "qemu" and w.vm not in started]
        if late:
            self.qemu.image()
        launches = launches + [self.qemu.launch(w, w.node, boot_instance(w.node)) for w in late]
        if launches:
            with self.progress.step("QEMU guests booting", total=len(launches)) as step:
                for launch in launches:
                    self.qemu.ready(launch)
                    step.advance(detail=f"{launch.w.vm} ({launch.outcome})")
        mocks = [w for w in topo.workloads if w.backend == "mock"]
        with self.progress.step("mock VM guests", total=len(mocks)) as step:
            for w in mocks:
                self._daemon(
                    w.vm,
                    "guest",
                    [sys.executable, "-m", MOCKGUEST, "serve", "--port", str(GUEST_PORT)],
                )
                step.advance(detail=w.vm)

    def _families(self, entity: str) -> tuple[int, ...]:
        """The BIRD daemons an entity runs: bird (4), and bird6 (6) in a dual-stack lab (a nested
        node: when its cluster has IPv6 pools, in a mock VM)."""
        return tuple(f for f in self.topo.families if self.topo.runs_family(entity, f))

    def _bird_log(self, entity: str, family: int) -> str:
        """The log file an entity's BIRD config names (in the guest for a nested node in QEMU)."""
        return GUEST_BIRD_LOG if self.in_guest(entity) else str(self.bird_files(entity, family)["log"])

    def _bird_configs(self) -> dict[tuple[str, int], str]:
        """(entity, family) -> the BIRD config it runs, rendered once and checked with `bird -p`
        (SpecError naming each one BIRD refuses; nothing is created before)."""
        configs = rendered_configs(
            self.spec, self._bird_log, topo=self.topo, resources=self.context.resources
        )
        check_rendered(self.spec, configs)
        return {
            (label.removesuffix(BIRD6_SUFFIX), 6 if daemon_of(label) == "bird6" else 4): text
            for label, _, text in configs
        }

    def _start_birds(self, topo: Topology, configs: dict[tuple[str, int], str]) -> None:
        entities = [r.name for r in topo.spec.routers] + [n.name for _, n in topo.spec.all_nodes()]
        birds = [(e, f) for e in entities for f in self._families(e)]
        local: list[tuple[str, int]] = []  # BIRDs in the lab's namespaces (not in a guest)
        with self.progress.step("BIRD daemons", total=len(birds)) as step:
            for entity, family in birds:
                files = self.bird_files(entity, family)
                files["config"].parent.mkdir(parents=True, exist_ok=True)
                text = configs[entity, family]
                replace_file(files["config"], text.encode())
                if self.in_guest(entity):
                    self._start_guest_bird(topo, entity, text)
                    step.advance(detail=f"{entity} (in {self.hosted[entity]}'s guest)")
                    continue
                local.append((entity, family))
            # BIRDs start side by side (each `bird` parses its config and forks a daemon): a pool
            # of BIRD_STARTERS at a time; the first failure is raised once all have been waited for.
            with ThreadPoolExecutor(max_workers=BIRD_STARTERS) as pool:
                for entity, family in pool.map(self._start_bird_named, local):
                    step.advance(detail=entity if family == 4 else f"{entity} (bird6)")

    def _start_bird_named(self, bird: tuple[str, int]) -> tuple[str, int]:
        self._start_bird(*bird)
        return bird

    def _start_guest_bird(self, topo: Topology, node: str, config: str) -> None:
        """A nested node in a QEMU guest: its config and pod address go into the VM's initrd
        (BIRD starts when the guest boots); its control socket on the host is a relay."""
        w = topo.workload(self.hosted[node])
        self.qemu.prepare_nested(w.vm, config, str(topo.nested_pod[node]))
        relay = [
            sys.executable,
            "-m",
            BIRDRELAY,
            "--socket",
            str(self.bird_socket(node)),
            "--run-dir",
            str(self.run_dir),
            "--lab",
            self.lab,
            "--vm",
            w.vm,
            "--node",
            w.node,
            "--ip",
            str(w.ip),
            "--port",
            str(BIRDCTL_PORT),
        ]
        self._daemon(node, "birdctl", relay, inside=False)

    def _start_bird(self, entity: str, family: int = 4) -> None:
        files = self.bird_files(entity, family)
        daemon = DAEMONS[family]
        argv = [
            find_binary(daemon) or daemon,
            "-c",
            str(files["config"]),
            "-s",
            str(self.bird_socket(entity, family)),
            "-P",
            str(files["pid"]),
        ]
        res = self._run_inside(entity, argv)
        if res.returncode != 0:
            raise LabError(f"{daemon} of '{entity}' did not start: {(res.stderr or res.stdout).strip()}")

    def _run_inside(self, entity: str, argv: list[str], timeout: float = 30.0) -> Any:
        """`argv` started by this thread from inside the entity's network namespace (a child
        inherits it): `ip netns exec`'s mount namespace and /sys remount cost more than a BIRD
        start, and a daemon needs neither."""
        if not netlink.namespace_exists(self.ns(entity)):
            raise LabError(f"'{entity}' has no namespace in lab '{self.lab}' (is the lab up?)")
        with netlink.inside(self.ns(entity)):
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def _pid_alive(self, entity: str, name: str) -> bool:
        """A live process of this lab (its command line names the run dir, or it runs in the
        entity's namespace) has `name`.pid."""
        netns = netlink.NETNS_DIR / self.ns(entity)
        return procs.pid_from_file(self.entity_dir(entity) / f"{name}.pid", self.run_dir, netns) is not None


def _log(path: Path) -> BinaryIO:
    """A daemon's log in the run directory, opened to append, never through a symlink planted there."""
    try:
        return open_output(path, append=True)
    except FileRefused as e:
        raise LabError(f"{path}: {e}") from None


def _echo_answers(ns: str, ip: str, port: int, timeout: float = 1.0) -> bool:
    """A TCP round trip to a guest's echo server from inside namespace `ns`."""
    try:
        with netlink.inside(ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.settimeout(timeout)
            sock.connect((ip, port))
            sock.sendall(b"kvlab-health\n")
            got = b""
            while not got.endswith(b"\n"):
                chunk = sock.recv(64)
                if not chunk:
                    break
                got += chunk
            return got == b"kvlab-health\n"
    except OSError:
        return False


def _host_iface(ip: Any) -> Any:
    """A VM's address as an interface address: /32, or /128 for IPv6."""
    import ipaddress

    return ipaddress.ip_interface(f"{ip}/{32 if ipaddress.ip_address(str(ip)).version == 4 else 128}")
