"""What the containerlab runtime's parts (bringing clusters up, migrating VMs, diagnostics) ask of
the runtime that runs them, and the names and places they share. `ContainerlabRuntime` is the one
implementation; the parts never import it (no cycle), as the netns runtime's migration driver
asks its runtime through `MigrationHost`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness.speakers import Probed

if TYPE_CHECKING:
    from harness.calico.livemigration import Priorities
    from harness.progress import Progress
    from harness.runtime.containerlab.kube import Kube
    from harness.runtime.containerlab.preflight import Probes
    from harness.runtime.containerlab.versions import StackVersions
    from harness.spec import LabSpec

RENDER_SUBDIR = "rendered"  # in the run dir: what the lab is built from (render.render_containerlab)
DEPLOYED = "deployed.json"  # in the run dir: what this lab deployed (so `down` removes only that)
CALICO_NAMESPACE = "calico-system"
CALICO_NODE_SELECTOR = "k8s-app=calico-node"
BIRD_RUN = "/run/bird"  # BIRD's socket directory in a router container (bound to the run dir)
ROUTER_BIRD_SOCKET = f"{BIRD_RUN}/bird.ctl"
NODE_BIRD_CFG = "/etc/calico/confd/config/bird.cfg"  # calico-node's rendered BIRD config


class ClabHost(Probed, Protocol):
    """The lab instance as the runtime knows it: where its things are (run dir, rendered manifest,
    containers, kind clusters' APIs), how to run a command in an entity, where VMs run."""

    progress: Progress
    probes: Probes
    notes: list[str]
    fetch_errors: list[str]

    @property
    def run_dir(self) -> Path: ...
    @property
    def render_dir(self) -> Path: ...
    @property
    def spec(self) -> LabSpec: ...
    @property
    def versions(self) -> StackVersions: ...

    def manifest(self, *, required: bool = True) -> dict[str, Any] | None: ...
    def kind_clusters(self) -> dict[str, dict[str, Any]]: ...
    def kube(self, cluster: str) -> Kube: ...
    def docker(self) -> Any: ...
    def container(self, entity: str) -> str: ...
    def spec_node(self, kind_node: str) -> str: ...
    def run(
        self, entity: str, argv: list[str], *, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]: ...
    def set_vm_location(self, vm: str, node: str, ifname: str, guest: str | None = None) -> None: ...
    def priorities(self, node: str) -> Priorities: ...
