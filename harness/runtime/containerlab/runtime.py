"""The real-stack runtime: containerlab + kind + Calico (tigera operator) + KubeVirt.

`up` checks how the lab maps onto containerlab and kind (harness.runtime.containerlab.render.plan_lab: bad
input, exit 2, before anything is created), renders it into `<run dir>/realstack/`, deploys it
with containerlab (BIRD ToRs and external hosts from the kvlab/tor image, one `k8s-kind` cluster
per spec cluster wired to its racks), then, per kind cluster and through the Kubernetes API:
the operator's CRDs, then, before Calico runs, the IPReservation of the VM addresses and the
lab's BGPConfiguration, BGPPeers and BGPFilters as crd.projectcalico.org/v1 objects (so nodes
peer with their ToRs from calico-node's first start, and pods in every rack reach the API
server: render.BGP_CRD_KINDS says why), the tigera operator and the lab's Installation
(TigeraStatus `calico` and `apiserver` Available), the lab's other Calico v3 resources, KubeVirt
(CR Available), a calico-typha restart (so it sees KubeVirt's CRDs), and the lab's
VirtualMachines (each VMI Running with its spec IP).

Where things are, for a lab instance `<lab>` (run dir `<KVLAB_RUN_DIR or /run/kvlab>/<lab>`):
- containers `clab-<lab>-<router|host>` (label `containerlab=<lab>`); kind node containers are
  named by kind (`<cluster>-control-plane`, `<cluster>-worker`, ...; manifest.json maps them);
- routers' BIRD sockets `<run dir>/<router>/bird.ctl`; calico-node's BIRD socket of a node
  `<run dir>/<node>/calico/bird.ctl` (kind extraMount of /var/run/calico), so BirdClient works
  as on the netns runtime;
- kubeconfigs `<run dir>/kube/<cluster>.kubeconfig` (from `kind get kubeconfig`);
- `command()` is `docker exec -i`; external hosts have this `harness/` package bound at
  /opt/kvlab/harness, so `[sys.executable, "-m", "harness.canary.client", ...]` runs there as python3;
- `run()` on a KubeVirt VM is SSH into the guest (harness.runtime.containerlab.guestssh), relayed by the
  lab's first external host, with the lab's key (`<run dir>/realstack/ssh/id_rsa`) and host keys
  recorded in `<run dir>/ssh/known_hosts`; `popen()` on a VM is refused.

Stack versions: the matrix entry named by the `stack` option (`kvlab up --stack NAME`; entries in
harness.runtime.containerlab.versions.MATRIX; default: versions.DEFAULT). A failed `up` writes this
runtime's diagnostics to `$KVLAB_DIAG_DIR/<lab>-up-failed-<time>/` (default
./kvlab-diagnostics) before tearing down.
Kind cluster names are global on a machine: one lab per spec cluster name at a time. Nested
clusters (VMs running Kubernetes) are not built here yet.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import grp
import importlib.util
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import InvalidRequest, LabError, PreflightError, SpecError, SpecIssue
from harness.kernel import kernel_routes
from harness.procs import signals_deferred
from harness.progress import Progress
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import pins
from harness.runtime.containerlab.versions import DEFAULT, MATRIX, StackVersions, get_versions
from harness.record import MigrationRecord
from harness.runtime.base import LabContext, RenderReport, Runtime, RuntimeOptions
from harness.state import LabState
from harness.topology import Topology
from harness.wait import eventually

DIAG_ENV = "KVLAB_DIAG_DIR"  # where the diagnostics of a failed `up` go (default ./kvlab-diagnostics)
# containerlab creates kind clusters with the kind library it embeds; a kind node image is only
# supported by the kind release that built it, and every matrix entry uses kind v0.31.0 images.
# srl-labs/containerlab go.mod: `sigs.k8s.io/kind v0.31.0` from v0.73.0 (611350001b, 2026-02-08;
# bumped in ae17f8e47), v0.27.0 in v0.72.0 (tests/data/realstack/upstream-pins.json).
MIN_CONTAINERLAB = (0, 73)
INOTIFY_MINIMUMS = {"max_user_watches": 524288, "max_user_instances": 512}
INOTIFY_DIR = "/proc/sys/fs/inotify"
PYTHON_CLIENTS = ("docker", "kubernetes", "paramiko")
# Free space Docker's data root needs: the kind node image (~1 GB) once, and per kind node (four
# in the default lab) Calico's images (~1.2 GB), virt-handler (~0.4 GB) and virt-launcher plus
# the guest disk (~0.6 GB, pulled on every node so a migration target needs no pull): ~10 GB, and
# room to spare. An estimate: the nightly measures it (disk usage in its results).
DOCKER_DISK_MIN_GIB = 20
CLAB_LABEL = "containerlab"  # containerlab labels its containers containerlab=<lab name>
KIND_LABEL = "io.x-k8s.kind.cluster"  # kind labels its node containers with the cluster name
REALSTACK = "realstack"
DEPLOYED = "deployed.json"  # in the run dir: what this lab deployed (so `down` removes only that)
CALICO_NAMESPACE = "calico-system"
TYPHA = "calico-typha"
CALICO_NODE_SELECTOR = "k8s-app=calico-node"
NODE_BIRD_CFG = "/etc/calico/confd/config/bird.cfg"
ROUTER_BIRD_SOCKET = "/run/bird/bird.ctl"
KUBEVIRT_NAMESPACE = kv.NAMESPACE
ADDED_NODE_SELECTOR_SINCE = (1, 6)  # KubeVirt serves VMIM spec.addedNodeSelector from v1.6.0
DEADLINES = {
    "deploy": 1800.0,  # containerlab deploy, kind clusters included (rendered with kind's wait 0s)
    "nodes registered": 300.0,
    "apply": 300.0,
    "tigera": 600.0,  # Calico's CI budgets 600 s for calico-node Ready
    "nodes ready": 300.0,
    "kubevirt": 900.0,
    "typha": 300.0,
    "vmis": 600.0,
    "address holders": 300.0,  # pods that took a VM address before the reservation, recreated
    "image pull": 900.0,  # one node pulling the launcher and guest disk images
    # A guest booting (under emulation: minutes) until its cloud-init echo server answers.
    "guest": 900.0,
    # A migration's target pod scheduled and ready (KubeVirt phase TargetReady): the part that
    # may pull images; the migration itself then has the lab's timers.migration.
    "migration target": 300.0,
    "moved": 60.0,  # a migrated VMI's status naming its new node
}
GUEST_PROBE_INTERVAL = 5.0  # seconds between two echo probes of a booting guest
FIX_CONTAINERLAB = 'bash -c "$(curl -sL https://get.containerlab.dev)" (https://containerlab.dev/install/)'


# -- preflight -----------------------------------------------------------------------------------


def _run_capture(argv: list[str]) -> tuple[int, str]:
    """(exit code, stdout + stderr) of a short command; 127 when it cannot be run."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, str(e)
    return res.returncode, res.stdout + res.stderr


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _docker_ping() -> str | None:
    """None when a Docker daemon answers the Python client's ping, else why not."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return "the Python package 'docker' is missing, so the daemon cannot be asked"
    try:
        client = docker.from_env(timeout=10)
        try:
            client.ping()
        finally:
            client.close()
    except DockerException as e:
        return str(e)
    return None


def _docker_free() -> tuple[str, int] | None:
    """(Docker's data root, bytes free there), or None when the daemon cannot say."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            root = str(client.info().get("DockerRootDir") or "/var/lib/docker")
        finally:
            client.close()
        return root, shutil.disk_usage(root).free
    except Exception:  # no daemon (reported by its own check), or no such directory here
        return None


def _read_file(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _group_names() -> set[str]:
    names = set()
    for gid in {os.getegid(), *os.getgroups()}:
        with contextlib.suppress(KeyError):
            names.add(grp.getgrgid(gid).gr_name)
    return names


@dataclass
class Probes:
    """Everything the preflight asks the machine, replaceable for tests (a bare or a full machine)."""

    which: Callable[[str], str | None] = shutil.which
    run: Callable[[list[str]], tuple[int, str]] = _run_capture
    importable: Callable[[str], bool] = _importable
    docker_ping: Callable[[], str | None] = _docker_ping
    docker_free: Callable[[], tuple[str, int] | None] = _docker_free
    http: pins.Http = pins.urllib_http
    read_file: Callable[[str], str | None] = _read_file
    euid: Callable[[], int] = os.geteuid
    group_names: Callable[[], set[str]] = _group_names
    kvm_usable: Callable[[], bool] = kv.kvm_usable
    vhost_net_usable: Callable[[], bool] = kv.vhost_net_usable
    tun_usable: Callable[[], bool] = kv.tun_usable


@dataclass
class PreflightReport:
    """What is missing (each item: what, and how to get it) and what is worth knowing."""

    missing: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)


class ContainerlabPreflightError(PreflightError):
    """PreflightError whose message also carries the preflight's information lines."""

    def __init__(self, runtime: str, missing: list[str], info: list[str] | None = None):
        super().__init__(runtime, missing)
        self.info = list(info or [])

    def __str__(self) -> str:
        return super().__str__() + "".join(f"\n  (info) {line}" for line in self.info)


def parse_containerlab_version(text: str) -> tuple[int, int, int] | None:
    """`containerlab version` output ('    version: 0.69.3', older 'version : 0.54.2', or
    `--short`'s bare '0.69.3') -> (0, 69, 3)."""
    m = re.search(r"^\s*version\s*:\s*v?(\d+)\.(\d+)\.(\d+)", text, re.MULTILINE) or re.search(
        r"^\s*v?(\d+)\.(\d+)\.(\d+)\s*$", text, re.MULTILINE
    )
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def parse_kubectl_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from `kubectl version --client -o json` (or its 'Client Version: v1.32.4')."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        git = json.loads(text)["clientVersion"]["gitVersion"]
        text = f"Client Version: {git}"
    m = re.search(r"Client Version:\s*v?(\d+)\.(\d+)", text)
    return (int(m[1]), int(m[2])) if m else None


def _minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"v?(\d+)\.(\d+)", version)
    return (int(m[1]), int(m[2])) if m else None


