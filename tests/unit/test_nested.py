"""Nested clusters (Calico's "BGP peering with nested clusters running on KubeVirt VMs"):
the lab spec rules, the topology of labs/nested.yml, and the BIRD configs of parent and
nested nodes (workload peering `Local_Workload_<ip>` on the parent, `Global_169_254_0_179`
on the nested node). Every rendered config is parse-checked by the real `bird -p`.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import labfiles
import pytest
import yaml
from labfiles import bgp_protocols, cluster_of, lab_data, resource, write_lab_data

from harness.errors import SpecError
from harness.labfile import load_lab
from harness.render.bird import check_config, render_node
from harness.spec import LabSpec, cluster_resources
from harness.topology import Topology, resolve

REPO = Path(__file__).resolve().parents[2]
NESTED = REPO / "labs" / "nested.yml"
HAVE_BIRD = (shutil.which("bird") or shutil.which("bird", path="/usr/sbin:/sbin")) is not None
needs_bird = pytest.mark.skipif(
    not HAVE_BIRD, reason="BIRD is not installed (Debian package 'bird'): cannot run 'bird -p'"
)


# -- helpers ---------------------------------------------------------------------------


def nested_data() -> dict[str, Any]:
    """labs/nested.yml with every cluster's resources inlined (so tests can change them)."""
    return lab_data("nested")


def load(tmp_path: Path, data: dict[str, Any]) -> LabSpec:
    return load_lab(write_lab_data(data, tmp_path / "lab.yml"))


