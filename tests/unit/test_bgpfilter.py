"""How BGPFilters and route priority render into a node's BIRD 1.6 config (no lab needed).

The expected BIRD text is what calico-node's confd renders for the same resources; configs
are parse-checked with `bird -p` where BIRD is installed.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness.calico import bgpfilter as bf
from harness.calico import confd, seeds
from harness.calico import resources as cr
from harness.generate import fabric_lab, write_lab
from harness.labfile import load_lab
from harness.render.bird import check_config, render_node
from harness.spec import cluster_resources
from harness.topology import Topology, resolve

API = "projectcalico.org/v3"
needs_bird = pytest.mark.skipif(
    shutil.which("bird", path="/usr/sbin:/usr/bin:/sbin:/bin") is None, reason="needs BIRD ('bird -p')"
)


def rule(**fields: Any) -> cr.FilterRule:
    return cr.FilterRule.model_validate(fields)


def bgp_filter(name: str, **spec: Any) -> cr.BGPFilter:
    return cr.BGPFilter.model_validate(
        {"apiVersion": API, "kind": "BGPFilter", "metadata": {"name": name}, "spec": spec}
    )


SEED = cr.BGPFilter.model_validate(seeds.kubevirt_live_migration_filter())


# ---- names --------------------------------------------------------------------------------


def test_function_names_are_quoted_symbols() -> None:
    assert (
        bf.function_name("kubevirt-live-migration", "import")
        == "'bgp_kubevirt-live-migration_importFilterV4'"
    )
    assert bf.function_name("f", "export", 6) == "'bgp_f_exportFilterV6'"
    with pytest.raises(ValueError, match="direction"):
        bf.function_name("f", "both")


def test_long_filter_names_are_cut_and_hashed_to_64_characters() -> None:
    fits = "a" * 45
    assert bf.function_name(fits, "import") == f"'bgp_{fits}_importFilterV4'"
    long = "my-very-long-bgp-filter-name-for-the-customer-edge-routers"
    name = bf.function_name(long, "export").strip("'")
    digest = hashlib.sha256(long.encode()).hexdigest().upper()[:16]
    assert name == f"bgp_{long[:28]}_{digest}_exportFilterV4"
    assert len(name) == bf.MAX_SYMBOL


# ---- one rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"cidr": "10.0.0.0/8", "matchOperator": "In"}, "(net ~ 10.0.0.0/8)"),
        ({"cidr": "10.0.0.0/8", "matchOperator": "NotIn"}, "(net !~ 10.0.0.0/8)"),
        ({"cidr": "10.0.0.0/8", "matchOperator": "Equal"}, "(net = 10.0.0.0/8)"),
        ({"cidr": "10.0.0.0/8", "matchOperator": "NotEqual"}, "(net != 10.0.0.0/8)"),
        (
            {"cidr": "10.0.0.0/8", "matchOperator": "In", "prefixLength": {"min": 16, "max": 24}},
            "(net ~ [ 10.0.0.0/8{16,24} ])",
        ),
        ({"source": "RemotePeers"}, "((defined(source))&&(source ~ [ RTS_BGP ]))"),
        ({"interface": "eth*"}, '((defined(ifname))&&(ifname ~ "eth*"))'),
        ({"communities": {"values": ["65000:100"]}}, "((65000, 100) ~ bgp_community)"),
        ({"communities": {"values": ["65000:100:7"]}}, "((65000, 100, 7) ~ bgp_large_community)"),
        ({"asPathPrefix": [65000]}, "(bgp_path ~ [= 65000 * =])"),
        ({"asPathPrefix": [65000, 65001]}, "(bgp_path ~ [= 65000 65001 * =])"),
        ({"priority": 512}, "(defined(bgp_local_pref)&&(bgp_local_pref = 2147483135))"),
    ],
)
def test_each_match_field(fields: dict[str, Any], expected: str) -> None:
    assert bf.conditions(rule(action="Accept", **fields)) == [expected]


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({}, "{24,32}"),  # min: the CIDR's length, max: 32
        ({"max": 28}, "{24,28}"),
        ({"min": 16}, "{24,32}"),  # never below the CIDR's own length
        ({"min": 30, "max": 40}, "{30,32}"),  # never above 32 for IPv4
    ],
)
def test_prefix_length_bounds(bounds: dict[str, int], expected: str) -> None:
    r = rule(action="Reject", cidr="192.0.2.0/24", matchOperator="In", prefixLength=bounds)
    assert bf.conditions(r) == [f"(net ~ [ 192.0.2.0/24{expected} ])"]


def test_prefix_length_bounds_ipv6() -> None:
    r = rule(action="Reject", cidr="fd00::/8", matchOperator="In", prefixLength={"min": 48})
    assert bf.conditions(r, family=6) == ["(net ~ [ fd00::/8{48,128} ])"]


def test_equal_and_not_equal_with_prefix_length_compare_a_prefix_with_a_set() -> None:
    """Calico's quirk, kept: the operator is applied to the prefix set as it is."""
    eq = rule(action="Accept", cidr="10.0.0.0/8", matchOperator="Equal", prefixLength={"min": 32})
    ne = rule(action="Accept", cidr="10.0.0.0/8", matchOperator="NotEqual", prefixLength={"min": 32})
    assert bf.conditions(eq) == ["(net = [ 10.0.0.0/8{32,32} ])"]
    assert bf.conditions(ne) == ["(net != [ 10.0.0.0/8{32,32} ])"]