def preflight_report(
    probes: Probes, versions: StackVersions | None = None, *, versions_name: str | None = None
) -> PreflightReport:
    """Ask the machine everything the runtime needs; collect every gap (nothing is created)."""
    report = PreflightReport()
    missing, info = report.missing, report.info
    if versions is None:
        try:
            versions = get_versions(versions_name)
        except KeyError:
            missing.append(
                f"--stack {versions_name} is not a stack-versions entry; use one of: {', '.join(MATRIX)}"
            )
            versions = DEFAULT

    error = probes.docker_ping()
    if error is not None:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        missing.append(
            f"a Docker daemon answering on {host} ({error}); install and start it with "
            "'sudo scripts/install-docker.sh'"
        )

    want = ".".join(map(str, MIN_CONTAINERLAB))
    if probes.which("containerlab") is None:
        missing.append(f"containerlab >= {want} (not found on PATH): install it with {FIX_CONTAINERLAB}")
    else:
        rc, out = probes.run(["containerlab", "version"])
        found = parse_containerlab_version(out) if rc == 0 else None
        if found is None:
            tail = " ".join(out.split())[-200:]
            missing.append(
                f"containerlab >= {want}: 'containerlab version' did not report a version "
                f"(exit {rc}: {tail}); reinstall it with {FIX_CONTAINERLAB}"
            )
        elif found[:2] < MIN_CONTAINERLAB:
            missing.append(
                f"containerlab >= {want} (found {'.'.join(map(str, found))}): upgrade with "
                "'sudo containerlab version upgrade'"
            )
        else:
            info.append(f"containerlab {'.'.join(map(str, found))}")

    if probes.which("kind") is None:
        missing.append(
            f"kind (not found on PATH; the runtime reads kubeconfigs and deletes clusters with it): "
            f"install kind {versions.kind} from https://kind.sigs.k8s.io/dl/{versions.kind}/kind-linux-amd64"
        )
    cluster_minor = _minor(versions.kubernetes)
    if probes.which("kubectl") is None:
        minor = f"v{cluster_minor[0]}.{cluster_minor[1]}" if cluster_minor else versions.kubernetes
        missing.append(
            f"kubectl (not found on PATH; for you to look into the clusters): install kubectl {minor} "
            "(https://kubernetes.io/docs/tasks/tools/)"
        )
    else:
        rc, out = probes.run(["kubectl", "version", "--client", "-o", "json"])
        have = parse_kubectl_version(out) if rc == 0 else None
        if have and cluster_minor and (have[0] != cluster_minor[0] or abs(have[1] - cluster_minor[1]) > 1):
            info.append(
                f"kubectl v{have[0]}.{have[1]} is more than one minor version from the clusters' "
                f"Kubernetes {versions.kubernetes} (kubectl's skew policy); the runtime does not use it"
            )

    for module in PYTHON_CLIENTS:
        if not probes.importable(module):
            missing.append(f"the Python package '{module}' (in the venv: 'make venv', or pip install -e .)")

    # Every pinned manifest and image answers (harness.runtime.containerlab.pins): a version that was never
    # published would otherwise fail the deploy halfway (a 404 on the operator manifest).
    missing.extend(pins.describe(pin, why) for pin, why in pins.check(pins.stack_pins(versions), probes.http))

    free = probes.docker_free()
    if free is not None and free[1] < DOCKER_DISK_MIN_GIB * 2**30:
        missing.append(
            f"{DOCKER_DISK_MIN_GIB} GiB free for Docker in {free[0]} (now {free[1] / 2**30:.1f} GiB; "
            "each kind node pulls Calico's and KubeVirt's images): free space (docker system prune, or "
            "remove unused toolchains as .github/workflows/nightly.yml does)"
        )

    for key, minimum in INOTIFY_MINIMUMS.items():
        raw = probes.read_file(f"{INOTIFY_DIR}/{key}")
        try:
            value = int((raw or "").strip())
        except ValueError:
            value = None
        if value is None or value < minimum:
            now = "unreadable" if value is None else f"now {value}"
            missing.append(
                f"fs.inotify.{key} >= {minimum} ({now}; multi-node kind clusters need it): "
                f"sudo sysctl -w fs.inotify.{key}={minimum} (persist it in /etc/sysctl.d/)"
            )

    if probes.euid() != 0 and "docker" not in probes.group_names():
        missing.append(
            "root, or membership of the 'docker' group (containerlab, kind and the BIRD sockets need it): "
            "run with sudo, or 'sudo usermod -aG docker $USER' and log in again"
        )

    if not probes.tun_usable():
        missing.append(
            f"{kv.TUN} (KubeVirt's launcher pods need a tun device for the pod network, with or without "
            "emulation): sudo modprobe tun"
        )
    info.append(emulation_note(probes.kvm_usable(), probes.vhost_net_usable()))
    return report