def issues_of(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> list[str]:
    """The issue lines `load_lab` reports for labs/nested.yml after `change`."""
    return labfiles.issues_of(tmp_path, "nested", change)


def resources_of(spec: LabSpec) -> dict[str, list[Any]]:
    return cluster_resources(spec)


def neighbor(body: str) -> tuple[str, int]:
    m = re.search(r"neighbor (\S+) as (\d+);", body)
    assert m, body
    return m.group(1), int(m.group(2))


def filter_block(body: str, direction: str) -> str:
    m = re.search(rf"{direction} filter \{{\n(.*?)\n  \}};", body, re.S)
    assert m, body
    return m.group(1)


@pytest.fixture(scope="module")
def spec() -> LabSpec:
    return load_lab(NESTED)


@pytest.fixture(scope="module")
def topo(spec: LabSpec) -> Topology:
    return resolve(spec)


@pytest.fixture(scope="module")
def configs(spec: LabSpec, topo: Topology) -> dict[str, str]:
    res = resources_of(spec)
    return {n.name: render_node(topo, n.name, res[c.name]) for c, n in spec.all_nodes()}


# -- the lab file ------------------------------------------------------------------------


def test_nested_lab_loads(spec: LabSpec) -> None:
    assert [(c.name, c.parent, c.asn) for c in spec.clusters] == [
        ("parent", None, 64512),
        ("red", "parent", 65101),
        ("blue", "parent", 65102),
    ]
    assert spec.nested_node_in("vm-red") == (spec.cluster("red"), spec.cluster("red").nodes[0])
    assert spec.nested_node_in("vm-green") is None


def test_topology_of_nested_nodes(topo: Topology) -> None:
    assert topo.node_address["red-n1"] == ipaddress.IPv4Interface("203.0.113.10/32")
    assert topo.node_address["blue-n1"] == ipaddress.IPv4Interface("203.0.113.11/32")
    assert topo.router_id["red-n1"] == ipaddress.IPv4Address("203.0.113.10")
    assert (topo.node_asn["red-n1"], topo.node_asn["blue-n1"]) == (65101, 65102)
    assert topo.node_blocks["red-n1"] == [ipaddress.IPv4Network("198.51.100.0/26")]
    assert topo.node_blocks["blue-n1"] == [ipaddress.IPv4Network("198.51.100.64/26")]
    assert topo.nested_vm == {"red-n1": "vm-red", "blue-n1": "vm-blue"}
    assert topo.node_labels("red-n1") == {"kubernetes.io/hostname": "red-n1"}
    # Nested nodes have no rack port: their uplink is their VM's interface.
    assert {p.node for p in topo.rack_ports} == {"p1-n1", "p1-n2"}
    assert topo.node_asn["p1-n1"] == 64512


def test_topology_of_parent_vms(topo: Topology) -> None:
    where = {w.vm: (w.node, w.cluster, str(w.ip)) for w in topo.workloads}
    assert where == {
        "vm-red": ("p1-n1", "parent", "203.0.113.10"),
        "vm-blue": ("p1-n1", "parent", "203.0.113.11"),
        "vm-green": ("p1-n2", "parent", "203.0.113.70"),
    }
    assert topo.workload_labels("vm-red") == {"color": "red"}
    assert topo.workload_labels("vm-green") == {"color": "green"}


def test_existing_labs_have_no_nested_clusters() -> None:
    for path in sorted((REPO / "labs").glob("*.yml")):
        lab = load_lab(path)
        if path.stem not in ("nested", "nested-qemu", "nested-dual-stack"):
            assert all(c.parent is None for c in lab.clusters), path


def test_the_qemu_variant_is_the_nested_lab_with_red_in_a_qemu_guest() -> None:
    mock, qemu = load_lab(NESTED), load_lab(REPO / "labs" / "nested-qemu.yml")
    assert {v.name: v.backend for v in qemu.vms} == {"vm-red": "qemu", "vm-blue": "mock", "vm-green": "mock"}
    assert qemu.model_dump(exclude={"name", "description", "vms", "source"}) == mock.model_dump(
        exclude={"name", "description", "vms", "source"}
    )
    assert [v.model_copy(update={"backend": "mock"}) for v in qemu.vms] == mock.vms


def test_a_nested_node_holds_a_block_of_each_of_its_pools() -> None:
    data = nested_data()
    cluster_of(data, "red")["pools"].append("198.51.100.128/26")
    topo = resolve(LabSpec.model_validate(data))
    assert topo.node_blocks["red-n1"] == [
        ipaddress.IPv4Network("198.51.100.0/26"),
        ipaddress.IPv4Network("198.51.100.128/26"),
    ]
    assert topo.nested_pod["red-n1"] == ipaddress.IPv4Address("198.51.100.1")  # in the first pool
    assert topo.node_blocks["p1-n1"] == [ipaddress.IPv4Network("203.0.113.0/26")]  # the parent: one


# -- spec validation -----------------------------------------------------------------------


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


BAD_CASES = [
    pytest.param(
        _set(["clusters", 1, "parent"], "nowhere"),
        "clusters[1].parent: no cluster named 'nowhere'",
        id="parent-missing",
    ),
    pytest.param(
        _set(["clusters", 1, "parent"], "red"),
        "clusters[1].parent: cluster 'red' cannot be its own parent",
        id="parent-self",
    ),
    pytest.param(
        _set(["clusters", 2, "parent"], "red"),
        "clusters[2].parent: cluster 'red' is itself nested (parent 'parent'): "
        "only one level of nesting is supported",
        id="parent-nested",
    ),
    pytest.param(
        _set(["clusters", 1, "nodes", 0, "vm"], "vm-nope"),
        "clusters[1].nodes[0].vm: no VM named 'vm-nope'",
        id="vm-missing",
    ),
    pytest.param(
        _set(["clusters", 2, "nodes", 0, "vm"], "vm-red"),
        "clusters[2].nodes[0].vm: VM 'vm-red' already runs node clusters[1].nodes[0]",
        id="vm-twice",
    ),
    pytest.param(
        _set(["clusters", 1, "nodes", 0], {"name": "red-n1"}),
        "clusters[1].nodes[0].vm: missing vm: nodes of nested cluster 'red' run in a VM of cluster 'parent'",
        id="vm-not-given",
    ),
    pytest.param(
        _set(["clusters", 1, "nodes", 0, "rack"], "r1"),
        "clusters[1].nodes[0].rack: node 'red-n1' of nested cluster 'red' runs in a VM of 'parent': "
        "give 'vm', not 'rack'",
        id="nested-node-in-rack",
    ),
    pytest.param(
        _set(["clusters", 1, "nodes", 0, "ip"], "198.18.1.50"),
        "clusters[1].nodes[0].ip: node 'red-n1' of nested cluster 'red' has its VM's address",
        id="nested-node-ip",
    ),
    pytest.param(
        _set(["clusters", 0, "nodes", 0, "vm"], "vm-red"),
        "clusters[0].nodes[0].vm: node 'p1-n1' names a VM, but cluster 'parent' has no parent: only nodes of "
        "a nested cluster (parent: CLUSTER) run in VMs",
        id="vm-without-parent",
    ),
    pytest.param(
        _set(["clusters", 1, "asn"], 64512),
        "clusters[1].asn: nested cluster 'red' shares AS 64512 with its parent 'parent': the workload "
        "peering must be eBGP (parent, nested cluster and ToR AS numbers must all differ)",
        id="asn-parent",
    ),
    pytest.param(
        _set(["clusters", 1, "asn"], 65001),
        "clusters[1].asn: nested node 'red-n1' shares AS 65001 with ToR 'tor1' of its parent node 'p1-n1': "
        "parent, nested cluster and ToR AS numbers must all differ "
        "(Calico's nested-cluster guide: eBGP only)",
        id="asn-tor",
    ),
    pytest.param(
        _set(["clusters", 1, "nodes", 0, "asn"], 64512),
        "clusters[1].nodes[0].asn: node 'red-n1' shares AS 64512 with its parent node 'p1-n1': the workload "
        "peering must be eBGP",
        id="asn-node-override",
    ),
    pytest.param(
        _set(["clusters", 2, "pools"], ["198.51.100.0/25"]),
        "clusters[2].pools[0]: pool 198.51.100.0/25 overlaps 198.51.100.0/26 (clusters[1].pools[0])",
        id="pool-overlap",
    ),
]


@pytest.mark.parametrize(("change", "message"), BAD_CASES)
def test_spec_rule(tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str) -> None:
    got = issues_of(tmp_path, change)
    assert any(line.endswith(f" {message}") for line in got), got
    assert all(line.startswith(f"{tmp_path / 'lab.yml'}:") for line in got), got


def test_vm_must_run_in_the_parent_cluster(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        # blue's node runs in a VM whose node is red's node: not a VM of blue's parent
        data["vms"].append({"name": "vm-deep", "node": "red-n1", "ip": "198.51.100.5"})
        cluster_of(data, "blue")["nodes"][0]["vm"] = "vm-deep"

    got = issues_of(tmp_path, change)
    assert any(
        line.endswith(
            "clusters[2].nodes[0].vm: VM 'vm-deep' runs in cluster 'red', not in the parent cluster 'parent'"
        )
        for line in got
    ), got


def test_issue_names_the_line(tmp_path: Path) -> None:
    data = nested_data()
    cluster_of(data, "red")["parent"] = "nowhere"
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as ei:
        load_lab(path)
    issue = next(i for i in ei.value.issues if i.path == "clusters[1].parent")
    assert path.read_text().splitlines()[issue.line - 1].strip() == "parent: nowhere"


def test_nested_mesh_must_be_off(tmp_path: Path) -> None:
    got = issues_of(
        tmp_path,
        lambda d: resource(cluster_of(d, "red"), "BGPConfiguration", "default")["spec"].update(
            nodeToNodeMeshEnabled=True
        ),
    )
    assert any(
        line.endswith(
            "clusters[1].resources[0].spec.nodeToNodeMeshEnabled: nested cluster 'red' must set "
            "nodeToNodeMeshEnabled: false (the mesh is on by default; peering with workloads and using a BGP "
            "mesh within the cluster is not supported)"
        )
        for line in got
    ), got


def test_nested_mesh_default_is_on(tmp_path: Path) -> None:
    got = issues_of(
        tmp_path,
        lambda d: resource(cluster_of(d, "red"), "BGPConfiguration", "default")["spec"].pop(
            "nodeToNodeMeshEnabled"
        ),
    )
    assert any(
        "clusters[1].resources[0].spec: nested cluster 'red' must set nodeToNodeMeshEnabled: false" in x
        for x in got
    ), got


def test_nested_needs_a_bgp_configuration(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        red = cluster_of(data, "red")
        red["resources"] = [r for r in red["resources"] if r["kind"] != "BGPConfiguration"]

    got = issues_of(tmp_path, change)
    assert any(
        line.endswith(
            "clusters[1].resources: nested cluster 'red' needs a BGPConfiguration 'default' with "
            "nodeToNodeMeshEnabled: false (peering with workloads and using a BGP mesh within the cluster "
            "is not supported)"
        )
        for line in got
    ), got


def test_parent_peering_uses_the_parent_as(tmp_path: Path) -> None:
    got = issues_of(
        tmp_path,
        lambda d: resource(cluster_of(d, "red"), "BGPPeer", "peer-to-parent-cluster")["spec"].update(
            asNumber=65001
        ),
    )
    assert any(
        line.endswith(
            "clusters[1].resources[2].spec.asNumber: the peering with the parent cluster's workload "
            "peering IP 169.254.0.179 must use the parent 'parent' AS 64512, not asNumber 65001"
        )
        for line in got
    ), got


def test_parent_peering_needs_an_as(tmp_path: Path) -> None:
    got = issues_of(
        tmp_path,
        lambda d: resource(cluster_of(d, "blue"), "BGPPeer", "peer-to-parent-cluster")["spec"].pop(
            "asNumber"
        ),
    )
    assert any(line.endswith("must use the parent 'parent' AS 64512, not no asNumber") for line in got), got


def test_workload_peering_ip_only_from_nested_clusters(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        parent = cluster_of(data, "parent")
        parent["resources"].append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "BGPPeer",
                "metadata": {"name": "odd"},
                "spec": {"peerIP": "169.254.0.179", "asNumber": 64512},
            }
        )

    got = issues_of(tmp_path, change)
    assert any(
        "spec.peerIP: 169.254.0.179 is a parent cluster's workload peering address: only a nested cluster "
        "(parent: CLUSTER) peers with it, and cluster 'parent' has no parent" in line
        for line in got
    ), got


def test_parent_needs_local_workload_peering_ip(tmp_path: Path) -> None:
    got = issues_of(
        tmp_path,
        lambda d: resource(cluster_of(d, "parent"), "BGPConfiguration", "default")["spec"].pop(
            "localWorkloadPeeringIPV4"
        ),
    )
    message = (
        "spec.localWorkloadSelector: cluster 'parent' has no localWorkloadPeeringIPV4 in its "
        "BGPConfiguration 'default': workload peering is off until it is set (e.g. 169.254.0.179)"
    )
    # one issue per localWorkloadSelector BGPPeer (red and blue)
    hits = [line.split(": ", 1)[1] for line in got if line.endswith(message)]
    assert hits == [f"clusters[0].resources[{i}].{message}" for i in (7, 8)], got


def test_selected_vm_as_must_match_the_peer(tmp_path: Path) -> None:
    got = issues_of(
        tmp_path,
        lambda d: resource(cluster_of(d, "parent"), "BGPPeer", "peer-to-red-workloads")["spec"].update(
            asNumber=65102
        ),
    )
    assert any(
        line.endswith(
            "clusters[0].resources[7].spec.asNumber: BGPPeer 'peer-to-red-workloads' selects VM "
            "'vm-red', which runs node 'red-n1' of nested cluster 'red' (AS 65101), but has asNumber 65102"
        )
        for line in got
    ), got


def test_file_resources_name_their_file(tmp_path: Path) -> None:
    """Issues in resource files name the resource file and its line, as for other labs."""
    shutil.copytree(REPO / "labs", tmp_path / "labs")
    bad = tmp_path / "labs" / "calico" / "nested-red.yaml"
    bad.write_text(bad.read_text().replace("asNumber: 64512 ", "asNumber: 65001 "))
    with pytest.raises(SpecError) as ei:
        load_lab(tmp_path / "labs" / "nested.yml")
    (issue,) = ei.value.issues
    assert issue.file == str(bad)
    assert issue.path == "spec.asNumber"
    assert bad.read_text().splitlines()[issue.line - 1].strip().startswith("asNumber: 65001")


# -- rendering -----------------------------------------------------------------------------


@needs_bird
def test_every_config_passes_bird(configs: dict[str, str]) -> None:
    assert set(configs) == {"p1-n1", "p1-n2", "red-n1", "blue-n1"}
    for text in configs.values():
        check_config(text)


def test_parent_node_peers_with_each_selected_vm(configs: dict[str, str]) -> None:
    protocols = bgp_protocols(configs["p1-n1"])
    local = {name: body for name, body in protocols.items() if name.startswith("Local_Workload_")}
    assert set(local) == {"Local_Workload_203_0_113_10", "Local_Workload_203_0_113_11"}
    assert neighbor(local["Local_Workload_203_0_113_10"]) == ("203.0.113.10", 65101)
    assert neighbor(local["Local_Workload_203_0_113_11"]) == ("203.0.113.11", 65102)
    for body in local.values():
        lines = {line.strip() for line in body.splitlines()}
        assert {"passive on;", "multihop;", "ttl security off;"} <= lines
        # calico-node renders workload peers without a source address (the workload connects
        # to localWorkloadPeeringIPV4)
        assert not any(line.startswith("source address") for line in lines)
    assert "Global_198_18_1_1" in protocols  # the ToR peering is still there


def test_workload_peer_filters(configs: dict[str, str]) -> None:
    body = bgp_protocols(configs["p1-n1"])["Local_Workload_203_0_113_10"]
    imp, exp = filter_block(body, "import"), filter_block(body, "export")
    assert "'bgp_accept-nested-red-pool_importFilterV4'();" in imp
    assert "blue" not in imp
    # no-export runs before Calico's default export: nothing reaches the nested cluster
    assert exp.index("'bgp_no-export_exportFilterV4'();") < exp.index("calico_export_to_bgp_peers(false);")
    text = configs["p1-n1"]
    no_export = re.search(r"function 'bgp_no-export_exportFilterV4'\(\) \{\n(.*?)^\}", text, re.M | re.S)
    assert no_export
    assert no_export.group(1).split() == ["reject;"]
    accept = re.search(
        r"function 'bgp_accept-nested-red-pool_importFilterV4'\(\) \{\n(.*?)^\}", text, re.M | re.S
    )
    assert accept
    assert "net ~ 198.51.100.0/26" in accept.group(1)
    assert "accept;" in accept.group(1)


def test_tor_peer_exports_nested_pools(configs: dict[str, str]) -> None:
    body = bgp_protocols(configs["p1-n1"])["Global_198_18_1_1"]
    assert "'bgp_export-to-tor_exportFilterV4'();" in filter_block(body, "export")
    fn = re.search(
        r"function 'bgp_export-to-tor_exportFilterV4'\(\) \{\n(.*?)^\}", configs["p1-n1"], re.M | re.S
    )
    assert fn
    assert "198.51.100.0/26" in fn.group(1)
    assert "198.51.100.64/26" in fn.group(1)
    assert "RTS_BGP" in fn.group(1)  # source: RemotePeers


def test_parent_node_without_selected_vms_has_no_workload_peers(configs: dict[str, str]) -> None:
    # p1-n2 runs vm-green, which no localWorkloadSelector matches
    assert not [p for p in bgp_protocols(configs["p1-n2"]) if p.startswith("Local_Workload_")]
    assert "203.0.113.70" not in configs["p1-n2"].split("# ---- BGPFilters")[1]


def test_nested_node_peers_with_the_parent(configs: dict[str, str]) -> None:
    for node, ip, asn, block in (
        ("red-n1", "203.0.113.10", 65101, "198.51.100.0/26"),
        ("blue-n1", "203.0.113.11", 65102, "198.51.100.64/26"),
    ):
        text = configs[node]
        protocols = bgp_protocols(text)
        assert set(protocols) == {"Global_169_254_0_179"}, node  # mesh off: no Mesh_ peers
        body = protocols["Global_169_254_0_179"]
        assert neighbor(body) == ("169.254.0.179", 64512)
        assert f"source address {ip};" in body
        assert re.search(r"^router id " + re.escape(ip) + ";$", text, re.M)
        assert f"local as {asn};" in text
        # it exports its own nested block (blackhole + aggregation), nothing of the parent's pool
        assert f"route {block} blackhole;" in text
        assert "calico_export_to_bgp_peers(false);" in filter_block(body, "export")
        assert "203.0.113.0/24" not in text.split("function calico_export_to_bgp_peers")[1].split("}")[0]


def test_node_selector_limits_workload_peering(tmp_path: Path) -> None:
    data = nested_data()
    data["clusters"][0]["nodes"][1]["labels"] = {"nested-host": "yes"}
    resource(cluster_of(data, "parent"), "BGPPeer", "peer-to-red-workloads")["spec"]["nodeSelector"] = (
        "nested-host == 'yes'"
    )
    spec = load(tmp_path, data)
    topo = resolve(spec)
    text = render_node(topo, "p1-n1", resources_of(spec)["parent"])
    names = set(bgp_protocols(text))
    assert "Local_Workload_203_0_113_10" not in names  # vm-red's node is not selected
    assert "Local_Workload_203_0_113_11" in names


def test_workload_peering_follows_the_vm(tmp_path: Path) -> None:
    """A workload's peering is rendered on the node the spec runs its VM on."""
    data = copy.deepcopy(nested_data())
    next(v for v in data["vms"] if v["name"] == "vm-red")["node"] = "p1-n2"
    spec = load(tmp_path, data)
    topo = resolve(spec)
    res = resources_of(spec)["parent"]
    assert "Local_Workload_203_0_113_10" not in bgp_protocols(render_node(topo, "p1-n1", res))
    assert "Local_Workload_203_0_113_10" in bgp_protocols(render_node(topo, "p1-n2", res))


# -- what the runtime derives: peering IP placement, pods during a migration, keepalive -----------


def test_peering_ip_goes_on_selected_workloads_only(spec: LabSpec, topo: Topology) -> None:
    from harness.calico import confd

    res = resources_of(spec)["parent"]
    assert confd.workload_peering_ip(res) == "169.254.0.179"
    assert confd.peering_workloads(topo, "p1-n1", res) == ["203.0.113.10", "203.0.113.11"]
    assert confd.peering_workloads(topo, "p1-n2", res) == []  # vm-green: no BGPPeer selects it
    assert confd.workload_peering_ip(resources_of(spec)["red"]) is None  # nested: not a parent


def test_a_migrating_vm_has_a_pod_on_both_nodes(spec: LabSpec, topo: Topology) -> None:
    """During a migration both parent nodes render a Local_Workload peer for the VM; after it
    only the target does."""
    res = resources_of(spec)["parent"]
    during = topo.with_pods({"vm-red": ["p1-n1", "p1-n2"]})
    after = topo.with_pods({"vm-red": ["p1-n2"]})
    for node in ("p1-n1", "p1-n2"):
        assert "Local_Workload_203_0_113_10" in bgp_protocols(render_node(during, node, res))
    assert "Local_Workload_203_0_113_10" not in bgp_protocols(render_node(after, "p1-n1", res))
    assert "Local_Workload_203_0_113_11" in bgp_protocols(render_node(after, "p1-n1", res))
    assert [w.node for w in topo.workloads if w.vm == "vm-red"] == ["p1-n1"]  # topo itself unchanged


def test_nested_pod_is_the_first_address_of_the_nested_block(topo: Topology) -> None:
    assert {n: str(ip) for n, ip in topo.nested_pod.items()} == {
        "red-n1": "198.51.100.1",
        "blue-n1": "198.51.100.65",
    }


@needs_bird
def test_keepalive_time_of_the_peering_to_the_parent(configs: dict[str, str]) -> None:
    for node in ("red-n1", "blue-n1"):
        body = bgp_protocols(configs[node])["Global_169_254_0_179"]
        assert "keepalive time 10;" in body  # keepaliveTime: 10s in labs/calico/nested-*.yaml
        check_config(configs[node])
    assert "keepalive time" not in configs["p1-n1"]  # the parent's peers keep BIRD's default


def test_parent_import_filters_end_with_a_reject(configs: dict[str, str]) -> None:
    """labs/nested.yml's accept-nested-* filters refuse what their Accept rule does not match."""
    body = bgp_protocols(configs["p1-n1"])["Local_Workload_203_0_113_10"]
    imports = filter_block(body, "import").splitlines()
    assert imports[0].strip() == "'bgp_accept-nested-red-pool_importFilterV4'();"
    assert imports[-1].strip() == "accept;"  # calico-node's default import after the filters
    pattern = r"function 'bgp_accept-nested-red-pool_importFilterV4'\(\) \{\n(.*?)\n\}"
    m = re.search(pattern, configs["p1-n1"], re.S)
    assert m, "filter function missing"
    assert [line.strip() for line in m.group(1).splitlines()] == [
        "if ((net ~ 198.51.100.0/26)) then { accept; }",
        "reject;",
    ]
