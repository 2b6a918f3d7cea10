"""The interface every runtime implements (netlab's "providers" are the model)."""

from __future__ import annotations

import abc
import ipaddress
import subprocess
from pathlib import Path
from typing import Any

from harness.progress import NullProgress, Progress
from harness.state import LabState
from harness.topology import Topology


class Runtime(abc.ABC):
    """Brings one lab instance up and down. Stateless beyond what it writes in the run directory."""

    name: str = ""
    # Whether several instances of one lab can run side by side on a machine (unique names).
    # False where the runtime's resources have machine-wide names (kind clusters) or are too
    # heavy to double (a KubeVirt cluster): private labs then share the one instance.
    parallel_instances: bool = True

    def __init__(self, lab: str, progress: Progress | None = None):
        self.lab = lab
        self.progress: Progress = progress or NullProgress()
        # Entities that live inside another one: a nested cluster's node runs in its parent's VM.
        self.hosted: dict[str, str] = {}

    def workload_interface(self, lab: Any, vm: str, node: str) -> str:
        """The host-side interface (Calico's `cali...`) of VM `vm`'s pod on `node`: by default
        the device of the node's kernel route to the VM's /32."""
        from harness.errors import LabError

        prefix = f"{lab.topo.workload(vm).ip}/32"
        devs = [r.dev for r in self.kernel_routes(node, prefix) if r.dev and r.dev.startswith("cali")]
        if not devs:
            raise LabError(f"{node} has no workload route to {vm} ({prefix})")
        return str(devs[0])

    def problems(self, lab: Any) -> list[str]:
        """What keeps the recorded lab from being healthy, a line each (empty: healthy). Default:
        `healthy()`; runtimes that can look at their guests say more."""
        return [] if self.healthy() else [f"lab '{self.lab}' is not (fully) running"]

    def reconcile(self, lab: Any) -> list[str]:
        """Settle what interrupted operations (a crashed migration) left half-done, so that the
        lab state is true again; returns what was done, a line each. Default: nothing to settle."""
        return []

    def first_guest(self, w: Any) -> str | None:
        """The runtime's handle on VM `w`'s guest as `up` starts it (netns: its QEMU instance)."""
        return None

    def node_blocks(self, lab: Any) -> dict[str, list[ipaddress.IPv4Network]]:
        """Each node's affine IPAM blocks as its cluster assigned them. By default (the netns
        runtime, where calico-node is emulated) the topology's plan: node N gets the N-th block."""
        return {node: list(blocks) for node, blocks in lab.topo.node_blocks.items()}

    def migrate(self, lab: Any, vm: str, to: str, **kwargs: Any) -> Any:
        """Live-migrate `vm` of `lab` to node `to`; returns a harness.migration.MigrationRecord."""
        raise NotImplementedError(f"the {self.name} runtime cannot migrate VMs")

    @abc.abstractmethod
    def preflight(self) -> None:
        """Raise PreflightError listing everything this machine lacks. Creates nothing."""

    @abc.abstractmethod
    def up(self, state: LabState, topo: Topology, resources: dict[str, list[Any]]) -> None:
        """Create every resource of the lab. On any failure, undo what was created and re-raise."""

    @abc.abstractmethod
    def healthy(self) -> bool:
        """True when every resource of the recorded lab still exists and runs."""

    @abc.abstractmethod
    def down(self) -> None:
        """Remove every resource of the lab, whether or not a state file survived."""

    @abc.abstractmethod
    def bird_socket(self, entity: str) -> Path:
        """The BIRD control socket of a router or node."""

    @abc.abstractmethod
    def bird_files(self, entity: str) -> dict[str, Path]:
        """BIRD's config and log of an entity (for diagnostics)."""

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
    def kernel_routes(self, entity: str, prefix: str | None = None) -> list:
        """Kernel routes of an entity (list of harness.kernel.KernelRoute)."""

    def diagnostics(self, out_dir: Path) -> list[str]:
        """Write what only this runtime can collect (cluster objects, container logs, ...) under
        `out_dir`; return what could not be collected, one line each. Default: nothing."""
        return []
