"""harness.runtime.containerlab.validate: the checks of a rendered directory catch broken files,
naming file, field and reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from clab_fakes import (
    DEFAULT_LAB,
    REPO,
    bird_missing,
    yaml_docs,
)

from harness.labfile import load_lab
from harness.runtime.containerlab import calico_docs as cd
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import render as rr
from harness.runtime.containerlab import runtime as cl
from harness.runtime.containerlab import schemas
from harness.runtime.containerlab import validate as va
from harness.runtime.containerlab.versions import MATRIX

LABS = sorted((REPO / "labs").glob("*.yml"))


@pytest.fixture
def default_lab(tmp_path: Path) -> rr.Rendered:
    return rr.render_containerlab(
        load_lab(REPO / "labs" / "default.yml"), tmp_path / "out", use_emulation=False
    )


@pytest.mark.usefixtures("need_schemas")
def test_validator_catches_a_bad_node_kind(default_lab: rr.Rendered) -> None:
    doc = yaml.safe_load(default_lab.topology_file.read_text())
    doc["topology"]["nodes"]["tor1"]["kind"] = "bird-router"
    doc["topology"]["nodes"]["tor2"]["bogus"] = True
    issues = va.clab_schema_errors(doc, "default.clab.yml")
    assert [(i.file, i.path) for i in issues] == [
        ("default.clab.yml", "topology.nodes.tor1.kind"),
        ("default.clab.yml", "topology.nodes.tor2"),
    ]
    assert "'bird-router' is not one of" in issues[0].message
    assert "'bogus' was unexpected" in issues[1].message


@pytest.mark.usefixtures("need_schemas")
def test_validation_of_a_broken_file_on_disk_names_file_and_field(default_lab: rr.Rendered) -> None:
    doc = yaml.safe_load(default_lab.topology_file.read_text())
    doc["topology"]["nodes"]["ext1"]["kind"] = "vm"
    default_lab.topology_file.write_text(yaml.safe_dump(doc))
    report = va.validate_rendered(default_lab.out, bird=False)
    assert [(i.file, i.path) for i in report.issues] == [
        (str(default_lab.topology_file), "topology.nodes.ext1.kind")
    ]


def test_structure_check_catches_bad_links_and_addresses(default_lab: rr.Rendered) -> None:
    doc = yaml.safe_load(default_lab.topology_file.read_text())
    doc["topology"]["links"][0]["endpoints"] = ["tor1:eth1", "nowhere:eth1"]
    doc["topology"]["links"][1]["endpoints"][1] = "kv-worker:eth0"
    doc["topology"]["nodes"]["ext1"]["exec"].append("ip route add 10.0.0.0/8 via 198.19.0.4")
    issues = va.clab_structure_errors(doc, "t.clab.yml")
    assert {(i.path, i.message.split(":")[0].split(" is")[0]) for i in issues} == {
        ("topology.links[0].endpoints[1]", "link endpoint 'nowhere"),
        ("topology.links[1].endpoints[1]", "interface 'eth0' must be eth1, eth2, ... (eth0"),
        (f"topology.nodes.ext1.exec[{len(doc['topology']['nodes']['ext1']['exec']) - 1}]", "10.0.0.0/8"),
    }


@pytest.mark.usefixtures("need_schemas")
def test_validator_catches_a_broken_vm(default_lab: rr.Rendered) -> None:
    vm = yaml_docs(default_lab.out / "kubevirt/vms.yaml")[0]
    vm["spec"]["runStrategy"] = 5
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["bridg"] = {}
    issues = schemas.kubevirt_errors(vm, "vms.yaml", (0,))
    assert [(i.file, i.path) for i in issues] == [
        ("vms.yaml", "[0].spec.runStrategy"),
        ("vms.yaml", "[0].spec.template.spec.domain.devices.interfaces[0].bridg"),
    ]
    assert "is not of type 'string'" in issues[0].message
    assert "unknown field 'bridg'" in issues[1].message


def test_vm_check_catches_a_missing_annotation(default_lab: rr.Rendered) -> None:
    path = default_lab.out / "kubevirt/vms.yaml"
    vm = yaml_docs(path)[0]
    del vm["spec"]["template"]["metadata"]["annotations"][kv.BRIDGE_MIGRATION_ANNOTATION]
    path.write_text(yaml.safe_dump(vm))
    issues = va.vm_errors(path, default_lab.manifest)
    assert [i.path for i in issues] == ["[0].spec.template.metadata.annotations"]


@pytest.mark.usefixtures("need_schemas")
def test_validator_catches_a_broken_installation(default_lab: rr.Rendered) -> None:
    inst = yaml_docs(default_lab.out / "calico/kv/installation.yaml")[0]
    inst["spec"]["calicoNetwork"]["ipPools"][0]["natOutgoing"] = "Never"
    inst["spec"]["calicoNetwork"]["bgpp"] = "Enabled"
    issues = schemas.installation_errors(inst, "installation.yaml")
    assert {i.path for i in issues} == {
        "spec.calicoNetwork.ipPools[0].natOutgoing",
        "spec.calicoNetwork.bgpp",
    }


@pytest.mark.usefixtures("need_schemas")
@pytest.mark.parametrize("api_version", ["crd.projectcalico.org/v1", "projectcalico.org/v3"])
def test_validator_catches_a_broken_calico_resource(default_lab: rr.Rendered, api_version: str) -> None:
    docs = yaml_docs(default_lab.out / "calico/kv/bgp.yaml")
    peer = next(d for d in docs if d["kind"] == "BGPPeer")
    peer["apiVersion"] = api_version  # the v1 CRD's or the v3 one's schema
    peer["spec"]["asNumber"] = "65001x"
    peer["spec"]["peerIp"] = "198.18.1.1"
    issues = schemas.calico_errors(peer, "bgp.yaml", (1,))
    assert {i.path for i in issues} == {"[1].spec.asNumber", "[1].spec.peerIp"}
    peer["apiVersion"] = "projectcalico.org/v1"
    (issue,) = schemas.calico_errors(peer, "bgp.yaml", (1,))
    assert (issue.path, issue.message) == (
        "[1].apiVersion",
        "'projectcalico.org/v1' is not a Calico API (projectcalico.org/v3 or crd.projectcalico.org/v1)",
    )


def test_kind_check_catches_a_wrong_node_ip(default_lab: rr.Rendered) -> None:
    path = default_lab.out / "kind/kv.yaml"
    path.write_text(path.read_text().replace('node-ip: "198.18.1.12"', 'node-ip: "198.18.1.99"'))
    topo_doc = yaml.safe_load(default_lab.topology_file.read_text())
    issues = va.kind_errors(path, topo_doc, default_lab.manifest["clusters"]["kv"])
    assert [(i.path, i.message) for i in issues] == [
        (
            "nodes[1].kubeadmConfigPatches",
            "node-ip 198.18.1.99 of kv-worker is not the address containerlab gives it (198.18.1.12)",
        )
    ]


def test_kind_check_rejects_unknown_fields(default_lab: rr.Rendered) -> None:
    path = default_lab.out / "kind/kv.yaml"
    path.write_text(path.read_text().replace("  disableDefaultCNI: true", "  disableDefaultCni: true"))
    topo_doc = yaml.safe_load(default_lab.topology_file.read_text())
    issues = va.kind_errors(path, topo_doc, default_lab.manifest["clusters"]["kv"])
    assert "networking.disableDefaultCni" in [i.path for i in issues]


@pytest.mark.skipif(
    bird_missing(), reason="BIRD is not installed (Debian package 'bird'): cannot run bird -p"
)
def test_bird_check_catches_a_broken_config(default_lab: rr.Rendered) -> None:
    conf = default_lab.out / "bird/tor1.conf"
    conf.write_text(conf.read_text().replace("router id", "router idd"))
    report = va.validate_rendered(default_lab.out)
    assert [i.file for i in report.issues] == [str(conf)]
    assert "line 2" in report.issues[0].message


def test_without_schemas_only_the_schema_checks_are_skipped(
    default_lab: rr.Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVLAB_SHARED", str(tmp_path / "nowhere"))
    report = va.validate_rendered(default_lab.out, bird=False)
    assert report.ok
    assert len(report.skipped) == 1
    assert "KVLAB_SHARED" in report.skipped[0]
    assert any("links and addresses" in c for c in report.checked)
    assert not any("schema" in c for c in report.checked)


def test_k8s_kind_extras_are_exempt_from_the_schema_but_checked(default_lab: rr.Rendered) -> None:
    doc = yaml.safe_load(default_lab.topology_file.read_text())
    assert doc["topology"]["nodes"]["kv"]["extras"] == {"k8s_kind": {"deploy": {"wait": "0s"}}}
    assert va.kind_extras_errors(doc, "t") == []
    if schemas.schemas_available():
        assert va.clab_schema_errors(doc, "t") == []
        # the upstream schema itself does not know extras.k8s_kind: hence the exemption
        assert [i.path for i in schemas.clab_errors(doc, "t")] == ["topology.nodes.kv.extras"]
    assert va.validate_rendered(default_lab.out, bird=False).ok
    doc["topology"]["nodes"]["kv"]["extras"]["k8s_kind"]["deploy"]["wait"] = "soon"
    doc["topology"]["nodes"]["kv"]["extras"]["k8s_kind"]["bogus"] = 1
    doc["topology"]["nodes"]["tor1"]["extras"] = {"k8s_kind": {}}
    issues = va.kind_extras_errors(doc, "t")
    assert sorted(i.path for i in issues) == [
        "topology.nodes.kv.extras.k8s_kind",
        "topology.nodes.tor1.extras.k8s_kind",
    ]
    del doc["topology"]["nodes"]["kv"]["extras"]["k8s_kind"]["bogus"]
    del doc["topology"]["nodes"]["tor1"]["extras"]
    (issue,) = va.kind_extras_errors(doc, "t")
    assert issue.path == "topology.nodes.kv.extras.k8s_kind.deploy.wait"
    default_lab.topology_file.write_text(yaml.safe_dump(doc))
    report = va.validate_rendered(default_lab.out, bird=False)
    assert [i.path for i in report.issues] == ["topology.nodes.kv.extras.k8s_kind.deploy.wait"]


def test_ip_reservation_check_catches_bad_shapes() -> None:
    pools = ["203.0.113.0/24"]
    good = cd.ip_reservation(["203.0.113.10/32"])
    assert va.ip_reservation_errors(good, pools, "t") == []
    bad = cd.ip_reservation(["198.51.100.1/32", "203.0.113.300/32"])
    bad["kind"] = "IPReserve"
    bad["metadata"]["name"] = "Bad_Name"
    bad["spec"]["extra"] = 1
    assert sorted(i.path for i in va.ip_reservation_errors(bad, pools, "t", (3,))) == [
        "[3].kind",
        "[3].metadata.name",
        "[3].spec",
        "[3].spec.reservedCIDRs[0]",
        "[3].spec.reservedCIDRs[1]",
    ]
    empty = cd.ip_reservation([])
    assert [i.path for i in va.ip_reservation_errors(empty, pools, "t")] == ["spec.reservedCIDRs"]


def test_the_render_check_catches_a_pod_mac_that_is_not_the_guests(clab: cl.ContainerlabRuntime) -> None:
    path = clab.render_dir / "kubevirt" / "vms.yaml"
    docs = k.load_documents(path.read_text())
    docs[0]["spec"]["template"]["metadata"]["annotations"][kv.CALICO_MAC_ANNOTATION] = "02:00:00:00:00:01"
    path.write_text(yaml.safe_dump_all(docs))
    manifest = json.loads((clab.render_dir / "manifest.json").read_text())
    (issue,) = va.vm_errors(path, manifest)
    assert issue.path == "[0].spec.template.metadata.annotations"
    assert "is not the guest's macAddress" in issue.message


@pytest.mark.skipif(not schemas.schemas_available(), reason="needs the shared schemas (KVLAB_SHARED)")
@pytest.mark.parametrize("stack", ["calico-3.31-kubevirt-1.5", "calico-3.32-kubevirt-1.8"])
def test_only_a_3_31_render_may_lack_what_the_3_32_schemas_require(stack: str, tmp_path: Path) -> None:
    """The shared CRDs are Calico 3.32's, which require IPAMConfiguration `autoAllocateBlocks`."""
    r = rr.render_containerlab(load_lab(DEFAULT_LAB), tmp_path, versions=MATRIX[stack], use_emulation=True)
    assert va.validate_rendered(tmp_path, bird=False).ok
    for name in ("resources.yaml", "bgp.yaml"):
        path = tmp_path / "calico" / "kv" / name
        docs = k.load_documents(path.read_text())
        for doc in docs:
            if doc["kind"] == "IPAMConfiguration":
                doc["spec"].pop("autoAllocateBlocks", None)
            if doc["kind"] == "BGPPeer":
                doc["spec"]["peerIp"] = doc["spec"].pop("peerIP")  # any other issue is still one
        path.write_text(yaml.safe_dump_all(docs))
    report = va.validate_rendered(tmp_path, bird=False)
    messages = [i.message for i in report.issues]
    assert any("peerIp" in m for m in messages), messages
    assert ("'autoAllocateBlocks' is a required property" in messages) == r.versions.live_migration


