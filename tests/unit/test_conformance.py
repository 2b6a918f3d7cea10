"""The calico-node emulation against Calico's own confd corpus (harness.calico.conformance),
the semantic BIRD config comparison it rests on (harness.calico.birdconf), and the render of a
node from Calico resources alone (harness.calico.cluster).

The corpus is the project's copy in ../shared/upstream/calico-confd; the tests that need it skip
without it. `bird -p` (Debian's `bird` and `bird6`) checks every config, ours and upstream's.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from labfiles import lab_data, write_lab_data
from pydantic import TypeAdapter, ValidationError

from harness import cli
from harness.calico import birdconf, confd, conformance
from harness.calico import cluster as cc
from harness.calico import resources as cr
from harness.labfile import load_lab
from harness.render.bird import UnsafeValue, check_config, render_calico_node, render_node
from harness.spec import cluster_resources
from harness.topology import resolve
from harness.yamlsrc import loads_documents

REPO = Path(__file__).resolve().parents[2]
CORPUS = conformance.DEFAULT_CORPUS
HAVE_BIRD = all(shutil.which(b) or shutil.which(b, path="/usr/sbin:/sbin") for b in ("bird", "bird6"))
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"Calico's confd corpus not found at {CORPUS}")
needs_bird = pytest.mark.skipif(
    not HAVE_BIRD, reason="BIRD is not installed (bird, bird6): cannot run 'bird -p'"
)
KVLM = "bgpfilter/kubevirt_live_migration"
ADAPTER: TypeAdapter[Any] = TypeAdapter(cr.ClusterResource)

# What the issue requires to match (IPv4 and, as the emulation renders it, IPv6 too).
REQUIRED = ("bgpfilter/*", "explicit_peering/*", "mesh/*", "reverse_peering/*", "next_hop_mode/*")
NOT_REQUIRED = {
    # routes from Kubernetes Services (service IP advertisement): not emulated
    "mesh/static-routes",
    "mesh/static-routes/step2",
    "mesh/static-routes-exclude-node",
    "mesh/static-routes-exclude-node/step2",
    "mesh/static-routes-no-ipv4-address",
}


@pytest.fixture(scope="module")
def report() -> conformance.Report:
    if not CORPUS.is_dir():
        pytest.skip(f"Calico's confd corpus not found at {CORPUS}")
    return conformance.run()


def _by_name(report: conformance.Report) -> dict[str, conformance.CaseResult]:
    return {r.case: r for r in report.results}


# -- the corpus ----------------------------------------------------------------------------


@needs_bird
def test_required_cases_match(report: conformance.Report) -> None:
    results = _by_name(report)
    required = [
        name
        for name in results
        if any(fnmatch.fnmatchcase(name, p) for p in REQUIRED) and name not in NOT_REQUIRED
    ]
    assert len(required) >= 55
    assert {"explicit_peering/local_bgp_peer", "explicit_peering/keepnexthop"} <= set(required)
    bad = {n: (results[n].status, results[n].reason) for n in required if results[n].status != "match"}
    assert bad == {}


@needs_bird
def test_no_case_differs_and_every_unsupported_case_says_why(report: conformance.Report) -> None:
    assert report.totals()["differs"] == 0
    assert report.exit_code == 0
    unsupported = {r.case: r.reason for r in report.results if r.status == "unsupported"}
    assert set(unsupported) == NOT_REQUIRED | {"cluster_routes/enabled", "cluster_routes/ipip-only"}
    assert all(reason and len(reason) > 20 for reason in unsupported.values())
    assert "krt_tunnel" in unsupported["cluster_routes/enabled"]
    assert "Service" in unsupported["mesh/static-routes"]


@needs_bird
def test_every_config_passes_bird_p_ours_and_upstreams(report: conformance.Report) -> None:
    """Each family of each compared case went through bird -p (bird6 -p for IPv6): ours always
    passes; upstream's does too, except where it needs Calico's BIRD fork (krt_tunnel)."""
    families = [f for r in report.results for f in r.families]
    assert len(families) >= 2 * 80
    assert all(f.checked for f in families)
    assert [f for f in families if f.bird_ours] == []
    refused = {r.case for r in report.results for f in r.families if f.bird_expected}
    assert refused == {"cluster_routes/enabled", "cluster_routes/ipip-only"}
    assert all("krt_tunnel" in f.bird_expected for r in report.results for f in r.families if f.bird_expected)


def test_deviations_are_declared_per_case(report: conformance.Report) -> None:
    """kvlab's on-purpose differences show on the cases that have them, and nothing else is excused."""
    results = _by_name(report)
    assert results[KVLM].deviations == ["kernel-import", "logging"]
    assert {d.name for d in conformance.DEVIATIONS} == {"kernel-import", "logging"}
    assert results["idle_peers"].deviations == []  # a count of BGP protocols: nothing compared
    assert results["idle_peers"].note == "1 BGP protocols, upstream's driver expects 1"
    kernel = next(d for d in conformance.DEVIATIONS if d.name == "kernel-import")
    assert kernel.matches(
        birdconf.Difference("protocol kernel kernel1: import", ("filter", "calico_kernel_import"), ("all",))
    )
    assert not kernel.matches(
        birdconf.Difference("protocol kernel kernel1: import", ("filter", "other"), ("all",))
    )
    assert not kernel.matches(
        birdconf.Difference("protocol kernel kernel1: export", ("filter", "calico_kernel_import"), ("all",))
    )
    assert not kernel.matches(birdconf.Difference("filter calico_kernel_import", None, ("accept", ";")))


