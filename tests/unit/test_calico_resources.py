"""harness.calico.resources: typed Calico v3 resources, checked against Calico's own CRD schemas.

The CRD schemas are upstream copies in shared/schemas/calico/v3-native/ (see its README).
Some of their `pattern`s use Go RE2 / ECMA syntax (e.g. `^(?i)(Trace|...)?$`) that Python's
`re` rejects, so the validator (harness.runtime.containerlab.schemas) evaluates `pattern` (and the `regex`
format used by the meta-schema) with the PyPI `regex` module.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticError

from harness.calico import resources as cr
from harness.generate import fabric_lab
from harness.runtime.containerlab.schemas import (
    REGEX_FORMATS,
    CrdValidator,
    calico_crd_dir,
    crd_errors,
    crd_schemas,
)

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = calico_crd_dir()
V3 = "projectcalico.org/v3"
ADAPTER: TypeAdapter[Any] = TypeAdapter(cr.CalicoResource)


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    if not CRD_DIR.is_dir():
        pytest.skip(f"Calico CRD schemas not found at {CRD_DIR} (the shared/ directory next to the repo)")
    return crd_schemas()


# -- the lab's resources ---------------------------------------------------------------


# Shipped resources that fail Calico's CRD today (lab data bugs, not schema-helper bugs).
KNOWN_CRD_FAILURES: dict[str, str] = {}


def _param(doc: dict[str, Any], where: str) -> Any:
    rid = f"{where}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    marks = (
        [pytest.mark.xfail(strict=True, reason=KNOWN_CRD_FAILURES[rid])] if rid in KNOWN_CRD_FAILURES else []
    )
    return pytest.param(doc, id=rid, marks=marks)


def _lab_resources() -> list[Any]:
    """Every Calico resource the repo ships: labs/calico/*.yaml, inline in labs/*.yml, generated labs."""
    out = []
    for path in sorted((REPO / "labs" / "calico").glob("*.yaml")):
        out += [_param(doc, path.name) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for path in sorted((REPO / "labs").glob("*.y*ml")):
        for cluster in yaml.safe_load(path.read_text()).get("clusters", []):
            if isinstance(cluster.get("resources"), list):
                out += [_param(doc, f"{path.name}/{cluster['name']}") for doc in cluster["resources"]]
    out += [_param(doc, "fabric_lab") for doc in fabric_lab(2, 2)["clusters"][0]["resources"]]
    return out


def test_known_crd_failures_are_shipped_resources() -> None:
    ids = {p.id for p in _lab_resources()}
    assert set(KNOWN_CRD_FAILURES) <= ids


def test_every_kind_has_a_crd(schemas: dict[str, dict[str, Any]]) -> None:
    assert set(cr.KINDS) <= set(schemas)


@pytest.mark.parametrize("kind", cr.KINDS)
def test_crd_schema_is_valid_with_regex_patterns(schemas: dict[str, dict[str, Any]], kind: str) -> None:
    CrdValidator.check_schema(schemas[kind], format_checker=REGEX_FORMATS)


def test_plain_re_cannot_check_bgpconfiguration_schema(schemas: dict[str, dict[str, Any]]) -> None:
    """Why the helper exists: Python's `re` rejects a Go-syntax pattern in the upstream schema."""
    with pytest.raises(SchemaError):
        Draft7Validator.check_schema(schemas["BGPConfiguration"])


@pytest.mark.parametrize("resource", _lab_resources())
def test_lab_resource_matches_crd_and_model(
    schemas: dict[str, dict[str, Any]], resource: dict[str, Any]
) -> None:
    assert crd_errors(resource) == []
    model = ADAPTER.validate_python(resource)
    assert model.kind == resource["kind"]
    assert model.metadata.name == resource["metadata"]["name"]


def test_shipped_resource_files_exist() -> None:
    assert list((REPO / "labs" / "calico").glob("*.yaml"))


# -- the helper rejects what Calico rejects ----------------------------------------------


def _peer(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": "BGPPeer", "metadata": {"name": "p"}, "spec": spec}


def _bgpconf(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": "BGPConfiguration", "metadata": {"name": "default"}, "spec": spec}


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param(_peer(peerIP="198.18.1.1", asNumber="65001x"), id="asNumber-not-integer"),
        pytest.param(
            _peer(peerIP="198.18.1.1", asNumber=65001, nextHopMode="Sometimes"), id="nextHopMode-enum"
        ),
        pytest.param(_bgpconf(logSeverityScreen="Loud"), id="logSeverity-pattern"),
        pytest.param(
            {
                "apiVersion": V3,
                "kind": "BGPFilter",
                "metadata": {"name": "f"},
                "spec": {"exportV4": [{"action": "Accept", "communities": {"values": ["65000:700000"]}}]},
            },
            id="community-pattern",
        ),
        pytest.param(
            {"apiVersion": V3, "kind": "IPPool", "metadata": {"name": "p"}, "spec": {}}, id="cidr-required"
        ),
    ],
)
def test_crd_helper_rejects_invalid_resources(
    schemas: dict[str, dict[str, Any]], resource: dict[str, Any]
) -> None:
    assert crd_errors(resource) != []


@pytest.mark.parametrize("severity", ["Info", "info", "DEBUG", "Warning", ""])
def test_crd_helper_applies_go_case_insensitive_pattern(
    schemas: dict[str, dict[str, Any]], severity: str
) -> None:
    assert crd_errors(_bgpconf(logSeverityScreen=severity)) == []


# -- the harness models agree with the CRDs ----------------------------------------------

SPEC_MODELS = {
    "BGPConfiguration": cr.BGPConfigurationSpec,
    "BGPPeer": cr.BGPPeerSpec,
    "BGPFilter": cr.BGPFilterSpec,
    "IPPool": cr.IPPoolSpec,
    "IPAMConfiguration": cr.IPAMConfigurationSpec,
    "FelixConfiguration": cr.FelixConfigurationSpec,
}


def _spec_props(schemas: dict[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    return schemas[kind]["properties"]["spec"]["properties"]


def _enum(prop: dict[str, Any]) -> set[str] | None:
    if "enum" in prop:
        return set(prop["enum"])
    for sub in prop.get("allOf", []):
        found = _enum(sub)
        if found is not None:
            return found
    return None


def _literal_values(annotation: Any) -> set[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    for arg in typing.get_args(annotation):
        found = _literal_values(arg)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("kind", cr.KINDS)
def test_model_fields_exist_in_crd(schemas: dict[str, dict[str, Any]], kind: str) -> None:
    """The harness invents no field: every typed spec field is a field of Calico's CRD."""
    props = _spec_props(schemas, kind)
    assert [f for f in SPEC_MODELS[kind].model_fields if f not in props] == []


def test_filter_rule_fields_exist_in_crd(schemas: dict[str, dict[str, Any]]) -> None:
    rule = _spec_props(schemas, "BGPFilter")["exportV4"]["items"]["properties"]
    assert [f for f in cr.FilterRule.model_fields if f not in rule] == []
    assert [
        f for f in cr.FilterOperation.model_fields if f not in rule["operations"]["items"]["properties"]
    ] == []


@pytest.mark.parametrize(
    ("model", "kind", "field"),
    [
        (cr.BGPPeerSpec, "BGPPeer", "nextHopMode"),
        (cr.BGPPeerSpec, "BGPPeer", "sourceAddress"),
        (cr.BGPPeerSpec, "BGPPeer", "reversePeering"),
        (cr.IPPoolSpec, "IPPool", "ipipMode"),
        (cr.IPPoolSpec, "IPPool", "vxlanMode"),
        (cr.IPAMConfigurationSpec, "IPAMConfiguration", "kubeVirtVMAddressPersistence"),
    ],
)
def test_model_enums_match_crd(schemas: dict[str, dict[str, Any]], model: Any, kind: str, field: str) -> None:
    assert _literal_values(model.model_fields[field].annotation) == _enum(_spec_props(schemas, kind)[field])


@pytest.mark.parametrize("field", ["action", "matchOperator", "source", "peerType"])
def test_filter_rule_enums_match_crd(schemas: dict[str, dict[str, Any]], field: str) -> None:
    rule = _spec_props(schemas, "BGPFilter")["exportV4"]["items"]["properties"]
    assert _literal_values(cr.FilterRule.model_fields[field].annotation) == _enum(rule[field])


ACCEPTED_BY_HARNESS = [
    pytest.param(_bgpconf(asNumber=64512, nodeToNodeMeshEnabled=False), id="bgpconfiguration"),
    pytest.param(_bgpconf(localWorkloadPeeringIPV4="169.254.0.179"), id="workload-peering"),
    pytest.param(_peer(nodeSelector="rack == 'r1'", peerIP="198.18.1.1", asNumber=65001), id="peer"),
    pytest.param(
        _peer(localWorkloadSelector="nested == 'true'", asNumber=65300, filters=["no-export"]), id="lws"
    ),
    pytest.param(
        {
            "apiVersion": V3,
            "kind": "BGPFilter",
            "metadata": {"name": "export-to-tor"},
            "spec": {
                "exportV4": [
                    {
                        "action": "Accept",
                        "cidr": "198.51.100.0/24",
                        "matchOperator": "In",
                        "source": "RemotePeers",
                    }
                ],
                "importV4": [{"action": "Accept", "operations": [{"addCommunity": {"value": "65000:100"}}]}],
            },
        },
        id="bgpfilter",
    ),
    pytest.param(
        {
            "apiVersion": V3,
            "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"ipv4ElevatedRoutePriority": 512, "liveMigrationRouteConvergenceTime": "30s"},
        },
        id="felix",
    ),
    pytest.param(
        {
            "apiVersion": V3,
            "kind": "IPAMConfiguration",
            "metadata": {"name": "default"},
            "spec": {
                "strictAffinity": False,
                "autoAllocateBlocks": True,
                "kubeVirtVMAddressPersistence": "Disabled",
            },
        },
        id="ipam-complete",
    ),
]


def test_ipam_configuration_without_required_fields_is_rejected() -> None:
    """The CRD requires strictAffinity and autoAllocateBlocks; so does the harness."""
    doc = {
        "apiVersion": V3,
        "kind": "IPAMConfiguration",
        "metadata": {"name": "default"},
        "spec": {"kubeVirtVMAddressPersistence": "Disabled"},
    }
    with pytest.raises(PydanticError, match="strictAffinity"):
        cr.IPAMConfiguration.model_validate(doc)


@pytest.mark.parametrize("resource", ACCEPTED_BY_HARNESS)
def test_what_the_harness_accepts_calico_accepts(
    schemas: dict[str, dict[str, Any]], resource: dict[str, Any]
) -> None:
    ADAPTER.validate_python(resource)
    assert crd_errors(resource) == []


# -- model behaviour (no schemas needed) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("65000:100", (65000, 100)),
        ("0:0", (0, 0)),
        ("65535:65535", (65535, 65535)),
        ("1:2:3", (1, 2, 3)),
        ("4294967295:1:4294967295", (4294967295, 1, 4294967295)),
    ],
)
def test_parse_community(text: str, parts: tuple[int, ...]) -> None:
    assert cr.parse_community(text) == parts


@pytest.mark.parametrize(
    "text", ["65000:700000", "65536:1", "4294967296:1:1", "abc", "1", "1:2:3:4", "1:-2", ""]
)
def test_parse_community_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"community|above"):
        cr.parse_community(text)


def _rule(**rule: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": "BGPFilter", "metadata": {"name": "f"}, "spec": {"exportV4": [rule]}}


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        (_rule(action="Accept", cidr="203.0.113.0/24"), "cidr and matchOperator"),
        (_rule(action="Accept", matchOperator="In"), "cidr and matchOperator"),
        (_rule(action="Accept", prefixLength={"min": 26}), "prefixLength needs cidr"),
        (_rule(action="Reject", operations=[{"setPriority": {"value": 512}}]), "only allowed on Accept"),
        (_rule(action="Accept", operations=[{}]), "exactly one"),
        (
            _rule(
                action="Accept", operations=[{"setPriority": {"value": 1}, "addCommunity": {"value": "1:1"}}]
            ),
            "exactly one",
        ),
        (_rule(action="Accept", cidr="not-a-cidr", matchOperator="In"), "does not appear"),
        (_rule(action="Allow"), "action"),
        (_rule(action="Accept", communities={"values": ["1:1", "2:2"]}), "at most 1"),
        (_peer(node="r1-n1", nodeSelector="all()", peerIP="198.18.1.1"), "mutually exclusive"),
        (_peer(localWorkloadSelector="all()", peerIP="198.18.1.1", asNumber=1), "excludes peerIP"),
        (_peer(localWorkloadSelector="all()", peerSelector="all()", asNumber=1), "excludes peerIP"),
        (_peer(localWorkloadSelector="all()"), "requires asNumber"),
        (_peer(peerIp="198.18.1.1"), "Extra inputs"),
        (_bgpconf(localWorkloadPeeringIPV4="169.254.0.1"), "reserved"),
        (_bgpconf(localWorkloadPeeringIPV4="169.254.0.2"), "reserved"),
        (_bgpconf(localWorkloadPeeringIPV6="fe80::1"), "link-local"),
        (_bgpconf(asNumber=0), "greater than or equal to 1"),
        (
            {
                "apiVersion": "crd.projectcalico.org/v1",
                "kind": "BGPPeer",
                "metadata": {"name": "p"},
                "spec": {},
            },
            "projectcalico.org/v3",
        ),
        (
            {"apiVersion": V3, "kind": "BGPPeer", "metadata": {"name": "p", "uid": "x"}, "spec": {}},
            "Extra inputs",
        ),
    ],
)
def test_model_rejects(resource: dict[str, Any], message: str) -> None:
    with pytest.raises(PydanticError, match=message):
        ADAPTER.validate_python(resource)


@pytest.mark.parametrize(
    "resource",
    [
        _bgpconf(localWorkloadPeeringIPV4="169.254.0.179", localWorkloadPeeringIPV6="fdc9:9723:09bc::1"),
        _rule(
            action="Accept", cidr="203.0.113.0/24", matchOperator="In", prefixLength={"min": 26, "max": 32}
        ),
        _rule(action="Accept", operations=[{"prependASPath": {"prefix": [65000, 65001]}}]),
        _rule(action="Reject"),
        _rule(action="Accept", communities={"values": ["65000:100:1"]}),
        _peer(node="r1-n1", peerIP="198.18.1.1", asNumber=65001),
        _peer(nodeSelector="all()", peerSelector="rack == 'r2'"),
    ],
)
def test_model_accepts(resource: dict[str, Any]) -> None:
    model = ADAPTER.validate_python(resource)
    assert model.kind == resource["kind"]


def test_model_defaults() -> None:
    peer = ADAPTER.validate_python(_peer(peerIP="198.18.1.1"))
    assert peer.spec.filters == []
    assert peer.spec.asNumber is None
    conf = ADAPTER.validate_python(
        {"apiVersion": V3, "kind": "BGPConfiguration", "metadata": {"name": "default"}}
    )
    assert conf.spec.nodeToNodeMeshEnabled is None  # unset: Calico's default (true) applies


def test_felix_configuration_keeps_unknown_fields() -> None:
    felix = ADAPTER.validate_python(
        {
            "apiVersion": V3,
            "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"ipv4ElevatedRoutePriority": 512, "bpfEnabled": False},
        }
    )
    assert felix.spec.ipv4ElevatedRoutePriority == 512
    assert felix.spec.model_extra == {"bpfEnabled": False}


def test_felix_priority_range() -> None:
    with pytest.raises(PydanticError):
        ADAPTER.validate_python(
            {
                "apiVersion": V3,
                "kind": "FelixConfiguration",
                "metadata": {"name": "d"},
                "spec": {"ipv4NormalRoutePriority": 0},
            }
        )


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(PydanticError):
        ADAPTER.validate_python({"apiVersion": V3, "kind": "NetworkPolicy", "metadata": {"name": "x"}})


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"action": "Accept", "cidr": "203.0.113.5/24", "matchOperator": "In"}, "host bits"),
        ({"action": "Accept", "interface": "way-too-long-interface"}, "interface"),
        (
            {
                "action": "Accept",
                "cidr": "203.0.113.0/24",
                "matchOperator": "In",
                "prefixLength": {"max": 20},
            },
            "shorter than the cidr",
        ),
        (
            {
                "action": "Accept",
                "cidr": "203.0.113.0/24",
                "matchOperator": "In",
                "prefixLength": {"min": 30, "max": 28},
            },
            "above prefixLength.max",
        ),
    ],
)
def test_filter_rules_bird_would_reject_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(PydanticError, match=message):
        cr.FilterRule.model_validate(rule)