def test_validation_refuses_bgp_resources_left_for_the_v3_step(clab: cl.ContainerlabRuntime) -> None:
    out = clab.render_dir
    early = k.load_documents((out / "calico/kv/bgp.yaml").read_text())
    later = k.load_documents((out / "calico/kv/resources.yaml").read_text())
    assert va.bgp_errors(early, later, "bgp.yaml", "resources.yaml") == []
    peer = {**early[-1], "apiVersion": "projectcalico.org/v3"}
    issues = va.bgp_errors([early[-1], early[0], peer], [*later, peer], "bgp.yaml", "resources.yaml")
    assert [(i.file, i.path) for i in issues] == [
        ("bgp.yaml", "[1].kind"),  # the filter after a peer naming it
        ("bgp.yaml", "[2].apiVersion"),
        ("resources.yaml", "[2].kind"),  # applied only once the API server it makes reachable is up
    ]
    assert "it belongs in bgp.yaml" in issues[2].message
    (out / "calico/kv/resources.yaml").write_text(yaml.safe_dump_all([*later, peer]))
    report = va.validate_rendered(out, bird=False)
    assert [i.path for i in report.issues] == ["[2].kind"]
    assert "calico/kv/bgp.yaml: Calico crd.projectcalico.org/v1 CRDs" in report.checked or not (
        schemas.schemas_available()
    )


