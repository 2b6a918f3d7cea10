"""Hostile input, unit by unit: the YAML loader's limits, the typed values of lab files and
Calico resources, the BIRD templates' last line of defence, and `check_rendered`.

The same inputs through the real CLI (exit 2, nothing created) are the corpus in
tests/integration/test_hostile_input_cli.py.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from harness.calico import confd
from harness.calico import resources as cr
from harness.errors import SpecError
from harness.labfile import load_lab, resource_file
from harness.render import bird
from harness.spec import LabSpec, Timers
from harness.topology import resolve
from harness.yamlsrc import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    format_path,
    loads_documents,
    read_file,
    shown,
)

REPO = Path(__file__).resolve().parents[2]
V3 = "projectcalico.org/v3"
HAVE_BIRD = (shutil.which("bird") or shutil.which("bird", path="/usr/sbin:/sbin")) is not None
needs_bird = pytest.mark.skipif(not HAVE_BIRD, reason="BIRD is not installed: cannot run 'bird -p'")

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
MERGE_BOMB = "a0: &a0 {k0: v, k1: v}\n" + "".join(
    f"a{i}: &a{i}\n  <<: [{', '.join([f'*a{i - 1}'] * 8)}]\n  x{i}: v\n" for i in range(1, 12)
)


def _one_issue(text: str) -> str:
    with pytest.raises(SpecError) as ei:
        loads_documents(text, "lab.yml")
    (issue,) = ei.value.issues
    assert "\n" not in str(issue)
    return str(issue)


# -- the loader: files -------------------------------------------------------------------


def _refused_file(path: Path, reason: str) -> None:
    t0 = time.process_time()  # CPU time: a loaded machine does not inflate it
    with pytest.raises(SpecError) as ei:
        read_file(path, "shown.yml")
    assert time.process_time() - t0 < 1
    (issue,) = ei.value.issues
    assert issue.file == "shown.yml"
    assert reason in issue.message


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "res.yaml"
    os.mkfifo(fifo)
    _refused_file(fifo, "is a FIFO")


@pytest.mark.parametrize(
    ("path", "reason"), [("/dev/zero", "character device"), ("/dev/null", "character device")]
)
def test_a_device_is_refused(path: str, reason: str) -> None:
    _refused_file(Path(path), reason)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    _refused_file(tmp_path, "is a directory")


@pytest.mark.parametrize("path", ["/proc/self/status", "/proc/self/environ", "/sys/kernel/uevent_seqnum"])
def test_a_pseudo_file_is_refused(path: str) -> None:
    if not Path(path).exists():
        pytest.skip(f"{path} does not exist here")
    _refused_file(Path(path), "does not match its size")


def test_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    _refused_file(tmp_path / "zero.yaml", "character device")


def test_a_file_above_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: costs nothing to make, would cost to read
    _refused_file(big, "larger than 4 MiB")


def test_a_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    p = tmp_path / "max.yaml"
    p.write_bytes(b"a: 1\n" + b"#" * (MAX_FILE_BYTES - 6) + b"\n")
    assert len(read_file(p, "max.yaml")) == MAX_FILE_BYTES


def test_non_utf8_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    _refused_file(p, "not UTF-8 text (byte 9)")


def test_a_missing_file_names_the_reason(tmp_path: Path) -> None:
    _refused_file(tmp_path / "nope.yml", "No such file or directory")


# -- the loader: what documents expand to ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"), [(BILLION_LAUGHS, "alias or merge-key bomb"), (MERGE_BOMB, "bomb")]
)
def test_bombs_are_refused_in_milliseconds(text: str, reason: str) -> None:
    t0 = time.process_time()  # CPU time: a loaded machine does not inflate it
    message = _one_issue(text)
    assert time.process_time() - t0 < 1
    assert reason in message
    assert f"more than {MAX_NODES:,} YAML nodes" in message


def test_a_bomb_issue_names_the_line_of_the_exploding_anchor() -> None:
    message = _one_issue(BILLION_LAUGHS)
    line = int(message.split(":")[1])
    assert BILLION_LAUGHS.splitlines()[line - 1].startswith("f:")  # 1.1 million nodes, e has 111,111


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "&a [1, *a]\n", "a: &a {b: *a}\n", "a: &a {<<: *a}\n"])
def test_recursive_aliases_are_refused(text: str) -> None:
    assert "recursive alias" in _one_issue(text)


def test_deep_nesting_is_refused() -> None:
    assert f"nested more than {MAX_DEPTH} levels deep" in _one_issue("[" * 70 + "]" * 70)
    t0 = time.process_time()  # CPU time: a loaded machine does not inflate it
    message = _one_issue("a: " + "[" * 100_000 + "]" * 100_000)
    assert time.process_time() - t0 < 1
    assert f"nested more than {MAX_DEPTH} levels deep" in message or "maximum nesting depth" in message


def test_the_node_budget_counts_every_document() -> None:
    doc = "[" + ", ".join(["1"] * 1000) + "]\n"
    with pytest.raises(SpecError, match="the file expands to more than"):
        loads_documents("---\n".join([doc] * (MAX_NODES // 1000 + 1)), "many.yaml")


def test_moderate_aliases_still_expand_like_safe_load() -> None:
    text = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\nc: {x: *a}\n"
    (data,), _ = loads_documents(text, "x.yml")
    assert data == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text",
    [
        # the earlier merge wins, the mapping's own key wins
        "b: &b {x: 1, y: 1}\nc: &c {x: 2, z: 2}\na:\n  <<: [*b, *c]\n  y: 5\n",
        "b: &b {x: 1}\na:\n  <<: *b\n  x: 2\n",  # overriding a merged key is no duplicate
        "b: &b {x: 1}\nc: &c {<<: *b, y: 2}\na: {<<: *c, z: 3}\n",  # merges of merges
    ],
)
def test_merge_keys_resolve_like_safe_load(text: str) -> None:
    (data,), _ = loads_documents(text, "x.yml")
    assert data == yaml.safe_load(text)


def test_merged_keys_keep_the_anchor_lines_and_own_keys_theirs() -> None:
    text = "base: &n {rack: r1, asn: 65010}\nnodes:\n  - <<: *n\n    asn: 65011\n"
    _, (smap,) = loads_documents(text, "x.yml")
    assert smap.line(("nodes", 0, "rack")) == 1
    assert smap.line(("nodes", 0, "asn")) == 4


def test_a_merge_of_a_scalar_is_refused() -> None:
    assert "merge key '<<' takes a mapping" in _one_issue("a: {<<: 3, b: 1}\n")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('"rou\\nters": []\n', "is not a field name"),
        ('"a\\0": 1\n', "is not a field name"),
        (f"{'k' * 600}: 1\n", "is not a field name"),
        ("? [a, b]\n: 1\n", "must be a plain value"),
        ("? {a: b}\n: 1\n", "must be a plain value"),
    ],
)
def test_keys_must_be_printable_scalars(text: str, reason: str) -> None:
    assert reason in _one_issue(text)


@pytest.mark.parametrize(
    "text",
    [
        '!!python/object/apply:os.system ["touch /tmp/kvlab-hostile"]\n',
        "a: !!python/name:os.system\n",
        "a: !custom x\n",
    ],
)
def test_unsafe_tags_are_refused(text: str) -> None:
    assert "invalid YAML" in _one_issue(text) or "unsupported YAML tag" in _one_issue(text)
    assert not Path("/tmp/kvlab-hostile").exists()


def test_shown_escapes_and_cuts() -> None:
    assert shown("a\nb") == "'a\\nb'"
    assert len(shown("x" * 10_000)) <= 64


# -- Kubernetes names and labels ------------------------------------------------------------

_RESOURCE: TypeAdapter[Any] = TypeAdapter(cr.CalicoResource)


def _peer(metadata: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": "BGPPeer", "metadata": metadata or {"name": "p"}, "spec": spec}


def _refused(doc: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as ei:
        _RESOURCE.validate_python(doc)
    (error,) = ei.value.errors()
    assert field in ".".join(str(x) for x in error["loc"])
    assert reason in error["msg"]
    assert "\n" not in error["msg"]


@pytest.mark.parametrize(
    "name",
    ["a\nb", "a b", "A", "-a", "a-", "a..b", "a'b", 'a"b', "a;b", "a/b", "", "a" * 254, "a_b", "á"],
)
def test_object_names_are_dns_subdomains(name: str) -> None:
    _refused(_peer({"name": name}), "metadata.name", "DNS-1123 subdomain")


@pytest.mark.parametrize("name", ["a", "default", "node.r1-n1", "a" * 253, "rack-r1-tor", "0.1.2"])
def test_valid_object_names(name: str) -> None:
    _RESOURCE.validate_python(_peer({"name": name}))


@pytest.mark.parametrize(
    ("metadata", "field", "reason"),
    [
        ({"name": "p", "namespace": "Kube"}, "metadata.namespace", "DNS-1123 label"),
        ({"name": "p", "namespace": "a.b"}, "metadata.namespace", "DNS-1123 label"),
        ({"name": "p", "labels": {"a b": "x"}}, "metadata.labels", "qualified name"),
        ({"name": "p", "labels": {"example.com/": "x"}}, "metadata.labels", "qualified name"),
        ({"name": "p", "labels": {"/x": "x"}}, "metadata.labels", "qualified name"),
        ({"name": "p", "labels": {"a/b/c": "x"}}, "metadata.labels", "qualified name"),
        ({"name": "p", "labels": {"Bad_Prefix/x": "x"}}, "metadata.labels", "qualified name"),
        ({"name": "p", "labels": {"x": "a\nb"}}, "metadata.labels", "label value"),
        ({"name": "p", "labels": {"x": "v" * 64}}, "metadata.labels", "label value"),
        ({"name": "p", "annotations": {"a\nb": "x"}}, "metadata.annotations", "qualified name"),
        ({"name": "p", "annotations": {"x": "y" * 300_000}}, "metadata.annotations", "limit"),
    ],
)
def test_metadata_syntax(metadata: dict[str, Any], field: str, reason: str) -> None:
    _refused(_peer(metadata), field, reason)


def test_valid_labels_and_annotations() -> None:
    labels = {"rack": "r1", "kubernetes.io/hostname": "r1-n1", "a.b/c_d-e.f": "", "x": "A-1_b.2"}
    annotations = {"Example.COM/Free": "any text\nat all"}
    _RESOURCE.validate_python(_peer({"name": "p", "labels": labels, "annotations": annotations}))


# -- typed values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"peerIP": '198.18.1.1; log "/tmp/x" all'}, "peerIP", "is not an IP address"),
        ({"peerIP": "198.18.1.1:179"}, "peerIP", "has a port"),
        ({"peerIP": "[2001:db8::1]:179"}, "peerIP", "has a port"),
        ({"peerIP": "2001:db8::1%eth0"}, "peerIP", "is not an IP address"),
        ({"peerIP": "198.18.1.1\n"}, "peerIP", "is not an IP address"),
        ({"keepaliveTime": "99999999h"}, "keepaliveTime", "out of range"),
        ({"keepaliveTime": "500ms"}, "keepaliveTime", "out of range"),
        ({"keepaliveTime": "121s"}, "keepaliveTime", "from 1 to 120"),
        ({"keepaliveTime": "10s; log"}, "keepaliveTime", "is not a duration"),
        ({"keepaliveTime": "-10s"}, "keepaliveTime", "is not a duration"),
        ({"keepaliveTime": "9" * 400 + "s"}, "keepaliveTime", "is not a duration"),
        ({"numAllowedLocalASNumbers": 99999999999}, "numAllowedLocalASNumbers", "less than or equal to 255"),
        ({"numAllowedLocalASNumbers": -1}, "numAllowedLocalASNumbers", "greater than or equal to 0"),
        ({"asNumber": 23456}, "asNumber", "AS_TRANS"),
        ({"asNumber": 65535}, "asNumber", "reserved"),
        ({"asNumber": 4294967295}, "asNumber", "reserved"),
        ({"asNumber": 4294967296}, "asNumber", "less than or equal to 4294967295"),
        ({"localASNumber": 0}, "localASNumber", "greater than or equal to 1"),
        ({"filters": ["ok", "x'); accept; #"]}, "filters.1", "filter name"),
        ({"node": "r1-n1\nx"}, "node", "node name"),
        ({"nodeSelector": "rack == 'r1'" + " && has(x)" * 200}, "nodeSelector", "at most 1024"),
        ({"nodeSelector": "(" * 400 + "all()" + ")" * 400}, "nodeSelector", "nests too deeply"),
        ({"peerSelector": "rack = 'r1'"}, "peerSelector", "unexpected character"),
        ({"maxRestartTime": "99999h"}, "maxRestartTime", "out of range"),
        ({"ttlSecurity": 256}, "ttlSecurity", "less than or equal to 255"),
    ],
)
def test_bgppeer_values(spec: dict[str, Any], field: str, reason: str) -> None:
    _refused(_peer(**spec), field, reason)


def _filter(direction: str = "exportV4", **rule: Any) -> dict[str, Any]:
    return {
        "apiVersion": V3,
        "kind": "BGPFilter",
        "metadata": {"name": "f"},
        "spec": {direction: [{"action": "Accept", **rule}]},
    }


@pytest.mark.parametrize(
    ("doc", "field", "reason"),
    [
        (_filter(interface='eth0"; log "/tmp/x" all; #'), "interface", "interface name or pattern"),
        (_filter(interface="eth0\n"), "interface", "interface name or pattern"),
        (_filter(cidr="203.0.113.0/24 ] then { accept; }", matchOperator="In"), "cidr", "does not appear"),
        (_filter(cidr="2001:db8::/32", matchOperator="In"), "cidr", "V4 rule needs an IPv4 prefix"),
        (_filter("importV6", cidr="203.0.113.0/24", matchOperator="In"), "cidr", "V6 rule needs an IPv6"),
        (_filter(cidr="203.0.113.0/255.255.255.0", matchOperator="In"), "cidr", "not a prefix like"),
        (
            _filter(cidr="203.0.113.0/24", matchOperator="In", prefixLength={"max": 99}),
            "exportV4.0",
            "above /32",
        ),
        (_filter(communities={"values": ["65000:100\n"]}), "communities", "not a BGP community"),
        (_filter(communities={"values": ["65000:100); log"]}), "communities", "not a BGP community"),
        (
            _filter(operations=[{"addCommunity": {"value": "65000:100 ) ; log"}}]),
            "addCommunity.value",
            "not a BGP community",
        ),
        (_filter(operations=[{"prependASPath": {"prefix": [23456]}}]), "prefix.0", "AS_TRANS"),
        (_filter(operations=[{"setPriority": {"value": 2147483647}}]), "setPriority.value", "less than"),
        (_filter(asPathPrefix=list(range(1, 70))), "asPathPrefix", "at most 64"),
    ],
)
def test_bgpfilter_values(doc: dict[str, Any], field: str, reason: str) -> None:
    _refused(doc, field, reason)


def _doc(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": kind, "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(
    ("doc", "field", "reason"),
    [
        (_doc("IPPool", "p", cidr="203.0.113.0/24; x"), "cidr", "not an IP network"),
        (
            _doc("FelixConfiguration", "default", liveMigrationRouteConvergenceTime="99999999h"),
            "liveMigrationRouteConvergenceTime",
            "at most 1h",
        ),
        (_doc("BGPConfiguration", "default", asNumber=0), "asNumber", "greater than or equal to 1"),
    ],
)
def test_other_resource_values(doc: dict[str, Any], field: str, reason: str) -> None:
    _refused(doc, field, reason)


def test_valid_keepalive_and_durations() -> None:
    for text in ("1s", "10s", "2m", "1m30s", "120s"):
        _RESOURCE.validate_python(_peer(keepaliveTime=text))
    assert cr.parse_duration("1m30s") == 90


@pytest.mark.parametrize("text", ["", "inf", "nan", "1e9s", "1.5", "s", "10s "])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        cr.parse_duration(text)


# -- lab file values ------------------------------------------------------------------------


def _default_data() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "labs" / "default.yml").read_text())
    data["clusters"][0]["resources"] = []
    return data


def _lab_refused(data: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as ei:
        LabSpec.model_validate(data)
    errors = [e for e in ei.value.errors() if field in ".".join(str(x) for x in e["loc"])]
    assert errors, ei.value.errors()
    assert any(reason in e["msg"] for e in errors), errors


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("../../../etc/passwd", "is a path"),
        ("/etc/passwd", "is a path"),
        ("bird-configs/router.conf.j2", "is a path"),
        ("./router.conf.j2", "is a path"),
        ("nope.conf.j2", "not a router template"),
        ("node.conf.j2", "not a router template"),
        ("router.conf.j2\n", "not a router template"),
    ],
)
def test_router_template_is_a_shipped_router_template(template: str, reason: str) -> None:
    data = _default_data()
    data["routers"][0]["template"] = template
    _lab_refused(data, "routers.0.template", reason)


def test_router_template_by_name_is_accepted() -> None:
    data = _default_data()
    data["routers"][0]["template"] = "router.conf.j2"
    assert LabSpec.model_validate(data).routers[0].template == "router.conf.j2"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        (("timers", "bgp_established"), float("inf"), "finite number"),
        (("timers", "migration"), float("nan"), "finite number"),
        (("timers", "migration"), 1e9, "less than or equal to 3600"),
        (("timers", "migration_source_cleanup"), -1, "greater than or equal to 0"),
        (("description",), "line one\nline two", "one line"),
        (("description",), "x" * 2000, "at most 1024"),
        (("routers", 0, "elevated_community"), "65000:100) ~ bgp_community) then {", "not a BGP community"),
        (("routers", 0, "elevated_community"), "1:2:3", "large community"),
        (("routers", 0, "asn"), 23456, "AS_TRANS"),
        (("clusters", 0, "nodes", 0, "labels"), {"zone": "a b"}, "label value"),
        (("clusters", 0, "nodes", 0, "labels"), {"bad key": "a"}, "qualified name"),
        (("vms", 0, "labels"), {"x": "y\n"}, "label value"),
        (("vms", 0, "mac"), "ee:ee:ee:ee:ee:ee\n", "should match pattern"),
        (("clusters", 0, "block_size"), 64, "less than or equal to 32"),
        (("name",), "../../tmp/x", "should match pattern"),
    ],
)
def test_lab_values(field: tuple[Any, ...], value: Any, reason: str) -> None:
    data = _default_data()
    target = data
    for part in field[:-1]:
        target = target.setdefault(part, {}) if isinstance(part, str) else target[part]
    target[field[-1]] = value
    _lab_refused(data, ".".join(map(str, field)), reason)


def test_timers_within_bounds_are_accepted() -> None:
    assert Timers(bgp_established=3600, migration=0.1, migration_source_cleanup=0).migration == 0.1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("/etc/passwd", "is an absolute path"),
        ("/dev/zero", "is an absolute path"),
        ("../outside.yaml", "leads outside the lab file's directory"),
        ("calico/../../outside.yaml", "leads outside the lab file's directory"),
        ("link.yaml", "leads outside the lab file's directory"),
        ("linkdir/x.yaml", "leads outside the lab file's directory"),
        ("a\nb.yaml", "is not a usable file name"),
        ("", "is not a usable file name"),
    ],
)
def test_resource_file_stays_inside_the_lab_directory(tmp_path: Path, value: str, reason: str) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    (tmp_path / "outside.yaml").write_text("kind: X\n")
    (lab / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    (lab / "linkdir").symlink_to(tmp_path)
    path, why = resource_file(lab, value)
    assert path is None
    assert reason in why
    assert "kvlab reads it as root" in why or "usable" in why


def test_resource_file_inside_the_lab_directory(tmp_path: Path) -> None:
    (tmp_path / "calico").mkdir()
    (tmp_path / "calico" / "r.yaml").write_text("")
    (tmp_path / "alias.yaml").symlink_to(tmp_path / "calico" / "r.yaml")
    assert resource_file(tmp_path, "calico/r.yaml") == ((tmp_path / "calico" / "r.yaml").resolve(), "")
    assert resource_file(tmp_path, "alias.yaml")[0] == (tmp_path / "calico" / "r.yaml").resolve()
    assert resource_file(tmp_path, "calico/../calico/r.yaml")[0] is not None


def test_load_lab_reports_the_resources_field(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "labs" / "default.yml").read_text())
    data["clusters"][0]["resources"] = "/dev/zero"
    (tmp_path / "lab.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as ei:
        load_lab(tmp_path / "lab.yml")
    (issue,) = ei.value.issues
    line = next(
        i for i, t in enumerate((tmp_path / "lab.yml").read_text().splitlines(), 1) if "resources:" in t
    )
    assert (issue.path, issue.line) == ("clusters[0].resources", line)
    assert "absolute path" in issue.message


def test_workload_peering_ip_must_be_the_lab_plan(tmp_path: Path) -> None:
    nested = REPO / "labs" / "nested.yml"
    data = yaml.safe_load(nested.read_text())
    for cluster in data["clusters"]:
        docs = [d for d in yaml.safe_load_all((nested.parent / cluster["resources"]).read_text()) if d]
        for d in docs:
            if cluster.get("parent") is None and d["kind"] == "BGPConfiguration":
                d["spec"]["localWorkloadPeeringIPV4"] = "10.0.0.1"
        cluster["resources"] = docs
    (tmp_path / "lab.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as ei:
        load_lab(tmp_path / "lab.yml")
    assert any(
        i.path.endswith("spec.localWorkloadPeeringIPV4") and "outside the lab's address plan" in i.message
        for i in ei.value.issues
    )


# -- the templates' last line of defence ------------------------------------------------------


def _default() -> LabSpec:
    return load_lab(REPO / "labs" / "default.yml")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"name": "Node_1 from bgp_template { }\nprotocol static { route 0.0.0.0/0 blackhole; }\n#"},
            "BIRD symbol",
        ),
        ({"source_resource": 'p\nlog "/tmp/kvlab-hostile" all;'}, "newline"),
        ({"ip": '198.18.1.1 as 1; log "/tmp/kvlab-hostile" all; #'}, "IPv4 address"),
        ({"asn": "65001; log"}, "unsigned 32-bit number"),
        ({"keepalive": True}, "unsigned 32-bit number"),
        ({"keepalive": 2**40}, "unsigned 32-bit number"),
        ({"import_filter": ('accept;\nlog "/tmp/kvlab-hostile" all;',)}, "newline"),
        ({"export_filter": ("reject; \x00",)}, "NUL"),
    ],
)
def test_an_unvalidated_value_cannot_reach_a_node_config(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], reason: str
) -> None:
    """Were a future field rendered unvalidated, the templates refuse it (a typed SpecError)."""
    real = confd.node_bird_config

    def tampered(*args: Any, **kwargs: Any) -> confd.NodeBirdConfig:
        cfg = real(*args, **kwargs)
        cfg.peers[0] = replace(cfg.peers[0], **change)
        return cfg

    monkeypatch.setattr(confd, "node_bird_config", tampered)
    spec = _default()
    with pytest.raises(bird.UnsafeValue) as ei:
        bird.render_node(resolve(spec), "r1-n1", spec_resources(spec))
    (issue,) = ei.value.issues
    assert issue.file == "bird-configs/node.conf.j2"
    assert reason in issue.message
    assert "\n" not in str(issue)
    assert not Path("/tmp/kvlab-hostile").exists()


def spec_resources(spec: LabSpec) -> list[Any]:
    from harness.spec import cluster_resources

    return cluster_resources(spec)["kv"]


@pytest.mark.parametrize(
    ("log_file", "reason"),
    [('/tmp/x" all; log "/tmp/kvlab-hostile', "quote or backslash"), ("/tmp/a\nb", "newline")],
)
def test_a_log_path_cannot_leave_its_string(log_file: str, reason: str) -> None:
    spec = _default()
    with pytest.raises(bird.UnsafeValue, match=reason):
        bird.render_router(resolve(spec), "tor1", log_file)
    with pytest.raises(bird.UnsafeValue, match=reason):
        bird.render_node(resolve(spec), "r1-n1", spec_resources(spec), log_file)


def test_unsafe_value_is_a_spec_error_the_cli_turns_into_exit_2() -> None:
    assert issubclass(bird.UnsafeValue, SpecError)


# -- bird -p before anything is created -------------------------------------------------------


@needs_bird
@pytest.mark.parametrize("lab", sorted(p.name for p in (REPO / "labs").glob("*.yml")))
def test_every_shipped_lab_passes_bird_p(lab: str) -> None:
    spec = load_lab(REPO / "labs" / lab)
    daemons = len(spec.routers) + len(spec.all_nodes())
    assert bird.check_rendered(spec) == daemons * len(spec.families)  # bird (and bird6: dual stack)


@needs_bird
def test_check_rendered_names_each_config_bird_refuses() -> None:
    spec = _default()
    broken = {"tor2", "r1-n2"}
    configs = [(e, p, t + "garbage;\n" if e in broken else t) for e, p, t in bird.rendered_configs(spec)]
    with pytest.raises(SpecError) as ei:
        bird.check_rendered(spec, configs)
    assert {i.path for i in ei.value.issues} == {format_path(p) for e, p, _ in configs if e in broken}
    for issue in ei.value.issues:
        assert issue.file == spec.source
        assert "BIRD rejects the config rendered for '" in issue.message
        assert "syntax error: 'garbage;'" in issue.message
        assert "/dev/stdin" not in issue.message


@needs_bird
def test_check_rendered_writes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bird -p reads the config from stdin and logs to stderr: nothing lands on disk."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    bird.check_rendered(_default())
    assert list(tmp_path.iterdir()) == []
    assert all("log stderr all;" in text for _, _, text in bird.rendered_configs(_default()))
