"""harness.runtime.containerlab.render: every lab rendered for containerlab, validated against the upstream
schemas (shared/schemas), BIRD's parser and the topology's own address plan."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import cli
from harness.errors import LabError
from harness.labfile import load_lab
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import render as rr
from harness.runtime.containerlab import schemas
from harness.runtime.containerlab.versions import DEFAULT, MATRIX, StackVersions, get_versions
from harness.render.bird import check_config
from harness.spec import LabSpec
from harness.topology import resolve

REPO = Path(__file__).resolve().parents[2]
LABS = sorted((REPO / "labs").glob("*.yml"))
LAB_IDS = [p.stem for p in LABS]
NO_SCHEMAS = f"upstream schemas not found in {schemas.schema_dir()} (the shared/ directory next to the repo)"


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.fixture(params=LABS, ids=LAB_IDS)
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[LabSpec, rr.Rendered]:
    spec = load_lab(request.param)
    return spec, rr.render_containerlab(
        spec, tmp_path / "out", use_emulation=True, run_dir=Path("/run/kvlab/t")
    )


@pytest.fixture
def need_schemas() -> None:
    if not schemas.schemas_available():
        pytest.skip(NO_SCHEMAS)


def _bird_missing() -> bool:
    return shutil.which("bird") is None and shutil.which("bird", path="/usr/sbin:/sbin") is None


# -- every lab renders and validates ----------------------------------------------------------


@pytest.mark.usefixtures("need_schemas")
def test_rendered_files_pass_their_schemas(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    _, r = rendered
    report = rr.validate_rendered(r.out, bird=False)
    assert report.issues == []
    assert report.skipped == []
    checked = " ".join(report.checked)
    for what in (
        "containerlab schema",
        "Calico v3 CRDs",
        "Installation CRD",
        "KubeVirt swagger",
        "kind v1alpha4",
    ):
        assert what in checked


def test_bird_configs_parse(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    if _bird_missing():
        pytest.skip("BIRD is not installed (Debian package 'bird'): cannot run bird -p")
    spec, r = rendered
    confs = sorted((r.out / "bird").glob("*.conf"))
    assert [c.stem for c in confs] == sorted(x.name for x in spec.routers)
    for conf in confs:
        check_config(conf.read_text())


def test_addresses_follow_the_topology_plan(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    spec, r = rendered
    topo = resolve(spec)
    doc = yaml.safe_load(r.topology_file.read_text())
    nodes = doc["topology"]["nodes"]
    configured: dict[str, set[str]] = {}
    for name, node in nodes.items():
        for command in node.get("exec", []):
            for value in rr._exec_addresses(command):
                assert rr.in_lab_ranges(value), f"{name}: {command}"
            if command.startswith("ip addr add"):
                configured.setdefault(name, set()).add(command.split()[3])
    names = r.manifest["kind_nodes"]
    expected: dict[str, set[str]] = {}
    for kind_name, node in names.items():
        expected.setdefault(kind_name, set()).add(str(topo.node_address[node]))
    for tor, addr in topo.tor_address.items():
        expected.setdefault(tor, set()).add(str(addr))
    for link in topo.links + topo.host_links:
        for end in (link.a, link.b):
            expected.setdefault(end.entity, set()).add(str(end.address))
    assert configured == expected
    assert rr.clab_structure_errors(doc, "t") == []


def test_topology_nodes_and_links(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    spec, r = rendered
    doc = yaml.safe_load(r.topology_file.read_text())
    assert doc["name"] == spec.name
    assert doc["mgmt"]["network"] == f"kvlab-{spec.name}"
    nodes = doc["topology"]["nodes"]
    for router in spec.routers:
        node = nodes[router.name]
        assert node["kind"] == "linux"
        assert node["image"].startswith("kvlab/tor:")
        assert f"bird/{router.name}.conf:/etc/bird/bird.conf:ro" in node["binds"]
        assert f"/run/kvlab/t/{router.name}:/run/bird" in node["binds"]
        conf = (r.out / f"bird/{router.name}.conf").read_text()
        assert 'interface "-eth0", "*";' in conf  # containerlab's management network stays out of BGP
    for host in spec.hosts:
        assert nodes[host.name]["kind"] == "linux"
    for cluster in rr.kind_clusters(spec):
        assert nodes[cluster.name] == {
            "kind": "k8s-kind",
            "image": DEFAULT.kind_node_image,
            "startup-config": f"kind/{cluster.name}.yaml",
            "extras": {"k8s_kind": {"deploy": {"wait": "0s"}}},  # the runtime waits, after Calico
        }
        for kind_name in rr.kind_node_names(cluster.name, len(cluster.nodes)):
            assert nodes[kind_name]["kind"] == "ext-container"
    for cluster in spec.clusters:
        if cluster.parent is not None:
            assert cluster.name not in nodes  # nested clusters run in VMs, not as kind clusters
    tors = {rack.tor for rack in spec.racks}
    for link in doc["topology"]["links"]:
        a, b = (e.split(":")[0] for e in link["endpoints"])
        if nodes[b]["kind"] == "ext-container":
            assert a in tors


def test_kind_configs_match_the_topology(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    spec, r = rendered
    topo = resolve(spec)
    services = []
    for cluster in rr.kind_clusters(spec):
        config = rr.KindCluster.model_validate(
            yaml.safe_load((r.out / f"kind/{cluster.name}.yaml").read_text())
        )
        assert config.name == cluster.name
        assert config.networking.disableDefaultCNI is True
        assert config.networking.kubeProxyMode == "iptables"
        assert config.networking.podSubnet == str(cluster.pools[0])
        service = ipaddress.IPv4Network(config.networking.serviceSubnet)
        assert service.subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))
        assert not any(service.overlaps(net) for _, net in rr.topology_networks(topo))
        services.append(service)
        assert [n.role for n in config.nodes] == ["control-plane"] + ["worker"] * (len(cluster.nodes) - 1)
        for node, spec_node in zip(config.nodes, cluster.nodes, strict=True):
            assert rr.kind_node_ip(node) == str(topo.node_address[spec_node.name].ip)
            assert node.labels["rack"] == spec_node.rack
            assert node.labels[rr.NODE_LABEL] == spec_node.name
            assert node.image == DEFAULT.kind_node_image
    assert len(set(services)) == len(services)
    for cluster in spec.clusters:
        if cluster.parent is not None:
            assert not (r.out / f"kind/{cluster.name}.yaml").exists()


def test_installation(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    spec, r = rendered
    topo = resolve(spec)
    for cluster in rr.kind_clusters(spec):
        inst, api = _docs(r.out / f"calico/{cluster.name}/installation.yaml")
        assert (inst["apiVersion"], inst["kind"], api["kind"]) == (
            "operator.tigera.io/v1",
            "Installation",
            "APIServer",
        )
        net = inst["spec"]["calicoNetwork"]
        assert net["bgp"] == "Enabled"
        assert net["linuxPolicySetupTimeoutSeconds"] > 0
        assert [p["cidr"] for p in net["ipPools"]] == [str(p) for p in cluster.pools]
        for pool in net["ipPools"]:
            assert (pool["encapsulation"], pool["natOutgoing"], pool["blockSize"]) == ("None", "Disabled", 26)
        racks = sorted({n.rack for n in cluster.nodes})
        assert net["nodeAddressAutodetectionV4"] == {"cidrs": [str(topo.rack_subnet[x]) for x in racks]}


def test_calico_resources_are_the_labs(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    """bgp.yaml + resources.yaml + the Installation's pools = the resources the netns runtime uses;
    a kind cluster's BGP kinds are all in bgp.yaml (crd.projectcalico.org/v1), none in resources.yaml."""
    from harness.spec import cluster_resources

    spec, r = rendered
    for cluster in spec.clusters:
        items = cluster_resources(spec)[cluster.name]
        entry = r.manifest["clusters"][cluster.name]
        docs = _docs(r.out / entry["resources"])
        if cluster.parent is None:
            assert not {d["kind"] for d in docs} & set(rr.BGP_CRD_KINDS)
            early = _docs(r.out / entry["bgp"]) if "bgp" in entry else []
            assert {d["apiVersion"] for d in early} <= {"crd.projectcalico.org/v1"}
            assert [d["kind"] for d in early] == sorted(
                (d["kind"] for d in early), key=rr.BGP_CRD_KINDS.index
            )
            docs += early
        got = {(d["kind"], d["metadata"]["name"]) for d in docs}
        want = {(x.kind, x.metadata.name) for x in items}
        if cluster.parent is None:
            pools = {x.metadata.name for x in items if x.kind == "IPPool"}
            assert set(r.manifest["clusters"][cluster.name]["ippools_in_installation"]) >= pools
            want = {k for k in want if k[0] != "IPPool"}
        assert want <= got
        assert got - want <= {("BGPConfiguration", "default"), ("IPReservation", rr.IP_RESERVATION_NAME)}
        conf = next((d for d in docs if d["kind"] == "BGPConfiguration"), None)
        if conf is not None:
            assert conf["spec"]["asNumber"] == cluster.asn
    for cluster in spec.clusters:
        if cluster.parent is not None:
            parent_docs = _docs(r.out / f"calico/{cluster.parent}/bgp.yaml")
            conf = next(d for d in parent_docs if d["kind"] == "BGPConfiguration")
            assert conf["spec"]["localWorkloadPeeringIPV4"] == "169.254.0.179"
            assert "run inside KubeVirt VMs" in (r.out / "README.md").read_text()