def test_conditions_come_in_calicos_order_and_are_anded() -> None:
    r = rule(
        action="Accept",
        priority=100,
        asPathPrefix=[65000],
        communities={"values": ["65000:42"]},
        interface="eth1",
        source="RemotePeers",
        cidr="192.168.0.0/16",
        matchOperator="In",
    )
    assert bf.statement(r) == (
        "if ((net ~ 192.168.0.0/16)&&((defined(source))&&(source ~ [ RTS_BGP ]))"
        '&&((defined(ifname))&&(ifname ~ "eth1"))&&((65000, 42) ~ bgp_community)'
        "&&(bgp_path ~ [= 65000 * =])&&(defined(bgp_local_pref)&&(bgp_local_pref = 2147483547)))"
        " then { accept; }"
    )


def test_operations_in_order() -> None:
    r = rule(
        action="Accept",
        operations=[
            {"setPriority": {"value": 256}},
            {"addCommunity": {"value": "65000:200"}},
            {"addCommunity": {"value": "65000:300:400"}},
            {"prependASPath": {"prefix": [65001, 65002]}},
        ],
    )
    assert bf.operations(r) == [
        "bgp_local_pref = 2147483391;",
        "bgp_community.add((65000, 200));",
        "bgp_large_community.add((65000, 300, 400));",
        # last first: the path then starts 65001 65002
        "bgp_path.prepend(65002);",
        "bgp_path.prepend(65001);",
    ]
    assert bf.statement(r).startswith("bgp_local_pref = 2147483391; ")
    assert bf.statement(r).endswith("bgp_path.prepend(65001); accept;")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"action": "Reject"}, "reject;"),
        ({"action": "Accept"}, "accept;"),
        ({"action": "Accept", "peerType": "iBGP"}, "if (is_same_as) then { accept; }"),
        (
            {"action": "Reject", "peerType": "eBGP", "cidr": "10.0.0.0/8", "matchOperator": "In"},
            "if (!is_same_as) then { if ((net ~ 10.0.0.0/8)) then { reject; } }",
        ),
    ],
)
def test_bare_actions_and_peer_type_guards(fields: dict[str, Any], expected: str) -> None:
    assert bf.statement(rule(**fields)) == expected


# ---- functions ------------------------------------------------------------------------------


def test_seed_filter_functions() -> None:
    assert bf.function_definitions([SEED]) == [
        "# v4 BGPFilter kubevirt-live-migration",
        "function 'bgp_kubevirt-live-migration_importFilterV4'() {",
        "  if (((65000, 100) ~ bgp_community)) then { bgp_local_pref = 2147483135; accept; }",
        "}",
        "function 'bgp_kubevirt-live-migration_exportFilterV4'(bool is_same_as) {",
        "  if (!is_same_as) then { if ((defined(bgp_local_pref)&&(bgp_local_pref = 2147483135)))"
        " then { bgp_community.add((65000, 100)); accept; } }",
        "}",
    ]


