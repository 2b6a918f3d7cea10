"""Validate rendered real-stack files against the upstream schemas in shared/schemas.

The schema files are byte-for-byte upstream copies (shared/schemas/README.md): the containerlab
topology JSON schema, Calico's native `projectcalico.org/v3` CRDs and its
`crd.projectcalico.org/v1` CRDs (what the operator installs and Calico stores), the tigera operator's
`Installation` CRD and KubeVirt's OpenAPI v2 spec (swagger.json). They live outside the repo,
in `<repo>/../shared`, or wherever `KVLAB_SHARED` points.

Two details make a plain `jsonschema` validator insufficient:
- some `pattern`s are Go RE2 / ECMA syntax that Python's `re` rejects (`^(?i)(Trace|...)?$`,
  `\\p{N}`), so `pattern` and the `regex` format are evaluated with the PyPI `regex` module;
- Kubernetes schemas rarely forbid additional properties (the API server prunes them
  silently), so `unknown_fields()` walks the schema and reports every field it does not know.

Every problem is a `SpecIssue(file, path, message)`: the file, the JSON path of the offending
field (`topology.nodes.tor1.kind`, `[2].spec.peerIP`) and the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import regex
import yaml
from jsonschema import Draft4Validator, Draft7Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError

from harness.errors import KvlabError, SpecIssue
from harness.yamlsrc import format_path

REPO = Path(__file__).resolve().parents[3]


def shared_dir() -> Path:
    """The shared directory: $KVLAB_SHARED, else `<repo>/../shared`."""
    env = os.environ.get("KVLAB_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def schema_dir() -> Path:
    return shared_dir() / "schemas"


def clab_schema_path() -> Path:
    return schema_dir() / "containerlab" / "clab.schema.json"


CALICO_V3_API = "projectcalico.org/v3"
CALICO_CRD_API = "crd.projectcalico.org/v1"
V1_CRD_GLOB = "crd.projectcalico.org_*.yaml"


def calico_crd_dir() -> Path:
    return schema_dir() / "calico" / "v3-native"


def calico_v1_crd_dir() -> Path:
    """Calico's crd.projectcalico.org/v1 CRDs (V1_CRD_GLOB; the directory holds other CRDs too)."""
    return schema_dir() / "calico"


def installation_crd_path() -> Path:
    return schema_dir() / "calico" / "operator.tigera.io_installations.yaml"


def kubevirt_swagger_path() -> Path:
    return schema_dir() / "kubevirt" / "swagger.json"


class SchemasUnavailable(KvlabError):
    """A schema file is not where it should be (no shared/ directory next to the repo)."""


