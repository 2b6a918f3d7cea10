"""What the containerlab runtime needs of a machine, asked before anything is created.

`preflight_report(Probes())` collects every gap (each with how to get it): a Docker daemon,
containerlab new enough to embed the stack's kind, kind and kubectl, the Python clients, every
pinned manifest and image answering (harness.runtime.containerlab.pins), free space for Docker,
inotify limits, root or the docker group, /dev/net/tun; and what is worth knowing (the
containerlab version, whether KubeVirt runs VMs with KVM or emulation). `Probes` holds every
question asked of the machine, replaceable for tests (a bare or a full machine).
"""

from __future__ import annotations

import contextlib
import grp
import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import PreflightError
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import pins
from harness.runtime.containerlab.versions import DEFAULT, MATRIX, StackVersions, get_versions, minor_version

# containerlab creates kind clusters with the kind library it embeds; a kind node image is only
# supported by the kind release that built it, and every matrix entry uses kind v0.31.0 images.
# srl-labs/containerlab go.mod: `sigs.k8s.io/kind v0.31.0` from v0.73.0 (611350001b, 2026-02-08;
# bumped in ae17f8e47), v0.27.0 in v0.72.0 (tests/data/containerlab/upstream-pins.json).
MIN_CONTAINERLAB = (0, 73)
INOTIFY_MINIMUMS = {"max_user_watches": 524288, "max_user_instances": 512}
INOTIFY_DIR = "/proc/sys/fs/inotify"
PYTHON_CLIENTS = ("docker", "kubernetes", "paramiko")
# Free space Docker's data root needs: the kind node image (~1 GB) once, and per kind node (four
# in the default lab) Calico's images (~1.2 GB), virt-handler (~0.4 GB) and virt-launcher plus
# the guest disk (~0.6 GB, pulled on every node so a migration target needs no pull): ~10 GB, and
# room to spare. An estimate: the nightly measures it (disk usage in its results).
DOCKER_DISK_MIN_GIB = 20
FIX_CONTAINERLAB = 'bash -c "$(curl -sL https://get.containerlab.dev)" (https://containerlab.dev/install/)'


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
    cluster_minor = minor_version(versions.kubernetes)
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
