"""`kvlab import` on the customer-style dump of tests/data/customer (four uneven racks, route
reflectors in rack-a, Calico v3 objects with managed fields, a crd.projectcalico.org/v1 variant,
VMIs, one BIRD and one non-BIRD ToR config): what the lab reproduces, how addresses are
renumbered, what is reported as not reproduced, and hostile input."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.errors import LabNameError, SpecError
from harness.importer.build import ImportError_, ImportOptions, ImportResult, import_dump
from harness.importer.mapping import MAP_FILE, CustomerMap
from harness.importer.write import lab_text, write_import
from harness.labfile import load_lab
from harness.spec import FABRIC_RANGE, POOL_RANGES, ROUTER_ID_RANGE

DATA = Path(__file__).resolve().parents[1] / "data" / "customer"
LAB_RANGES = (FABRIC_RANGE, *POOL_RANGES, ipaddress.IPv4Network("169.254.0.179/32"))
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")


def options(calico: str = "calico.yaml", **kwargs: object) -> ImportOptions:
    defaults: dict[str, object] = {
        "nodes": DATA / "nodes.yaml",
        "calico": DATA / calico,
        "vmis": DATA / "vmis.yaml",
        "tors": [DATA / "tor-a.conf", DATA / "tor-d.conf"],
        "name": "acme",
    }
    return ImportOptions(**{**defaults, **kwargs})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def result() -> ImportResult:
    return import_dump(options())


def nodes_of(result: ImportResult) -> dict[str, dict[str, object]]:
    return {n["name"]: n for n in result.lab["clusters"][0]["nodes"]}


def test_racks_and_tors_from_the_bgppeers(result: ImportResult) -> None:
    lab = result.lab
    assert [(r["name"], r["tor"], r["subnet"]) for r in lab["racks"]] == [
        ("rack-a", "tor-rack-a", "198.18.1.0/24"),
        ("rack-b", "tor-rack-b", "198.18.2.0/24"),
        ("rack-c", "tor-rack-c", "198.18.3.0/24"),
        ("rack-d", "tor-rack-d", "198.18.4.0/24"),
    ]
    tors = {r["name"]: r["asn"] for r in lab["routers"] if r["role"] == "tor"}
    assert tors == {"tor-rack-a": 65101, "tor-rack-b": 65102, "tor-rack-c": 65103, "tor-rack-d": 65104}
    racks = {}
    for n in nodes_of(result).values():
        racks.setdefault(n["rack"], []).append(n["name"])
    assert {k: len(v) for k, v in racks.items()} == {"rack-a": 3, "rack-b": 4, "rack-c": 2, "rack-d": 1}


def test_nodes_route_reflectors_and_the_cluster_as(result: ImportResult) -> None:
    cluster = result.lab["clusters"][0]
    assert cluster["asn"] == 64600
    nodes = nodes_of(result)
    reflectors = {n for n, spec in nodes.items() if "route_reflector" in spec}
    assert reflectors == {"kv-a-rr-1", "kv-a-rr-2"}
    assert {nodes[n]["route_reflector"] for n in reflectors} == {str(ROUTER_ID_RANGE.broadcast_address - 1)}
    assert nodes["kv-b-w-2"]["ip"] == "198.18.2.22"  # the customer's host offset kept in the lab's subnet
    assert nodes["kv-a-rr-1"]["labels"]["route-reflector"] == "true"  # labels kept: selectors still match
    assert "asn" not in nodes["kv-c-w-2"]  # its ASNumber annotation is the cluster AS
    assert "pools" not in cluster
    assert "block_size" not in cluster  # from the IPPool (one place)


def test_the_lab_uses_only_lab_ranges(result: ImportResult) -> None:
    """Customer addresses are input only: the lab file and its resources hold none."""
    text = lab_text(result).split("\nname:", 1)[1] + yaml.safe_dump_all(result.resources)
    found = {ipaddress.IPv4Address(a) for a in _IPV4.findall(text)}
    assert found
    assert all(any(a in r for r in LAB_RANGES) for a in found), sorted(found)


def test_resources_renumbered(result: ImportResult) -> None:
    by = {(d["kind"], d["metadata"]["name"]): d for d in result.resources}
    assert by["BGPPeer", "rack-b-tor"]["spec"]["peerIP"] == "198.18.2.1"
    assert by["BGPPeer", "rack-b-tor"]["spec"]["nodeSelector"] == "acme.example/rack == 'rack-b'"
    assert by["IPPool", "vm-pool"]["spec"] == {
        "cidr": "203.0.113.0/24",
        "blockSize": 28,
        "ipipMode": "Never",
        "vxlanMode": "Never",
        "natOutgoing": False,
        "nodeSelector": "all()",
        "allowedUses": ["Workload", "Tunnel"],
    }
    assert ("BGPPeer", "edge-firewall") not in by
    assert ("IPPool", "vm-pool-v6") not in by
    assert "serviceClusterIPs" not in by["BGPConfiguration", "default"]["spec"]
    assert by["BGPFilter", "no-management"]["spec"]["exportV4"] == [
        {"action": "Accept", "cidr": "203.0.113.0/24", "matchOperator": "In"}
    ]
    assert all(set(d["metadata"]) == {"name"} for d in result.resources)  # no managedFields, uid, ...


def test_vms_on_their_nodes_in_their_blocks(result: ImportResult) -> None:
    spec = load_lab_of(result)
    from harness.topology import resolve

    topo = resolve(spec)
    vms = {v["name"]: v for v in result.lab["vms"]}
    assert set(vms) == {"web-1", "db-primary", "vm3"}
    assert vms["web-1"]["node"] == "kv-b-w-2"
    assert vms["web-1"]["labels"] == {"app": "web", "kubevirt.io/domain": "web-1"}
    for v in vms.values():
        assert ipaddress.IPv4Address(v["ip"]) in topo.node_blocks[v["node"]][0]
    assert result.mapping.vms == {
        "shop/web-1": "web-1",
        "shop/db-primary": "db-primary",
        "jobs/batch-runner-0007": "vm3",
    }


def load_lab_of(result: ImportResult, tmp: Path | None = None):  # type: ignore[no-untyped-def]
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="kvlab-import-test-")) if tmp is None else tmp
    try:
        return load_lab(write_import(result, out))
    finally:
        if tmp is None:
            shutil.rmtree(out)


def test_the_mapping(result: ImportResult) -> None:
    m = result.mapping
    a = ipaddress.ip_address
    assert m.addresses[a("10.20.2.254")] == a("198.18.2.1")  # the ToR
    assert m.addresses[a("10.20.2.22")] == a("198.18.2.22")
    assert m.prefixes[ipaddress.ip_network("10.244.0.0/16")] == ipaddress.ip_network("203.0.113.0/24")
    vm = m.addresses[a("10.244.7.70")]
    assert m.text(f"best {vm}/32 via 198.18.2.22") == "best 10.244.7.70/32 via 10.20.2.22"
    assert m.text("tor 198.18.2.1/24") == "tor 10.20.2.254/24"  # an interface, not a prefix
    assert m.text("block 203.0.113.16/28") == "block 10.244.0.16/28"  # by offset in the pool
    assert m.text("198.19.0.3 and 1.2.3.4") == "198.19.0.3 and 1.2.3.4"  # the lab's own: unchanged
    assert m.to_lab_prefix("10.244.7.70/32") == f"{vm}/32"
    assert m.to_lab_prefix("10.244.0.0/16") == "203.0.113.0/24"
    assert m.lab_name("vm", "shop/web-1") == m.lab_name("vm", "web-1") == "web-1"
    assert m.lab_name("node", "kv-d-w-1.dc1.acme.example") == "kv-d-w-1"
    assert m.json({"ip": str(vm), "n": 3}) == {"ip": "10.244.7.70", "n": 3}


WARNINGS = [
    ("calico.yaml", "KubeControllersConfiguration 'default': kind KubeControllersConfiguration", "items[14]"),
    ("nodes.yaml", "projectcalico.org/IPv4IPIPTunnelAddr", "not reproduced on 10 node(s)"),
    ("calico.yaml", "BGPPeer 'edge-firewall': peer 10.99.0.1", "not a ToR"),
    ("calico.yaml", "IPPool 'vm-pool-v6': fd5a:1:2::/48 is IPv6", "items[11].spec.cidr"),
    ("vmis.yaml", "interface 'storage' (10.40.0.9) is not reproduced", "items[2].status.interfaces[1]"),
    ("tor-a.conf", "filters from_nodes are not reproduced", ""),
    ("tor-d.conf", "not a BIRD config", ""),
    ("calico.yaml", "spec.serviceClusterIPs: BGPConfiguration 'default': Services are not emulated", ""),
    ("calico.yaml", "rule on 10.30.0.0/16: no lab prefix stands for it", "items[9].spec.exportV4[0].cidr"),
    (
        "calico.yaml",
        "bpfEnabled, floatingIPs, healthPort, logSeverityScreen, reportingInterval: not emulated",
        "",
    ),
]


@pytest.mark.parametrize(("file", "text", "where"), WARNINGS, ids=[w[1][:30] for w in WARNINGS])
def test_what_is_not_reproduced_is_a_warning_naming_the_object(
    result: ImportResult, file: str, text: str, where: str
) -> None:
    lines = [str(w) for w in result.warnings if text in str(w)]
    assert len(lines) == 1, [str(w) for w in result.warnings]
    assert lines[0].startswith(str(DATA / file)), lines[0]
    assert where in lines[0]
    if file.endswith(".yaml"):
        assert re.match(rf"{re.escape(str(DATA / file))}:\d+: ", lines[0]), lines[0]  # with its line


def test_nothing_else_is_dropped(result: ImportResult) -> None:
    assert len(result.warnings) == len(WARNINGS)


def test_the_crd_variant_is_the_same_lab() -> None:
    v3 = import_dump(options())
    crd = import_dump(options("calico-crd.yaml"))
    assert {**crd.lab, "description": ""} == {**v3.lab, "description": ""}
    assert crd.mapping == v3.mapping
    strip = [d for d in v3.resources if d["kind"] != "IPPool"]
    assert [d for d in crd.resources if d["kind"] != "IPPool"] == strip
    # (the CRD's IPPool lacks allowedUses, a v3-only field of this dump)


def test_max_nodes_per_rack_samples_with_a_note() -> None:
    res = import_dump(options(max_nodes_per_rack=2))
    nodes = nodes_of(res)
    rack_b = sorted(n for n, s in nodes.items() if s["rack"] == "rack-b")
    assert len(rack_b) == 2
    assert "kv-b-w-2" in rack_b  # it runs a VM
    assert {n for n, s in nodes.items() if s["rack"] == "rack-a"} == {"kv-a-rr-1", "kv-a-rr-2"}
    assert any("rack rack-b: 4 nodes sampled down to 2" in n for n in res.notes), res.notes
    assert any("kv-a-w-1" in n for n in res.notes)  # the VM on it is said to be left out too
    assert any("db-primary" in str(w) and "not in the lab" in str(w) for w in res.warnings)


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "/abs", ".."])
def test_a_lab_name_with_path_tricks_writes_nothing(tmp_path: Path, result: ImportResult, name: str) -> None:
    """The library function checks the name the lab file is named after, not only the CLI."""
    hostile = dataclasses.replace(result, lab={**result.lab, "name": name})
    out = tmp_path / "deep" / "er" / "acme"
    with pytest.raises(LabNameError, match="is not a valid lab name"):
        write_import(hostile, out)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == []


def test_the_written_lab_loads_and_names_its_files(tmp_path: Path, result: ImportResult) -> None:
    path = write_import(result, tmp_path / "acme")
    assert sorted(p.name for p in path.parent.iterdir()) == ["acme.yml", "calico.yaml", MAP_FILE]
    spec = load_lab(path)
    assert spec.clusters[0].block_size == 28
    assert [str(p) for p in spec.clusters[0].pools] == ["203.0.113.0/24"]
    assert spec.timers.bgp_established == 180
    assert CustomerMap.of_lab(spec.source) == result.mapping


def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "acme"
    argv = ["import", "--nodes", str(DATA / "nodes.yaml"), "--calico", str(DATA / "calico.yaml")]
    argv += ["--vmis", str(DATA / "vmis.yaml"), "--tor", str(DATA / "tor-a.conf"), "--out", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out / "acme.yml")
    assert "kvlab import: warning: " in captured.err
    assert load_lab(out / "acme.yml").name == "acme"  # the --out directory's name


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_hostile_yaml_is_refused(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with pytest.raises(SpecError, match="expand"):
        import_dump(options(nodes=write(tmp_path, "nodes.yaml", bomb)))


def test_hostile_names_and_labels_are_warnings(tmp_path: Path) -> None:
    nodes = yaml.safe_load((DATA / "nodes.yaml").read_text())
    nodes["items"][0]["metadata"]["name"] = "../../etc"
    nodes["items"][1]["metadata"]["labels"]["evil"] = "a\nb"
    vmis = yaml.safe_load((DATA / "vmis.yaml").read_text())
    vmis["items"][0]["metadata"]["name"] = "web;rm -rf /"
    res = import_dump(
        options(
            nodes=write(tmp_path, "nodes.yaml", yaml.safe_dump(nodes)),
            vmis=write(tmp_path, "vmis.yaml", yaml.safe_dump(vmis)),
        )
    )
    text = "\n".join(map(str, res.warnings))
    assert "items[0].metadata.name: Node '../../etc': not a Kubernetes name" in text
    assert "items[1].metadata.labels.evil" in text
    assert "items[0].metadata.name: VirtualMachineInstance 'web;rm -rf /': not a Kubernetes name" in text
    names = [n["name"] for n in res.lab["clusters"][0]["nodes"]] + [v["name"] for v in res.lab["vms"]]
    assert all(re.fullmatch(r"[a-z][a-z0-9-]{0,14}", n) for n in names)


def test_dumps_without_racks_are_an_error(tmp_path: Path) -> None:
    calico = write(
        tmp_path,
        "calico.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.244.0.0/16}\n",
    )
    with pytest.raises(ImportError_, match="no rack to reproduce"):
        import_dump(options(calico=calico))


def test_a_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "nodes.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match=r"not a regular file|FIFO"):
        import_dump(options(nodes=fifo))


def test_node_peerings_across_racks_are_a_warning(tmp_path: Path) -> None:
    """Route reflector clients in every rack, while every node also peers with its ToR: the lab
    reproduces it, and the import says it loops."""
    text = (
        (DATA / "calico.yaml")
        .read_text()
        .replace(
            "nodeSelector: acme.example/rack == 'rack-a' && !has(route-reflector)",
            "nodeSelector: '!has(route-reflector)'",
        )
    )
    res = import_dump(options(calico=write(tmp_path, "calico.yaml", text)))
    loops = [str(w) for w in res.warnings if "a routing loop" in str(w)]
    assert len(loops) == 1, loops
    assert "BGPPeer 'peer-with-route-reflectors'" in loops[0]
    assert "rack-b-rack-a" in loops[0]
    assert "items[5].spec.peerSelector" in loops[0]


def test_a_tor_config_with_another_as_is_a_warning(tmp_path: Path) -> None:
    conf = write(tmp_path, "tor-a.conf", (DATA / "tor-a.conf").read_text().replace("65101", "65999"))
    res = import_dump(options(tors=[conf]))
    assert any("local AS [65999] but the BGPPeers say AS 65101" in str(w) for w in res.warnings)
    assert {r["name"]: r["asn"] for r in res.lab["routers"]}["tor-rack-a"] == 65101


def test_more_nodes_than_the_pools_hold_is_an_error(tmp_path: Path) -> None:
    nodes = yaml.safe_load((DATA / "nodes.yaml").read_text())
    template = nodes["items"][3]  # a rack-b node
    for i in range(70):
        item = yaml.safe_load(yaml.safe_dump(template))
        item["metadata"]["name"] = f"kv-b-x-{i}.dc1.acme.example"
        item["metadata"]["annotations"]["projectcalico.org/IPv4Address"] = f"10.20.2.{100 + i}/24"
        nodes["items"].append(item)
    path = write(tmp_path, "nodes.yaml", yaml.safe_dump(nodes))
    with pytest.raises(ImportError_, match="--max-nodes-per-rack"):
        import_dump(options(nodes=path))
    res = import_dump(options(nodes=path, max_nodes_per_rack=4))
    assert len(res.lab["clusters"][0]["nodes"]) == 3 + 4 + 2 + 1