def test_the_run_is_fast(report: conformance.Report) -> None:
    assert report.seconds < 30


def test_case_table_matches_the_corpus() -> None:
    """Every golden directory of the corpus has a case (else it would be reported unsupported
    'no driver facts'), and every case with a golden file exists in the corpus."""
    if not CORPUS.is_dir():
        pytest.skip(f"Calico's confd corpus not found at {CORPUS}")
    golden = set(conformance._golden_dirs(conformance.corpus_dir(None)))
    cases = {c.name for c in conformance.CASES if c.peerings is None}
    assert golden == cases


# -- the comparison can fail -----------------------------------------------------------------


def _copy_case(tmp_path: Path, case: str, inputs: tuple[str, ...]) -> Path:
    root = tmp_path / "corpus"
    shutil.copytree(CORPUS / "compiled_templates" / case, root / "compiled_templates" / case)
    for inp in inputs:
        shutil.copytree(CORPUS / "mock_data" / "calicoctl" / inp, root / "mock_data" / "calicoctl" / inp)
    return root


@needs_corpus
def test_a_changed_filter_line_makes_the_case_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy_case(tmp_path, KVLM, (KVLM,))
    golden = root / "compiled_templates" / KVLM / "bird.cfg"
    text = golden.read_text()
    line = "bgp_community.add((65000, 100)); accept;"
    assert text.count(line) == 1
    golden.write_text(text.replace(line, "bgp_community.add((65000, 101)); accept;"))

    report = conformance.run(root, KVLM)
    (result,) = report.results
    assert result.status == "differs"
    (fam,) = [f for f in result.families if f.differences]
    assert fam.family == 4
    (diff,) = fam.differences
    assert diff.key == "function 'bgp_kubevirt-lm_exportFilterV4'"
    lines = diff.diff()
    assert "-      bgp_community.add((65000, 101));" in lines
    assert "+      bgp_community.add((65000, 100));" in lines

    assert cli.main(["conformance", "--corpus", str(root), "--case", KVLM]) == 1
    out = capsys.readouterr().out
    assert f"differs      {KVLM}" in out
    assert "bgp_community.add((65000, 101));" in out


@needs_corpus
def test_a_dropped_option_and_a_reordered_rule_differ(tmp_path: Path) -> None:
    case = "bgpfilter/match_operators"
    root = _copy_case(tmp_path, case, (case,))
    golden = root / "compiled_templates" / case / "bird.cfg"
    text = golden.read_text()
    rules = [ln for ln in text.splitlines() if ln.startswith("  if ((net ")]
    assert len(rules) >= 2
    text = text.replace(rules[0] + "\n", "").replace(rules[1], rules[1] + "\n" + rules[0], 1)
    golden.write_text(text.replace("  add paths on;\n", ""))
    (result,) = conformance.run(root, case).results
    keys = {d.key for f in result.families for d in f.differences}
    assert result.status == "differs"
    assert any(k.startswith("function 'bgp_") for k in keys)
    assert any(k.endswith(": add paths") for k in keys)


