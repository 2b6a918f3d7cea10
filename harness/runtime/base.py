"""The interface every runtime implements (netlab's "providers" are the model).

A runtime is one lab instance on one kind of machinery: it knows the lab it runs (`LabContext`:
spec, topology, Calico resources), brings it up and down, finds what instances and leftovers
exist, renders what it builds the lab from, and answers the probes everything above it asks:
BIRD sockets, kernel routes, commands in an entity, where each VM runs, migrations (each runtime
has its own migration driver), diagnostics. Nothing outside a runtime looks inside one: what
`Lab`, the CLI, the pytest plugin, the canary and the diagnostics use is declared here.
"""

from __future__ import annotations

import abc
import ipaddress
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.calico import felix
from harness.errors import InvalidRequest, LabError
from harness.progress import NullProgress, Progress
from harness.spec import DOC6_RANGE, FABRIC_RANGE, POOL_RANGES, LabSpec, cluster_resources
from harness.state import LabState, lab_dir, lab_lock
from harness.topology import Topology, Workload, resolve

if TYPE_CHECKING:
    from harness.calico.livemigration import Priorities
    from harness.kernel import KernelRoute
    from harness.record import MigrationRecord


@dataclass(frozen=True)
class LabContext:
    """What a runtime knows of the lab it runs: the spec, its topology and its Calico resources."""

    spec: LabSpec
    topo: Topology
    resources: dict[str, list[Any]]

    @classmethod
    def of(cls, spec: LabSpec) -> LabContext:
        return cls(spec, resolve(spec), cluster_resources(spec))


@dataclass(frozen=True)
class RuntimeOptions:
    """Choices a runtime takes at construction (from the CLI, the pytest plugin or the API, never
    from the environment). `stack`: containerlab's entry of the version matrix (None: its default);
    `emulation`: KubeVirt useEmulation (None: probe /dev/kvm); `tor_image`: containerlab's image."""

    stack: str | None = None
    emulation: bool | None = None
    tor_image: str | None = None


PROBE_DEVICE = re.compile(r"^[a-z][a-z0-9]{0,12}$")
"""A probe route's device: a short interface name (its veth peer adds a 'p': <= 14 characters)."""
METRIC_MAX = 2**32 - 1


@dataclass(frozen=True)
class ProbeRoute:
    """A kernel route a test programs on a node the way Felix programs a workload's: `prefix`
    (inside the lab's address plan) on device `dev` at `metric`, protocol boot, main table.
    Validated on construction (InvalidRequest): its values end up on an `ip` command line."""

    prefix: str
    dev: str = "kvt0"
    metric: int = 1024

    def __post_init__(self) -> None:
        try:
            if not isinstance(self.prefix, str) or "%" in self.prefix:
                raise ValueError("not a prefix")
            net = ipaddress.ip_network(self.prefix)
        except (ValueError, TypeError) as e:
            raise InvalidRequest(f"probe route: prefix {self.prefix!r} is no IP network: {e}") from None
        allowed = (FABRIC_RANGE, *POOL_RANGES) if net.version == 4 else (DOC6_RANGE,)
        if not any(net.subnet_of(r) for r in allowed):  # type: ignore[arg-type]
            ranges = ", ".join(map(str, allowed))
            raise InvalidRequest(f"probe route: {net} is outside the lab's address plan ({ranges})")
        object.__setattr__(self, "prefix", str(net))
        if not isinstance(self.dev, str) or not PROBE_DEVICE.fullmatch(self.dev):
            raise InvalidRequest(
                f"probe route: device {self.dev!r} must be a lowercase letter and up to 12 letters or digits"
            )
        metric = self.metric
        if isinstance(metric, bool) or not isinstance(metric, int) or not 0 < metric <= METRIC_MAX:
            raise InvalidRequest(f"probe route: metric {metric!r} must be an integer from 1 to {METRIC_MAX}")

    @property
    def peer(self) -> str:
        """The other end of the veth pair made when the device does not exist."""
        return f"{self.dev}p"

    @property
    def selector(self) -> tuple[str, ...]:
        """The route as `ip route` names it: prefix, device, metric."""
        return (self.prefix, "dev", self.dev, "metric", str(self.metric))


@dataclass
class RenderReport:
    """What `Runtime.render` wrote and what checking it found."""

    files: list[Path] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)
    summary: str = ""
    main: Path | None = None  # what to hand to the runtime's own tools (containerlab: the topology file)

    @property
    def ok(self) -> bool:
        return not self.issues


