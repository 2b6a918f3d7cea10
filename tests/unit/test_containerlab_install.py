"""harness.runtime.containerlab.install: `up` step by step against the default lab's kind cluster
answering with real-shaped objects (clab_fakes.FakeCluster): BGP resources and the VM addresses'
reservation before Calico runs, pods holding a VM address recreated, the VMs on their nodes with
the guest's MAC on every pod, their images pulled everywhere, each guest answering, and the
render with both device probes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from clab_fakes import (
    DEFAULT_LAB,
    FakeCluster,
    load,
)

from harness.errors import LabError, WaitTimeout
from harness.labfile import load_lab
from harness.runtime.containerlab import install as ins
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import preflight as pf
from harness.runtime.containerlab import runtime as cl
from harness.runtime.containerlab import tools
from harness.runtime.containerlab.install import Installer
from harness.topology import resolve

pytestmark = pytest.mark.usefixtures("run_root")  # tests/unit/conftest.py


@pytest.fixture
def cluster(clab: cl.ContainerlabRuntime, monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster()
    clab._kubes["kv"] = fake
    pulls: list[list[str]] = []
    probes: list[list[str]] = []
    monkeypatch.setattr(
        tools, "run_tool", lambda argv, **kw: (pulls.append(argv), (0, "Image is up to date"))[1]
    )
    monkeypatch.setattr(
        clab, "run", lambda entity, argv, **kw: (
            probes.append([entity, *argv]), subprocess.CompletedProcess(argv, 0, "kvlab\n", "")
        )[1],
    )  # fmt: skip
    fake.pulls, fake.probes = pulls, probes  # type: ignore[attr-defined]
    return fake


def test_rendered_manifests_load_as_documents(clab: cl.ContainerlabRuntime) -> None:
    kinds = [d["kind"] for d in Installer(clab).documents("calico/kv/installation.yaml")]
    assert kinds == ["Installation", "APIServer"]
    vms = Installer(clab).cluster_vms("kv")
    assert [d["metadata"]["name"] for d in vms] == ["vm1"]
    assert k.api_group("projectcalico.org/v3") == k.CALICO_API_GROUP
    assert k.api_group("v1") == ""


def test_up_reserves_the_vm_addresses_before_calico_runs(
    clab: cl.ContainerlabRuntime, cluster: FakeCluster
) -> None:
    Installer(clab).install_cluster("kv")
    applied = [d[1] for d in cluster.done if d[0] == "apply"]
    assert applied[:5] == [
        "Calico operator CRDs",
        "IPReservation of the VM addresses",
        "BGP resources of kv (v1 CRD objects)",
        "tigera operator",
        "Installation and APIServer",
    ]
    (reservation,) = [d for d in cluster.done if d[1] == "IPReservation of the VM addresses"]
    assert reservation[2:] == ("crd.projectcalico.org/v1 IPReservation",)
    doc = k.load_documents((clab.render_dir / "calico" / "kv" / "ipreservation.yaml").read_text())[0]
    assert doc["spec"]["reservedCIDRs"] == ["203.0.113.10/32"]
    resources = k.load_documents((clab.render_dir / "calico" / "kv" / "resources.yaml").read_text())
    assert "IPReservation" not in {d["kind"] for d in resources}


def test_up_recreates_a_pod_that_took_a_vm_address(
    clab: cl.ContainerlabRuntime, cluster: FakeCluster
) -> None:
    Installer(clab).install_cluster("kv")
    deletes = [d for d in cluster.done if d[0] == "delete"]
    assert deletes == [("delete", "Pod", "kube-system/coredns-7db6d8ff4d-h4x9q")]  # not the host-network one
    calico_resources = cluster.done.index(("apply", "Calico resources of kv", *(
        f"{d['apiVersion']} {d['kind']}"
        for d in k.load_documents((clab.render_dir / "calico/kv/resources.yaml").read_text())
    )))  # fmt: skip
    assert cluster.done.index(deletes[0]) < calico_resources


def test_a_pod_without_controller_holding_a_vm_address_fails_up(
    clab: cl.ContainerlabRuntime, cluster: FakeCluster
) -> None:
    bare = next(p for p in cluster.pods if p["metadata"]["name"] == "debug")
    bare["status"].update(podIP="203.0.113.10", podIPs=[{"ip": "203.0.113.10"}])
    with pytest.raises(
        LabError, match=r"pods without a controller hold VM addresses: default/debug on kv-worker2"
    ):
        Installer(clab).install_cluster("kv")


def test_up_waits_for_the_guest_and_pulls_its_images_everywhere(
    clab: cl.ContainerlabRuntime, cluster: FakeCluster
) -> None:
    Installer(clab).install_cluster("kv")
    (probe,) = cluster.probes  # type: ignore[attr-defined]
    assert probe[0] == "ext1"
    assert probe[1:4] == [sys.executable, "-c", probe[3]]
    assert probe[4:6] == ["203.0.113.10", "7007"]
    launcher = cluster.launchers[0]
    images = kv.launcher_images(launcher)
    assert images == [
        launcher["status"]["initContainerStatuses"][0]["imageID"],  # the launcher, by digest
        launcher["status"]["initContainerStatuses"][1]["imageID"],  # the guest disk, by digest
    ]
    pulls = cluster.pulls  # type: ignore[attr-defined]
    assert sorted(p[2] for p in pulls) == sorted(
        f"kv-{n}" for n in ("control-plane", "worker", "worker2", "worker3") for _ in images
    )
    assert all(p[:2] == ["docker", "exec"] and p[3:5] == ["crictl", "pull"] for p in pulls)
    assert {p[5] for p in pulls} == set(images)


def test_a_guest_that_never_answers_names_the_vm_the_probe_and_the_vmi(
    clab: cl.ContainerlabRuntime, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ins.DEADLINES, "guest", 0.2)
    monkeypatch.setattr(ins, "GUEST_PROBE_INTERVAL", 0.05)
    refused = "ConnectionRefusedError: [Errno 111] Connection refused"
    monkeypatch.setattr(
        clab,
        "run",
        lambda entity, argv, **kw: subprocess.CompletedProcess(argv, 1, "", f"Traceback\n{refused}\n"),
    )
    with pytest.raises(WaitTimeout) as err:
        Installer(clab).install_cluster("kv")
    text = str(err.value)
    assert "VM vm1: its guest answering the echo port 7007 from ext1" in text
    assert f"ext1 -> 203.0.113.10:7007: {refused}" in text
    assert "Ready=True" in text  # the VMI's conditions


def test_a_vm_the_scheduler_put_elsewhere_fails_up_clearly(
    clab: cl.ContainerlabRuntime, cluster: FakeCluster
) -> None:
    cluster.vmi["status"]["nodeName"] = "kv-worker"
    with pytest.raises(LabError) as err:
        Installer(clab).install_cluster("kv")
    assert str(err.value).startswith(
        "VM vm1: VMI vm1 runs on kv-worker, not on its spec node r1-n1 (kv-control-plane): the VM's node "
        "affinity is only preferred"
    )


def test_a_launcher_pod_without_the_guests_mac_fails_up(
    clab: cl.ContainerlabRuntime, cluster: FakeCluster
) -> None:
    cluster.launchers[0]["metadata"]["annotations"][kv.CALICO_MAC_ANNOTATION] = "02:00:00:00:00:01"
    with pytest.raises(
        LabError, match=r"has cni.projectcalico.org/hwAddr 02:00:00:00:00:01 but the guest's MAC"
    ):
        Installer(clab).install_cluster("kv")


CRD_V1 = load("calico-crd-v1-bgp.json")  # what each pinned Calico's operator-crds.yaml serves


def test_up_writes_the_bgp_resources_before_the_operator_starts_calico(
    clab: cl.ContainerlabRuntime, cluster: FakeCluster
) -> None:
    """Until a BGPConfiguration exists calico-node runs the mesh (and creates an empty `default` at
    its first start), the ToRs learn no pod block, and pods outside the control plane's rack never
    reach the API server, so TigeraStatus 'calico'/'apiserver' never become Available: the
    BGPConfiguration (mesh off), BGPFilter and BGPPeers go in as crd.projectcalico.org/v1 objects
    right after the operator's CRDs; only FelixConfiguration and IPAMConfiguration wait for the v3 API."""
    assert CRD_V1["calico_node_start"]["creates_default_bgp_configuration"]
    Installer(clab).install_cluster("kv")
    steps = [d for d in cluster.done if d[0] in ("apply", "get")]
    names = [d[1] for d in steps]
    bgp = names.index("BGP resources of kv (v1 CRD objects)")
    v3 = names.index("Calico resources of kv")
    assert (
        names.index("Calico operator CRDs")
        < bgp
        < names.index("tigera operator")
        < names.index("TigeraStatus")
    )
    assert steps[bgp][2:] == (
        "crd.projectcalico.org/v1 BGPFilter",
        "crd.projectcalico.org/v1 BGPConfiguration",
        "crd.projectcalico.org/v1 BGPPeer",
        "crd.projectcalico.org/v1 BGPPeer",
    )
    assert steps[v3][2:] == (
        "projectcalico.org/v3 FelixConfiguration",
        "projectcalico.org/v3 IPAMConfiguration",
    )
    assert v3 > max(i for i, n in enumerate(names) if n == "TigeraStatus")
    early = k.load_documents((clab.render_dir / "calico" / "kv" / "bgp.yaml").read_text())
    (conf,) = [d for d in early if d["kind"] == "BGPConfiguration"]
    assert conf["spec"] == {"asNumber": 64512, "nodeToNodeMeshEnabled": False}
    assert {d["spec"]["peerIP"] for d in early if d["kind"] == "BGPPeer"} == {"198.18.1.1", "198.18.2.1"}


