"""The containerlab runtime (the real stack): containerlab + kind + Calico (tigera operator) +
KubeVirt, behind the harness's one Runtime interface. Its parts: `preflight` (what the machine
lacks), `install` (up step by step), `migration` (the KubeVirt migration driver), `diagnostics`,
and what it renders the lab into (`render`, checked by `validate`).

`up` checks how the lab maps onto containerlab and kind (plan.plan_lab: bad input, exit 2,
before anything is created), runs the preflight, then install's steps: render into
`<run dir>/rendered/`, deploy with containerlab (BIRD ToRs and external hosts from the kvlab/tor
image, one `k8s-kind` cluster per spec cluster wired to its racks), and per kind cluster Calico,
the lab's resources, KubeVirt and the VMs. Any failure or Ctrl-C removes everything again (after
writing diagnostics of the failed up).

Where things are, for a lab instance `<lab>` (run dir `<KVLAB_RUN_DIR or /run/kvlab>/<lab>`):
- containers `clab-<lab>-<router|host>` (label `containerlab=<lab>`); kind node containers are
  named by kind (`<cluster>-control-plane`, `<cluster>-worker`, ...; manifest.json maps them);
- routers' BIRD sockets `<run dir>/<router>/bird.ctl`; calico-node's BIRD socket of a node
  `<run dir>/<node>/calico/bird.ctl` (kind extraMount of /var/run/calico), so BirdClient works
  as on the netns runtime;
- kubeconfigs `<run dir>/kube/<cluster>.kubeconfig` (from `kind get kubeconfig`);
- `command()` is `docker exec -i`; external hosts have this `harness/` package bound at
  /opt/kvlab/harness, so `[sys.executable, "-m", "harness.canary.client", ...]` runs there as python3;
- `run()` on a KubeVirt VM is SSH into the guest (guestssh), relayed by the lab's first external
  host, with the lab's key (`<run dir>/rendered/ssh/id_rsa`) and host keys recorded in
  `<run dir>/ssh/known_hosts`; `popen()` on a VM is refused.

Stack versions: the matrix entry named by the `stack` option (`kvlab up --stack NAME`; entries in
versions.MATRIX; default: versions.DEFAULT).
Kind cluster names are global on a machine: one lab per spec cluster name at a time. Nested
clusters (VMs running Kubernetes) are not built here yet.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import procs
from harness.errors import InvalidRequest, LabError, PreflightError, SpecError, SpecIssue
from harness.kernel import address_family, kernel_routes
from harness.procs import signals_deferred
from harness.progress import Progress
from harness.record import MigrationRecord
from harness.runtime.base import LabContext, RenderReport, Runtime, RuntimeOptions
from harness.runtime.containerlab import diagnostics, tools
from harness.runtime.containerlab import docker as dockers
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab.host import (
    CALICO_NAMESPACE,
    CALICO_NODE_SELECTOR,
    DEPLOYED,
    NODE_BIRD_CFG,
    RENDER_SUBDIR,
)
from harness.runtime.containerlab.install import Installer
from harness.runtime.containerlab.migration import KubevirtMigration
from harness.runtime.containerlab.plan import plan_lab
from harness.runtime.containerlab.preflight import (
    ContainerlabPreflightError,
    Probes,
    preflight_report,
)
from harness.runtime.containerlab.versions import MATRIX, StackVersions, get_versions
from harness.safefile import FileRefused, open_output, read_regular, replace_file
from harness.state import LabState

CLAB_LABEL = "containerlab"  # containerlab labels its containers containerlab=<lab name>
KIND_LABEL = "io.x-k8s.kind.cluster"  # kind labels its node containers with the cluster name


class ContainerlabRuntime(Runtime):
    name = "containerlab"
    parallel_instances = False  # kind cluster names are machine-wide; one KubeVirt cluster is enough

    def __init__(
        self,
        lab: str,
        progress: Progress | None = None,
        *,
        context: LabContext | None = None,
        options: RuntimeOptions | None = None,
        probes: Probes | None = None,
        versions: StackVersions | None = None,
    ):
        super().__init__(lab, progress, context=context, options=options)
        self.probes = probes or Probes()
        self._versions = versions
        self._manifest_cache: tuple[float, dict[str, Any]] | None = None
        self._kubes: dict[str, k.Kube] = {}
        self._pids: dict[str, int] = {}
        self._docker_client: Any = None
        self.fetch_errors: list[str] = []  # what bird_files() could not fetch (diagnostics report it)
        self.preflight_info: list[str] = []  # what the last preflight found worth saying

    # -- paths and the manifest ------------------------------------------------------------------
    @property
    def render_dir(self) -> Path:
        return self.run_dir / RENDER_SUBDIR

    @property
    def versions(self) -> StackVersions:
        """The lab's versions: the rendered manifest's if the lab exists, else the `stack` option's."""
        if self._versions is not None:
            return self._versions
        manifest = self.manifest(required=False)
        if manifest is not None:
            name = manifest.get("versions", {}).get("name")
            if name in MATRIX:
                return MATRIX[name]
        return get_versions(self.options.stack)

    def manifest(self, *, required: bool = True) -> dict[str, Any] | None:
        """`<run dir>/rendered/manifest.json` (what was rendered and the name mappings)."""
        path = self.render_dir / "manifest.json"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            self._manifest_cache = None
            if required:
                raise LabError(
                    f"lab '{self.lab}' has no {path} (is it up on the containerlab runtime?)"
                ) from None
            return None
        if self._manifest_cache is None or self._manifest_cache[0] != mtime:
            self._manifest_cache = (mtime, json.loads(path.read_text()))
        return self._manifest_cache[1]

    def container(self, entity: str) -> str:
        """The Docker container of a router, host or node (kind node container for nodes)."""
        manifest = self.manifest()
        assert manifest is not None
        containers = manifest["containers"]
        if entity in containers:
            return str(containers[entity])
        if entity in manifest.get("vms", {}):
            raise LabError(
                f"'{entity}' is a KubeVirt VM in lab '{self.lab}': it has no container "
                "(reach it over the network, or with virtctl console)"
            )
        raise LabError(f"no container for '{entity}' in lab '{self.lab}' (known: {', '.join(containers)})")

    def kind_clusters(self) -> dict[str, dict[str, Any]]:
        """Kind clusters of the lab (manifest entries that are not nested)."""
        manifest = self.manifest(required=False) or {}
        return {c: e for c, e in manifest.get("clusters", {}).items() if not e.get("nested")}

    def workload_interface(self, vm: str, node: str) -> str:
        """`spec.interfaceName` of the Calico WorkloadEndpoint of VM `vm`'s pod on `node`."""
        ip = f"{self.topo.workload(vm).ip}/32"
        cluster = self.topo.workload(vm).cluster
        kind_node = next((kn for kn, sn in (self.manifest() or {})["kind_nodes"].items() if sn == node), node)
        for wep in self.kube(cluster).list("projectcalico.org/v3", "WorkloadEndpoint"):
            spec = wep.get("spec") or {}
            if spec.get("node") == kind_node and ip in (spec.get("ipNetworks") or []):
                return str(spec["interfaceName"])
        return super().workload_interface(vm, node)

    def node_blocks(self) -> dict[str, list[ipaddress.IPv4Network]]:
        """Each node's blocks as its kind cluster's BlockAffinities say (harness.runtime.containerlab.ipam:
        Calico picks them per hostname, not in node order); nested clusters' nodes (no kind
        cluster of their own) keep the topology's plan."""
        from harness.runtime.containerlab import ipam

        out = super().node_blocks()
        manifest = self.manifest()
        assert manifest is not None
        for cluster, entry in self.kind_clusters().items():
            items = self.kube(cluster).list(ipam.BLOCK_AFFINITY_API, ipam.BLOCK_AFFINITY_KIND)
            found = ipam.affine_blocks(items, manifest["kind_nodes"], entry["pools"])
            out.update({node: found.get(node, []) for node in entry["nodes"]})
        return out

    def spec_node(self, kind_node: str) -> str:
        return str((self.manifest() or {})["kind_nodes"].get(kind_node, kind_node))

    def kube(self, cluster: str) -> k.Kube:
        """The API of a kind cluster of the lab (kubeconfig in the run dir)."""
        if cluster not in self._kubes:
            path = k.kubeconfig_path(self.run_dir, cluster)
            if not path.exists():
                raise LabError(f"no kubeconfig for cluster '{cluster}' of lab '{self.lab}' at {path}")
            self._kubes[cluster] = k.Kube.from_kubeconfig(path, name=cluster)
        return self._kubes[cluster]

    def docker(self) -> Any:
        if self._docker_client is None:
            self._docker_client = dockers.docker_client()
        return self._docker_client

    # -- Runtime interface: probes ----------------------------------------------------------------
    def bird_socket(self, entity: str, family: int = 4) -> Path:
        """A router's BIRD socket, or calico-node's of a kind node (family 6: their bird6's, in
        a dual-stack lab), as the manifest lists them."""
        manifest = self.manifest(required=False) or {}
        keys = (
            ("bird_sockets", "calico_sockets", "nested_sockets")
            if family == 4
            else ("bird6_sockets", "calico6_sockets")
        )
        for key in keys:
            if entity in manifest.get(key, {}):
                return Path(manifest[key][entity])
        if family != 4 and not self.spec.dual_stack:
            raise LabError(f"lab '{self.lab}' is not dual-stack: '{entity}' runs no bird6")
        return self.run_dir / entity / ("bird.ctl" if family == 4 else "bird6.ctl")

    def command(self, entity: str, argv: list[str]) -> list[str]:
        manifest = self.manifest()
        assert manifest is not None
        mount = manifest.get("harness_mount") or {}
        env = {"PYTHONPATH": mount["pythonpath"]} if entity in mount.get("entities", []) else None
        return dockers.docker_exec_argv(self.container(entity), argv, env)

    def _is_vm(self, entity: str) -> bool:
        manifest = self.manifest(required=False) or {}
        return entity not in manifest.get("containers", {}) and entity in manifest.get("vms", {})

    def guest_shell(self, vm: str) -> Any:
        """A harness.runtime.containerlab.guestssh.GuestShell to KubeVirt VM `vm`: SSH relayed by the lab's
        first external host, with the lab's key, host key recorded in the run dir's known_hosts."""
        from harness.runtime.containerlab.guestssh import guest_shell

        manifest = self.manifest()
        assert manifest is not None
        return guest_shell(manifest, self.render_dir, vm)

    def run(self, entity: str, argv: list[str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """`docker exec` for containers; for a KubeVirt VM, SSH into the guest (guest_shell())."""
        if self._is_vm(entity):
            with self.guest_shell(entity) as shell:
                result: subprocess.CompletedProcess[str] = shell.run(argv, timeout=timeout)
            return result
        return subprocess.run(
            self.command(entity, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,  # docker exec -i would read the caller's terminal
        )

    def popen(self, entity: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        if self._is_vm(entity):
            raise LabError(
                f"'{entity}' is a KubeVirt VM in lab '{self.lab}': the containerlab runtime does not "
                "start long-running processes in guests (they start from the VM's cloud-init, like the "
                "canary's echo server); use run() for commands that finish"
            )
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return super().popen(entity, argv, **kwargs)

    def netns_path(self, entity: str) -> str | None:
        """`/proc/<pid>/ns/net` of an entity's container (its init process, from Docker); None
        unless root, since entering another process's network namespace needs CAP_SYS_ADMIN."""
        return self._container_netns(entity) if os.geteuid() == 0 else None

    def _container_netns(self, entity: str) -> str:
        name = self.container(entity)
        pid = self._pids.get(name)
        if pid is None or not os.path.exists(f"/proc/{pid}/ns/net"):
            state = self.docker().api.inspect_container(name)["State"]
            pid = int(state.get("Pid") or 0)
            if not state.get("Running") or pid <= 0:
                raise LabError(f"container {name} of '{entity}' is not running ({state.get('Status')})")
            self._pids[name] = pid
        return f"/proc/{pid}/ns/net"

    def kernel_routes(self, entity: str, prefix: str | None = None, family: int | None = None) -> list:
        if os.geteuid() != 0:
            raise LabError(
                "reading a container's kernel routes needs root (setns into its network namespace)"
            )
        return kernel_routes(self._container_netns(entity), prefix, family=address_family(prefix, family))

    def bird_files(self, entity: str, family: int = 4) -> dict[str, Path]:
        """Routers: the rendered config, and BIRD's output (the container's log) fetched now.
        Nodes: calico-node's rendered bird.cfg and its log, fetched now into the run dir.
        Never raises: what cannot be fetched is missing, and said so in `fetch_errors`."""
        manifest = self.manifest(required=False) or {}
        d = self.run_dir / "fetched" / entity
        files = {"config": d / "bird.conf", "log": d / "bird.log"}
        try:
            d.mkdir(parents=True, exist_ok=True)
            if entity in manifest.get("bird_sockets", {}):
                files["config"] = self.render_dir / "bird" / f"{entity}.conf"
                logs = self.docker().containers.get(self.container(entity)).logs(stdout=True, stderr=True)
                files["log"].write_bytes(logs)
            elif entity in manifest.get("calico_sockets", {}):
                _, kube, pod = self._calico_node_pod(entity)
                files["config"].write_text(
                    kube.exec(CALICO_NAMESPACE, pod, ["cat", NODE_BIRD_CFG], "calico-node")
                )
                files["log"].write_text(kube.logs(CALICO_NAMESPACE, pod, "calico-node"))
        except Exception as e:  # diagnostics must not fail on a broken lab
            self.fetch_errors.append(f"{entity} BIRD files: {type(e).__name__}: {e}")
        return files

    def _calico_node_pod(self, node: str) -> tuple[str, k.Kube, str]:
        """(cluster, API, calico-node pod name) of a spec node."""
        manifest = self.manifest()
        assert manifest is not None
        kind_node = manifest["containers"][node]
        for cluster, entry in self.kind_clusters().items():
            if node in entry.get("nodes", {}):
                kube = self.kube(cluster)
                pods = kube.list(
                    "v1",
                    "Pod",
                    CALICO_NAMESPACE,
                    label_selector=CALICO_NODE_SELECTOR,
                    field_selector=f"spec.nodeName={kind_node}",
                )
                if not pods:
                    raise LabError(f"no calico-node pod on {kind_node} (cluster {cluster})")
                return cluster, kube, pods[0]["metadata"]["name"]
        raise LabError(f"node '{node}' is in no kind cluster of lab '{self.lab}'")

    # -- lifecycle ----------------------------------------------------------------------------------
    def preflight(self) -> None:
        report = preflight_report(self.probes, self._versions, versions_name=self.options.stack)
        if report.missing:
            raise ContainerlabPreflightError(self.name, report.missing, report.info)
        self.preflight_info = report.info

    def up(self, state: LabState) -> None:
        """Build the lab (see the module doc). Any failure or Ctrl-C removes everything and re-raises;
        diagnostics of a failed build are written first (KVLAB_DIAG_DIR, default ./kvlab-diagnostics)."""
        topo = self.topo
        plan_lab(topo)  # RenderError (bad input) before anything exists
        self.preflight()
        with self.progress.step("preflight: " + "; ".join(self.preflight_info), total=None):
            pass
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            state.save(self.run_dir)
            installer = Installer(self)
            installer.render(topo)
            installer.check_clusters_free()
            installer.deploy()
            for cluster in self.kind_clusters():
                installer.install_cluster(cluster)
            self._start_nested_relays()
        except BaseException as e:
            if not isinstance(e, KeyboardInterrupt):
                diagnostics.write_failure_diagnostics(self, e)
            with signals_deferred():
                try:
                    self.down()
                except Exception as down_error:  # keep the original error; say what is left
                    e.add_note(f"kvlab: tearing the failed lab down failed too: {down_error}")
            raise

    def _start_nested_relays(self) -> None:
        """Each nested node's BIRD control socket on the host (`nested_sockets`): a relay to the
        guest's control port (harness.runtime.netns.birdrelay), connecting from the network
        namespace of the lab's first external host, which routes to every VM."""
        manifest = self.manifest()
        assert manifest is not None
        via = (manifest.get("guest_ssh") or {}).get("via")
        for vm, entry in manifest.get("vms", {}).items():
            nested = entry.get("nested")
            if not nested:
                continue
            if via is None:
                raise LabError(f"nested node {nested['node']} in {vm}: no external host to reach it from")
            d = self.run_dir / nested["node"]
            d.mkdir(parents=True, exist_ok=True)
            argv = [
                sys.executable,
                "-m",
                "harness.runtime.netns.birdrelay",
                "--socket",
                manifest["nested_sockets"][nested["node"]],
                "--run-dir",
                str(self.run_dir),
                "--lab",
                self.lab,
                "--vm",
                vm,
                "--node",
                entry["node"],
                "--ip",
                entry["ip"],
                "--port",
                str(nested["birdctl_port"]),
                "--netns",
                self._container_netns(via),
            ]
            try:
                log = open_output(d / "birdctl.log", append=True)  # never through a planted symlink
            except FileRefused as e:
                raise LabError(f"{d / 'birdctl.log'}: {e}") from None
            with log:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            replace_file(d / "birdctl.pid", str(proc.pid).encode())

    def healthy(self) -> bool:
        """State file and manifest present, every container of the lab running, every kind
        cluster's API answering."""
        if LabState.load(self.run_dir) is None:
            return False
        try:
            manifest = self.manifest(required=False)
            if manifest is None:
                return False
            client = self.docker()
            for name in set(manifest["containers"].values()):
                if client.containers.get(name).status != "running":
                    return False
            for c in client.containers.list(all=True, filters={"label": f"{CLAB_LABEL}={self.lab}"}):
                if c.status != "running":
                    return False
            for node in manifest.get("nested_sockets", {}):  # each nested node's control relay
                if procs.pid_from_file(self.run_dir / node / "birdctl.pid", self.run_dir) is None:
                    return False
            return all(self.kube(cluster).reachable() for cluster in self.kind_clusters())
        except Exception:
            return False

    def deployed(self) -> dict[str, Any] | None:
        """What this lab deployed (`<run dir>/deployed.json`: topology file, kind clusters), written
        just before `containerlab deploy`; None when it never got that far."""
        try:
            raw = read_regular(self.run_dir / DEPLOYED, 1024 * 1024, what="records", follow_symlinks=False)
            return dict(json.loads(raw))
        except (FileRefused, ValueError, TypeError):
            return None

    def down(self) -> None:
        """containerlab destroy and kind delete for what this lab deployed (deployed.json: never
        another lab's cluster of the same name), any container still labelled with the lab, then
        the run directory. Absent tools are not needed when there is nothing of theirs to remove."""
        deployed = self.deployed() or {}
        manifest = self.manifest(required=False)
        problems: list[str] = []
        topo_file = Path(deployed["topology_file"]) if deployed.get("topology_file") else None
        clab = shutil.which("containerlab")
        if topo_file is not None and topo_file.exists() and clab is not None:
            argv = [clab, "destroy", "-t", str(topo_file), "--cleanup"]
            problems += tools.try_tool(argv, timeout=600, cwd=topo_file.parent)
        kind = shutil.which("kind")
        clusters = list(deployed.get("kind_clusters", []))
        client = self._docker_or_none()
        for cluster in clusters:
            if kind is not None:
                problems += tools.try_tool([kind, "delete", "cluster", "--name", cluster], timeout=300)
            if client is not None:
                dockers.remove_containers(client, f"{KIND_LABEL}={cluster}")
        left: list[str] = []
        if client is not None:
            dockers.remove_containers(client, f"{CLAB_LABEL}={self.lab}")
            dockers.remove_network(client, (manifest or {}).get("mgmt_network") or f"kvlab-{self.lab}")
            left = [
                c.name
                for c in client.containers.list(all=True, filters={"label": f"{CLAB_LABEL}={self.lab}"})
            ]
            for cluster in clusters:
                left += [
                    c.name
                    for c in client.containers.list(all=True, filters={"label": f"{KIND_LABEL}={cluster}"})
                ]
        self._kubes.clear()
        self._pids.clear()
        procs.kill_all(procs.mentioning(self.run_dir))  # nested nodes' control relays
        if left:
            raise LabError(
                f"lab '{self.lab}' is not fully down: containers {', '.join(sorted(left))} remain"
                + (f" ({'; '.join(problems)})" if problems else "")
            )
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._manifest_cache = None

    def _docker_or_none(self) -> Any:
        try:
            return self.docker()
        except PreflightError:
            return None

    def render(self, out_dir: Path) -> RenderReport:
        """Everything the real stack is built from (containerlab topology, kind configs, Calico and
        KubeVirt resources, ToR BIRD configs, manifest) under `out_dir`, then checked against the
        upstream schemas and `bird -p`. Options: `stack`, `emulation`, `tor_image`."""
        from harness.runtime.containerlab.plan import RenderError
        from harness.runtime.containerlab.render import render_containerlab
        from harness.runtime.containerlab.validate import validate_rendered

        try:
            versions = get_versions(self.options.stack)
        except KeyError as e:
            raise InvalidRequest(f"--stack: {e.args[0]}") from None
        try:
            rendered = render_containerlab(
                self.spec,
                out_dir,
                versions=versions,
                use_emulation=self.options.emulation,
                image=self.options.tor_image,
            )
        except RenderError as e:
            raise SpecError([SpecIssue(self.spec.source, "", str(e))]) from None
        check = validate_rendered(out_dir)
        emulation = str(rendered.manifest["use_emulation"]).lower()
        return RenderReport(
            files=list(rendered.files),
            checked=list(check.checked),
            skipped=list(check.skipped),
            warnings=[w.removeprefix("WARNING: ") for w in check.warnings],
            issues=[str(i) for i in check.issues],
            summary=(
                f"lab '{self.spec.name}' for containerlab ({versions.name}: Calico {versions.calico}, "
                f"KubeVirt {versions.kubevirt}, useEmulation {emulation}): {len(rendered.files)} files"
            ),
            main=rendered.topology_file,
        )

    # -- migration ---------------------------------------------------------------------------------
    def migrate(self, vm: str, to: str, **kwargs: Any) -> MigrationRecord:
        """Live-migrate `vm` to spec node `to` with a VirtualMachineInstanceMigration (the driver:
        harness.runtime.containerlab.migration); the record has the netns runtime's format, with
        the routers' view of the VM's /32 (RouteWatcher) merged in.

        `fail=REASON` aborts the migration (deletes the VMIM) once KubeVirt has scheduled the
        target; `watch=False` skips the route watcher; `announce` is ignored (QEMU announces the
        VM itself after a real migration).
        """
        fail: str | None = kwargs.pop("fail", None)
        watch: bool = kwargs.pop("watch", True)
        kwargs.pop("announce", None)
        if kwargs:
            raise TypeError(f"unexpected arguments for a containerlab migration: {', '.join(kwargs)}")
        return KubevirtMigration(self, vm, to).run(fail=fail, watch=watch)

    # -- diagnostics ---------------------------------------------------------------------------------
    def diagnostics(self, out_dir: Path) -> list[str]:
        """containerlab inspect, the lab's containers and their logs, ToR BIRD dumps, and per kind
        cluster its objects and logs (harness.runtime.containerlab.diagnostics). Returns what could
        not be collected."""
        return diagnostics.collect(self, out_dir)