def emulation_note(kvm: bool, vhost_net: bool) -> str:
    """What the preflight says about KubeVirt's useEmulation (kv.needs_emulation)."""
    if not kvm:
        return "/dev/kvm is not usable here: KubeVirt will run VMs with useEmulation (slower)"
    if not vhost_net:
        return (
            f"{kv.VHOST_NET} does not open here: KubeVirt will run VMs with useEmulation (without it, "
            "launcher pods would wait for a vhost-net device virt-handler cannot offer)"
        )
    return "/dev/kvm is usable: KubeVirt runs VMs with KVM"


def nested_refusal(nested: dict[str, str]) -> str:
    """The preflight item for a lab with nested clusters (node -> the VM it runs in)."""
    where = ", ".join(f"{node} (in VM {vm})" for node, vm in sorted(nested.items()))
    return (
        f"nested cluster nodes {where} need VMs running Kubernetes, which the containerlab runtime "
        "does not build yet; use --runtime netns for labs with nested clusters"
    )


# -- containerlab inspect, argv translation ------------------------------------------------------


def parse_inspect(text: str) -> list[dict[str, Any]]:
    """Containers from `containerlab inspect --format json`: v0.64+ prints an object keyed by lab
    name (each a list), older versions `{"containers": [...]}`. Each entry gets `lab_name`."""
    doc = json.loads(text) if text.strip() else {}
    if isinstance(doc, list):
        return [dict(c) for c in doc]
    if not isinstance(doc, dict):
        raise ValueError(f"unexpected containerlab inspect output: {text[:200]!r}")
    if isinstance(doc.get("containers"), list):
        return [dict(c) for c in doc["containers"]]
    out = []
    for lab, containers in doc.items():
        if not isinstance(containers, list):
            raise ValueError(f"unexpected containerlab inspect output for lab {lab!r}: {containers!r}"[:300])
        out += [{"lab_name": lab, **c} for c in containers]
    return out


def container_argv(argv: list[str]) -> list[str]:
    """`argv` for a container: this interpreter (`sys.executable`) becomes the image's python3."""
    if argv and argv[0] in (sys.executable, os.path.realpath(sys.executable)):
        return ["python3", *argv[1:]]
    return list(argv)


