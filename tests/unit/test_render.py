"""harness.render.bird: BIRD 1.6 configs for routers and for nodes (calico-node emulation).

The shipped labs' configs (labs/*.yml) are compared whole with golden files,
tests/data/golden/<lab>/<router or node>.conf, each of which passes the real `bird -p`. After a
deliberate change to the templates or the emulation, regenerate them and review the diff:

    KVLAB_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render.py -k golden
    git diff tests/data/golden

The other tests render variants of a lab and check what the configs mean (sessions, AS
numbers, filters); every variant's configs pass `bird -p` too.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from labfiles import lab_data

from harness.errors import LabError, SpecError
from harness.generate import fabric_lab, write_lab
from harness.labfile import load_lab
from harness.render.bird import (
    check_config,
    logging_to_stderr,
    render_node,
    render_router,
    rendered_configs,
)
from harness.spec import LabSpec, cluster_resources
from harness.topology import Topology, resolve

REPO = Path(__file__).resolve().parents[2]
HAVE_BIRD = (shutil.which("bird") or shutil.which("bird", path="/usr/sbin:/sbin")) is not None
needs_bird = pytest.mark.skipif(
    not HAVE_BIRD, reason="BIRD is not installed (Debian package 'bird'): cannot run 'bird -p'"
)

V3 = "projectcalico.org/v3"
GOLDEN = REPO / "tests" / "data" / "golden"
SHIPPED_LABS = sorted(p.stem for p in (REPO / "labs").glob("*.yml"))
UPDATE_GOLDEN = os.environ.get("KVLAB_UPDATE_GOLDEN") == "1"


# -- helpers ---------------------------------------------------------------------------


def _resources(spec: LabSpec) -> dict[str, list[Any]]:
    return cluster_resources(spec)


def render_all(spec: LabSpec) -> dict[str, str]:
    topo = resolve(spec)
    res = _resources(spec)
    out = {r.name: render_router(topo, r.name) for r in spec.routers}
    for cluster, node in spec.all_nodes():
        out[node.name] = render_node(topo, node.name, res.get(cluster.name, []))
    return out


def node_config(spec: LabSpec, node: str) -> str:
    cluster, _ = spec.node(node)
    return render_node(resolve(spec), node, _resources(spec)[cluster.name])


def bgp_protocols(text: str) -> dict[str, str]:
    """`protocol bgp NAME [from T] { BODY }` blocks of a config, by name."""
    pattern = re.compile(r"^protocol bgp (\S+)(?: from \S+)? \{\n(.*?)^\}", re.M | re.S)
    return {m.group(1): m.group(2) for m in pattern.finditer(text)}


def function_body(text: str, name: str) -> str:
    m = re.search(rf"^function {name}\([^)]*\) \{{\n(.*?)^\}}", text, re.M | re.S)
    assert m, f"no function {name} in config"
    return m.group(1)


def neighbor(body: str) -> tuple[str, int]:
    m = re.search(r"neighbor (\S+) as (\d+);", body)
    assert m, body
    return m.group(1), int(m.group(2))


def bgpconfig(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": "BGPConfiguration", "metadata": {"name": "default"}, "spec": spec}


def bgppeer(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": "BGPPeer", "metadata": {"name": name}, "spec": spec}


def lab_with(tmp_path: Path, resources: list[dict[str, Any]], **changes: Any) -> LabSpec:
    """The default lab with other Calico resources (inline) and optional top-level changes."""
    data = lab_data("default")
    data["clusters"][0]["resources"] = resources
    data.update(changes)
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_lab(path)


NO_MESH = bgpconfig(asNumber=64512, nodeToNodeMeshEnabled=False)


@pytest.fixture(scope="module")
def default_spec() -> LabSpec:
    return load_lab(REPO / "labs" / "default.yml")


# -- the shipped labs: golden files -----------------------------------------------------


def golden_files(lab: str) -> dict[str, Path]:
    return {p.stem: p for p in sorted((GOLDEN / lab).glob("*.conf"))}


@pytest.mark.parametrize("lab", SHIPPED_LABS)
def test_shipped_lab_configs_match_the_golden_files(lab: str) -> None:
    """Every router's and node's config of labs/<lab>.yml, as the netns runtime renders it."""
    configs = {  # a bird6 config ('tor1/bird6') is the golden file tor1.bird6.conf
        entity.replace("/", "."): text
        for entity, _, text in rendered_configs(load_lab(REPO / "labs" / f"{lab}.yml"))
    }
    if UPDATE_GOLDEN:
        (GOLDEN / lab).mkdir(parents=True, exist_ok=True)
        for entity, path in golden_files(lab).items():
            if entity not in configs:
                path.unlink()
        for entity, text in configs.items():
            (GOLDEN / lab / f"{entity}.conf").write_text(text)
    golden = golden_files(lab)
    assert set(configs) == set(golden), f"routers and nodes of labs/{lab}.yml vs {GOLDEN / lab}"
    for entity, path in golden.items():
        expected = path.read_text()
        if configs[entity] != expected:
            diff = difflib.unified_diff(
                expected.splitlines(keepends=True),
                configs[entity].splitlines(keepends=True),
                str(path.relative_to(REPO)),
                f"rendered {entity}",
            )
            pytest.fail(
                f"{entity}'s config differs from its golden file (KVLAB_UPDATE_GOLDEN=1 rewrites it):\n"
                + "".join(diff),
                pytrace=False,
            )


@pytest.mark.parametrize("lab", [*SHIPPED_LABS, "fabric-6x3"])
def test_configs_with_log_files_are_each_entitys_own_render(lab: str, tmp_path: Path) -> None:
    """`rendered_configs` with log files (what the netns runtime writes: one pass over the lab,
    confd's view of each cluster derived once) is, config for config, what rendering each router
    and node alone gives; its text with the log file taken out is the stderr render `bird -p`
    checks, byte for byte."""
    if lab == "fabric-6x3":
        spec = load_lab(write_lab(fabric_lab(6, 3), tmp_path / "fabric.yml"))
    else:
        spec = load_lab(REPO / "labs" / f"{lab}.yml")
    topo, res = resolve(spec), _resources(spec)

    def log(entity: str, family: int) -> str:
        return f"/run/kvlab-test/{lab}/{entity}/bird{'' if family == 4 else '6'}.log"

    with_logs = rendered_configs(spec, log)
    plain = rendered_configs(spec)
    assert [label for label, _, _ in with_logs] == [label for label, _, _ in plain]
    for (label, _, text), (_, _, stderr_text) in zip(with_logs, plain, strict=True):
        entity, family = label.removesuffix("/bird6"), 6 if label.endswith("/bird6") else 4
        if topo.entities[entity] == "router":
            alone = render_router(topo, entity, log(entity, family), family)
        else:
            cluster, _ = spec.node(entity)
            alone = render_node(topo, entity, res.get(cluster.name, []), log(entity, family), family)
        assert text == alone, label
        assert f'log "{log(entity, family)}" all;' in text
        assert logging_to_stderr(text) == stderr_text, label
        assert logging_to_stderr(stderr_text) == stderr_text


def test_every_shipped_lab_has_golden_files() -> None:
    assert SHIPPED_LABS == [
        "default",
        "dual-stack",
        "nested",
        "nested-dual-stack",
        "nested-qemu",
        "single-rack",
    ]
    assert sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()) == SHIPPED_LABS


@needs_bird
@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*/*.conf")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_golden_config_passes_bird_parse_check(path: Path) -> None:
    check_config(path.read_text(), "bird6" if path.name.endswith(".bird6.conf") else "bird")


# -- every config parses ---------------------------------------------------------------


@needs_bird
@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (8, 4)], ids=lambda rn: f"fabric-{rn[0]}x{rn[1]}")
def test_every_config_passes_bird_parse_check(tmp_path: Path, shape: tuple[int, int]) -> None:
    spec = load_lab(write_lab(fabric_lab(*shape), tmp_path / "lab.yml"))
    configs = render_all(spec)
    assert len(configs) == len(spec.routers) + len(spec.all_nodes())
    for name, text in configs.items():
        try:
            check_config(text)
        except LabError as e:
            pytest.fail(f"{name}: {e}")


@needs_bird
def test_check_config_reports_birds_complaint() -> None:
    with pytest.raises(LabError) as ei:
        check_config("protocol bgp x {")
    assert "syntax error" in str(ei.value)
    assert "line 1" in str(ei.value)  # BIRD's line number


def test_check_config_without_bird_is_a_lab_error() -> None:
    with pytest.raises(LabError, match="not installed"):
        check_config("router id 1.2.3.4;", bird="kvlab-no-such-bird")


@needs_bird
def test_check_config_message_shows_the_offending_line() -> None:
    text = "router id 1.2.3.4;\nprotocol bgp x { neighbor 1.2.3.5 as 65000; local as 65001; bogus; }\n"
    with pytest.raises(LabError) as ei:
        check_config(text)
    assert "bogus" in str(ei.value)


# -- routers ---------------------------------------------------------------------------


def test_router_without_community_preference(tmp_path: Path) -> None:
    data = lab_data("default")
    data["routers"][1]["community_preference"] = False
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_lab(path)
    text = render_router(resolve(spec), "tor1")
    assert "bgp_community" not in text
    assert "import all;" in text


def test_router_custom_elevated_community(tmp_path: Path) -> None:
    data = lab_data("default")
    data["routers"][1]["elevated_community"] = "64999:7"
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    text = render_router(resolve(load_lab(path)), "tor1")
    assert re.search(r"\(64999, ?7\) ~ bgp_community", text)


def test_router_large_elevated_community_is_refused(tmp_path: Path) -> None:
    """The ToR filter matches a standard community; a large one would silently match nothing."""
    data = lab_data("default")
    data["routers"][1]["elevated_community"] = "65000:100:1"
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError, match="large community; use a standard one"):
        load_lab(path)


# -- nodes -----------------------------------------------------------------------------


MESH_LAB = """\
name: mesh
routers: [{name: tor1, role: tor, asn: 65001}]
racks: [{name: r1, tor: tor1, subnet: 198.18.1.0/24}]
clusters:
  - name: kv
    pools: [203.0.113.0/24]
    nodes:
      - {name: a, rack: r1, ip: 198.18.1.11}
      - {name: b, rack: r1, ip: 198.18.1.9}
      - {name: c, rack: r1, ip: 198.18.1.100}
    resources: RESOURCES
"""


@pytest.mark.parametrize(
    "resources",
    ["[{apiVersion: projectcalico.org/v3, kind: BGPConfiguration, metadata: {name: default}}]", "[]"],
)
def test_mesh_is_on_by_default(tmp_path: Path, resources: str) -> None:
    path = tmp_path / "mesh.yml"
    path.write_text(MESH_LAB.replace("RESOURCES", resources))
    spec = load_lab(path)
    configs = render_all(spec)
    ips = {"a": "198.18.1.11", "b": "198.18.1.9", "c": "198.18.1.100"}
    passive: dict[tuple[str, str], bool] = {}
    for node, my_ip in ips.items():
        protos = bgp_protocols(configs[node])
        expected = {f"Mesh_{ip.replace('.', '_')}": ip for n, ip in ips.items() if n != node}
        assert set(protos) == set(expected), node
        for name, ip in expected.items():
            body = protos[name]
            assert neighbor(body) == (ip, 64512)
            assert "calico_export_to_bgp_peers(true);" in body  # iBGP
            is_passive = "passive on;" in body
            # calico-node compares the address strings: "198.18.1.9" > "198.18.1.11" > "198.18.1.100"
            assert is_passive is (ip > my_ip), (node, ip)
            passive[(node, ip)] = is_passive
    # every pair has exactly one passive side, so exactly one side connects
    for a, ip_a in ips.items():
        for b, ip_b in ips.items():
            if a < b:
                assert passive[(a, ip_b)] != passive[(b, ip_a)]
    assert passive[("a", "198.18.1.9")] is True  # string order, not numeric order
    assert passive[("a", "198.18.1.100")] is False
    if HAVE_BIRD:
        for text in configs.values():
            check_config(text)


def test_global_bgppeer_on_every_node(tmp_path: Path) -> None:
    spec = lab_with(tmp_path, [NO_MESH, bgppeer("tor1-all", peerIP="198.18.1.1", asNumber=65001)])
    for _, node in spec.all_nodes():
        protos = bgp_protocols(node_config(spec, node.name))
        assert set(protos) == {"Global_198_18_1_1"}, node.name
        assert neighbor(protos["Global_198_18_1_1"]) == ("198.18.1.1", 65001)


def test_bgppeer_for_one_node(tmp_path: Path) -> None:
    spec = lab_with(
        tmp_path, [NO_MESH, bgppeer("only-n2", node="r1-n2", peerIP="198.18.1.1", asNumber=65001)]
    )
    assert set(bgp_protocols(node_config(spec, "r1-n2"))) == {"Node_198_18_1_1"}
    for other in ("r1-n1", "r2-n1", "r2-n2"):
        assert bgp_protocols(node_config(spec, other)) == {}, other


def test_bgppeer_node_selector(tmp_path: Path) -> None:
    spec = lab_with(
        tmp_path, [NO_MESH, bgppeer("r2", nodeSelector="rack == 'r2'", peerIP="198.18.2.1", asNumber=65002)]
    )
    assert set(bgp_protocols(node_config(spec, "r2-n1"))) == {"Node_198_18_2_1"}
    assert bgp_protocols(node_config(spec, "r1-n1")) == {}


def test_bgppeer_peer_selector(tmp_path: Path) -> None:
    spec = lab_with(
        tmp_path, [NO_MESH, bgppeer("r1-to-r2", nodeSelector="rack == 'r1'", peerSelector="rack == 'r2'")]
    )
    for node in ("r1-n1", "r1-n2"):
        protos = bgp_protocols(node_config(spec, node))
        assert {neighbor(b) for b in protos.values()} == {("198.18.2.11", 64512), ("198.18.2.12", 64512)}
        assert all(name.startswith("Node_") for name in protos)


def test_global_bgppeer_peer_selector_skips_self(tmp_path: Path) -> None:
    spec = lab_with(tmp_path, [NO_MESH, bgppeer("to-r2", peerSelector="rack == 'r2'")])
    protos = bgp_protocols(node_config(spec, "r2-n1"))
    # r2-n2 as a forward peer (not itself); r1's nodes through reverse peering, since they peer with it.
    assert {neighbor(b)[0] for b in protos.values()} == {"198.18.2.12", "198.18.1.11", "198.18.1.12"}
    assert len(protos) == 3  # one protocol per neighbour
    protos = bgp_protocols(node_config(spec, "r1-n1"))
    assert {neighbor(b)[0] for b in protos.values()} == {"198.18.2.11", "198.18.2.12"}


def test_peer_selector_reverse_peering_is_automatic(tmp_path: Path) -> None:
    spec = lab_with(
        tmp_path, [NO_MESH, bgppeer("r1-to-r2", nodeSelector="rack == 'r1'", peerSelector="rack == 'r2'")]
    )
    protos = bgp_protocols(node_config(spec, "r2-n1"))
    assert {neighbor(b)[0] for b in protos.values()} == {"198.18.1.11", "198.18.1.12"}


def test_reverse_peering_manual_leaves_the_selected_side_alone(tmp_path: Path) -> None:
    spec = lab_with(
        tmp_path,
        [
            NO_MESH,
            bgppeer(
                "r1-to-r2", nodeSelector="rack == 'r1'", peerSelector="rack == 'r2'", reversePeering="Manual"
            ),
        ],
    )
    assert bgp_protocols(node_config(spec, "r2-n1")) == {}
    assert {neighbor(b)[0] for b in bgp_protocols(node_config(spec, "r1-n1")).values()} == {
        "198.18.2.11",
        "198.18.2.12",
    }


def test_two_bgppeers_for_one_peer_make_one_protocol(tmp_path: Path) -> None:
    spec = lab_with(
        tmp_path,
        [
            NO_MESH,
            bgppeer("a", nodeSelector="rack == 'r1'", peerIP="198.18.1.1", asNumber=65001),
            bgppeer("b", node="r1-n1", peerIP="198.18.1.1", asNumber=65001),
        ],
    )
    text = node_config(spec, "r1-n1")
    assert len(re.findall(r"^protocol bgp Node_198_18_1_1 ", text, re.M)) == 1


def test_disable_bgp_export_pool_is_rejected(tmp_path: Path) -> None:
    pool = {
        "apiVersion": V3,
        "kind": "IPPool",
        "metadata": {"name": "vm-pool"},
        "spec": {"cidr": "203.0.113.0/24", "disableBGPExport": True},
    }
    spec = lab_with(tmp_path, [NO_MESH, pool, bgppeer("t", peerIP="198.18.1.1", asNumber=65001)])
    text = node_config(spec, "r1-n1")
    export = function_body(text, "calico_export_to_bgp_peers")
    assert "if (net ~ 203.0.113.0/24) then { reject; }" in export.split("calico_aggr();")[0]
    assert "accept" not in export.split("calico_aggr();")[1]
    if HAVE_BIRD:
        check_config(text)


def test_per_node_asn_is_the_local_as(tmp_path: Path) -> None:
    data = lab_data("default")
    data["clusters"][0]["nodes"][0]["asn"] = 64600
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_lab(path)
    topo: Topology = resolve(spec)
    res = _resources(spec)["kv"]
    text = render_node(topo, "r1-n1", res)
    assert "local as 64600;" in text
    assert "local as 64512;" in render_node(topo, "r1-n2", res)
    tor = bgp_protocols(render_router(topo, "tor1"))
    assert neighbor(tor["bgp_r1_n1"]) == ("198.18.1.11", 64600)
    if HAVE_BIRD:
        check_config(text)


def test_log_file_is_configured(default_spec: LabSpec) -> None:
    topo = resolve(default_spec)
    text = render_node(topo, "r1-n1", _resources(default_spec)["kv"], log_file="/tmp/kvlab-test/bird.log")
    assert 'log "/tmp/kvlab-test/bird.log" all;' in text
    assert 'log "/tmp/kvlab-test/r.log" all;' in render_router(topo, "tor1", log_file="/tmp/kvlab-test/r.log")
