"""Real-shaped stand-ins for the containerlab runtime's unit tests: the test data of
tests/data/containerlab/ (the API server's JSON as upstream's code shapes it, with where that
shape was read in each file's `_provenance`), a machine that has everything the preflight asks
for, and the default lab's kind cluster answering as the real one does."""

from __future__ import annotations

import ipaddress
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import pins
from harness.runtime.containerlab import preflight as pf

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "containerlab"
DEFAULT_LAB = REPO / "labs" / "default.yml"
KIND_NAMES = {"kv-control-plane": "r1-n1", "kv-worker": "r1-n2", "kv-worker2": "r2-n1", "kv-worker3": "r2-n2"}
VM_MAC = "52:54:00:a1:b2:c3"
NO_SCHEMAS = "upstream schemas not found in {} (the shared/ directory next to the repo)"


def load(name: str) -> dict[str, Any]:
    doc = json.loads((DATA / name).read_text())
    doc.pop("_provenance", None)
    return doc


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


def answering(method: str, url: str, headers: dict[str, str]) -> pins.Response:
    """Every pinned URL and image answers (tests/unit/test_pins.py simulates the registries)."""
    return (200, {}, b"")


def full_machine(**overrides: Any) -> pf.Probes:
    """Probes of a machine that has everything."""
    outputs = {
        ("containerlab", "version"): (0, (DATA / "containerlab-version-0.79.0.txt").read_text()),
        ("kubectl", "version", "--client", "-o", "json"): (
            0,
            json.dumps({"clientVersion": {"gitVersion": "v1.35.1", "major": "1", "minor": "35"}}),
        ),
    }
    sysctls = {
        f"{pf.INOTIFY_DIR}/max_user_watches": "524288\n",
        f"{pf.INOTIFY_DIR}/max_user_instances": "512\n",
    }
    probes = pf.Probes(
        which=lambda name: f"/usr/local/bin/{name}",
        run=lambda argv: outputs.get(tuple(argv), (127, "unexpected command")),
        importable=lambda module: True,
        docker_ping=lambda: None,
        docker_free=lambda: ("/var/lib/docker", 80 * 2**30),
        http=answering,
        read_file=lambda path: sysctls.get(path),
        euid=lambda: 1000,
        group_names=lambda: {"users", "docker"},
        kvm_usable=lambda: True,
        vhost_net_usable=lambda: True,
        tun_usable=lambda: True,
    )
    return replace(probes, **overrides)


class FakeCluster(k.Kube):
    """The default lab's kind cluster, answering with real-shaped objects; records what `up` did."""

    def __init__(self) -> None:
        super().__init__(api_client=None, name="kv")
        self.done: list[tuple[str, ...]] = []
        self.pods = load("pods-before-vms.json")["items"]
        self.vmi = load("vmi-after-success.json")
        self.vmi["status"].update(nodeName="kv-control-plane", phase="Running")
        launcher = load("virt-launcher-pods-after-migration.json")["items"][0]
        launcher["status"]["phase"] = "Running"
        self.launchers = [launcher]

    def fetch(self, url: str, timeout: float = 60.0) -> str:  # type: ignore[override]
        return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": url}})

    def apply_all(self, docs: list[dict[str, Any]], *, what: str, timeout: float = 300.0) -> None:
        self.done.append(("apply", what, *(f"{d['apiVersion']} {d['kind']}" for d in docs)))

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        if kind == "TigeraStatus":
            self.done.append(("get", kind, name))
            return {**load("tigerastatus-calico-available.json"), "metadata": {"name": name}}
        if kind == "KubeVirt":
            return {"status": {"phase": "Deployed", "conditions": [{"type": "Available", "status": "True"}]}}
        if kind == "Deployment":
            d = load("deployment-typha-rolling.json")
            d["status"].update(replicas=2, updatedReplicas=2, availableReplicas=2, unavailableReplicas=0)
            return d
        if kind == "VirtualMachineInstance":
            return self.vmi
        raise AssertionError(f"unexpected get of {kind}")

    def list(self, api_version: str, kind: str, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        label_selector = kw.get("label_selector") or (args[1] if len(args) > 1 else None)
        if kind == "Node":
            return [
                {"metadata": {"name": n}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
                for n in KIND_NAMES
            ]
        if kind == "Pod" and label_selector and "vm.kubevirt.io/name=vm1" in label_selector:
            return self.launchers
        if kind == "Pod":
            return self.pods
        raise AssertionError(f"unexpected list of {kind}")

    def patch(
        self, api_version: str, kind: str, name: str, body: dict[str, Any], *args: Any, **kw: Any
    ) -> Any:
        self.done.append(("patch", kind, name))
        return body

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        self.done.append(("delete", kind, f"{namespace}/{name}"))
        self.pods = [p for p in self.pods if p["metadata"]["name"] != name]
        return True


def yaml_docs(path: Path) -> list[Any]:
    """The YAML documents of a rendered file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def bird_missing() -> bool:
    return shutil.which("bird") is None and shutil.which("bird", path="/usr/sbin:/sbin") is None