def test_functions_per_direction_and_family_in_name_order() -> None:
    export_only = bgp_filter("b-export", exportV4=[{"action": "Reject"}])
    v6_only = bgp_filter("c-v6", importV6=[{"action": "Accept"}])
    import_only = bgp_filter(
        "a-import", importV4=[{"action": "Accept", "cidr": "10.0.0.0/8", "matchOperator": "In"}]
    )
    lines = bf.function_definitions([v6_only, export_only, import_only])
    assert lines == [
        "# v4 BGPFilter a-import",
        "function 'bgp_a-import_importFilterV4'() {",
        "  if ((net ~ 10.0.0.0/8)) then { accept; }",
        "}",
        "# v4 BGPFilter b-export",
        "function 'bgp_b-export_exportFilterV4'() {",
        "  reject;",
        "}",
    ]
    assert bf.function_definitions([v6_only], family=6)[1] == "function 'bgp_c-v6_importFilterV6'() {"
    assert bf.function_definitions([]) == ["# No v4 BGPFilters configured"]


# ---- a session's filters ---------------------------------------------------------------------


def test_export_filter_maps_priority_before_user_functions() -> None:
    filters = {"kubevirt-live-migration": SEED}
    body = bf.export_filter(["kubevirt-live-migration"], filters, same_as=False, normal_priority=1024)
    assert body == [
        "if (defined(source) && source = RTS_BGP && defined(bgp_local_pref)) then {",
        "  krt_metric = 2147483647 - bgp_local_pref;",
        "} else {",
        "  if (!defined(krt_metric)) then { krt_metric = 1024; }",
        "  bgp_local_pref = 2147483647 - krt_metric;",
        "}",
        "'bgp_kubevirt-live-migration_exportFilterV4'(false);",
        "calico_export_to_bgp_peers(false);",
        "reject;",
    ]


def test_import_filter_runs_user_functions_then_preference_then_accept() -> None:
    filters = {"kubevirt-live-migration": SEED}
    body = bf.import_filter(["kubevirt-live-migration"], filters, same_as=False, normal_priority=1024)
    assert body == [
        "'bgp_kubevirt-live-migration_importFilterV4'();",
        "if (defined(bgp_local_pref)&&(bgp_local_pref > 2147482623)) then",
        "  preference = 200;",
        "accept;",
    ]


def test_session_calls_follow_the_peers_order_and_skip_empty_directions() -> None:
    typed = bgp_filter(
        "typed", importV4=[{"action": "Accept", "peerType": "iBGP"}], exportV4=[{"action": "Reject"}]
    )
    export_only = bgp_filter("export-only", exportV4=[{"action": "Accept", "peerType": "eBGP"}])
    filters = {f.metadata.name: f for f in (typed, export_only)}
    names = ["export-only", "missing", "typed"]
    exported = bf.export_filter(names, filters, same_as=True, normal_priority=1024)
    assert exported[6:] == [
        "'bgp_export-only_exportFilterV4'(true);",
        "'bgp_typed_exportFilterV4'();",
        "calico_export_to_bgp_peers(true);",
        "reject;",
    ]
    imported = bf.import_filter(names, filters, same_as=True, normal_priority=1024)
    assert imported[0] == "'bgp_typed_importFilterV4'(true);"
    assert len(imported) == 4


def test_no_filter_still_maps_priority() -> None:
    """Mesh peers and peers without filters: the priority mapping alone."""
    assert bf.import_filter([], {}, same_as=True, normal_priority=1024)[0].startswith(
        "if (defined(bgp_local_pref)"
    )
    export = bf.export_filter([], {}, same_as=True, normal_priority=1024)
    assert export[-2:] == ["calico_export_to_bgp_peers(true);", "reject;"]
    assert len(export) == 8