class ValidationFailed(KvlabError):
    """Rendered files break their schemas. `issues` names file, field path and reason of each."""

    def __init__(self, issues: Iterable[SpecIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


# -- a jsonschema validator that understands Go / ECMA patterns ----------------------------


def _regex_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and regex.search(pattern, instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


REGEX_FORMATS = FormatChecker()


@REGEX_FORMATS.checks("regex", raises=regex.error)
def _is_regex(value: object) -> bool:
    if isinstance(value, str):
        regex.compile(value)
    return True


CrdValidator = validators.extend(Draft7Validator, {"pattern": _regex_pattern}, format_checker=REGEX_FORMATS)
"""Draft 7 with RE2-compatible `pattern`: for CRD openAPIV3Schemas and the containerlab schema."""

SwaggerValidator = validators.extend(Draft4Validator, {"pattern": _regex_pattern})
"""Draft 4 with RE2-compatible `pattern`: for swagger 2.0 definitions."""


def _load(path: Path) -> Any:
    if not path.is_file():
        raise SchemasUnavailable(
            f"schema file {path} not found (shared/ is looked up next to the repo; set KVLAB_SHARED)"
        )
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def schemas_available() -> bool:
    """True when every schema file the real-stack renderer checks against is present."""
    return (
        clab_schema_path().is_file()
        and calico_crd_dir().is_dir()
        and any(calico_v1_crd_dir().glob(V1_CRD_GLOB))
        and installation_crd_path().is_file()
        and kubevirt_swagger_path().is_file()
    )


# -- schemas --------------------------------------------------------------------------------


@cache
def _crd_schemas(directory: str, pattern: str = "*.yaml") -> dict[str, dict[str, Any]]:
    out = {}
    paths = sorted(Path(directory).glob(pattern))
    if not paths:
        raise SchemasUnavailable(f"no Calico CRDs ({pattern}) in {directory}")
    for path in paths:
        crd = _load(path)
        out[crd["spec"]["names"]["kind"]] = served_schema(crd)
    return out


def crd_schemas(api_version: str = CALICO_V3_API) -> dict[str, dict[str, Any]]:
    """openAPIV3Schema of each Calico CRD of `api_version` (projectcalico.org/v3, or
    crd.projectcalico.org/v1), by kind."""
    if api_version == CALICO_CRD_API:
        return _crd_schemas(str(calico_v1_crd_dir()), V1_CRD_GLOB)
    return _crd_schemas(str(calico_crd_dir()))


def served_schema(crd: dict[str, Any]) -> dict[str, Any]:
    """The openAPIV3Schema of a CRD's served storage version (else the first served one)."""
    versions = [v for v in crd["spec"]["versions"] if v.get("served", True)]
    chosen = next((v for v in versions if v.get("storage")), versions[0])
    return chosen["schema"]["openAPIV3Schema"]


@cache
def _installation_schema(path: str) -> dict[str, Any]:
    return served_schema(_load(Path(path)))


def installation_schema() -> dict[str, Any]:
    return _installation_schema(str(installation_crd_path()))


@cache
def _clab_schema(path: str) -> dict[str, Any]:
    return _load(Path(path))


def clab_schema() -> dict[str, Any]:
    return _clab_schema(str(clab_schema_path()))


@cache
def _swagger(path: str) -> dict[str, Any]:
    return _load(Path(path))


def kubevirt_schema(definition: str) -> dict[str, Any]:
    """A swagger definition (e.g. 'v1.VirtualMachine') as a schema whose `$ref`s resolve in the file."""
    swagger = _swagger(str(kubevirt_swagger_path()))
    if definition not in swagger["definitions"]:
        raise KeyError(f"no definition '{definition}' in {kubevirt_swagger_path()}")
    return {"definitions": swagger["definitions"], "$ref": f"#/definitions/{definition}"}


KUBEVIRT_DEFINITIONS = {
    "KubeVirt": "v1.KubeVirt",
    "VirtualMachine": "v1.VirtualMachine",
    "VirtualMachineInstanceMigration": "v1.VirtualMachineInstanceMigration",
}


# -- errors ---------------------------------------------------------------------------------


def _leaves(err: ValidationError) -> list[ValidationError]:
    """The most specific errors under a oneOf/anyOf failure: those of the alternative the
    instance came closest to (fewest errors, then deepest), never a bare 'not of type null'."""
    if not err.context:
        return [err]
    here = len(err.absolute_path)
    branches: dict[Any, list[ValidationError]] = {}
    for sub in err.context:
        key = sub.relative_schema_path[0] if sub.relative_schema_path else None
        branches.setdefault(key, []).extend(_leaves(sub))
    candidates = [
        leaves
        for leaves in branches.values()
        if not all(e.validator == "type" and len(e.absolute_path) == here for e in leaves)
    ]
    if not candidates:
        return [err]
    return min(candidates, key=lambda leaves: (len(leaves), -max(len(e.absolute_path) for e in leaves)))


def _message(err: ValidationError) -> str:
    """The error's message, with long enum lists shortened."""
    if err.validator == "enum" and isinstance(err.validator_value, list) and len(err.validator_value) > 8:
        some = ", ".join(repr(v) for v in err.validator_value[:6])
        return f"{err.instance!r} is not one of the {len(err.validator_value)} allowed values ({some}, ...)"
    return err.message


def _issues(file: str, errors: Iterable[ValidationError], prefix: tuple = ()) -> list[SpecIssue]:
    out: list[SpecIssue] = []
    seen: set[tuple[str, str]] = set()
    for err in errors:
        for leaf in _leaves(err):
            path = format_path((*prefix, *leaf.absolute_path)) or "<root>"
            key = (path, _message(leaf))
            if key not in seen:
                seen.add(key)
                out.append(SpecIssue(file, *key))
    return out


def unknown_fields(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> list[tuple]:
    """Paths (tuples) of every field of `instance` that `schema` does not declare.

    Follows `$ref` (within `root`), `allOf`, `properties`, `items` and `additionalProperties`
    schemas. Objects without `properties` (maps: labels, nodeSelector) and schemas that keep
    unknown fields (`x-kubernetes-preserve-unknown-fields`) accept anything.
    """
    root = root if root is not None else schema
    out: list[tuple] = []
    _walk(instance, schema, root, (), out)
    return out


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            return {}
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        schema = node
        seen += 1
    return schema


def _walk(instance: Any, schema: dict[str, Any], root: dict[str, Any], path: tuple, out: list[tuple]) -> None:
    schema = _resolve(schema, root)
    for sub in schema.get("allOf", []):
        _walk(instance, sub, root, path, out)
    if isinstance(instance, dict):
        props = schema.get("properties")
        if props is None or schema.get("x-kubernetes-preserve-unknown-fields"):
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for key, value in instance.items():
                    _walk(value, extra, root, (*path, key), out)
            return
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            if key in props:
                _walk(value, props[key], root, (*path, key), out)
            elif isinstance(extra, dict):
                _walk(value, extra, root, (*path, key), out)
            elif extra is None and not schema.get("patternProperties"):
                out.append((*path, key))
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(instance):
            _walk(value, schema["items"], root, (*path, i), out)


def _unknown_issues(file: str, instance: Any, schema: dict[str, Any], prefix: tuple = ()) -> list[SpecIssue]:
    return [
        SpecIssue(file, format_path((*prefix, *p)), f"unknown field '{p[-1]}' (not in the upstream schema)")
        for p in unknown_fields(instance, schema)
    ]


# -- validators -----------------------------------------------------------------------------


def clab_errors(topology: dict[str, Any], file: str = "<clab topology>") -> list[SpecIssue]:
    """Every way a containerlab topology breaks clab.schema.json."""
    schema = clab_schema()
    return _issues(file, CrdValidator(schema).iter_errors(topology))


def crd_errors(resource: dict[str, Any]) -> list[str]:
    """Every way a Calico v3 resource breaks its CRD, as 'path: reason' strings (empty: valid)."""
    return [f"{i.path}: {i.message}" for i in calico_errors(resource, "")]


def calico_errors(
    resource: dict[str, Any], file: str = "<calico resource>", prefix: tuple = ()
) -> list[SpecIssue]:
    """A Calico resource against its CRD (and unknown fields): a `crd.projectcalico.org/v1` object
    against the v1 CRD, anything else as `projectcalico.org/v3` against the native v3 CRD."""
    api_version = resource.get("apiVersion")
    if api_version not in (None, CALICO_V3_API, CALICO_CRD_API):
        return [
            SpecIssue(
                file,
                format_path((*prefix, "apiVersion")),
                f"{api_version!r} is not a Calico API ({CALICO_V3_API} or {CALICO_CRD_API})",
            )
        ]
    schemas = crd_schemas(api_version or CALICO_V3_API)
    kind = resource.get("kind")
    if kind not in schemas:
        return [
            SpecIssue(
                file, format_path((*prefix, "kind")), f"no Calico CRD for kind {kind!r} in {api_version}"
            )
        ]
    schema = schemas[kind]
    issues = _issues(file, CrdValidator(schema).iter_errors(resource), prefix)
    return issues + _unknown_issues(file, resource, schema, prefix)


def installation_errors(installation: dict[str, Any], file: str = "<installation>") -> list[SpecIssue]:
    """A tigera operator `Installation` against its CRD's served version (and unknown fields)."""
    schema = installation_schema()
    issues = _issues(file, CrdValidator(schema).iter_errors(installation))
    for field, want in (("apiVersion", "operator.tigera.io/v1"), ("kind", "Installation")):
        if installation.get(field) != want:
            issues.append(SpecIssue(file, field, f"must be {want!r}, not {installation.get(field)!r}"))
    return issues + _unknown_issues(file, installation, schema)


def kubevirt_errors(
    obj: dict[str, Any], file: str = "<kubevirt object>", prefix: tuple = ()
) -> list[SpecIssue]:
    """A KubeVirt object (KubeVirt, VirtualMachine, VirtualMachineInstanceMigration) against its
    swagger definition, plus fields the definition does not declare."""
    kind = obj.get("kind")
    if kind not in KUBEVIRT_DEFINITIONS:
        return [SpecIssue(file, format_path((*prefix, "kind")), f"unsupported KubeVirt kind {kind!r}")]
    schema = kubevirt_schema(KUBEVIRT_DEFINITIONS[kind])
    issues = _issues(file, SwaggerValidator(schema).iter_errors(obj), prefix)
    if obj.get("apiVersion") != "kubevirt.io/v1":
        issues.append(
            SpecIssue(
                file,
                format_path((*prefix, "apiVersion")),
                f"must be 'kubevirt.io/v1', not {obj.get('apiVersion')!r}",
            )
        )
    return issues + _unknown_issues(file, obj, schema, prefix)
