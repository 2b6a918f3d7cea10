"""What the containerlab runtime collects when something went wrong: `containerlab inspect`, the
lab's containers and their logs, the routers' BIRD state, and per kind cluster its nodes, pods,
events, Calico and KubeVirt objects (YAML), calico-node logs and bird.cfg per node, virt-launcher,
virt-handler and operator logs. Collecting never raises: what could not be collected is returned,
a line each. A failed `up` writes its diagnostics (`write_failure_diagnostics`) before teardown,
to `$KVLAB_DIAG_DIR/<lab>-up-failed-<time>/` (default ./kvlab-diagnostics).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from harness.errors import LabError
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import tools
from harness.runtime.containerlab.host import (
    CALICO_NAMESPACE,
    CALICO_NODE_SELECTOR,
    NODE_BIRD_CFG,
    ROUTER_BIRD_SOCKET,
    ClabHost,
)

DIAG_ENV = "KVLAB_DIAG_DIR"  # where the diagnostics of a failed `up` go (default ./kvlab-diagnostics)
CLUSTER_OBJECTS = (
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
)
POD_LOGS = (  # namespace, label selector, container (None: the pod's only one)
    (CALICO_NAMESPACE, CALICO_NODE_SELECTOR, "calico-node"),
    ("tigera-operator", "k8s-app=tigera-operator", None),
    (kv.NAMESPACE, "kubevirt.io=virt-handler", None),
    (kv.VM_NAMESPACE, "kubevirt.io=virt-launcher", "compute"),
)


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


def collect(host: ClabHost, out_dir: Path) -> list[str]:
    """Write the lab's diagnostics (module doc) under `out_dir`; what could not be collected."""
    out_dir.mkdir(parents=True, exist_ok=True)
    errors: list[str] = list(host.fetch_errors)

    def attempt(what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as e:
            errors.append(f"{what}: {type(e).__name__}: {e}")

    manifest = host.manifest(required=False)
    if manifest is None:
        return [*errors, f"no manifest in {host.render_dir}: nothing rendered for lab '{host.lab}'"]
    attempt("manifest", lambda: shutil.copy(host.render_dir / "manifest.json", out_dir / "manifest.json"))
    attempt("containerlab inspect", lambda: _inspect(host, manifest, out_dir))
    attempt("containers", lambda: _containers(host, manifest, out_dir / "containers"))
    for router in manifest.get("bird_sockets", {}):
        for command in ("show protocols all", "show route all"):
            attempt(f"{router} birdc {command}", lambda r=router, c=command: _birdc(host, r, c, out_dir))
    for cluster in host.kind_clusters():
        attempt(
            f"cluster {cluster}",
            lambda c=cluster: errors.extend(_cluster(host, c, out_dir / "clusters" / c)),
        )
    return errors


def write_failure_diagnostics(host: ClabHost, error: BaseException) -> None:
    """Before a failed `up` tears everything down: write what can be collected, and say where (a
    note on `error`)."""
    out = (
        Path(os.environ.get(DIAG_ENV) or "kvlab-diagnostics")
        / f"{host.lab}-up-failed-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    try:
        problems = collect(host, out)
        if problems:
            (out / "errors.txt").write_text("\n".join(problems) + "\n")
    except Exception as e:  # never hide the original failure
        error.add_note(f"kvlab: could not write diagnostics of the failed up to {out}: {e}")
        return
    error.add_note(f"kvlab: diagnostics of the failed up in {out}")


def _inspect(host: ClabHost, manifest: dict[str, Any], out_dir: Path) -> None:
    topo_file = host.render_dir / manifest["topology_file"]
    rc, out = tools.run_tool(
        ["containerlab", "inspect", "-t", str(topo_file), "--format", "json"], timeout=120
    )
    (out_dir / "containerlab-inspect.json").write_text(out)
    if rc != 0:
        raise LabError(f"containerlab inspect exit {rc}")
    (out_dir / "containerlab-containers.json").write_text(json.dumps(parse_inspect(out), indent=2) + "\n")


def _containers(host: ClabHost, manifest: dict[str, Any], d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    client = host.docker()
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


def _birdc(host: ClabHost, router: str, command: str, out_dir: Path) -> None:
    d = out_dir / "routers" / router
    d.mkdir(parents=True, exist_ok=True)
    res = host.run(router, ["birdc", "-s", ROUTER_BIRD_SOCKET, *command.split()], timeout=30)
    (d / f"birdc-{command.replace(' ', '-')}.txt").write_text(res.stdout + res.stderr)


def _cluster(host: ClabHost, cluster: str, d: Path) -> list[str]:
    d.mkdir(parents=True, exist_ok=True)
    kube = host.kube(cluster)
    errors: list[str] = []

    def failed(what: str, e: Exception) -> None:
        errors.append(f"{cluster} {what}: {type(e).__name__}: {k.short_error(e)}")

    for name, api_version, kind in CLUSTER_OBJECTS:
        try:
            items = kube.list(api_version, kind, None)
        except Exception as e:
            failed(kind, e)
            continue
        with open(d / f"{name}.yaml", "w") as fh:
            yaml.safe_dump_all(items, fh, sort_keys=False)
    logs = d / "logs"
    for namespace, selector, container in POD_LOGS:
        try:
            pods = kube.list("v1", "Pod", namespace, label_selector=selector)
        except Exception as e:
            failed(f"pods {selector}", e)
            continue
        logs.mkdir(exist_ok=True)
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            node = (pod.get("spec") or {}).get("nodeName") or "unscheduled"
            try:
                (logs / f"{pod_name}@{node}.log").write_text(kube.logs(namespace, pod_name, container))
            except Exception as e:
                failed(f"logs of {pod_name}", e)
                continue
            if selector == CALICO_NODE_SELECTOR:
                try:
                    cfg = kube.exec(namespace, pod_name, ["cat", NODE_BIRD_CFG], "calico-node")
                except Exception as e:
                    failed(f"bird.cfg of {pod_name}", e)
                    continue
                (d / f"bird.cfg@{host.spec_node(node)}").write_text(cfg)
    return errors