def test_normal_priority_moves_every_threshold() -> None:
    assert "bgp_local_pref > 2147481647" in bf.import_filter([], {}, same_as=True, normal_priority=2000)[0]
    assert "krt_metric = 2000;" in bf.export_filter([], {}, same_as=True, normal_priority=2000)[3]
    assert bf.aggregation("203.0.113.0/26", 2000) == [
        "if ( net = 203.0.113.0/26 ) then { accept; }",
        "if ( net ~ 203.0.113.0/26 && krt_metric < 2000 ) then { accept; }",
        "if ( net ~ 203.0.113.0/26 ) then { reject; }",
    ]
    assert bf.kernel_priority(2000) == [
        "if (defined(source) && (source = RTS_BGP) && !defined(krt_metric)) then {",
        "  krt_metric = 2000;",
        "  if (defined(bgp_local_pref)) then {",
        "    krt_metric = 2147483647 - bgp_local_pref;",
        "  }",
        "  if (krt_metric < 2000) then {",
        "    preference = 200;",
        "  }",
        "}",
    ]


def test_priority_local_pref_round_trip() -> None:
    assert bf.local_pref(512) == 2147483135
    assert bf.priority(bf.local_pref(1024)) == 1024


# ---- a node's whole config (confd + node.conf.j2) --------------------------------------------

EVERYTHING = {
    "apiVersion": API,
    "kind": "BGPFilter",
    "metadata": {"name": "everything-a-customer-edge-could-ever-want-to-filter"},
    "spec": {
        "exportV4": [
            {"action": "Reject", "cidr": "203.0.113.0/24", "matchOperator": "NotIn"},
            {
                "action": "Accept",
                "cidr": "203.0.113.0/24",
                "matchOperator": "Equal",
                "prefixLength": {"min": 32},
            },
            {
                "action": "Reject",
                "cidr": "203.0.113.0/24",
                "matchOperator": "NotEqual",
                "prefixLength": {"max": 30},
            },
            {"action": "Accept", "source": "RemotePeers", "interface": "eth*", "peerType": "iBGP"},
            {
                "action": "Accept",
                "peerType": "eBGP",
                "priority": 512,
                "communities": {"values": ["64512:1:2"]},
                "asPathPrefix": [64512, 65001],
                "operations": [
                    {"addCommunity": {"value": "65000:100"}},
                    {"addCommunity": {"value": "65000:1:2"}},
                    {"prependASPath": {"prefix": [64512, 64512]}},
                    {"setPriority": {"value": 300}},
                ],
            },
            {"action": "Reject"},
        ],
        "importV4": [
            {
                "action": "Accept",
                "communities": {"values": ["65000:100"]},
                "operations": [{"setPriority": {"value": 512}}],
            },
            {
                "action": "Reject",
                "cidr": "198.51.100.0/24",
                "matchOperator": "In",
                "prefixLength": {"min": 25, "max": 28},
            },
        ],
    },
}


def lab_topology(
    tmp_path: Path,
    *,
    mesh: bool,
    extra: list[dict[str, Any]],
    r2_peer: dict[str, Any] | None = None,
    **bgp: Any,
) -> tuple[Topology, list[Any]]:
    """fabric_lab(2, 2) with EVERYTHING and the seed filter on both ToR peers."""
    data = fabric_lab(2, 2, name="unit-flt")
    resources = data["clusters"][0]["resources"]
    resources[0]["spec"].update(nodeToNodeMeshEnabled=mesh, **bgp)
    for r in resources:
        if r["kind"] == "BGPPeer":
            r["spec"]["filters"] = [EVERYTHING["metadata"]["name"], "kubevirt-live-migration"]
            if r["metadata"]["name"] == "rack-r2-tor":
                r["spec"].update(r2_peer or {})
    resources += [EVERYTHING, *extra]  # fabric_lab already carries the seed filter
    spec = load_lab(write_lab(data, tmp_path / "lab.yml"))
    return resolve(spec), cluster_resources(spec)["kv"]