def test_vms(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    spec, r = rendered
    docs = {d["metadata"]["name"]: d for d in _docs(r.out / "kubevirt/vms.yaml")}
    assert set(docs) == {v.name for v in spec.vms}
    for vm in spec.vms:
        tmpl = docs[vm.name]["spec"]["template"]
        ann = tmpl["metadata"]["annotations"]
        assert ann[kv.BRIDGE_MIGRATION_ANNOTATION] == ""
        assert json.loads(ann[kv.CALICO_IP_ANNOTATION]) == [str(vm.ip)]
        assert tmpl["metadata"]["labels"].items() >= vm.labels.items()
        iface = tmpl["spec"]["domain"]["devices"]["interfaces"][0]
        assert iface["bridge"] == {}
        assert tmpl["spec"]["networks"] == [{"name": iface["name"], "pod": {}}]
        assert tmpl["spec"]["domain"]["memory"]["guest"] == "128Mi"
        term = tmpl["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
        expr = term["preference"]["matchExpressions"][0]
        assert (expr["key"], expr["values"]) == (
            "kubernetes.io/hostname",
            [r.manifest["containers"][vm.node]],
        )
        volumes = {v["name"]: v for v in tmpl["spec"]["volumes"]}
        assert volumes["containerdisk"]["containerDisk"]["image"] == DEFAULT.guest_container_disk
        user_data = volumes["cloudinitdisk"]["cloudInitNoCloud"]["userData"]
        assert user_data.startswith("#cloud-config\n")
        assert "7007" in user_data
    kubevirt = _docs(r.out / "kubevirt/kubevirt.yaml")[0]
    assert kubevirt["spec"]["configuration"]["developerConfiguration"]["useEmulation"] is True


def test_manifest(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    spec, r = rendered
    m = json.loads((r.out / "manifest.json").read_text())
    assert m["lab"] == spec.name
    assert m["versions"]["calico"] == DEFAULT.calico
    assert m["versions"]["kubevirt"] == DEFAULT.kubevirt
    assert m["versions"]["kind_node_image"] == DEFAULT.kind_node_image
    assert m["versions"]["tigera_operator_url"].endswith(f"/{DEFAULT.calico}/manifests/tigera-operator.yaml")
    on_disk = sorted(p.relative_to(r.out).as_posix() for p in r.out.rglob("*") if p.is_file())
    assert m["files"] == on_disk
    kind_nodes = {
        name: node.name
        for c in rr.kind_clusters(spec)
        for name, node in zip(rr.kind_node_names(c.name, len(c.nodes)), c.nodes, strict=True)
    }
    assert m["kind_nodes"] == kind_nodes
    for router in spec.routers:
        assert m["containers"][router.name] == f"clab-{spec.name}-{router.name}"
        assert m["bird_sockets"][router.name] == f"/run/kvlab/t/{router.name}/bird.ctl"
    assert m["use_emulation"] is True


# -- the validators catch broken files ----------------------------------------------------------


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
    issues = rr.clab_schema_errors(doc, "default.clab.yml")
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
    report = rr.validate_rendered(default_lab.out, bird=False)
    assert [(i.file, i.path) for i in report.issues] == [
        (str(default_lab.topology_file), "topology.nodes.ext1.kind")
    ]


def test_structure_check_catches_bad_links_and_addresses(default_lab: rr.Rendered) -> None:
    doc = yaml.safe_load(default_lab.topology_file.read_text())
    doc["topology"]["links"][0]["endpoints"] = ["tor1:eth1", "nowhere:eth1"]
    doc["topology"]["links"][1]["endpoints"][1] = "kv-worker:eth0"
    doc["topology"]["nodes"]["ext1"]["exec"].append("ip route add 10.0.0.0/8 via 198.19.0.4")
    issues = rr.clab_structure_errors(doc, "t.clab.yml")
    assert {(i.path, i.message.split(":")[0].split(" is")[0]) for i in issues} == {
        ("topology.links[0].endpoints[1]", "link endpoint 'nowhere"),
        ("topology.links[1].endpoints[1]", "interface 'eth0' must be eth1, eth2, ... (eth0"),
        (f"topology.nodes.ext1.exec[{len(doc['topology']['nodes']['ext1']['exec']) - 1}]", "10.0.0.0/8"),
    }


@pytest.mark.usefixtures("need_schemas")
def test_validator_catches_a_broken_vm(default_lab: rr.Rendered) -> None:
    vm = _docs(default_lab.out / "kubevirt/vms.yaml")[0]
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
    vm = _docs(path)[0]
    del vm["spec"]["template"]["metadata"]["annotations"][kv.BRIDGE_MIGRATION_ANNOTATION]
    path.write_text(yaml.safe_dump(vm))
    issues = rr.vm_errors(path, default_lab.manifest)
    assert [i.path for i in issues] == ["[0].spec.template.metadata.annotations"]


@pytest.mark.usefixtures("need_schemas")
def test_validator_catches_a_broken_installation(default_lab: rr.Rendered) -> None:
    inst = _docs(default_lab.out / "calico/kv/installation.yaml")[0]
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
    docs = _docs(default_lab.out / "calico/kv/bgp.yaml")
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
    issues = rr.kind_errors(path, topo_doc, default_lab.manifest["clusters"]["kv"])
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
    issues = rr.kind_errors(path, topo_doc, default_lab.manifest["clusters"]["kv"])
    assert "networking.disableDefaultCni" in [i.path for i in issues]


@pytest.mark.skipif(
    _bird_missing(), reason="BIRD is not installed (Debian package 'bird'): cannot run bird -p"
)
def test_bird_check_catches_a_broken_config(default_lab: rr.Rendered) -> None:
    conf = default_lab.out / "bird/tor1.conf"
    conf.write_text(conf.read_text().replace("router id", "router idd"))
    report = rr.validate_rendered(default_lab.out)
    assert [i.file for i in report.issues] == [str(conf)]
    assert "line 2" in report.issues[0].message


def test_without_schemas_only_the_schema_checks_are_skipped(
    default_lab: rr.Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVLAB_SHARED", str(tmp_path / "nowhere"))
    report = rr.validate_rendered(default_lab.out, bird=False)
    assert report.ok
    assert len(report.skipped) == 1
    assert "KVLAB_SHARED" in report.skipped[0]
    assert any("links and addresses" in c for c in report.checked)
    assert not any("schema" in c for c in report.checked)


# -- pieces -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("need_schemas")
@pytest.mark.parametrize("target", [None, "kv-worker2"])
def test_migration_object_matches_kubevirt(target: str | None) -> None:
    obj = kv.migration_object("vm1", "vm1-mig-1", target_node=target)
    assert obj["spec"]["vmiName"] == "vm1"
    assert obj["kind"] == "VirtualMachineInstanceMigration"
    assert schemas.kubevirt_errors(obj) == []
    if target:
        assert obj["spec"]["addedNodeSelector"] == {"kubernetes.io/hostname": target}


@pytest.mark.usefixtures("need_schemas")
def test_migration_object_type_error_is_caught() -> None:
    obj = kv.migration_object("vm1", "m")
    obj["spec"]["vmiName"] = ["vm1"]
    assert [i.path for i in schemas.kubevirt_errors(obj)] == ["spec.vmiName"]


def test_kvm_probe_on_devices_that_are_not_kvm(tmp_path: Path) -> None:
    assert kv.kvm_usable(str(tmp_path / "no-such-device")) is False
    assert kv.kvm_usable("/dev/null") is False  # opens, but KVM_GET_API_VERSION is not its ioctl
    assert isinstance(kv.kvm_usable(), bool)


def test_emulation_follows_the_probe_when_not_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kv, "kvm_usable", lambda device="/dev/kvm": False)
    r = rr.render_containerlab(load_lab(REPO / "labs" / "single-rack.yml"), tmp_path)
    assert (r.manifest["use_emulation"], r.manifest["kvm_usable"]) == (True, False)
    assert "useEmulation: true" in (tmp_path / "kubevirt/kubevirt.yaml").read_text()


def test_versions_matrix() -> None:
    assert DEFAULT in MATRIX.values()
    assert get_versions(None) is DEFAULT
    with pytest.raises(KeyError, match="unknown stack versions"):
        get_versions("calico-2")
    for v in MATRIX.values():
        assert isinstance(v, StackVersions)
        assert v.kind_node_image.startswith("kindest/node:v1.")
        assert "@sha256:" in v.kind_node_image
        minor = tuple(int(x) for x in v.calico.lstrip("v").split(".")[:2])
        assert v.live_migration == (minor >= (3, 32))
    assert DEFAULT.live_migration
    assert DEFAULT.kubernetes == "v1.35.0"
    assert any(v.kubevirt.startswith("v1.5.") for v in MATRIX.values())
    assert any(v.calico.startswith("v3.31.") for v in MATRIX.values())


def test_kind_node_names() -> None:
    assert rr.kind_node_names("kv", 4) == ["kv-control-plane", "kv-worker", "kv-worker2", "kv-worker3"]
    assert rr.kind_node_names("x", 1) == ["x-control-plane"]


def test_hostname_selectors_are_mapped_to_kind_names() -> None:
    names = {"r1-n1": "kv-control-plane"}
    assert rr._map_selector("kubernetes.io/hostname == 'r1-n1'", names) == (
        "kubernetes.io/hostname == 'kv-control-plane'"
    )
    assert rr._map_selector("rack == 'r1-n1'", names) == "rack == 'r1-n1'"


def _lab(**extra: Any) -> LabSpec:
    data = {
        "name": "svc",
        "routers": [
            {"name": "tor1", "role": "tor", "asn": 65001},
            {"name": "spine", "role": "spine", "asn": 65100},
        ],
        "racks": [{"name": "r1", "tor": "tor1"}],
        "clusters": [{"name": "kv", "pools": ["203.0.113.0/24"], "nodes": [{"name": "n1", "rack": "r1"}]}],
        **extra,
    }
    return LabSpec.model_validate(data)


def test_service_subnet_clash_is_refused() -> None:
    ok = _lab(links=[{"endpoints": ["tor1", "spine"]}])
    assert rr.service_subnets(resolve(ok)) == {"kv": ipaddress.IPv4Network("198.19.255.0/24")}
    clash = _lab(links=[{"endpoints": ["tor1", "spine"], "subnet": "198.19.255.8/31"}])
    with pytest.raises(rr.RenderError, match=r"198.19.255.0/24 of cluster 'kv' overlaps link tor1-spine"):
        rr.service_subnets(resolve(clash))


def test_unknown_fields_walker() -> None:
    schema = {
        "definitions": {"Port": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "type": "object",
        "properties": {
            "ports": {"type": "array", "items": {"$ref": "#/definitions/Port"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object"},
        },
    }
    doc = {"ports": [{"name": "a", "nmae": "b"}], "labels": {"x": "y"}, "free": {"any": 1}, "extra": 1}
    assert schemas.unknown_fields(doc, schema) == [("ports", 0, "nmae"), ("extra",)]


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_renders_and_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = cli.main(["render", str(REPO / "labs/default.yml"), "--runtime", "containerlab", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out.strip() == str(out / "default.clab.yml")
    assert "checked default.clab.yml: links and addresses" in captured.err
    if schemas.schemas_available():
        assert "checked kubevirt/vms.yaml: KubeVirt swagger definitions" in captured.err
    assert (out / "manifest.json").is_file()


@pytest.mark.usefixtures("need_schemas")
def test_cli_exits_2_naming_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = kv.kubevirt_cr

    def broken(use_emulation: bool) -> dict[str, Any]:
        cr = original(use_emulation)
        cr["spec"]["configuration"]["developerConfiguration"]["useEmulation"] = "yes"
        return cr

    monkeypatch.setattr(kv, "kubevirt_cr", broken)
    out = tmp_path / "out"
    rc = cli.main(["render", "default", "--runtime", "containerlab", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    field = "[0].spec.configuration.developerConfiguration.useEmulation"
    assert f"invalid: {out / 'kubevirt/kubevirt.yaml'}: {field}:" in err
    assert "is not of type 'boolean'" in err


def test_cli_subprocess_and_usage_errors(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "harness.cli", "render", "single-rack", "--runtime", "containerlab"]
    res = subprocess.run([*argv, "--out", str(tmp_path / "a")], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("single-rack.clab.yml")
    res = subprocess.run(
        [*argv, "--out", str(tmp_path / "b"), "--versions", "nope"], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 2
    assert "unknown stack versions 'nope'" in res.stderr


def test_cli_render_check_config_error_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def reject(text: str, bird: str = "bird") -> None:
        raise LabError("BIRD rejects the rendered config: line 1, column 1: syntax error")

    monkeypatch.setattr(rr, "check_config", reject)
    rc = cli.main(["render", "single-rack", "--runtime", "containerlab", "--out", str(tmp_path)])
    assert rc == 2
    assert f"invalid: {tmp_path / 'bird/tor1.conf'}: BIRD rejects" in capsys.readouterr().err


# -- review fixes: control-plane taint, fabric route, kind wait, IP reservation, older Calico ---


def test_kind_control_plane_is_untainted(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    """kind keeps the control-plane taint in multi-node clusters; virt-handler does not tolerate
    it, and the first spec node (a VM's node in the default lab) is the control plane."""
    spec, r = rendered
    for cluster in rr.kind_clusters(spec):
        config = rr.KindCluster.model_validate(
            yaml.safe_load((r.out / f"kind/{cluster.name}.yaml").read_text())
        )
        for node in config.nodes:
            patches = [yaml.safe_load(p) for p in node.kubeadmConfigPatches]
            registration = [p["nodeRegistration"] for p in patches]
            if node.role == "control-plane":
                assert [p["kind"] for p in patches] == ["InitConfiguration"]
                assert registration[0]["taints"] == []
                assert "node-ip" in registration[0]["kubeletExtraArgs"]
            else:
                assert all("taints" not in x for x in registration)


def test_kind_nodes_route_the_fabric_via_their_tor(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    spec, r = rendered
    topo = resolve(spec)
    nodes = yaml.safe_load(r.topology_file.read_text())["topology"]["nodes"]
    for kind_name, spec_node in r.manifest["kind_nodes"].items():
        _, node = spec.node(spec_node)
        tor = spec.rack(node.rack).tor
        tor_ip = topo.tor_address[tor].ip
        execs = nodes[kind_name]["exec"]
        dev = next(c.split()[-1] for c in execs if c.startswith("ip addr add"))
        assert f"ip route add 198.18.0.0/15 via {tor_ip} dev {dev}" in execs


def test_k8s_kind_extras_are_exempt_from_the_schema_but_checked(default_lab: rr.Rendered) -> None:
    doc = yaml.safe_load(default_lab.topology_file.read_text())
    assert doc["topology"]["nodes"]["kv"]["extras"] == {"k8s_kind": {"deploy": {"wait": "0s"}}}
    assert rr.kind_extras_errors(doc, "t") == []
    if schemas.schemas_available():
        assert rr.clab_schema_errors(doc, "t") == []
        # the upstream schema itself does not know extras.k8s_kind: hence the exemption
        assert [i.path for i in schemas.clab_errors(doc, "t")] == ["topology.nodes.kv.extras"]
    assert rr.validate_rendered(default_lab.out, bird=False).ok
    doc["topology"]["nodes"]["kv"]["extras"]["k8s_kind"]["deploy"]["wait"] = "soon"
    doc["topology"]["nodes"]["kv"]["extras"]["k8s_kind"]["bogus"] = 1
    doc["topology"]["nodes"]["tor1"]["extras"] = {"k8s_kind": {}}
    issues = rr.kind_extras_errors(doc, "t")
    assert sorted(i.path for i in issues) == [
        "topology.nodes.kv.extras.k8s_kind",
        "topology.nodes.tor1.extras.k8s_kind",
    ]
    del doc["topology"]["nodes"]["kv"]["extras"]["k8s_kind"]["bogus"]
    del doc["topology"]["nodes"]["tor1"]["extras"]
    (issue,) = rr.kind_extras_errors(doc, "t")
    assert issue.path == "topology.nodes.kv.extras.k8s_kind.deploy.wait"
    default_lab.topology_file.write_text(yaml.safe_dump(doc))
    report = rr.validate_rendered(default_lab.out, bird=False)
    assert [i.path for i in report.issues] == ["topology.nodes.kv.extras.k8s_kind.deploy.wait"]


def test_vm_addresses_are_reserved(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    """In a file of their own, as the CRD object Calico reads (applied before Calico runs), not
    among the resources applied through Calico's API server once Calico runs."""
    spec, r = rendered
    topo = resolve(spec)
    for cluster in spec.clusters:
        entry = r.manifest["clusters"][cluster.name]
        assert "IPReservation" not in {d["kind"] for d in _docs(r.out / entry["resources"])}
        ips = sorted(f"{w.ip}/32" for w in topo.workloads if w.cluster == cluster.name)
        if not ips or cluster.parent is not None:
            assert "ip_reservation" not in entry
            continue
        (res,) = _docs(r.out / entry["ip_reservation"])
        assert entry["ip_reservation"] == f"calico/{cluster.name}/ipreservation.yaml"
        assert res["apiVersion"] == "crd.projectcalico.org/v1"
        assert sorted(res["spec"]["reservedCIDRs"]) == ips
        assert rr.ip_reservation_errors(res, entry["pools"], "t") == []
    report = rr.validate_rendered(r.out, bird=False)
    assert any("IPReservation" in c and "not checked against a CRD" in c for c in report.checked)


def test_ip_reservation_check_catches_bad_shapes() -> None:
    pools = ["203.0.113.0/24"]
    good = rr.ip_reservation(["203.0.113.10/32"])
    assert rr.ip_reservation_errors(good, pools, "t") == []
    bad = rr.ip_reservation(["198.51.100.1/32", "203.0.113.300/32"])
    bad["kind"] = "IPReserve"
    bad["metadata"]["name"] = "Bad_Name"
    bad["spec"]["extra"] = 1
    assert sorted(i.path for i in rr.ip_reservation_errors(bad, pools, "t", (3,))) == [
        "[3].kind",
        "[3].metadata.name",
        "[3].spec",
        "[3].spec.reservedCIDRs[0]",
        "[3].spec.reservedCIDRs[1]",
    ]
    empty = rr.ip_reservation([])
    assert [i.path for i in rr.ip_reservation_errors(empty, pools, "t")] == ["spec.reservedCIDRs"]


def test_older_calico_drops_the_3_32_fields_with_a_warning(tmp_path: Path) -> None:
    old = next(v for v in MATRIX.values() if not v.live_migration)
    docs = [
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPFilter",
            "metadata": {"name": "f"},
            "spec": {
                "exportV4": [
                    {"action": "Accept", "cidr": "203.0.113.0/24", "matchOperator": "In", "priority": 512},
                    {
                        "action": "Reject",
                        "cidr": "198.51.100.0/24",
                        "matchOperator": "In",
                        "operations": [{"setPriority": {"value": 1}}],
                    },
                ]
            },
        },
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"ipv4ElevatedRoutePriority": 512, "logSeverityScreen": "Info"},
        },
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPAMConfiguration",
            "metadata": {"name": "default"},
            "spec": {"kubeVirtVMAddressPersistence": "Enabled", "strictAffinity": False},
        },
    ]
    dropped = rr.drop_pre_3_32_fields(docs)
    assert sorted(dropped) == [
        "BGPFilter/f spec.exportV4[0] (the whole rule: it matches on priority, which Calico before "
        "v3.32.0 lacks)",
        "BGPFilter/f spec.exportV4[1].operations",
        "FelixConfiguration/default spec.ipv4ElevatedRoutePriority",
        "IPAMConfiguration/default spec.kubeVirtVMAddressPersistence",
    ]
    # a rule matching on a 3.32 field would match more without it: gone; one losing only its
    # operations keeps its match and action
    assert docs[0]["spec"]["exportV4"] == [
        {"action": "Reject", "cidr": "198.51.100.0/24", "matchOperator": "In"}
    ]
    assert docs[1]["spec"] == {"logSeverityScreen": "Info"}
    assert docs[2]["spec"] == {"strictAffinity": False}
    for path in LABS:
        spec = load_lab(path)
        r = rr.render_containerlab(
            spec, tmp_path / spec.name, versions=old, use_emulation=True, run_dir=Path("/run/kvlab/t")
        )
        report = rr.validate_rendered(r.out, bird=False)
        warnings = [n for n in r.manifest["notes"] if n.startswith("WARNING:")]
        assert report.warnings == warnings
        for w in warnings:
            assert old.calico in w
            assert "left out" in w
        for name, entry in r.manifest["clusters"].items():
            files = [entry[k] for k in ("bgp", "resources") if k in entry]
            if any(f"cluster '{name}'" in w for w in warnings):
                assert all("# WARNING" in (r.out / f).read_text() for f in files)
            for doc in (d for f in files for d in _docs(r.out / f)):
                if doc["kind"] == "IPAMConfiguration":
                    assert "kubeVirtVMAddressPersistence" not in doc["spec"]
                if doc["kind"] == "FelixConfiguration":
                    assert not any(k.endswith("RoutePriority") for k in doc["spec"])
                if doc["kind"] == "BGPFilter":
                    for rules in doc["spec"].values():
                        for rule in rules:
                            assert not {"peerType", "priority", "communities", "operations"} & set(rule)