LAUNCHER = load("kubevirt-launcher-devices.json")  # what KubeVirt's launcher pods request


def test_up_renders_with_both_probes_and_the_preflight_says_why(
    clab: cl.ContainerlabRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.runtime.containerlab import images

    monkeypatch.setattr(images, "build_tor_image", lambda progress: "kvlab/tor:test")
    clab.probes = pf.Probes(kvm_usable=lambda: True, vhost_net_usable=lambda: False)
    Installer(clab).render(resolve(load_lab(DEFAULT_LAB)))
    (cr,) = k.load_documents((clab.render_dir / "kubevirt/kubevirt.yaml").read_text())
    assert cr["spec"]["configuration"]["developerConfiguration"]["useEmulation"] is True
    assert pf.emulation_note(True, False).startswith("/dev/vhost-net does not open here: KubeVirt will run")
    assert pf.emulation_note(True, True) == "/dev/kvm is usable: KubeVirt runs VMs with KVM"
    assert kv.device_opens("/dev/null")
    assert not kv.device_opens(str(clab.run_dir / "no-such-device"))
    assert kv.tun_usable() is kv.device_opens(LAUNCHER["device_paths"]["devices.kubevirt.io/tun"])


def test_nested_vms_get_the_guest_image_loaded_and_their_secrets_first(
    run_root: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the VMs that run nested nodes: `kind load docker-image` of the guest image into the
    parent's cluster (no registry), then the nested nodes' cloud-init Secrets; VMs without a
    nested node need neither."""
    from clab_fakes import REPO, full_machine

    from harness.runtime.base import LabContext
    from harness.runtime.containerlab.render import render_containerlab
    from harness.runtime.containerlab.versions import DEFAULT

    spec = load_lab(REPO / "labs" / "nested.yml").model_copy(update={"name": "tnest"})
    context = LabContext.of(spec)
    runtime = cl.ContainerlabRuntime("tnest", probes=full_machine(), versions=DEFAULT, context=context)
    image = "kvlab/guest:6.1.0-57-amd64-0123456789abcdef"
    render_containerlab(
        spec, runtime.render_dir, use_emulation=True, run_dir=runtime.run_dir, guest_image=image
    )
    ran: list[list[str]] = []
    monkeypatch.setattr(tools, "run_tool", lambda argv, **kw: (ran.append(argv), (0, ""))[1])
    applied: list[tuple[str, list[str]]] = []

    class Kube:
        def apply_all(self, docs: list[dict], what: str) -> None:
            applied.append((what, [f"{d['kind']}/{d['metadata']['name']}" for d in docs]))

    installer = Installer(runtime)
    manifest = runtime.manifest()
    installer._nested_guests("parent", Kube(), ["vm-green"], manifest)  # type: ignore[arg-type]
    assert (ran, applied) == ([], [])
    installer._nested_guests("parent", Kube(), ["vm-red", "vm-blue", "vm-green"], manifest)  # type: ignore[arg-type]
    assert ran == [["kind", "load", "docker-image", image, "--name", "parent"]]
    secrets = ["Secret/vm-red-nested-node", "Secret/vm-blue-nested-node"]
    assert applied == [("cloud-init Secrets of the nested nodes in parent", secrets)]
    monkeypatch.setattr(tools, "run_tool", lambda argv, **kw: (1, "ERROR: image not present locally"))
    failed = r"'kind load docker-image kvlab/guest:\S+ --name parent' failed \(exit 1\): .*not present"
    with pytest.raises(LabError, match=failed):
        installer._nested_guests("parent", Kube(), ["vm-red"], manifest)  # type: ignore[arg-type]