class Runtime(abc.ABC):
    """Brings one lab instance up and down and answers probes about it. Stateless beyond what it
    writes in the run directory (and what its machinery holds: namespaces, containers)."""

    name: str = ""
    # Whether several instances of one lab can run side by side on a machine (unique names).
    # False where the runtime's resources have machine-wide names (kind clusters) or are too
    # heavy to double (a KubeVirt cluster): private labs then share the one instance.
    parallel_instances: bool = True

    def __init__(
        self,
        lab: str,
        progress: Progress | None = None,
        *,
        context: LabContext | None = None,
        options: RuntimeOptions | None = None,
    ):
        self.lab = lab
        self.progress: Progress = progress or NullProgress()
        self.options = options or RuntimeOptions()
        self._context = context
        # Entities that live inside another one: a nested cluster's node runs in its parent's VM.
        self.hosted: dict[str, str] = dict(context.topo.nested_vm) if context else {}
        # What it found worth telling a user on the way (fields left out for an older Calico...),
        # a line each; the CLI prints them, the library never does.
        self.notes: list[str] = []

    # -- the lab it runs -------------------------------------------------------------------
    @property
    def context(self) -> LabContext:
        if self._context is None:
            raise LabError(f"the {self.name} runtime of lab '{self.lab}' was made without its spec")
        return self._context

    @property
    def topo(self) -> Topology:
        return self.context.topo

    @property
    def spec(self) -> LabSpec:
        return self.context.spec

    @property
    def run_dir(self) -> Path:
        return lab_dir(self.lab)

    # -- instances on this machine ------------------------------------------------------------
    @classmethod
    def present(cls) -> set[str]:
        """Names of labs of this runtime whose resources exist on this machine, with or without a
        state file (what `kvlab down --all` and the reaper consider)."""
        return set()

    @classmethod
    def owned_elsewhere(cls, lab: str) -> bool:
        """Whether lab `lab`, which has no state file here, belongs to another run directory
        (another KVLAB_RUN_DIR) rather than being a leftover. Default: it cannot tell, no."""
        return False

    # -- lifecycle ------------------------------------------------------------------------
    @abc.abstractmethod
    def preflight(self) -> None:
        """Raise PreflightError listing everything this machine lacks. Creates nothing."""

    @abc.abstractmethod
    def up(self, state: LabState) -> None:
        """Create every resource of the lab. On any failure, undo what was created and re-raise."""

    @abc.abstractmethod
    def healthy(self) -> bool:
        """True when every resource of the recorded lab still exists and runs."""

    def problems(self) -> list[str]:
        """What keeps the recorded lab from being healthy, a line each (empty: healthy). Default:
        `healthy()`; runtimes that can look at their guests say more."""
        return [] if self.healthy() else [f"lab '{self.lab}' is not (fully) running"]

    def reconcile(self) -> list[str]:
        """Settle what interrupted operations (a crashed migration) left half-done, so that the
        lab state is true again; returns what was done, a line each. Default: nothing to settle."""
        return []

    @abc.abstractmethod
    def down(self) -> None:
        """Remove every resource of the lab, whether or not a state file survived."""

    # -- rendering ------------------------------------------------------------------------
    @abc.abstractmethod
    def render(self, out_dir: Path) -> RenderReport:
        """Write what this runtime builds the lab from under `out_dir` and check it; creates
        nothing else. Raises SpecError for a lab it cannot render."""

    # -- probes ---------------------------------------------------------------------------
    @abc.abstractmethod
    def bird_socket(self, entity: str, family: int = 4) -> Path:
        """The control socket of a router's or node's BIRD (family 4) or bird6 (family 6)."""

    @abc.abstractmethod
    def bird_files(self, entity: str, family: int = 4) -> dict[str, Path]:
        """BIRD's (family 6: bird6's) config and log of an entity (for diagnostics)."""

    @abc.abstractmethod
    def command(self, entity: str, argv: list[str]) -> list[str]:
        """The argv that runs `argv` inside an entity (namespace, container, ...)."""

    def run(self, entity: str, argv: list[str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside an entity and wait for it (never through a shell)."""
        return subprocess.run(
            self.command(entity, argv), capture_output=True, text=True, timeout=timeout, check=False
        )

    def popen(self, entity: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start a command inside an entity; the caller owns the process."""
        return subprocess.Popen(self.command(entity, argv), text=True, **kwargs)

    @abc.abstractmethod
    def kernel_routes(
        self, entity: str, prefix: str | None = None, family: int | None = None
    ) -> list[KernelRoute]:
        """Kernel routes of an entity, of `family` (None: the prefix's family, else IPv4)."""

    def run_ip(self, entity: str, *args: str) -> str:
        """`ip ARGS` inside an entity (iproute2, present in a netns namespace and a kind node
        alike); its output, or LabError naming the command and what it said."""
        res = self.run(entity, ["ip", *args])
        if res.returncode != 0:
            raise LabError(f"{entity}: 'ip {' '.join(args)}' failed: {(res.stderr or res.stdout).strip()}")
        return res.stdout

    def add_probe_route(self, node: str, route: ProbeRoute) -> bool:
        """Program `route` in `node`'s kernel as Felix would (a device of its own, a metric),
        for BIRD to pick up. The device is made (a veth pair `dev`/`dev`p inside the node, both
        up: no `dummy` module needed) unless it exists. Returns whether it was made, for
        `remove_probe_route`. LabError when the node already routes that prefix itself (a pod
        of the real stack may own the address): the probe would not say what it claims."""
        if node not in self.topo.node_address:
            raise InvalidRequest(f"no node '{node}' in lab '{self.lab}' for a probe route")
        held = [r for r in self.kernel_routes(node, route.prefix) if r.protocol != "bird"]
        if held:
            found = ", ".join(f"dev {r.dev} metric {r.metric} proto {r.protocol}" for r in held)
            raise LabError(f"{node} already routes {route.prefix} ({found}): pick another probe prefix")
        links = {link.get("ifname") for link in json.loads(self.run_ip(node, "-j", "link", "show") or "[]")}
        made = route.dev not in links
        if made:
            self.run_ip(node, "link", "add", route.dev, "type", "veth", "peer", "name", route.peer)
        try:
            if made:
                self.run_ip(node, "link", "set", route.peer, "up")
                self.run_ip(node, "link", "set", route.dev, "up")
            self.run_ip(node, "route", "add", *route.selector, "proto", "boot")
        except LabError:
            if made:
                self.run_ip(node, "link", "del", route.dev)
            raise
        return made

    def remove_probe_route(self, node: str, route: ProbeRoute, *, device: bool) -> None:
        """Undo `add_probe_route`: the route, or with `device=True` the device it made (its
        routes go with it)."""
        if device:
            self.run_ip(node, "link", "del", route.dev)
        else:
            self.run_ip(node, "route", "del", *route.selector)

    @abc.abstractmethod
    def netns_path(self, entity: str) -> str | None:
        """What `harness.netlink.inside()` enters to reach an entity's network namespace (a
        namespace name or a /proc path), or None when this process cannot enter it."""

    # -- VMs --------------------------------------------------------------------------------
    def first_guest(self, w: Workload) -> str | None:
        """The runtime's handle on VM `w`'s guest as `up` starts it (netns: its QEMU instance)."""
        return None

    def vm_location(self, vm: str) -> dict[str, Any]:
        """Where a VM runs now: {"node", "ifname" (its guest-side interface), "guest" (the
        runtime's handle on its guest, see `first_guest`)}, from the lab state."""
        state = LabState.load(self.run_dir)
        if state is not None and vm in state.vms:
            return {"guest": None, **state.vms[vm]}
        w = self.topo.workload(vm)
        return {"node": w.node, "ifname": "eth0", "guest": self.first_guest(w)}

    def set_vm_location(self, vm: str, node: str, ifname: str, guest: str | None = None) -> None:
        with lab_lock(self.lab):
            state = LabState.load(self.run_dir)
            if state is None:
                raise LabError(f"lab '{self.lab}' has no state (is it up?)")
            state.vms[vm] = {"node": node, "ifname": ifname, **({"guest": guest} if guest else {})}
            state.save(self.run_dir)

    def pods(self, extra: dict[str, str] | None = None) -> Topology:
        """The topology with every VM where it runs now, plus `extra` VM -> node pods (a
        migration target), as calico-node sees workload endpoints."""
        pods = {w.vm: [self.vm_location(w.vm)["node"]] for w in self.topo.workloads}
        for vm, node in (extra or {}).items():
            pods[vm].append(node)
        return self.topo.with_pods(pods)

    def priorities(self, node: str, family: int = 4) -> Priorities:
        """Felix route priorities (of IPv4 or IPv6 routes) and convergence time of a node's cluster."""
        cluster, _ = self.spec.node(node)
        return felix.priorities(self.context.resources.get(cluster.name, []), family)

    def node_blocks(self) -> dict[str, list[ipaddress.IPv4Network]]:
        """Each node's affine IPAM blocks as its cluster assigned them. By default (the netns
        runtime, where calico-node is emulated) the topology's plan: node N gets the N-th block."""
        return {node: list(blocks) for node, blocks in self.topo.node_blocks.items()}

    def workload_interface(self, vm: str, node: str) -> str:
        """The host-side interface (Calico's `cali...`) of VM `vm`'s pod on `node`: by default
        the device of the node's kernel route to the VM's /32."""
        prefix = f"{self.topo.workload(vm).ip}/32"
        devs = [r.dev for r in self.kernel_routes(node, prefix) if r.dev and r.dev.startswith("cali")]
        if not devs:
            raise LabError(f"{node} has no workload route to {vm} ({prefix})")
        return str(devs[0])

    @abc.abstractmethod
    def migrate(self, vm: str, to: str, **kwargs: Any) -> MigrationRecord:
        """Live-migrate `vm` to node `to` with this runtime's migration driver; returns the record
        (raises harness.record.MigrationFailed, carrying it, when the migration broke)."""

    # -- diagnostics ----------------------------------------------------------------------
    def diagnostics(self, out_dir: Path) -> list[str]:
        """Write what only this runtime can collect (cluster objects, container logs, QEMU
        consoles, node agents...) under `out_dir`; return what could not be collected, a line
        each. Default: nothing."""
        return []