@pytest.fixture
def nested_lab(tmp_path: Path) -> rr.Rendered:
    spec = load_lab(REPO / "labs" / "nested.yml")
    return rr.render_containerlab(spec, tmp_path / "out", use_emulation=False)


def test_validation_catches_a_nested_secret_that_does_not_carry_its_config(nested_lab: rr.Rendered) -> None:
    assert va.validate_rendered(nested_lab.out, bird=False).ok
    path = nested_lab.out / "kubevirt/nested-secrets.yaml"
    docs = yaml_docs(path)
    user_data = docs[0]["stringData"]["userdata"]
    docs[0]["stringData"]["userdata"] = user_data.replace("198.51.100.1", "198.51.100.9")
    docs[1]["metadata"]["namespace"] = "kube-system"
    path.write_text(yaml.safe_dump_all(docs))
    report = va.validate_rendered(nested_lab.out, bird=False)
    assert [(i.file, i.path) for i in report.issues] == [
        (str(path), "[0].stringData.userdata"),
        (str(path), "[1].metadata.namespace"),
    ]


def test_validation_catches_a_nested_vm_without_the_guest_image(nested_lab: rr.Rendered) -> None:
    path = nested_lab.out / "kubevirt/vms.yaml"
    docs = yaml_docs(path)
    red = next(d for d in docs if d["metadata"]["name"] == "vm-red")
    boot = red["spec"]["template"]["spec"]["domain"]["firmware"]["kernelBoot"]
    boot["container"]["image"] = "quay.io/kubevirt/alpine-with-test-tooling-container-disk:v1.8.4"
    boot["kernelArgs"] = boot["kernelArgs"].replace("kvlab.ip=203.0.113.10", "kvlab.ip=203.0.113.99")
    path.write_text(yaml.safe_dump_all(docs))
    issues = va.vm_errors(path, nested_lab.manifest)
    assert [i.path for i in issues] == [
        f"[{docs.index(red)}].spec.template.spec.domain.firmware.kernelBoot.container.image",
        f"[{docs.index(red)}].spec.template.spec.domain.firmware.kernelBoot.kernelArgs",
    ]


@pytest.mark.skipif(bird_missing(), reason="needs BIRD for bird -p")
def test_nested_bird_configs_go_through_bird_p(nested_lab: rr.Rendered) -> None:
    conf = nested_lab.out / "nested/red-n1.conf"
    broken = conf.read_text().replace("neighbor 169.254.0.179 as 64512;", "neighbor 169.254.0.179 as;")
    conf.write_text(broken)
    report = va.validate_rendered(nested_lab.out)
    assert any(i.file == str(conf) for i in report.issues), report.issues
    assert "nested/blue-n1.conf: bird -p" in report.checked