def test_node_config_wires_filters_and_priority(tmp_path: Path) -> None:
    topo, items = lab_topology(tmp_path, mesh=True, extra=[])
    cfg = confd.node_bird_config(topo, "r1-n1", items)
    assert [p.name for p in cfg.peers] == [
        "Mesh_198_18_1_12",
        "Mesh_198_18_2_11",
        "Mesh_198_18_2_12",
        "Node_198_18_1_1",
    ]
    tor = cfg.peers[-1]
    assert not tor.same_as
    assert tor.filters == ("everything-a-customer-edge-could-ever-want-to-filter", "kubevirt-live-migration")
    long_name = bf.function_name(tor.filters[0], "export").strip("'")
    assert len(long_name) == 64
    assert tor.export_filter[6:] == (
        f"'{long_name}'(false);",
        "'bgp_kubevirt-live-migration_exportFilterV4'(false);",
        "calico_export_to_bgp_peers(false);",
        "reject;",
    )
    mesh = cfg.peers[0]
    assert mesh.same_as
    assert mesh.filters == ()
    assert mesh.import_filter == tuple(bf.import_filter([], {}, same_as=True, normal_priority=1024))
    assert any(line.startswith(f"function '{long_name}'(bool is_same_as)") for line in cfg.filter_functions)


def test_local_as_number_decides_ibgp(tmp_path: Path) -> None:
    topo, items = lab_topology(tmp_path, mesh=False, extra=[], r2_peer={"localASNumber": 65002})
    cfg = confd.node_bird_config(topo, "r2-n2", items)
    (tor,) = cfg.peers
    assert tor.local_asn == 65002
    assert tor.same_as
    assert tor.export_filter[-2] == "calico_export_to_bgp_peers(true);"
    assert "  local as 65002;" in render_node(topo, "r2-n2", items).splitlines()


def test_normal_route_priority_from_bgp_configuration(tmp_path: Path) -> None:
    topo, items = lab_topology(tmp_path, mesh=False, extra=[], ipv4NormalRoutePriority=2000)
    text = render_node(topo, "r1-n1", items)
    assert "  if ( net ~ 203.0.113.0/26 && krt_metric < 2000 ) then { accept; }" in text
    assert "    if (defined(bgp_local_pref)&&(bgp_local_pref > 2147481647)) then" in text
    assert "      if (!defined(krt_metric)) then { krt_metric = 2000; }" in text


def test_global_peer_selector_between_nodes_is_active_on_both_sides(tmp_path: Path) -> None:
    """As calico-node: only a peerIP BGPPeer to a Calico node is passive from the lower address
    (the mesh too); a peerSelector peering is not (Calico's golden ttl_security/global)."""
    peer = {
        "apiVersion": API,
        "kind": "BGPPeer",
        "metadata": {"name": "rack-r1-nodes"},
        "spec": {"peerSelector": "rack == 'r1'"},
    }
    topo, items = lab_topology(tmp_path, mesh=False, extra=[peer])
    low = {p.name: p for p in confd.node_bird_config(topo, "r1-n1", items).peers}
    high = {p.name: p for p in confd.node_bird_config(topo, "r1-n2", items).peers}
    assert not low["Global_198_18_1_12"].passive
    assert low["Global_198_18_1_12"].same_as
    assert not high["Global_198_18_1_11"].passive


@needs_bird
@pytest.mark.parametrize("mesh", [True, False])
def test_rendered_node_configs_parse(tmp_path: Path, mesh: bool) -> None:
    topo, items = lab_topology(tmp_path, mesh=mesh, extra=[])
    for node in ("r1-n1", "r2-n2"):
        check_config(render_node(topo, node, items, log_file=str(tmp_path / "bird.log")))


@needs_bird
def test_every_rule_shape_parses() -> None:
    """The functions of a filter using every match field and operation are valid BIRD 1.6."""
    f = cr.BGPFilter.model_validate(EVERYTHING)
    body = "\n".join(bf.function_definitions([f, SEED]))
    check_config(f"router id 192.0.2.1;\n{body}\nprotocol device {{ }}\n")