@needs_corpus
def test_whitespace_and_comments_do_not_count(tmp_path: Path) -> None:
    root = _copy_case(tmp_path, KVLM, (KVLM,))
    golden = root / "compiled_templates" / KVLM / "bird.cfg"
    golden.write_text(
        golden.read_text().replace("  neighbor ", "\n\t  # a comment\n  neighbor   ").replace("((", "( (")
    )
    (result,) = conformance.run(root, KVLM).results
    assert result.status == "match"


# -- bad input -------------------------------------------------------------------------------


def test_a_missing_corpus_is_exit_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-corpus"
    assert cli.main(["conformance", "--corpus", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "no such directory" in err
    (tmp_path / "flat").mkdir()
    assert cli.main(["conformance", "--corpus", str(tmp_path / "flat")]) == 2
    assert "mock_data/calicoctl" in capsys.readouterr().err


@needs_corpus
def test_an_unmatched_case_glob_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["conformance", "--case", "no-such/*"]) == 2
    assert "--case no-such/*" in capsys.readouterr().err


@needs_corpus
def test_a_corpus_file_leading_outside_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy_case(tmp_path, KVLM, (KVLM,))
    secret = tmp_path / "outside.cfg"
    secret.write_text("router id 1.2.3.4;\n")
    aggr = root / "compiled_templates" / KVLM / "bird_aggr.cfg"
    aggr.unlink()
    aggr.symlink_to(secret)
    assert cli.main(["conformance", "--corpus", str(root), "--case", KVLM]) == 2
    assert "leads outside the corpus" in capsys.readouterr().err


@needs_corpus
def test_an_include_of_another_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy_case(tmp_path, KVLM, (KVLM,))
    golden = root / "compiled_templates" / KVLM / "bird.cfg"
    golden.write_text(golden.read_text().replace('include "bird_ipam.cfg";', 'include "/etc/passwd";'))
    assert cli.main(["conformance", "--corpus", str(root), "--case", KVLM]) == 2
    assert "only bird_aggr.cfg, bird_ipam.cfg may be included" in capsys.readouterr().err


@needs_corpus
def test_an_input_the_models_refuse_is_unsupported_with_the_field(tmp_path: Path) -> None:
    root = _copy_case(tmp_path, KVLM, (KVLM,))
    inp = root / "mock_data" / "calicoctl" / KVLM / "input.yaml"
    inp.write_text(inp.read_text().replace("peerIP: 10.192.0.3", 'peerIP: "10.192.0.3; protocol x"'))
    (result,) = conformance.run(root, KVLM).results
    assert result.status == "unsupported"
    assert "spec.peerIP" in (result.reason or "")
    assert "not an IP address" in (result.reason or "")


# -- output ----------------------------------------------------------------------------------


@needs_corpus
def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["conformance", "--json", "--case", "bgpfilter/*"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"] == {"match": 27, "differs": 0, "unsupported": 0}
    assert doc["upstream_commit"] == conformance.UPSTREAM_COMMIT
    kvlm = next(c for c in doc["cases"] if c["case"] == KVLM)
    assert kvlm["status"] == "match"
    assert [f["family"] for f in kvlm["families"]] == [4, 6]
    assert set(doc["deviations"]) == {"kernel-import", "logging"}


def test_readme_table_is_the_results(report: conformance.Report) -> None:
    """README's table is generated (`kvlab conformance --write-readme`): it must equal the results."""
    text = (REPO / "README.md").read_text()
    start, end = conformance.readme_section(text)
    assert text[start:end].strip() == conformance.readme_table(report).strip()


def test_readme_table_shows_a_change_in_results(report: conformance.Report) -> None:
    changed = conformance.Report(report.corpus, list(report.results[1:]), report.seconds)
    assert conformance.readme_table(changed) != conformance.readme_table(report)


# -- birdconf --------------------------------------------------------------------------------


def test_birdconf_applies_templates_and_names_anonymous_protocols() -> None:
    cfg = birdconf.read(
        """
        template bgp base { local as 1; multihop; connect delay time 2; }
        template bgp mid from base { connect delay time 3; }
        protocol bgp Peer_1 from mid { neighbor 10.0.0.1 as 2; multihop 4; }
        protocol static { route 10.0.0.0/24 blackhole; route 10.1.0.0/24 via 10.0.0.1; }
        protocol kernel { import all; }
        protocol kernel { import none; }
        """
    )
    peer = cfg.protocols["Peer_1"].options
    assert peer[("local", "as")] == ("1",)
    assert peer[("multihop",)] == ("4",)
    assert peer[("connect", "delay", "time")] == ("3",)
    assert cfg.protocols["static1"].options[("route", "10.1.0.0/24")] == ("via", "10.0.0.1")
    assert cfg.protocols["kernel2"].options[("import",)] == ("none",)


def test_birdconf_compares_tokens_in_order() -> None:
    a = birdconf.read("function f() { if (net ~ 10.0.0.0/8) then { accept; } reject; }")
    b = birdconf.read("function f()\n{\n  if ( net ~ 10.0.0.0/8 ) then { accept; }  # same\n  reject;\n}")
    c = birdconf.read("function f() { reject; if (net ~ 10.0.0.0/8) then { accept; } }")
    assert birdconf.compare(a, b) == []
    (diff,) = birdconf.compare(a, c)
    assert diff.key == "function f"


def test_birdconf_refuses_what_it_cannot_read() -> None:
    with pytest.raises(birdconf.ConfigError, match="unbalanced"):
        birdconf.read("function f() { }}")
    with pytest.raises(birdconf.ConfigError, match="unterminated"):
        birdconf.read("protocol bgp x { neighbor 10.0.0.1 as 1;")
    with pytest.raises(birdconf.ConfigError, match="no template"):
        birdconf.read("protocol bgp x from nowhere { }")
    with pytest.raises(birdconf.ConfigError, match="may be included"):
        birdconf.read('include "x.cfg";', {"y.cfg": ""})


# -- a node from Calico resources alone --------------------------------------------------------


def _node(name: str, ipv4: str, **bgp: Any) -> dict[str, Any]:
    return {
        "apiVersion": cr.API_VERSION,
        "kind": "Node",
        "metadata": {"name": name, "labels": {"rack": "r1"}},
        "spec": {"bgp": {"ipv4Address": ipv4, **bgp}},
    }


def _peer(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": cr.API_VERSION, "kind": "BGPPeer", "metadata": {"name": name}, "spec": spec}


def _bgpconf(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": cr.API_VERSION,
        "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": spec,
    }


def _load(*docs: dict[str, Any]) -> list[Any]:
    return [ADAPTER.validate_python(d, context=cr.CALICO_API) for d in docs]


@needs_bird
def test_a_lab_node_renders_the_same_from_calico_resources_alone() -> None:
    """One renderer: a lab's node, and the same cluster described by Calico Nodes and explicit
    block affinities, give the same BIRD config."""
    spec = load_lab(REPO / "labs" / "default.yml")
    topo = resolve(spec)
    resources = cluster_resources(spec)["kv"]
    nodes = [
        cr.Node.model_validate(
            {
                "apiVersion": cr.API_VERSION,
                "kind": "Node",
                "metadata": {"name": n.name, "labels": {"rack": n.rack}},
                "spec": {
                    "bgp": {"ipv4Address": str(topo.node_address[n.name]), "asNumber": topo.node_asn[n.name]}
                },
            }
        )
        for n in spec.cluster("kv").nodes
    ]
    blocks = {n: [cc.BlockAffinity(b) for b in topo.node_blocks[n]] for n in topo.node_blocks}
    alone = cc.from_resources([*resources, *nodes], blocks)
    for node in ("r1-n1", "r2-n2"):
        text = render_calico_node(alone, node)
        assert text == render_node(topo, node, resources)
        check_config(text)


def test_from_resources_peerings_follow_calico_node() -> None:
    res = _load(
        _bgpconf(),
        _node("a", "10.0.0.2/24"),
        _node("b", "10.0.0.3/24"),
        _node("c", "10.0.0.1/24", routeReflectorClusterID="1.0.0.1"),
        _peer("tor", peerIP="10.0.0.254:1179", asNumber=65001),
        _peer("to-b", node="a", peerIP="10.0.0.3", asNumber=64512),
        _peer("rr", nodeSelector="has(rack)", peerSelector="has(rack)"),
    )
    cluster = cc.from_resources(res, {"a": [cc.BlockAffinity(ipaddress.ip_network("192.0.2.0/26"))]})
    peers = {p.name: p for p in confd.node_config(cluster, "a").peers}
    # the mesh skips the route reflector c; the explicit peering to b is a Node_ peer beside the mesh
    assert set(peers) == {"Global_10_0_0_254_port_1179", "Mesh_10_0_0_3", "Node_10_0_0_3", "Node_10_0_0_1"}
    assert peers["Mesh_10_0_0_3"].passive
    assert not peers["Node_10_0_0_3"].passive
    assert peers["Global_10_0_0_254_port_1179"].port == 1179
    on_rr = {p.name: p for p in confd.node_config(cluster, "c").peers}
    assert on_rr["Node_10_0_0_2"].rr_cluster_id == "1.0.0.1"  # c reflects to a: a is its rr client
    assert confd.node_config(cluster, "a", 6).peers == []  # no IPv6 address: no IPv6 BGP
    with pytest.raises(confd.InputError, match="no Calico Node named 'zz'"):
        confd.node_config(cluster, "zz")


def test_bird_programming_ipip_routes_is_unsupported() -> None:
    res = _load(
        _node("a", "10.0.0.2/24"),
        _bgpconf(programClusterRoutes="Enabled"),
        {
            "apiVersion": cr.API_VERSION,
            "kind": "IPPool",
            "metadata": {"name": "p"},
            "spec": {"cidr": "192.0.2.0/24", "ipipMode": "Always"},
        },
    )
    with pytest.raises(confd.Unsupported, match="krt_tunnel"):
        confd.node_config(cc.from_resources(res), "a")


def test_node_and_peer_fields_are_typed() -> None:
    with pytest.raises(ValidationError, match="not an address"):
        ADAPTER.validate_python(_node("a", "10.0.0.2/24; protocol x"), context=cr.CALICO_API)
    with pytest.raises(ValidationError, match="not an IPv6 address"):
        ADAPTER.validate_python(_node("a", "10.0.0.2/24", ipv6Address="10.0.0.3/24"), context=cr.CALICO_API)
    with pytest.raises(ValidationError, match="routeReflectorClusterID"):
        ADAPTER.validate_python(_node("a", "10.0.0.2/24", routeReflectorClusterID="x"), context=cr.CALICO_API)
    # Calico takes IPv6 and ports; a lab file (no context) takes IPv6 (dual stack) but no port
    for ip in ("2001:db8::1", "10.0.0.1:1179", "[2001:db8::1]:1179"):
        ADAPTER.validate_python(_peer("p", peerIP=ip, asNumber=1), context=cr.CALICO_API)
        if ":1179" in ip:
            with pytest.raises(ValidationError):
                TypeAdapter(cr.CalicoResource).validate_python(_peer("p", peerIP=ip, asNumber=1))
        else:
            TypeAdapter(cr.CalicoResource).validate_python(_peer("p", peerIP=ip, asNumber=1))
    for bad in ("10.0.0.1:0", "10.0.0.1:99999", "2001:db8::1:x", "[10.0.0.1]:179"):
        with pytest.raises(ValidationError, match="not an IP address"):
            ADAPTER.validate_python(_peer("p", peerIP=bad, asNumber=1), context=cr.CALICO_API)


def test_a_password_cannot_leave_its_bird_string() -> None:
    res = _load(
        _bgpconf(),
        _node("a", "10.0.0.2/24"),
        _peer("p", peerIP="10.0.0.9", asNumber=1, password={"secretKeyRef": {"name": "s", "key": "k"}}),
    )
    cluster = cc.from_resources(
        res, secrets={("s", "k"): 'x"; protocol static { route 0.0.0.0/0 blackhole; }'}
    )
    with pytest.raises(UnsafeValue, match="quote or backslash"):
        render_calico_node(cluster, "a")


def test_community_values_load_as_strings() -> None:
    """Kubernetes reads `5663:12` as a string (no YAML 1.1 base-60 integers), as the corpus needs."""
    (doc,), _ = loads_documents("communities: [5663:12, 100:555:107]\nlabel: yes\nn: 12\n", "x")
    assert doc == {"communities": ["5663:12", "100:555:107"], "label": True, "n": 12}


def test_a_lab_bird_cannot_render_is_refused_before_anything_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lab asking BIRD to program IPIP routes (Calico's BIRD fork) is exit 2 at validate, as at up."""
    data = lab_data()
    docs = data["clusters"][0]["resources"]
    next(d for d in docs if d["kind"] == "IPPool")["spec"]["ipipMode"] = "Always"
    next(d for d in docs if d["kind"] == "BGPConfiguration")["spec"]["programClusterRoutes"] = "Enabled"
    lab = write_lab_data(data, tmp_path / "ipip.yml")
    assert cli.main(["validate", str(lab)]) == 2
    err = capsys.readouterr().err
    assert "IPPool vm-pool" in err
    assert "krt_tunnel" in err
