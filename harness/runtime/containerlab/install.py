"""Bringing a rendered lab up, step by step (`ContainerlabRuntime.up` runs them in order):

1. `render`: the ToR image built (or found), the lab rendered into `<run dir>/rendered/` with
   KubeVirt's useEmulation from the machine's probes, and checked (harness.runtime.containerlab
   .validate) before anything runs;
2. `check_clusters_free`: kind cluster names are machine-wide, so another lab's are refused;
3. `deploy`: `containerlab deploy` (kind clusters included), recorded first in deployed.json so
   `down` removes exactly that, then each cluster's kubeconfig;
4. `install_cluster`, per kind cluster and through the Kubernetes API: the operator's CRDs, then,
   before Calico runs, the IPReservation of the VM addresses and the lab's BGPConfiguration,
   BGPPeers and BGPFilters as crd.projectcalico.org/v1 objects (calico_docs.BGP_CRD_KINDS says
   why), the tigera operator and the lab's Installation (TigeraStatus `calico` and `apiserver`
   Available), nodes Ready, VM addresses freed, the lab's other Calico v3 resources, KubeVirt (CR
   Available), a calico-typha restart (so it sees KubeVirt's CRDs), the lab's VirtualMachines
   (each VMI Running with its IP, on its node, every pod with the guest's MAC), their images
   pulled on every node, and each guest answering the canary's echo port. A lab with nested
   clusters also gets kvlab's guest image (built in `render`, `kind load docker-image` into the
   parent's nodes: no registry) and its nested nodes' cloud-init Secrets before the VMs.

Every wait has its deadline in DEADLINES and names what it waited for and the last state seen.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import LabError
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import nested as nst
from harness.runtime.containerlab import tools
from harness.runtime.containerlab.host import CALICO_NAMESPACE, DEPLOYED, ClabHost
from harness.safefile import replace_file
from harness.topology import Topology

TYPHA = "calico-typha"
DEADLINES = {
    "deploy": 1800.0,  # containerlab deploy, kind clusters included (rendered with kind's wait 0s)
    "nodes registered": 300.0,
    "tigera": 600.0,  # Calico's CI budgets 600 s for calico-node Ready
    "nodes ready": 300.0,
    "kubevirt": 900.0,
    "typha": 300.0,
    "vmis": 600.0,
    "address holders": 300.0,  # pods that took a VM address before the reservation, recreated
    "image pull": 900.0,  # one node pulling the launcher and guest disk images
    # A guest booting (under emulation: minutes) until its cloud-init echo server answers.
    "guest": 900.0,
}
GUEST_PROBE_INTERVAL = 5.0  # seconds between two echo probes of a booting guest


class Installer:
    """The steps of `up` for one lab instance (see the module doc)."""

    def __init__(self, host: ClabHost):
        self.host = host

    # -- before the clusters ---------------------------------------------------------------
    def render(self, topo: Topology) -> None:
        """Build the ToR image, render the lab into the run dir and validate it; the run dir's
        BIRD socket directories exist afterwards. LabError when the rendered lab is invalid."""
        from harness.runtime.containerlab.images import build_tor_image
        from harness.runtime.containerlab.render import render_containerlab
        from harness.runtime.containerlab.validate import validate_rendered

        host = self.host
        emulate = kv.needs_emulation(host.probes.kvm_usable(), host.probes.vhost_net_usable())
        image = build_tor_image(host.progress)  # reports its own steps (progress steps do not nest)
        guest_image = nst.build_guest_image(host.progress) if topo.nested_vm else None
        with host.progress.step(f"render the lab (KubeVirt useEmulation {str(emulate).lower()})", total=None):
            spec = topo.spec.model_copy(update={"name": host.lab})  # containers carry the instance name
            render_containerlab(
                spec,
                host.render_dir,
                versions=host.versions,
                use_emulation=emulate,
                image=image,
                run_dir=host.run_dir,
                guest_image=guest_image,
            )
            report = validate_rendered(host.render_dir)
            host.notes += report.warnings  # e.g. fields left out for an older Calico
            if not report.ok:
                raise LabError(
                    f"the rendered lab in {host.render_dir} is invalid:\n"
                    + "\n".join(f"  {issue}" for issue in report.issues)
                )
        manifest = self._manifest()
        for router in manifest["bird_sockets"]:
            (host.run_dir / router).mkdir(parents=True, exist_ok=True)
        sockets = [*manifest.get("calico_sockets", {}).values(), *manifest.get("nested_sockets", {}).values()]
        for socket_path in sockets:
            Path(socket_path).parent.mkdir(parents=True, exist_ok=True)

    def check_clusters_free(self) -> None:
        """Kind cluster names are global on the machine: refuse to build over another lab's cluster."""
        rc, out = tools.run_tool(["kind", "get", "clusters"], timeout=60)
        if rc != 0:
            raise LabError(f"'kind get clusters' failed (exit {rc}): {out.strip()[-500:]}")
        existing = set(out.split())
        taken = [c for c in self.host.kind_clusters() if c in existing]
        if taken:
            raise LabError(
                f"kind cluster(s) {', '.join(taken)} already exist: kind cluster names are global, so one "
                f"containerlab lab per cluster name runs at a time; remove the other lab ('kvlab down NAME') "
                f"or the cluster ('kind delete cluster --name {taken[0]}')"
            )

    def deploy(self) -> None:
        """`containerlab deploy` (recorded in deployed.json first), then each kind cluster's kubeconfig."""
        host = self.host
        topo_file = host.render_dir / self._manifest()["topology_file"]
        log = host.run_dir / "containerlab-deploy.log"
        record = {"topology_file": str(topo_file), "kind_clusters": list(host.kind_clusters())}
        replace_file(host.run_dir / DEPLOYED, (json.dumps(record, indent=2) + "\n").encode())
        with host.progress.step("containerlab deploy (kind clusters included)", total=None) as step:
            tools.stream_tool(
                ["containerlab", "deploy", "-t", str(topo_file), "--reconfigure"],
                step,
                what=f"containerlab deploy -t {topo_file}",
                timeout=DEADLINES["deploy"],
                log=log,
                cwd=host.render_dir,
            )
        for cluster in host.kind_clusters():
            rc, out = tools.run_tool(["kind", "get", "kubeconfig", "--name", cluster], timeout=60)
            if rc != 0:
                raise LabError(
                    f"'kind get kubeconfig --name {cluster}' failed (exit {rc}): {out.strip()[-500:]}"
                )
            k.write_kubeconfig(k.kubeconfig_path(host.run_dir, cluster), out)

    # -- a kind cluster ----------------------------------------------------------------------
    def install_cluster(self, cluster: str) -> None:
        """Calico, the lab's resources, KubeVirt and the VMs in kind cluster `cluster` (module doc)."""
        host = self.host
        entry = host.kind_clusters()[cluster]
        kube = host.kube(cluster)
        v = host.versions
        kind_nodes = list(entry["nodes"].values())
        self._wait(
            f"cluster {cluster}: nodes {', '.join(kind_nodes)} registered",
            lambda: nodes_state(kube, kind_nodes, ready=False),
            timeout=DEADLINES["nodes registered"],
        )
        with host.progress.step(f"{cluster}: tigera operator (Calico {v.calico})", total=None):
            kube.apply_all(k.load_documents(kube.fetch(v.operator_crds_url)), what="Calico operator CRDs")
            if entry.get("ip_reservation"):  # before any pod can get an address (calico_docs.ip_reservation)
                kube.apply_all(
                    self.documents(entry["ip_reservation"]), what="IPReservation of the VM addresses"
                )
            if entry.get("bgp"):  # before calico-node's first start (calico_docs.BGP_CRD_KINDS: why)
                kube.apply_all(
                    self.documents(entry["bgp"]), what=f"BGP resources of {cluster} (v1 CRD objects)"
                )
            kube.apply_all(k.load_documents(kube.fetch(v.tigera_operator_url)), what="tigera operator")
            kube.apply_all(self.documents(entry["installation"]), what="Installation and APIServer")
        for name in ("calico", "apiserver"):
            self._wait(
                f"cluster {cluster}: TigeraStatus '{name}' Available",
                lambda n=name: available(kube.get(k.TIGERA_API, "TigeraStatus", n)),
                timeout=DEADLINES["tigera"],
                interval=5.0,
            )
        self._wait(
            f"cluster {cluster}: nodes {', '.join(kind_nodes)} Ready",
            lambda: nodes_state(kube, kind_nodes, ready=True),
            timeout=DEADLINES["nodes ready"],
        )
        self._free_vm_addresses(cluster, kube)
        resources = self.documents(entry["resources"])
        if resources:
            with host.progress.step(f"{cluster}: Calico resources (projectcalico.org/v3)", total=None):
                kube.apply_all(resources, what=f"Calico resources of {cluster}")
        vms = self.cluster_vms(cluster)
        if not vms:
            return
        with host.progress.step(f"{cluster}: KubeVirt {v.kubevirt}", total=None):
            kube.apply_all(k.load_documents(kube.fetch(v.kubevirt_operator_url)), what="KubeVirt operator")
            kube.apply_all(self.documents("kubevirt/kubevirt.yaml"), what="KubeVirt CR")
        self._wait(
            f"cluster {cluster}: KubeVirt CR 'kubevirt' Available",
            lambda: available(kube.get(kv.API_VERSION, "KubeVirt", "kubevirt", kv.NAMESPACE)),
            timeout=DEADLINES["kubevirt"],
            interval=5.0,
        )
        self._restart_typha(cluster, kube)
        manifest = self._manifest()
        self._nested_guests(cluster, kube, [d["metadata"]["name"] for d in vms], manifest)
        with host.progress.step(f"{cluster}: VirtualMachines", total=None):
            kube.apply_all(vms, what=f"VirtualMachines of {cluster}")
        for name in (d["metadata"]["name"] for d in vms):
            vm = manifest["vms"][name]
            self._wait(
                f"cluster {cluster}: VMI {name} Running with IP {vm['ip']}",
                lambda n=name, ip=vm["ip"]: vmi_ready(kube, n, ip),
                timeout=DEADLINES["vmis"],
                interval=3.0,
            )
            kv.check_vm(kube, name, vm["kind_node"], host.spec_node(vm["kind_node"]))
        self._prepull(cluster, kube, [d["metadata"]["name"] for d in vms])
        for name in (d["metadata"]["name"] for d in vms):
            self._wait_guest(kube, name, manifest)

    def _nested_guests(self, cluster: str, kube: k.Kube, vms: list[str], manifest: dict[str, Any]) -> None:
        """Before VMs that run nested nodes: kvlab's guest image on every node of the cluster
        (`kind load docker-image`, no registry) and the nodes' cloud-init Secrets."""
        nested = [vm for vm in vms if "nested" in manifest["vms"][vm]]
        if not nested:
            return
        image = manifest["guest_image"]
        with self.host.progress.step(f"{cluster}: kind load docker-image {image}", total=None):
            rc, out = tools.run_tool(nst.kind_load_argv(image, cluster), timeout=DEADLINES["image pull"])
            if rc != 0:
                argv = " ".join(nst.kind_load_argv(image, cluster))
                raise LabError(f"'{argv}' failed (exit {rc}): {out.strip()[-500:]}")
        secrets = {manifest["vms"][vm]["nested"]["user_data_secret"] for vm in nested}
        docs = [d for d in self.documents(manifest["nested_secrets"]) if d["metadata"]["name"] in secrets]
        kube.apply_all(docs, what=f"cloud-init Secrets of the nested nodes in {cluster}")

    def documents(self, rel: str) -> list[dict[str, Any]]:
        """The Kubernetes documents of a rendered file (path relative to the render dir)."""
        return k.load_documents((self.host.render_dir / rel).read_text())

    def cluster_vms(self, cluster: str) -> list[dict[str, Any]]:
        """The rendered VirtualMachines of kind cluster `cluster`."""
        mine = {name for name, vm in self._manifest().get("vms", {}).items() if vm["cluster"] == cluster}
        return [d for d in self.documents("kubevirt/vms.yaml") if d["metadata"]["name"] in mine]

    def _free_vm_addresses(self, cluster: str, kube: k.Kube) -> None:
        """No pod holds a VM's address: the IPReservation is applied before Calico runs, so none
        should; a pod that got one anyway (a reservation Calico did not see) is deleted for its
        controller to recreate it with another address. A pod without a controller fails `up`."""
        from harness.runtime.containerlab.ipam import address_holders

        ips = [vm["ip"] for vm in self._manifest().get("vms", {}).values() if vm["cluster"] == cluster]
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
            with self.host.progress.step(f"{cluster}: pod {h['pod']} holds VM address {h['ip']}: recreated"):
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

    def _prepull(self, cluster: str, kube: k.Kube, vms: list[str]) -> None:
        """Every node of the cluster pulls the images the VMs' launcher pods run (crictl in the kind
        node), so a migration target starts without a first pull inside the migration's deadline."""
        images: list[str] = []
        loaded = self._manifest().get("guest_image")  # on every node already (kind load), in no registry
        for vm in vms:
            for pod in kube.list("v1", "Pod", kv.VM_NAMESPACE, label_selector=kv.launcher_selector(vm)):
                images += [i for i in kv.launcher_images(pod) if i not in images and not _is(i, loaded)]
        if not images:
            return
        nodes = self.host.kind_clusters()[cluster]["nodes"]
        with (
            self.host.progress.step(
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
            argv = ["docker", "exec", self.host.container(node), "crictl", "pull", image]
            try:
                rc, out = tools.run_tool(argv, timeout=DEADLINES["image pull"])
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
            with self.host.progress.step(f"VM {vm}: no external host to reach its guest from; not awaited"):
                return

        def answers() -> tuple[bool, str]:
            res = self.host.run(host, client_argv(ip, GUEST_PORT, timeout=3.0), timeout=15)
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
        with self.host.progress.step(f"{cluster}: restart calico-typha (KubeVirt CRDs)", total=None):
            kube.patch("apps/v1", "Deployment", TYPHA, k.restart_patch(), CALICO_NAMESPACE)
        self._wait(
            f"cluster {cluster}: calico-typha rollout after the restart",
            lambda: k.rollout_state(kube.get("apps/v1", "Deployment", TYPHA, CALICO_NAMESPACE)),
            timeout=DEADLINES["typha"],
        )

    def _wait(
        self, what: str, check: Callable[[], tuple[bool, str]], *, timeout: float, interval: float = 2.0
    ) -> None:
        k.wait_until(self.host.progress, what, check, timeout=timeout, interval=interval)

    def _manifest(self) -> dict[str, Any]:
        manifest = self.host.manifest()
        assert manifest is not None  # required=True raises instead
        return manifest


def _is(image: str, loaded: str | None) -> bool:
    """Whether a launcher pod's image (a reference or a `repo@sha256:` digest, maybe with
    containerd's docker.io/ prefix) is the image `loaded` (same repository)."""

    def repository(ref: str) -> str:
        ref = ref.split("@", 1)[0]
        if ":" in ref.rsplit("/", 1)[-1]:
            ref = ref.rsplit(":", 1)[0]
        return ref.removeprefix("docker.io/")

    return loaded is not None and repository(image) == repository(loaded)


def available(obj: dict[str, Any] | None) -> tuple[bool, str]:
    """(condition Available is True, the object's conditions)."""
    return k.condition_true(obj, "Available"), k.describe_conditions(obj)


def nodes_state(kube: k.Kube, names: list[str], *, ready: bool) -> tuple[bool, str]:
    """(every node of `names` registered, or with `ready` Ready; what is missing)."""
    nodes = kube.list("v1", "Node")
    if ready:
        return k.nodes_state(nodes, names)
    have = {n["metadata"]["name"] for n in nodes}
    missing = [n for n in names if n not in have]
    return not missing, f"not registered: {', '.join(missing)}" if missing else "all registered"


def vmi_ready(kube: k.Kube, name: str, ip: str) -> tuple[bool, str]:
    """(VMI `name` Running with `ip` on it or its launcher pod, what it is at)."""
    vmi = kube.get(kv.API_VERSION, "VirtualMachineInstance", name, kv.VM_NAMESPACE)
    pods = kube.list("v1", "Pod", kv.VM_NAMESPACE, label_selector=f"vm.kubevirt.io/name={name}")
    pod_ips = [p["status"]["podIP"] for p in pods if (p.get("status") or {}).get("podIP")]
    return k.vmi_state(vmi, ip, pod_ips)