def docker_exec_argv(container: str, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """`docker exec -i [-e K=V ...] <container> argv` (-i: stdin reaches the command, e.g. the
    canary's `stop` line, and its end reaches it as EOF)."""
    flags = [x for key, value in (env or {}).items() for x in ("-e", f"{key}={value}")]
    return ["docker", "exec", "-i", *flags, container, *container_argv(argv)]


def added_node_selector_supported(kubevirt: str) -> bool:
    """KubeVirt serves VirtualMachineInstanceMigration `spec.addedNodeSelector` (v1.6.0 on)."""
    minor = _minor(kubevirt)
    return minor is not None and minor >= ADDED_NODE_SELECTOR_SINCE


# -- the runtime ---------------------------------------------------------------------------------


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
        return self.run_dir / REALSTACK

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
        """`<run dir>/realstack/manifest.json` (what was rendered and the name mappings)."""
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
            from harness.runtime.containerlab.docker import docker_client

            self._docker_client = docker_client()
        return self._docker_client

    # -- Runtime interface: probes ----------------------------------------------------------------
    def bird_socket(self, entity: str) -> Path:
        manifest = self.manifest(required=False) or {}
        for key in ("bird_sockets", "calico_sockets"):
            if entity in manifest.get(key, {}):
                return Path(manifest[key][entity])
        return self.run_dir / entity / "bird.ctl"

    def command(self, entity: str, argv: list[str]) -> list[str]:
        manifest = self.manifest()
        assert manifest is not None
        mount = manifest.get("harness_mount") or {}
        env = {"PYTHONPATH": mount["pythonpath"]} if entity in mount.get("entities", []) else None
        return docker_exec_argv(self.container(entity), argv, env)

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

    def kernel_routes(self, entity: str, prefix: str | None = None) -> list:
        if os.geteuid() != 0:
            raise LabError(
                "reading a container's kernel routes needs root (setns into its network namespace)"
            )
        return kernel_routes(self._container_netns(entity), prefix)

    def bird_files(self, entity: str) -> dict[str, Path]:
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
        if self.hosted:
            report.missing.append(nested_refusal(self.hosted))
        if report.missing:
            raise ContainerlabPreflightError(self.name, report.missing, report.info)
        self.preflight_info = report.info

    def up(self, state: LabState) -> None:
        """Build the lab (see the module doc). Any failure or Ctrl-C removes everything and re-raises;
        diagnostics of a failed build are written first (KVLAB_DIAG_DIR, default ./kvlab-diagnostics)."""
        topo = self.topo
        if topo.nested_vm:
            raise ContainerlabPreflightError(self.name, [nested_refusal(dict(topo.nested_vm))])
        from harness.runtime.containerlab.render import plan_lab

        plan_lab(topo)  # RenderError (bad input) before anything exists
        self.preflight()
        with self.progress.step("preflight: " + "; ".join(self.preflight_info), total=None):
            pass
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            state.save(self.run_dir)
            self._render(topo)
            self._check_clusters_free()
            self._deploy()
            for cluster in self.kind_clusters():
                self._install_cluster(cluster)
        except BaseException as e:
            if not isinstance(e, KeyboardInterrupt):
                self._failure_diagnostics(e)
            with signals_deferred():
                try:
                    self.down()
                except Exception as down_error:  # keep the original error; say what is left
                    e.add_note(f"kvlab: tearing the failed lab down failed too: {down_error}")
            raise

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
            return all(self.kube(cluster).reachable() for cluster in self.kind_clusters())
        except Exception:
            return False

    def deployed(self) -> dict[str, Any] | None:
        """What this lab deployed (`<run dir>/deployed.json`: topology file, kind clusters), written
        just before `containerlab deploy`; None when it never got that far."""
        try:
            return dict(json.loads((self.run_dir / DEPLOYED).read_text()))
        except (OSError, ValueError):
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
            problems += self._try_tool(argv, timeout=600, cwd=topo_file.parent)
        kind = shutil.which("kind")
        clusters = list(deployed.get("kind_clusters", []))
        client = self._docker_or_none()
        for cluster in clusters:
            if kind is not None:
                problems += self._try_tool([kind, "delete", "cluster", "--name", cluster], timeout=300)
            if client is not None:
                self._remove_containers(client, f"{KIND_LABEL}={cluster}")
        left: list[str] = []
        if client is not None:
            self._remove_containers(client, f"{CLAB_LABEL}={self.lab}")
            self._remove_network(client, (manifest or {}).get("mgmt_network") or f"kvlab-{self.lab}")
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
        if left:
            raise LabError(
                f"lab '{self.lab}' is not fully down: containers {', '.join(sorted(left))} remain"
                + (f" ({'; '.join(problems)})" if problems else "")
            )
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._manifest_cache = None

    def render(self, out_dir: Path) -> RenderReport:
        """Everything the real stack is built from (containerlab topology, kind configs, Calico and
        KubeVirt resources, ToR BIRD configs, manifest) under `out_dir`, then checked against the
        upstream schemas and `bird -p`. Options: `stack`, `emulation`, `tor_image`."""
        from harness.runtime.containerlab.render import RenderError, render_containerlab, validate_rendered

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

    # -- up, step by step ---------------------------------------------------------------------------
    def _render(self, topo: Topology) -> None:
        from harness.runtime.containerlab.images import build_tor_image
        from harness.runtime.containerlab.render import render_containerlab, validate_rendered

        emulate = kv.needs_emulation(self.probes.kvm_usable(), self.probes.vhost_net_usable())
        image = build_tor_image(self.progress)  # reports its own steps (progress steps do not nest)
        with self.progress.step(f"render the lab (KubeVirt useEmulation {str(emulate).lower()})", total=None):
            spec = topo.spec.model_copy(update={"name": self.lab})  # containers carry the instance name
            render_containerlab(
                spec,
                self.render_dir,
                versions=self.versions,
                use_emulation=emulate,
                image=image,
                run_dir=self.run_dir,
            )
            report = validate_rendered(self.render_dir)
            self.notes += report.warnings  # e.g. fields left out for an older Calico
            if not report.ok:
                raise LabError(
                    f"the rendered lab in {self.render_dir} is invalid:\n"
                    + "\n".join(f"  {issue}" for issue in report.issues)
                )
        manifest = self.manifest()
        assert manifest is not None
        for router in manifest["bird_sockets"]:
            (self.run_dir / router).mkdir(parents=True, exist_ok=True)
        for socket_path in manifest.get("calico_sockets", {}).values():
            Path(socket_path).parent.mkdir(parents=True, exist_ok=True)

    def _check_clusters_free(self) -> None:
        """Kind cluster names are global on the machine: refuse to build over another lab's cluster."""
        rc, out = self._tool(["kind", "get", "clusters"], timeout=60)
        if rc != 0:
            raise LabError(f"'kind get clusters' failed (exit {rc}): {out.strip()[-500:]}")
        existing = set(out.split())
        taken = [c for c in self.kind_clusters() if c in existing]
        if taken:
            raise LabError(
                f"kind cluster(s) {', '.join(taken)} already exist: kind cluster names are global, so one "
                f"containerlab lab per cluster name runs at a time; remove the other lab ('kvlab down NAME') "
                f"or the cluster ('kind delete cluster --name {taken[0]}')"
            )

    def _deploy(self) -> None:
        manifest = self.manifest()
        assert manifest is not None
        topo_file = self.render_dir / manifest["topology_file"]
        log = self.run_dir / "containerlab-deploy.log"
        record = {"topology_file": str(topo_file), "kind_clusters": list(self.kind_clusters())}
        (self.run_dir / DEPLOYED).write_text(json.dumps(record, indent=2) + "\n")
        with self.progress.step("containerlab deploy (kind clusters included)", total=None) as step:
            self._stream(
                ["containerlab", "deploy", "-t", str(topo_file), "--reconfigure"],
                step,
                what=f"containerlab deploy -t {topo_file}",
                timeout=DEADLINES["deploy"],
                log=log,
                cwd=self.render_dir,
            )
        for cluster in self.kind_clusters():
            rc, out = self._tool(["kind", "get", "kubeconfig", "--name", cluster], timeout=60)
            if rc != 0:
                raise LabError(
                    f"'kind get kubeconfig --name {cluster}' failed (exit {rc}): {out.strip()[-500:]}"
                )
            k.write_kubeconfig(k.kubeconfig_path(self.run_dir, cluster), out)

    def _install_cluster(self, cluster: str) -> None:
        entry = self.kind_clusters()[cluster]
        kube = self.kube(cluster)
        v = self.versions
        kind_nodes = list(entry["nodes"].values())
        self._wait(
            f"cluster {cluster}: nodes {', '.join(kind_nodes)} registered",
            lambda: self._nodes(kube, kind_nodes, ready=False),
            timeout=DEADLINES["nodes registered"],
        )
        with self.progress.step(f"{cluster}: tigera operator (Calico {v.calico})", total=None):
            kube.apply_all(k.load_documents(kube.fetch(v.operator_crds_url)), what="Calico operator CRDs")
            if entry.get("ip_reservation"):  # before any pod can get an address (render.ip_reservation)
                kube.apply_all(self._docs(entry["ip_reservation"]), what="IPReservation of the VM addresses")
            if entry.get("bgp"):  # before calico-node's first start (render.BGP_CRD_KINDS: why)
                kube.apply_all(self._docs(entry["bgp"]), what=f"BGP resources of {cluster} (v1 CRD objects)")
            kube.apply_all(k.load_documents(kube.fetch(v.tigera_operator_url)), what="tigera operator")
            kube.apply_all(self._docs(entry["installation"]), what="Installation and APIServer")
        for name in ("calico", "apiserver"):
            self._wait(
                f"cluster {cluster}: TigeraStatus '{name}' Available",
                lambda n=name: self._available(kube.get(k.TIGERA_API, "TigeraStatus", n)),
                timeout=DEADLINES["tigera"],
                interval=5.0,
            )
        self._wait(
            f"cluster {cluster}: nodes {', '.join(kind_nodes)} Ready",
            lambda: self._nodes(kube, kind_nodes, ready=True),
            timeout=DEADLINES["nodes ready"],
        )
        self._free_vm_addresses(cluster, kube)
        resources = self._docs(entry["resources"])
        if resources:
            with self.progress.step(f"{cluster}: Calico resources (projectcalico.org/v3)", total=None):
                kube.apply_all(resources, what=f"Calico resources of {cluster}")
        vms = self._cluster_vms(cluster)
        if not vms:
            return
        with self.progress.step(f"{cluster}: KubeVirt {v.kubevirt}", total=None):
            kube.apply_all(k.load_documents(kube.fetch(v.kubevirt_operator_url)), what="KubeVirt operator")
            kube.apply_all(self._docs("kubevirt/kubevirt.yaml"), what="KubeVirt CR")
        self._wait(
            f"cluster {cluster}: KubeVirt CR 'kubevirt' Available",
            lambda: self._available(kube.get(kv.API_VERSION, "KubeVirt", "kubevirt", KUBEVIRT_NAMESPACE)),
            timeout=DEADLINES["kubevirt"],
            interval=5.0,
        )
        self._restart_typha(cluster, kube)
        with self.progress.step(f"{cluster}: VirtualMachines", total=None):
            kube.apply_all(vms, what=f"VirtualMachines of {cluster}")
        manifest = self.manifest()
        assert manifest is not None
        for name in (d["metadata"]["name"] for d in vms):
            vm = manifest["vms"][name]
            self._wait(
                f"cluster {cluster}: VMI {name} Running with IP {vm['ip']}",
                lambda n=name, ip=vm["ip"]: self._vmi_ready(kube, n, ip),
                timeout=DEADLINES["vmis"],
                interval=3.0,
            )
            self._check_vm(kube, name, vm["kind_node"])
        self._prepull(cluster, kube, [d["metadata"]["name"] for d in vms])
        for name in (d["metadata"]["name"] for d in vms):
            self._wait_guest(kube, name, manifest)

    def _free_vm_addresses(self, cluster: str, kube: k.Kube) -> None:
        """No pod holds a VM's address: the IPReservation is applied before Calico runs, so none
        should; a pod that got one anyway (a reservation Calico did not see) is deleted for its
        controller to recreate it with another address. A pod without a controller fails `up`."""
        from harness.runtime.containerlab.ipam import address_holders

        manifest = self.manifest()
        assert manifest is not None
        ips = [vm["ip"] for vm in manifest.get("vms", {}).values() if vm["cluster"] == cluster]
        if not ips:
            return
        holders = address_holders(kube.list("v1", "Pod"), ips)
        bare = [h for h in holders if not h["owned"]]
        if bare:
            raise LabError(
                f"cluster {cluster}: pods without a controller hold VM addresses: "
                + "; ".join(f"{h['pod']} on {h['node']} has {h['ip']}" for h in bare)
                + " (the IPReservation was applied first; see calico/<cluster>/ipreservation.yaml)"
            )
        for h in holders:
            namespace, name = h["pod"].split("/", 1)
            with self.progress.step(f"{cluster}: pod {h['pod']} holds VM address {h['ip']}: recreated"):
                kube.delete("v1", "Pod", name, namespace)
        if holders:

            def freed() -> tuple[bool, str]:
                left = address_holders(kube.list("v1", "Pod"), ips)
                return not left, "; ".join(f"{h['pod']} has {h['ip']}" for h in left) or "free"

            self._wait(
                f"cluster {cluster}: VM addresses {', '.join(ips)} free",
                freed,
                timeout=DEADLINES["address holders"],
            )

    def _placement(self, kube: k.Kube, vm: str, kind_node: str) -> tuple[bool, str]:
        vmi = kube.get(kv.API_VERSION, "VirtualMachineInstance", vm, kv.VM_NAMESPACE)
        problem = kv.placement_problem(vmi, kind_node, self.spec_node(kind_node))
        return problem is None, problem or f"VMI {vm} on {kind_node}"

    def _check_vm(self, kube: k.Kube, vm: str, kind_node: str) -> None:
        """The VMI runs on `kind_node`, and each of its launcher pods has the guest's MAC
        (cni.projectcalico.org/hwAddr); LabError saying which and why otherwise."""
        vmi = kube.get(kv.API_VERSION, "VirtualMachineInstance", vm, kv.VM_NAMESPACE)
        problems = []
        placement = kv.placement_problem(vmi, kind_node, self.spec_node(kind_node))
        if placement is not None:
            problems.append(placement)
        pods = kube.list("v1", "Pod", kv.VM_NAMESPACE, label_selector=kv.launcher_selector(vm))
        problems += kv.pod_mac_problems(vmi, pods)
        if problems:
            raise LabError(f"VM {vm}: " + "; ".join(problems))

    def _prepull(self, cluster: str, kube: k.Kube, vms: list[str]) -> None:
        """Every node of the cluster pulls the images the VMs' launcher pods run (crictl in the kind
        node), so a migration target starts without a first pull inside the migration's deadline."""
        images: list[str] = []
        for vm in vms:
            for pod in kube.list("v1", "Pod", kv.VM_NAMESPACE, label_selector=kv.launcher_selector(vm)):
                images += [i for i in kv.launcher_images(pod) if i not in images]
        if not images:
            return
        nodes = self.kind_clusters()[cluster]["nodes"]
        with (
            self.progress.step(
                f"{cluster}: pull {len(images)} launcher/guest images on {len(nodes)} nodes", total=None
            ),
            concurrent.futures.ThreadPoolExecutor(max_workers=len(nodes)) as pool,
        ):
            results = list(pool.map(lambda n: self._pull_on(n, images), nodes))
        failed = [line for lines in results for line in lines]
        if failed:
            raise LabError(f"cluster {cluster}: pre-pulling the VM images failed: " + "; ".join(failed))

    def _pull_on(self, node: str, images: list[str]) -> list[str]:
        """`crictl pull` of each image in spec node `node`'s kind container; what failed."""
        failed = []
        for image in images:
            argv = ["docker", "exec", self.container(node), "crictl", "pull", image]
            try:
                rc, out = self._tool(argv, timeout=DEADLINES["image pull"])
            except LabError as e:
                failed.append(f"{node} {image}: {e}")
                continue
            if rc != 0:
                failed.append(f"{node} {image}: crictl pull exit {rc}: {' '.join(out.split())[-300:]}")
        return failed

    def _wait_guest(self, kube: k.Kube, vm: str, manifest: dict[str, Any]) -> None:
        """Until the VM's guest answers the canary's echo port from the lab's first external host
        (a VMI Running with its IP is not a booted guest). LabError naming the VM, the last
        answer and the VMI's conditions at the deadline."""
        from harness.tcpcheck import client_argv
        from harness.topology import GUEST_PORT

        host = (manifest.get("guest_ssh") or {}).get("via")
        ip = manifest["vms"][vm]["ip"]
        if host is None:
            with self.progress.step(f"VM {vm}: no external host to reach its guest from; not awaited"):
                return

        def answers() -> tuple[bool, str]:
            res = self.run(host, client_argv(ip, GUEST_PORT, timeout=3.0), timeout=15)
            if res.returncode == 0 and res.stdout.strip() == "kvlab":
                return True, "answers"
            vmi = kube.get(kv.API_VERSION, "VirtualMachineInstance", vm, kv.VM_NAMESPACE)
            last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
            return False, f"{host} -> {ip}:{GUEST_PORT}: {last[-150:]}; VMI: {k.describe_conditions(vmi)}"

        self._wait(
            f"VM {vm}: its guest answering the echo port {GUEST_PORT} from {host}",
            answers,
            timeout=DEADLINES["guest"],
            interval=GUEST_PROBE_INTERVAL,
        )

    def _restart_typha(self, cluster: str, kube: k.Kube) -> None:
        """calico-typha reads the CRDs it watches at start; restart it after KubeVirt's appeared."""
        with self.progress.step(f"{cluster}: restart calico-typha (KubeVirt CRDs)", total=None):
            kube.patch("apps/v1", "Deployment", TYPHA, k.restart_patch(), CALICO_NAMESPACE)
        self._wait(
            f"cluster {cluster}: calico-typha rollout after the restart",
            lambda: k.rollout_state(kube.get("apps/v1", "Deployment", TYPHA, CALICO_NAMESPACE)),
            timeout=DEADLINES["typha"],
        )

    def _docs(self, rel: str) -> list[dict[str, Any]]:
        return k.load_documents((self.render_dir / rel).read_text())

    def _cluster_vms(self, cluster: str) -> list[dict[str, Any]]:
        manifest = self.manifest()
        assert manifest is not None
        mine = {name for name, vm in manifest.get("vms", {}).items() if vm["cluster"] == cluster}
        return [d for d in self._docs("kubevirt/vms.yaml") if d["metadata"]["name"] in mine]

    @staticmethod
    def _available(obj: dict[str, Any] | None) -> tuple[bool, str]:
        return k.condition_true(obj, "Available"), k.describe_conditions(obj)

    @staticmethod
    def _nodes(kube: k.Kube, names: list[str], *, ready: bool) -> tuple[bool, str]:
        nodes = kube.list("v1", "Node")
        if ready:
            return k.nodes_state(nodes, names)
        have = {n["metadata"]["name"] for n in nodes}
        missing = [n for n in names if n not in have]
        return not missing, f"not registered: {', '.join(missing)}" if missing else "all registered"

    @staticmethod
    def _vmi_ready(kube: k.Kube, name: str, ip: str) -> tuple[bool, str]:
        vmi = kube.get(kv.API_VERSION, "VirtualMachineInstance", name, kv.VM_NAMESPACE)
        pods = kube.list("v1", "Pod", kv.VM_NAMESPACE, label_selector=f"vm.kubevirt.io/name={name}")
        pod_ips = [p["status"]["podIP"] for p in pods if (p.get("status") or {}).get("podIP")]
        return k.vmi_state(vmi, ip, pod_ips)

    def _wait(
        self, what: str, check: Callable[[], tuple[bool, str]], *, timeout: float, interval: float = 2.0
    ) -> None:
        """Wait (deadline `timeout`) until `check` says done; the timeout names `what` and the
        last observed state."""
        with self.progress.step(what, total=None) as step:

            def attempt() -> bool:
                done, state = check()
                step.advance(0, detail=state[:90])
                if not done:
                    raise AssertionError(state)
                return True

            eventually(attempt, timeout=timeout, interval=interval, what=what, transient=k.transient_errors())

    # -- tools ------------------------------------------------------------------------------------
    @staticmethod
    def _tool(argv: list[str], *, timeout: float, cwd: Path | None = None) -> tuple[int, str]:
        """(exit code, output) of a tool; LabError naming it when it cannot be run."""
        try:
            res = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=cwd,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise LabError(
                f"'{argv[0]}' is not installed (run 'kvlab up --runtime containerlab' for the list)"
            ) from None
        except subprocess.TimeoutExpired:
            raise LabError(f"'{' '.join(argv)}' did not finish within {timeout:g} s") from None
        return res.returncode, res.stdout + (res.stderr if res.returncode else "")

    @classmethod
    def _try_tool(cls, argv: list[str], *, timeout: float, cwd: Path | None = None) -> list[str]:
        """Run a teardown tool; what went wrong (nothing: []) instead of raising."""
        try:
            rc, out = cls._tool(argv, timeout=timeout, cwd=cwd)
        except LabError as e:
            return [str(e)]
        return [] if rc == 0 else [f"'{' '.join(argv)}' exit {rc}: {out.strip()[-500:]}"]

    @staticmethod
    def _stream(
        argv: list[str], step: Any, *, what: str, timeout: float, log: Path, cwd: Path | None = None
    ) -> None:
        """Run a long tool, its output to `log` and to the progress line; killed at `timeout`."""
        tail: deque[str] = deque(maxlen=40)
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as e:
            raise LabError(f"{what}: cannot run {argv[0]}: {e}") from e
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        assert proc.stdout is not None
        try:
            with proc, open(log, "a") as fh:
                for line in proc.stdout:
                    fh.write(line)
                    tail.append(line.rstrip())
                    step.advance(0, detail=line.strip()[:90])
        except BaseException:
            proc.kill()
            raise
        finally:
            timer.cancel()
        if proc.returncode != 0:
            why = f"killed after {timeout:g} s" if proc.returncode < 0 else f"exit {proc.returncode}"
            raise LabError(f"{what} failed ({why}; full output in {log}):\n" + "\n".join(tail))

    def _docker_or_none(self) -> Any:
        try:
            return self.docker()
        except PreflightError:
            return None

    @staticmethod
    def _remove_containers(client: Any, label: str) -> None:
        from docker.errors import APIError, NotFound

        for c in client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(NotFound, APIError):
                c.remove(force=True, v=True)

    @staticmethod
    def _remove_network(client: Any, name: str) -> None:
        from docker.errors import APIError, NotFound

        for net in client.networks.list(names=[name]):
            if net.name == name:
                with contextlib.suppress(NotFound, APIError):
                    net.remove()

    def _failure_diagnostics(self, error: BaseException) -> None:
        """Before a failed `up` tears everything down: write what can be collected, and say where."""
        out = (
            Path(os.environ.get(DIAG_ENV) or "kvlab-diagnostics")
            / f"{self.lab}-up-failed-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        try:
            problems = self.diagnostics(out)
            if problems:
                (out / "errors.txt").write_text("\n".join(problems) + "\n")
        except Exception as e:  # never hide the original failure
            error.add_note(f"kvlab: could not write diagnostics of the failed up to {out}: {e}")
            return
        error.add_note(f"kvlab: diagnostics of the failed up in {out}")

    # -- migration ---------------------------------------------------------------------------------
    def migrate(self, vm: str, to: str, **kwargs: Any) -> MigrationRecord:
        """Live-migrate `vm` to spec node `to` with a VirtualMachineInstanceMigration; the record
        has the netns runtime's format (harness.runtime.containerlab.migration), with the routers'
        view of the VM's /32 (RouteWatcher) merged in.

        `fail=REASON` aborts the migration (deletes the VMIM) once KubeVirt has scheduled the
        target; `watch=False` skips the route watcher; `announce` is ignored (QEMU announces the
        VM itself after a real migration).
        """
        from harness.runtime.containerlab.migration import record_from_kubevirt

        fail: str | None = kwargs.pop("fail", None)
        watch: bool = kwargs.pop("watch", True)
        kwargs.pop("announce", None)
        if kwargs:
            raise TypeError(f"unexpected arguments for a containerlab migration: {', '.join(kwargs)}")
        manifest = self.manifest()
        assert manifest is not None
        if vm not in manifest.get("vms", {}):
            raise LabError(f"no VM '{vm}' in lab '{self.lab}'")
        entry = manifest["vms"][vm]
        cluster, ip = entry["cluster"], entry["ip"]
        nodes = self.kind_clusters()[cluster]["nodes"]
        if to not in nodes:
            raise LabError(
                f"no node '{to}' in cluster '{cluster}' of lab '{self.lab}' (nodes: {', '.join(nodes)})"
            )
        kube = self.kube(cluster)
        vmi = kube.get(kv.API_VERSION, "VirtualMachineInstance", vm, kv.VM_NAMESPACE)
        current = ((vmi or {}).get("status") or {}).get("nodeName")
        if current is None:
            raise LabError(f"VMI {vm} runs on no node ({k.describe_conditions(vmi)})")
        source = self.spec_node(current)
        if source == to:
            raise LabError(f"{vm} already runs on {to}")
        name = f"kvlab-{vm}-{secrets.token_hex(3)}"
        target_kind = nodes[to]
        selector = added_node_selector_supported(manifest["versions"]["kubevirt"])
        obj = kv.migration_object(vm, name, target_node=target_kind if selector else None)
        routers = list(manifest["bird_sockets"]) if watch else []
        harness_events: list[dict[str, Any]] = []
        started = time.time()

        def note(phase: str, **fields: Any) -> None:
            harness_events.append(
                {"t": time.time(), "source": "harness", "kind": "phase", "phase": phase, **fields}
            )

        from harness.routewatch import RouteWatcher

        last: dict[str, Any] = {}
        with RouteWatcher(self, routers, f"{ip}/32") as watcher:
            try:
                with self._only_schedulable(kube, cluster, target_kind, enabled=not selector):
                    created = kube.create(obj)
                    last["vmim"] = created
                    note("migration requested", vmim=name, target_node=target_kind)
                    if fail is not None:
                        self._abort_when_scheduled(kube, name, last, fail, note)
                    else:
                        self._wait_target(kube, name, last, target_kind)
                    self._wait_migration(
                        kube, name, last, self.spec.timers.migration, aborting=fail is not None
                    )
            except BaseException:
                with contextlib.suppress(Exception):
                    kube.delete(kv.API_VERSION, "VirtualMachineInstanceMigration", name, kv.VM_NAMESPACE)
                raise
            finally:
                with contextlib.suppress(Exception):
                    watcher.sync()
        vmi = self._final_vmi(kube, vm, last["vmim"])
        record = record_from_kubevirt(
            last["vmim"],
            vmi,
            vm=vm,
            ip=ip,
            source=source,
            target=to,
            started=started,
            node_names=manifest["kind_nodes"],
            abort_reason=fail,
            harness_events=harness_events,
            ended=last.get("ended"),
        )
        end = {"t": record.ended or time.time(), "source": "harness", "kind": "phase", "phase": record.status}
        if record.reason:
            end["reason"] = record.reason
        record.events = sorted([*record.events, end, *watcher.events], key=lambda e: e["t"])
        if record.status == "completed":
            self.set_vm_location(vm, to, "eth0")
            record.convergence_until = (record.ended or time.time()) + self.priorities(to).convergence
            # KubeVirt moves the VMI's node with the migration state's end (virt-handler
            # migration-target.go ackMigrationCompletion); then the pods' MACs are checked.
            self._wait(
                f"VMI {vm} on {to} ({target_kind}) after its migration",
                lambda: self._placement(kube, vm, target_kind),
                timeout=DEADLINES["moved"],
                interval=0.5,
            )
            self._check_vm(kube, vm, target_kind)
        return record

    def _abort_when_scheduled(
        self, kube: k.Kube, name: str, last: dict[str, Any], reason: str, note: Callable[..., None]
    ) -> None:
        """Delete the VMIM (KubeVirt aborts the migration) once its target pod is scheduled."""
        from harness.runtime.containerlab.migration import PHASES, phase_of

        scheduled = PHASES[PHASES.index("Scheduled") :]

        def check() -> tuple[bool, str]:
            got = kube.get(kv.API_VERSION, "VirtualMachineInstanceMigration", name, kv.VM_NAMESPACE)
            if got is not None:
                last["vmim"] = got
            phase = phase_of(last["vmim"])
            return phase in scheduled, f"VMIM {name} phase {phase}"

        self._wait(f"migration {name} to schedule its target", check, timeout=120, interval=0.2)
        kube.delete(kv.API_VERSION, "VirtualMachineInstanceMigration", name, kv.VM_NAMESPACE)
        note("abort requested", reason=reason, at_phase=phase_of(last["vmim"]))

    def _wait_target(self, kube: k.Kube, name: str, last: dict[str, Any], target: str) -> None:
        """Until KubeVirt has the migration's target pod ready (phase TargetReady or later): the
        part that schedules a pod and may pull images, with its own deadline."""
        from harness.runtime.containerlab.migration import PHASES, phase_of

        ready = PHASES[PHASES.index("TargetReady") :]

        def check() -> tuple[bool, str]:
            got = kube.get(kv.API_VERSION, "VirtualMachineInstanceMigration", name, kv.VM_NAMESPACE)
            if got is None:  # deleted by someone else: _wait_migration says so
                return True, f"VMIM {name} is gone"
            last["vmim"] = got
            phase = phase_of(got)
            return phase in ready, f"VMIM {name} phase {phase}; {k.describe_conditions(got)}"

        self._wait(
            f"migration {name}: target pod on {target} ready (KubeVirt phase TargetReady)",
            check,
            timeout=DEADLINES["migration target"],
            interval=0.25,
        )

    def _wait_migration(
        self, kube: k.Kube, name: str, last: dict[str, Any], timeout: float, *, aborting: bool
    ) -> None:
        """Until the VMIM is Succeeded/Failed (or, when aborting, gone); `last` keeps what was
        seen, and `last["ended"]` the moment the harness saw it end: KubeVirt's own end time
        (migrationState.endTimestamp, a metav1.Time) has whole seconds, so an event in the last
        second of the migration would lie after it."""
        from harness.runtime.containerlab.migration import is_terminal, phase_of

        def check() -> tuple[bool, str]:
            got = kube.get(kv.API_VERSION, "VirtualMachineInstanceMigration", name, kv.VM_NAMESPACE)
            if got is None:
                done = aborting
                state = f"VMIM {name} is gone (last phase {phase_of(last['vmim'])})"
            else:
                last["vmim"] = got
                done = is_terminal(got)
                state = f"VMIM {name} phase {phase_of(got)}; {k.describe_conditions(got)}"
            if done:
                last.setdefault("ended", time.time())
            return done, state

        self._wait(
            f"migration {name} to finish (spec timers.migration)", check, timeout=timeout, interval=0.25
        )

    @staticmethod
    def _final_vmi(kube: k.Kube, vm: str, vmim: dict[str, Any]) -> dict[str, Any] | None:
        """The VMI once its migrationState for this VMIM has ended (briefly waited for; the VMIM
        can reach its last phase a moment before the VMI's state says so)."""
        uid = (vmim.get("metadata") or {}).get("uid")
        seen: dict[str, Any] = {}

        def ended() -> bool:
            vmi = kube.get(kv.API_VERSION, "VirtualMachineInstance", vm, kv.VM_NAMESPACE)
            seen["vmi"] = vmi
            state = ((vmi or {}).get("status") or {}).get("migrationState") or {}
            return state.get("migrationUid") == uid and bool(state.get("endTimestamp"))

        with contextlib.suppress(Exception):
            eventually(ended, timeout=10, interval=0.25, what=f"VMI {vm}'s migration state to end")
        return seen.get("vmi")

    @contextlib.contextmanager
    def _only_schedulable(self, kube: k.Kube, cluster: str, target: str, *, enabled: bool) -> Iterator[None]:
        """KubeVirt before v1.6 has no VMIM addedNodeSelector: cordon every other node of the
        cluster while the migration runs, so the target pod can only go to `target`."""
        if not enabled:
            yield
            return
        cordoned = []
        try:
            for node in kube.list("v1", "Node"):
                name = node["metadata"]["name"]
                if name != target and not (node.get("spec") or {}).get("unschedulable"):
                    kube.patch("v1", "Node", name, {"spec": {"unschedulable": True}})
                    cordoned.append(name)
            yield
        finally:
            for name in cordoned:
                with contextlib.suppress(Exception):
                    kube.patch("v1", "Node", name, {"spec": {"unschedulable": False}})

    # -- diagnostics ---------------------------------------------------------------------------------
    def diagnostics(self, out_dir: Path) -> list[str]:
        """containerlab inspect, the lab's containers and their logs, ToR BIRD dumps, and per kind
        cluster: nodes, pods, events, Calico and KubeVirt objects (YAML), calico-node logs and
        bird.cfg per node, virt-launcher and operator logs. Returns what could not be collected."""
        out_dir.mkdir(parents=True, exist_ok=True)
        errors: list[str] = list(self.fetch_errors)

        def attempt(what: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as e:
                errors.append(f"{what}: {type(e).__name__}: {e}")

        manifest = self.manifest(required=False)
        if manifest is None:
            return [*errors, f"no manifest in {self.render_dir}: nothing rendered for lab '{self.lab}'"]
        attempt("manifest", lambda: shutil.copy(self.render_dir / "manifest.json", out_dir / "manifest.json"))
        attempt("containerlab inspect", lambda: self._diag_inspect(manifest, out_dir))
        attempt("containers", lambda: self._diag_containers(manifest, out_dir / "containers"))
        for router in manifest.get("bird_sockets", {}):
            for command in ("show protocols all", "show route all"):
                attempt(
                    f"{router} birdc {command}", lambda r=router, c=command: self._diag_birdc(r, c, out_dir)
                )
        for cluster in self.kind_clusters():
            attempt(
                f"cluster {cluster}",
                lambda c=cluster: errors.extend(self._diag_cluster(c, out_dir / "clusters" / c)),
            )
        return errors

    def _diag_inspect(self, manifest: dict[str, Any], out_dir: Path) -> None:
        topo_file = self.render_dir / manifest["topology_file"]
        rc, out = self._tool(
            ["containerlab", "inspect", "-t", str(topo_file), "--format", "json"], timeout=120
        )
        (out_dir / "containerlab-inspect.json").write_text(out)
        if rc != 0:
            raise LabError(f"containerlab inspect exit {rc}")
        (out_dir / "containerlab-containers.json").write_text(json.dumps(parse_inspect(out), indent=2) + "\n")

    def _diag_containers(self, manifest: dict[str, Any], d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        client = self.docker()
        summary = []
        for entity, name in manifest["containers"].items():
            try:
                c = client.containers.get(name)
            except Exception as e:
                summary.append({"entity": entity, "container": name, "error": str(e)})
                continue
            state = c.attrs.get("State", {})
            summary.append({"entity": entity, "container": name, "status": c.status, "state": state})
            (d / f"{entity}.log").write_bytes(c.logs(stdout=True, stderr=True, tail=5000))
        (d / "containers.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    def _diag_birdc(self, router: str, command: str, out_dir: Path) -> None:
        d = out_dir / "routers" / router
        d.mkdir(parents=True, exist_ok=True)
        res = self.run(router, ["birdc", "-s", ROUTER_BIRD_SOCKET, *command.split()], timeout=30)
        (d / f"birdc-{command.replace(' ', '-')}.txt").write_text(res.stdout + res.stderr)

    def _diag_cluster(self, cluster: str, d: Path) -> list[str]:
        d.mkdir(parents=True, exist_ok=True)
        kube = self.kube(cluster)
        errors: list[str] = []

        def dump(name: str, api_version: str, kind: str, namespace: str | None = None) -> None:
            try:
                items = kube.list(api_version, kind, namespace)
            except Exception as e:
                errors.append(f"{cluster} {kind}: {type(e).__name__}: {k._short(e)}")
                return
            with open(d / f"{name}.yaml", "w") as fh:
                yaml.safe_dump_all(items, fh, sort_keys=False)

        for name, api_version, kind in (
            ("nodes", "v1", "Node"),
            ("pods", "v1", "Pod"),
            ("events", "v1", "Event"),
            ("deployments", "apps/v1", "Deployment"),
            ("daemonsets", "apps/v1", "DaemonSet"),
            ("tigerastatus", k.TIGERA_API, "TigeraStatus"),
            ("installations", k.TIGERA_API, "Installation"),
            # as written before Calico runs: readable without Calico's API server
            ("bgpconfigurations", "crd.projectcalico.org/v1", "BGPConfiguration"),
            ("bgppeers", "crd.projectcalico.org/v1", "BGPPeer"),
            ("bgpfilters", "crd.projectcalico.org/v1", "BGPFilter"),
            ("ippools", "projectcalico.org/v3", "IPPool"),
            ("felixconfigurations", "projectcalico.org/v3", "FelixConfiguration"),
            ("calico-nodes-status", "projectcalico.org/v3", "CalicoNodeStatus"),
            ("kubevirt", kv.API_VERSION, "KubeVirt"),
            ("vms", kv.API_VERSION, "VirtualMachine"),
            ("vmis", kv.API_VERSION, "VirtualMachineInstance"),
            ("vmims", kv.API_VERSION, "VirtualMachineInstanceMigration"),
        ):
            dump(name, api_version, kind)
        for namespace, selector, container in (
            (CALICO_NAMESPACE, CALICO_NODE_SELECTOR, "calico-node"),
            ("tigera-operator", "k8s-app=tigera-operator", None),
            (KUBEVIRT_NAMESPACE, "kubevirt.io=virt-handler", None),
            (kv.VM_NAMESPACE, "kubevirt.io=virt-launcher", "compute"),
        ):
            try:
                pods = kube.list("v1", "Pod", namespace, label_selector=selector)
            except Exception as e:
                errors.append(f"{cluster} pods {selector}: {type(e).__name__}: {k._short(e)}")
                continue
            logs = d / "logs"
            logs.mkdir(exist_ok=True)
            for pod in pods:
                pod_name = pod["metadata"]["name"]
                node = (pod.get("spec") or {}).get("nodeName") or "unscheduled"
                try:
                    text = kube.logs(namespace, pod_name, container)
                except Exception as e:
                    errors.append(f"{cluster} logs of {pod_name}: {type(e).__name__}: {k._short(e)}")
                    continue
                (logs / f"{pod_name}@{node}.log").write_text(text)
                if selector == CALICO_NODE_SELECTOR:
                    try:
                        cfg = kube.exec(namespace, pod_name, ["cat", NODE_BIRD_CFG], "calico-node")
                    except Exception as e:
                        errors.append(f"{cluster} bird.cfg of {pod_name}: {type(e).__name__}: {k._short(e)}")
                        continue
                    (d / f"bird.cfg@{self.spec_node(node)}").write_text(cfg)
        return errors
