"""harness.runtime.containerlab.render: every lab rendered for containerlab, validated against the
upstream schemas (shared/schemas), BIRD's parser and the topology's own address plan; what each
pinned Calico stores of what is written before it runs, and what a Calico 3.31 render leaves out."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from clab_fakes import (
    DEFAULT_LAB,
    KIND_NAMES,
    REPO,
    bird_missing,
    load,
    net,
    yaml_docs,
)

from harness import cli
from harness.errors import LabError
from harness.labfile import load_lab
from harness.render.bird import check_config
from harness.runtime.base import LabContext
from harness.runtime.containerlab import calico_docs as cd
from harness.runtime.containerlab import kind as kd
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import nested as nst
from harness.runtime.containerlab import plan as pl
from harness.runtime.containerlab import render as rr
from harness.runtime.containerlab import runtime as cl
from harness.runtime.containerlab import schemas
from harness.runtime.containerlab import topology_file as tf
from harness.runtime.containerlab import validate as va
from harness.runtime.containerlab.versions import DEFAULT, MATRIX, StackVersions, get_versions
from harness.spec import LabSpec
from harness.topology import resolve

DUAL_STACK_LAB = REPO / "labs" / "dual-stack.yml"
# The shipped labs the containerlab runtime renders: not a dual-stack nested lab, which it refuses
# (exit 2; tests/unit/test_nested_dual_stack.py).
CONTAINERLAB_REFUSED = {"nested-dual-stack"}
LABS = sorted(p for p in (REPO / "labs").glob("*.yml") if p.stem not in CONTAINERLAB_REFUSED)

LAB_IDS = [p.stem for p in LABS]


@pytest.fixture(params=LABS, ids=LAB_IDS)
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[LabSpec, rr.Rendered]:
    spec = load_lab(request.param)
    return spec, rr.render_containerlab(
        spec, tmp_path / "out", use_emulation=True, run_dir=Path("/run/kvlab/t")
    )


@pytest.mark.usefixtures("need_schemas")
def test_rendered_files_pass_their_schemas(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    _, r = rendered
    report = va.validate_rendered(r.out, bird=False)
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
    if bird_missing():
        pytest.skip("BIRD is not installed (Debian package 'bird'): cannot run bird -p")
    spec, r = rendered
    confs = sorted((r.out / "bird").glob("*.conf"))
    want = [x.name for x in spec.routers] + [f"{x.name}.bird6" for x in spec.routers if spec.dual_stack]
    assert sorted(c.stem for c in confs) == sorted(want)
    for conf in confs:
        check_config(conf.read_text(), "bird6" if conf.stem.endswith(".bird6") else "bird")


def test_addresses_follow_the_topology_plan(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    spec, r = rendered
    topo = resolve(spec)
    doc = yaml.safe_load(r.topology_file.read_text())
    nodes = doc["topology"]["nodes"]
    configured: dict[str, set[str]] = {}
    for name, node in nodes.items():
        for command in node.get("exec", []):
            for value in va._exec_addresses(command):
                assert pl.in_lab_ranges(value), f"{name}: {command}"
            if command.startswith("ip addr add"):
                configured.setdefault(name, set()).add(command.split()[3])
    names = r.manifest["kind_nodes"]
    expected: dict[str, set[str]] = {}
    for kind_name, node in names.items():
        expected.setdefault(kind_name, set()).add(str(topo.node_address[node]))
        if node in topo.node_address6:  # dual stack: the IPv6 twin too
            expected[kind_name].add(str(topo.node_address6[node]))
    for tor, addr in topo.tor_address.items():
        expected.setdefault(tor, set()).add(str(addr))
        if tor in topo.tor_address6:
            expected[tor].add(str(topo.tor_address6[tor]))
    for link in topo.links + topo.host_links:
        for end in (link.a, link.b):
            expected.setdefault(end.entity, set()).add(str(end.address))
            if end.address6 is not None:
                expected[end.entity].add(str(end.address6))
    assert configured == expected
    assert va.clab_structure_errors(doc, "t") == []


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
    for cluster in pl.kind_clusters(spec):
        assert nodes[cluster.name] == {
            "kind": "k8s-kind",
            "image": DEFAULT.kind_node_image,
            "startup-config": f"kind/{cluster.name}.yaml",
            "extras": {"k8s_kind": {"deploy": {"wait": "0s"}}},  # the runtime waits, after Calico
        }
        for kind_name in pl.kind_node_names(cluster.name, len(cluster.nodes)):
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
    for cluster in pl.kind_clusters(spec):
        config = kd.KindCluster.model_validate(
            yaml.safe_load((r.out / f"kind/{cluster.name}.yaml").read_text())
        )
        assert config.name == cluster.name
        assert config.networking.disableDefaultCNI is True
        assert config.networking.kubeProxyMode == "iptables"
        six = f",{cluster.pools6[0]}" if cluster.pools6 else ""
        assert config.networking.podSubnet == f"{cluster.pools[0]}{six}"
        service = ipaddress.IPv4Network(config.networking.serviceSubnet.split(",")[0])
        assert service.subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))
        assert not any(service.overlaps(net) for _, net in pl.topology_networks(topo))
        services.append(service)
        assert [n.role for n in config.nodes] == ["control-plane"] + ["worker"] * (len(cluster.nodes) - 1)
        for node, spec_node in zip(config.nodes, cluster.nodes, strict=True):
            six = f",{topo.node_ip(spec_node.name, 6)}" if cluster.pools6 else ""
            assert kd.kind_node_ip(node) == f"{topo.node_address[spec_node.name].ip}{six}"
            assert node.labels["rack"] == spec_node.rack
            assert node.labels[pl.NODE_LABEL] == spec_node.name
            assert node.image == DEFAULT.kind_node_image
    assert len(set(services)) == len(services)
    for cluster in spec.clusters:
        if cluster.parent is not None:
            assert not (r.out / f"kind/{cluster.name}.yaml").exists()


def test_installation(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    spec, r = rendered
    topo = resolve(spec)
    for cluster in pl.kind_clusters(spec):
        inst, api = yaml_docs(r.out / f"calico/{cluster.name}/installation.yaml")
        assert (inst["apiVersion"], inst["kind"], api["kind"]) == (
            "operator.tigera.io/v1",
            "Installation",
            "APIServer",
        )
        net = inst["spec"]["calicoNetwork"]
        assert net["bgp"] == "Enabled"
        assert net["linuxPolicySetupTimeoutSeconds"] > 0
        assert [p["cidr"] for p in net["ipPools"]] == [str(p) for p in (*cluster.pools, *cluster.pools6)]
        for pool in net["ipPools"]:
            size = 26 if "." in pool["cidr"] else 122
            assert (pool["encapsulation"], pool["natOutgoing"], pool["blockSize"]) == (
                "None",
                "Disabled",
                size,
            )
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
        docs = yaml_docs(r.out / entry["resources"])
        if cluster.parent is None:
            assert not {d["kind"] for d in docs} & set(cd.BGP_CRD_KINDS)
            early = yaml_docs(r.out / entry["bgp"]) if "bgp" in entry else []
            assert {d["apiVersion"] for d in early} <= {"crd.projectcalico.org/v1"}
            assert [d["kind"] for d in early] == sorted(
                (d["kind"] for d in early), key=cd.BGP_CRD_KINDS.index
            )
            docs += early
        got = {(d["kind"], d["metadata"]["name"]) for d in docs}
        want = {(x.kind, x.metadata.name) for x in items}
        if cluster.parent is None:
            pools = {x.metadata.name for x in items if x.kind == "IPPool"}
            assert set(r.manifest["clusters"][cluster.name]["ippools_in_installation"]) >= pools
            want = {k for k in want if k[0] != "IPPool"}
        assert want <= got
        assert got - want <= {("BGPConfiguration", "default"), ("IPReservation", cd.IP_RESERVATION_NAME)}
        conf = next((d for d in docs if d["kind"] == "BGPConfiguration"), None)
        if conf is not None:
            assert conf["spec"]["asNumber"] == cluster.asn
    for cluster in spec.clusters:
        if cluster.parent is not None:
            parent_docs = yaml_docs(r.out / f"calico/{cluster.parent}/bgp.yaml")
            conf = next(d for d in parent_docs if d["kind"] == "BGPConfiguration")
            assert conf["spec"]["localWorkloadPeeringIPV4"] == "169.254.0.179"
            assert "run inside KubeVirt VMs" in (r.out / "README.md").read_text()


def test_vms(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    spec, r = rendered
    docs = {d["metadata"]["name"]: d for d in yaml_docs(r.out / "kubevirt/vms.yaml")}
    assert set(docs) == {v.name for v in spec.vms}
    for vm in spec.vms:
        tmpl = docs[vm.name]["spec"]["template"]
        ann = tmpl["metadata"]["annotations"]
        assert ann[kv.BRIDGE_MIGRATION_ANNOTATION] == ""
        assert json.loads(ann[kv.CALICO_IP_ANNOTATION]) == [str(vm.ip), *([str(vm.ip6)] if vm.ip6 else [])]
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
        if spec.nested_node_in(vm.name) is not None:  # kvlab's guest image with BIRD, by kernel boot
            boot = tmpl["spec"]["domain"]["firmware"]["kernelBoot"]
            assert boot["container"]["image"] == r.manifest["guest_image"] == nst.DEFAULT_GUEST_IMAGE
            assert f"kvlab.ip={vm.ip} " in boot["kernelArgs"]
            assert set(volumes) == {"cloudinitdisk"}
            secret = {"secretRef": {"name": f"{vm.name}-nested-node"}}
            assert volumes["cloudinitdisk"]["cloudInitNoCloud"] == secret
            continue
        assert "firmware" not in tmpl["spec"]["domain"]
        assert volumes["containerdisk"]["containerDisk"]["image"] == DEFAULT.guest_container_disk
        user_data = volumes["cloudinitdisk"]["cloudInitNoCloud"]["userData"]
        assert user_data.startswith("#cloud-config\n")
        assert "7007" in user_data
    kubevirt = yaml_docs(r.out / "kubevirt/kubevirt.yaml")[0]
    assert kubevirt["spec"]["configuration"]["developerConfiguration"]["useEmulation"] is True


def test_nested_nodes_get_their_bird_config_by_cloud_init(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    """Each nested node's BIRD config (the confd emulation of its cluster's resources, peering
    with the parent's workload peering IP) is rendered and written by its VM's Secret."""
    spec, r = rendered
    hosted = {vm.name: spec.nested_node_in(vm.name) for vm in spec.vms}
    hosted = {vm: h for vm, h in hosted.items() if h is not None}
    if not hosted:
        assert r.manifest["nested_sockets"] == {}
        assert r.manifest["nested_secrets"] is None
        return
    secrets = {d["metadata"]["name"]: d for d in yaml_docs(r.out / "kubevirt/nested-secrets.yaml")}
    for vm, (cluster, node) in hosted.items():
        entry = r.manifest["vms"][vm]["nested"]
        assert (entry["node"], entry["cluster"]) == (node.name, cluster.name)
        conf = (r.out / entry["bird_config"]).read_text()
        assert "neighbor 169.254.0.179 as 64512;" in conf
        assert f"router id {r.manifest['vms'][vm]['ip']};" in conf
        user_data = secrets[entry["user_data_secret"]]["stringData"]["userdata"]
        assert user_data == nst.nested_user_data(node.name, conf, entry["pod_ip"])
        assert user_data.splitlines()[1].startswith(f"{nst.NESTED_MARKER} {node.name}:")
        assert r.manifest["nested_sockets"][node.name].endswith(f"/{node.name}/bird.ctl")


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
        for c in pl.kind_clusters(spec)
        for name, node in zip(pl.kind_node_names(c.name, len(c.nodes)), c.nodes, strict=True)
    }
    assert m["kind_nodes"] == kind_nodes
    for router in spec.routers:
        assert m["containers"][router.name] == f"clab-{spec.name}-{router.name}"
        assert m["bird_sockets"][router.name] == f"/run/kvlab/t/{router.name}/bird.ctl"
    assert m["use_emulation"] is True


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
    assert pl.kind_node_names("kv", 4) == ["kv-control-plane", "kv-worker", "kv-worker2", "kv-worker3"]
    assert pl.kind_node_names("x", 1) == ["x-control-plane"]


def test_hostname_selectors_are_mapped_to_kind_names() -> None:
    names = {"r1-n1": "kv-control-plane"}
    assert cd._map_selector("kubernetes.io/hostname == 'r1-n1'", names) == (
        "kubernetes.io/hostname == 'kv-control-plane'"
    )
    assert cd._map_selector("rack == 'r1-n1'", names) == "rack == 'r1-n1'"


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
    assert pl.service_subnets(resolve(ok)) == {"kv": ipaddress.IPv4Network("198.19.255.0/24")}
    clash = _lab(links=[{"endpoints": ["tor1", "spine"], "subnet": "198.19.255.8/31"}])
    with pytest.raises(pl.RenderError, match=r"198.19.255.0/24 of cluster 'kv' overlaps link tor1-spine"):
        pl.service_subnets(resolve(clash))


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

    monkeypatch.setattr(va, "check_config", reject)
    rc = cli.main(["render", "single-rack", "--runtime", "containerlab", "--out", str(tmp_path)])
    assert rc == 2
    assert f"invalid: {tmp_path / 'bird/tor1.conf'}: BIRD rejects" in capsys.readouterr().err


def test_kind_control_plane_is_untainted(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    """kind keeps the control-plane taint in multi-node clusters; virt-handler does not tolerate
    it, and the first spec node (a VM's node in the default lab) is the control plane."""
    spec, r = rendered
    for cluster in pl.kind_clusters(spec):
        config = kd.KindCluster.model_validate(
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


def test_vm_addresses_are_reserved(rendered: tuple[LabSpec, rr.Rendered]) -> None:
    """In a file of their own, as the CRD object Calico reads (applied before Calico runs), not
    among the resources applied through Calico's API server once Calico runs."""
    spec, r = rendered
    topo = resolve(spec)
    for cluster in spec.clusters:
        entry = r.manifest["clusters"][cluster.name]
        assert "IPReservation" not in {d["kind"] for d in yaml_docs(r.out / entry["resources"])}
        ips = sorted(f"{w.ip}/32" for w in topo.workloads if w.cluster == cluster.name)
        ips = sorted(ips + [f"{w.ip6}/128" for w in topo.workloads if w.cluster == cluster.name and w.ip6])
        if not ips or cluster.parent is not None:
            assert "ip_reservation" not in entry
            continue
        (res,) = yaml_docs(r.out / entry["ip_reservation"])
        assert entry["ip_reservation"] == f"calico/{cluster.name}/ipreservation.yaml"
        assert res["apiVersion"] == "crd.projectcalico.org/v1"
        assert sorted(res["spec"]["reservedCIDRs"]) == ips
        assert va.ip_reservation_errors(res, [*entry["pools"], *entry.get("pools6", [])], "t") == []
    report = va.validate_rendered(r.out, bird=False)
    assert any("IPReservation" in c and "not checked against a CRD" in c for c in report.checked)


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
    dropped = cd.drop_pre_3_32_fields(docs)
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
        report = va.validate_rendered(r.out, bird=False)
        warnings = [n for n in r.manifest["notes"] if n.startswith("WARNING:")]
        assert report.warnings == warnings
        for w in warnings:
            assert old.calico in w
            assert "left out" in w
        for name, entry in r.manifest["clusters"].items():
            files = [entry[k] for k in ("bgp", "resources") if k in entry]
            if any(f"cluster '{name}'" in w for w in warnings):
                assert all("# WARNING" in (r.out / f).read_text() for f in files)
            for doc in (d for f in files for d in yaml_docs(r.out / f)):
                if doc["kind"] == "IPAMConfiguration":
                    assert "kubeVirtVMAddressPersistence" not in doc["spec"]
                if doc["kind"] == "FelixConfiguration":
                    assert not any(k.endswith("RoutePriority") for k in doc["spec"])
                if doc["kind"] == "BGPFilter":
                    for rules in doc["spec"].values():
                        for rule in rules:
                            assert not {"peerType", "priority", "communities", "operations"} & set(rule)


# -- a VM's MAC, older Calico, BGP before Calico, pod subnets, routing ------------------------------


def test_the_vm_template_gives_every_pod_the_guests_mac(clab: cl.ContainerlabRuntime) -> None:
    (vm,) = k.load_documents((clab.render_dir / "kubevirt" / "vms.yaml").read_text())
    template = vm["spec"]["template"]
    (iface,) = template["spec"]["domain"]["devices"]["interfaces"]
    mac = resolve(load_lab(DEFAULT_LAB).model_copy(update={"name": "tlab"})).workload("vm1").mac
    assert iface["macAddress"] == mac
    assert template["metadata"]["annotations"][kv.CALICO_MAC_ANNOTATION] == mac
    assert "bridge" in iface


def test_every_field_calico_3_32_introduced_is_dropped_for_3_31() -> None:
    new = load("calico-v3-fields-new-in-3.32.0.json")
    dropped = {kind: {p.rsplit(".", 1)[1] for p in paths} for kind, paths in cd.PRE_3_32_DROPPED.items()}
    for kind, fields in new["spec"].items():
        assert set(fields) <= dropped.get(kind, set()), (kind, set(fields) - dropped.get(kind, set()))
    assert set(new["bgpfilter_rule"]) == dropped["BGPFilter"]
    # the nested ones go with their parents
    assert set(new["bgpfilter_nested"]) <= dropped["BGPFilter"]


def test_the_3_31_render_of_the_default_lab_keeps_nothing_3_32_only(tmp_path: Path) -> None:
    old = MATRIX["calico-3.31-kubevirt-1.5"]
    r = rr.render_containerlab(load_lab(DEFAULT_LAB), tmp_path, versions=old, use_emulation=True)
    new = load("calico-v3-fields-new-in-3.32.0.json")
    for doc in k.load_documents((tmp_path / "calico" / "kv" / "resources.yaml").read_text()):
        assert not set(new["spec"].get(doc["kind"], [])) & set(doc["spec"]), doc
    ipam_config = next(d for d in k.load_documents((tmp_path / "calico/kv/resources.yaml").read_text())
                       if d["kind"] == "IPAMConfiguration")  # fmt: skip
    assert ipam_config["spec"] == {"strictAffinity": False}
    assert any("autoAllocateBlocks" in n for n in r.manifest["notes"])


CRD_V1 = load("calico-crd-v1-bgp.json")  # what each pinned Calico's operator-crds.yaml serves


CALICO_3_31 = MATRIX["calico-3.31-kubevirt-1.5"]


def field_paths(obj: Any, prefix: str = "") -> set[str]:
    """Every field path of an object, as the CRD summaries spell them ('exportV4[].action')."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = f"{prefix}.{key}" if prefix else key
            out |= {path, *field_paths(value, path)}
    elif isinstance(obj, list):
        for item in obj:
            out |= field_paths(item, prefix + "[]")
    return out


def rendered_docs(out: Path, entry: dict[str, Any], *keys: str) -> list[dict[str, Any]]:
    return [d for key in keys if key in entry for d in k.load_documents((out / entry[key]).read_text())]


@pytest.mark.parametrize("stack", list(MATRIX))
def test_each_pinned_calico_stores_every_field_written_before_it_runs(stack: str, tmp_path: Path) -> None:
    """The operator-crds.yaml `up` applies first (per pinned Calico) serves BGPConfiguration,
    BGPPeer, BGPFilter and IPReservation as cluster-scoped crd.projectcalico.org/v1 CRDs, and every
    field of every lab's v1 objects is in that version's schema: the API server prunes an unknown
    field of a structural CRD without a word."""
    versions = MATRIX[stack]
    assert versions.operator_crds_url.endswith(f"/{versions.calico}/manifests/operator-crds.yaml")
    crds = CRD_V1["crds"][versions.calico]
    for kind in (*cd.BGP_CRD_KINDS, "IPReservation"):
        assert (crds[kind]["group"], crds[kind]["scope"]) == ("crd.projectcalico.org", "Cluster")
        assert [v["name"] for v in crds[kind]["versions"] if v["served"]] == ["v1"]
    seen = set()
    for path in LABS:
        r = rr.render_containerlab(
            load_lab(path), tmp_path / path.stem, versions=versions, use_emulation=True
        )
        for entry in r.manifest["clusters"].values():
            for doc in rendered_docs(r.out, entry, "bgp", "ip_reservation"):
                assert doc["apiVersion"] == cd.CALICO_CRD_API
                unknown = field_paths(doc["spec"]) - set(crds[doc["kind"]]["spec_paths"])
                assert not unknown, (path.stem, doc["kind"], doc["metadata"]["name"], unknown)
                seen.add(doc["kind"])
    assert seen == {*cd.BGP_CRD_KINDS, "IPReservation"}  # the nested lab's filters match on cidr


@pytest.mark.parametrize("lab", LABS, ids=[p.stem for p in LABS])
def test_no_3_31_filter_rule_matches_more_than_the_labs(lab: Path, tmp_path: Path) -> None:
    """Calico 3.31.7's confd turns a rule without conditions into a bare `accept;`/`reject;` ahead of
    its own filter (filterStatement): a rule matching on a field 3.32.0 added is left out whole, a
    filter left without rules goes with the peers' references to it; rules that lose only their
    operations keep match and action."""
    from harness.spec import cluster_resources

    conditions = set(CRD_V1["bgpfilter_statement"]["v3.31.7"]["condition_fields"])
    matches_3_32 = set(load("calico-v3-fields-new-in-3.32.0.json")["bgpfilter_rule"]) - {"operations"}
    assert matches_3_32 == set(cd.BGPFILTER_MATCHES_SINCE_3_32)
    spec = load_lab(lab)
    r = rr.render_containerlab(spec, tmp_path, versions=CALICO_3_31, use_emulation=True)
    for cluster in spec.clusters:
        docs = rendered_docs(r.out, r.manifest["clusters"][cluster.name], "bgp", "resources")
        got = {d["metadata"]["name"]: d for d in docs if d["kind"] == "BGPFilter"}
        for res in cluster_resources(spec)[cluster.name]:
            if res.kind != "BGPFilter":
                continue
            want = cd.calico_document(res)["spec"]
            for key in cd.BGPFILTER_RULE_LISTS:
                kept = [rule for rule in want.get(key, []) if not set(rule) & matches_3_32]
                rules = got[res.metadata.name]["spec"].get(key, []) if res.metadata.name in got else []
                assert rules == [{f: v for f, v in rule.items() if f != "operations"} for rule in kept]
                for before, after in zip(kept, rules, strict=True):  # bare only where the lab's is
                    assert bool(set(after) & conditions) == bool(set(before) & (conditions | matches_3_32))
        for peer in (d for d in docs if d["kind"] == "BGPPeer"):
            assert set(peer["spec"].get("filters", [])) <= set(got), peer


def test_the_3_31_default_lab_exports_what_calico_3_31_exports_by_default(tmp_path: Path) -> None:
    """The reviewer's case: the default lab's export rule {Accept, peerType eBGP, priority 512} was
    rendered as a bare {Accept} (every route in the node's BIRD table to the ToRs)."""
    r = rr.render_containerlab(load_lab(DEFAULT_LAB), tmp_path, versions=CALICO_3_31, use_emulation=True)
    early = k.load_documents((tmp_path / "calico/kv/bgp.yaml").read_text())
    assert [d["kind"] for d in early] == ["BGPConfiguration", "BGPPeer", "BGPPeer"]
    assert all("filters" not in d["spec"] for d in early)
    (warning,) = [n for n in r.manifest["notes"] if n.startswith("WARNING:")]
    assert (
        "BGPFilter/kubevirt-live-migration spec.exportV4[0] (the whole rule: it matches on peerType"
        in warning
    )
    assert "BGPPeer/rack-r1-tor spec.filters: kubevirt-live-migration" in warning


def _operator_accepts(platform_cidr: str, pool: str) -> bool:
    """tigera/operator v1.42.3 pkg/controller/ippool/defaults.go cidrWithinCidr: the pool's network
    address in the platform CIDR and the pool no larger than it."""
    c, p = net(platform_cidr), net(pool)
    return p.network_address in c and p.prefixlen >= c.prefixlen


def _lab_with_pools(tmp_path: Path, pools: list[str]) -> Path:
    from labfiles import lab_data, write_lab_data

    data = lab_data("default")
    (cluster,) = data["clusters"]
    cluster["pools"] = pools
    cluster["resources"] = [r for r in cluster["resources"] if r["kind"] != "IPPool"]
    return write_lab_data(data, tmp_path / "pools.yml")


def test_the_pod_subnet_covers_every_pool_of_the_cluster(tmp_path: Path) -> None:
    lab = _lab_with_pools(tmp_path, ["203.0.113.0/25", "203.0.113.128/25"])
    r = rr.render_containerlab(load_lab(lab), tmp_path / "out", use_emulation=True)
    kind_cfg = yaml.safe_load((tmp_path / "out/kind/kv.yaml").read_text())
    assert (
        kind_cfg["networking"]["podSubnet"] == r.manifest["clusters"]["kv"]["pod_subnet"] == "203.0.113.0/24"
    )
    (inst, _) = k.load_documents((tmp_path / "out/calico/kv/installation.yaml").read_text())
    pools = [p["cidr"] for p in inst["spec"]["calicoNetwork"]["ipPools"]]
    assert pools == ["203.0.113.0/25", "203.0.113.128/25"]
    assert all(_operator_accepts("203.0.113.0/24", p) for p in pools)
    assert not _operator_accepts("203.0.113.0/25", "203.0.113.128/25")  # what the first pool alone gave
    config = tmp_path / "out/kind/kv.yaml"
    config.write_text(config.read_text().replace("podSubnet: 203.0.113.0/24", "podSubnet: 203.0.113.0/25"))
    (issue,) = [i for i in va.validate_rendered(tmp_path / "out", bird=False).issues]
    assert issue.path == "networking.podSubnet"
    assert "203.0.113.128/25" in issue.message


def test_pools_no_pod_subnet_can_cover_are_bad_input(tmp_path: Path, run_root: Path) -> None:
    lab = _lab_with_pools(tmp_path, ["203.0.113.0/24", "198.51.100.0/24"])
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", "render", lab, "--runtime", "containerlab", "--out", out],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert (
        f"{lab}: clusters[0].pools: the pools of cluster 'kv' (203.0.113.0/24, 198.51.100.0/24)" in res.stderr
    )
    assert not out.exists()  # nothing written
    clab = cl.ContainerlabRuntime("tpools", context=LabContext.of(load_lab(lab)))
    with pytest.raises(pl.RenderError):
        clab.up(None)  # type: ignore[arg-type]
    assert not run_root.exists()  # refused before the preflight and before anything exists


def test_routers_drop_what_they_cannot_route_and_never_announce_it(clab: cl.ContainerlabRuntime) -> None:
    topo = k.load_documents((clab.render_dir / "tlab.clab.yml").read_text())[0]
    nodes = topo["topology"]["nodes"]
    routers = ["spine1", "tor1", "tor2"]
    for router in routers:
        assert nodes[router]["exec"][-1] == tf.ROUTER_DEFAULT_ROUTE == "ip route replace unreachable default"
        conf = (clab.render_dir / "bird" / f"{router}.conf").read_text()
        kernel = conf[conf.index("protocol kernel") :].split("}", 1)[0]
        assert "import none;" in kernel  # the unreachable default never reaches BGP
    assert tf.ROUTER_DEFAULT_ROUTE not in nodes["ext1"]["exec"]  # a host routes the lab via its router
    nodes["tor2"]["exec"].remove(tf.ROUTER_DEFAULT_ROUTE)
    (issue,) = va.routing_errors(topo, "t.clab.yml", routers)
    assert issue.path == "topology.nodes.tor2.exec"
    assert "leave the lab" in issue.message


def test_kind_nodes_filter_reverse_paths_loosely_on_both_sides(clab: cl.ContainerlabRuntime) -> None:
    import shlex

    topo = k.load_documents((clab.render_dir / "tlab.clab.yml").read_text())[0]
    nodes = topo["topology"]["nodes"]
    for name in KIND_NAMES:
        execs = nodes[name]["exec"]
        for dev in ("eth0", "eth1"):  # kind's network (requests out), the fabric (replies in)
            command = tf.loose_rp_filter(dev)
            assert command in execs
            assert shlex.split(command) == ["bash", "-c", f"echo 2 > /proc/sys/net/ipv4/conf/{dev}/rp_filter"]
            assert "$" not in command  # containerlab would expand it
    assert va.routing_errors(topo, "t.clab.yml", ["spine1", "tor1", "tor2"]) == []
    nodes["kv-worker3"]["exec"].remove(tf.loose_rp_filter("eth1"))
    (issue,) = va.routing_errors(topo, "t.clab.yml", ["spine1", "tor1", "tor2"])
    assert issue.path == "topology.nodes.kv-worker3.exec"
    assert "loose on eth1" in issue.message


def test_a_dual_stack_lab_renders_both_families(tmp_path: Path) -> None:
    """labs/dual-stack.yml on containerlab: kind dual-stack (both pod and service subnets, each
    kubelet on both addresses), the operator's IPv6 pool and autodetection on the rack twins,
    both VM addresses reserved and asked for, bird6 beside BIRD on every router with its own
    config and socket, IPv6 on every fabric link; the whole directory validates."""
    spec = load_lab(DUAL_STACK_LAB)
    r = rr.render_containerlab(spec, tmp_path / "out", use_emulation=True, run_dir=Path("/run/kvlab/t"))
    kind = yaml.safe_load((r.out / "kind/kv.yaml").read_text())
    assert kind["networking"]["ipFamily"] == "dual"
    assert kind["networking"]["podSubnet"] == "203.0.113.0/24,2001:db8:203:113::/120"
    assert kind["networking"]["serviceSubnet"].split(",")[1] == str(pl.SERVICE6_RANGE)
    assert 'node-ip: "198.18.2.11,2001:db8::c612:20b"' in (r.out / "kind/kv.yaml").read_text()
    inst = yaml_docs(r.out / "calico/kv/installation.yaml")[0]["spec"]["calicoNetwork"]
    assert {p["cidr"]: p["blockSize"] for p in inst["ipPools"]} == {
        "203.0.113.0/24": 26,
        "2001:db8:203:113::/120": 122,
    }
    assert inst["nodeAddressAutodetectionV6"] == {
        "cidrs": ["2001:db8::c612:100/120", "2001:db8::c612:200/120"]
    }
    reserved = yaml_docs(r.out / "calico/kv/ipreservation.yaml")[0]["spec"]["reservedCIDRs"]
    assert reserved == ["203.0.113.10/32", "2001:db8:203:113::10/128"]
    vm = yaml_docs(r.out / "kubevirt/vms.yaml")[0]["spec"]["template"]
    assert json.loads(vm["metadata"]["annotations"][kv.CALICO_IP_ANNOTATION]) == [
        "203.0.113.10",
        "2001:db8:203:113::10",
    ]
    user_data = vm["spec"]["volumes"][1]["cloudInitNoCloud"]["userData"]
    assert "2001:db8:203:113::10/128" in user_data
    assert "fe80::ecee:eeff:feee:eeee" in user_data
    assert len(user_data.encode()) <= kv.USER_DATA_MAX
    topo_doc = yaml.safe_load((r.out / "dual-stack.clab.yml").read_text())
    tor1 = topo_doc["topology"]["nodes"]["tor1"]
    assert "bird/tor1.bird6.conf:/etc/bird/bird6.conf:ro" in tor1["binds"]
    assert tf.BIRD6_START in tor1["exec"]
    assert "ip addr add 2001:db8::c612:101/120 dev br-rack" in tor1["exec"]
    assert tor1["sysctls"]["net.ipv6.conf.all.forwarding"] == 1
    assert r.manifest["bird6_sockets"]["tor1"] == "/run/kvlab/t/tor1/bird6.ctl"
    assert r.manifest["calico6_sockets"]["r1-n1"] == "/run/kvlab/t/r1-n1/calico/bird6.ctl"
    assert (r.out / "bird/tor1.bird6.conf").read_text().count("neighbor 2001:db8::") == 3
    report = va.validate_rendered(r.out)
    assert report.ok, report.issues


def test_a_v4_lab_renders_no_ipv6(tmp_path: Path) -> None:
    r = rr.render_containerlab(load_lab(REPO / "labs" / "default.yml"), tmp_path / "out", use_emulation=True)
    assert "ipFamily" not in yaml.safe_load((r.out / "kind/kv.yaml").read_text())["networking"]
    assert "bird6_sockets" not in r.manifest
    assert not any(f.endswith(".bird6.conf") for f in r.manifest["files"])
