"""Reading a lab file: YAML (harness.yamlsrc) -> `LabFile` -> its Calico resources -> the
cross-checks (harness.labcheck) -> a `LabSpec`. `load_lab()` returns one or raises `SpecError`
carrying every problem found, each naming the file, the field path, the line and the reason.
Nothing is created while loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.calico import resources as cr
from harness.errors import InputError, SpecError, SpecIssue
from harness.labcheck import check_lab
from harness.labpools import fill_pools
from harness.names import DEFAULT_LAB
from harness.spec import LabFile, LabSpec
from harness.state import check_lab_name, valid_lab_name
from harness.yamlsrc import SourceMap, load_documents, shown

REPO_LABS = Path(__file__).resolve().parents[1] / "labs"


class LabFileNotFound(InputError):
    """A lab named on the command line (or in pytest's --lab) that is no file and no lab in labs/."""


def lab_file_stem(arg: str, option: str = "LAB") -> str:
    """A lab argument that is no existing file must be a lab's name (optionally with .yml or
    .yaml): that name, else LabNameError naming `option` and the rule."""
    stem = arg.removesuffix(".yml").removesuffix(".yaml")
    if not valid_lab_name(stem):
        check_lab_name(arg, option, "is no lab file and not a valid lab name")
    return stem


def resolve_spec_path(arg: str | None, option: str = "LAB") -> Path:
    """A lab argument as a file: a path, or a name looked up in ./labs and the repo's labs/."""
    name = arg or DEFAULT_LAB
    p = Path(name)
    if p.is_file():
        return p
    stem = lab_file_stem(name, option)
    for base in (Path.cwd() / "labs", REPO_LABS):
        for candidate in (base / stem, base / f"{stem}.yml", base / f"{stem}.yaml"):
            if candidate.is_file():
                return candidate
    raise LabFileNotFound(f"{option}: {name}: no such lab file (looked in ./labs and {REPO_LABS})")


def load_lab(path: str | Path) -> LabSpec:
    """Load and validate a lab file. Raises SpecError listing every issue found."""
    p = Path(path)
    display = str(path)
    docs, maps = load_documents(p, display)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise SpecError([SpecIssue(display, "", "a lab file must hold exactly one YAML mapping")])
    data, smap = docs[0], maps[0]
    try:
        lab = LabFile.model_validate(data)
    except ValidationError as e:
        # Every problem in one run: the cross-checks still run on the file with its invalid values
        # stood in for, and what they find is reported along with the field errors.
        first = _pydantic_issues(e, smap)
        raise SpecError(first + _issues_beyond(data, e, p, smap, first)) from None
    spec, issues = _checked(lab, p, smap)
    if issues:
        raise SpecError(issues)
    return spec


def _checked(lab: LabFile, p: Path, smap: SourceMap) -> tuple[LabSpec, list[SpecIssue]]:
    """The lab's resources, its pools completed from them (harness.labpools), the cross-checks."""
    resources, issues = load_cluster_resources(lab, p.parent, smap)
    lab, pool_issues = fill_pools(lab, resources, smap)
    issues += pool_issues
    spec = LabSpec(
        **{name: getattr(lab, name) for name in LabFile.model_fields},
        source=str(p.resolve()),
        calico={cluster: tuple(r for r, _, _ in items) for cluster, items in resources.items()},
    )
    issues += check_lab(spec, smap, resources)
    return spec, issues


def _issues_beyond(
    data: dict[str, Any], err: ValidationError, p: Path, smap: SourceMap, first: list[SpecIssue]
) -> list[SpecIssue]:
    """What the cross-checks find once every invalid value is stood in for (a bad name by a
    placeholder, the same for each of its occurrences; an unknown field or a bad optional value
    left out), reported in the original names; nothing if some value cannot be stood in for."""
    stand_in: dict[str, str] = {}
    for _ in range(3):
        repaired = _stand_in(data, err, stand_in)
        if repaired is None:
            return []
        data = repaired
        try:
            lab = LabFile.model_validate(data)
            break
        except ValidationError as e:
            err = e
    else:
        return []
    try:
        _spec, issues = _checked(lab, p, smap)
    except Exception:  # a stand-in the cross-checks cannot take: the field errors stand alone
        return []
    back = {v: k for k, v in stand_in.items()}
    seen = {(i.path, i.message) for i in first}
    paths = {i.path for i in first}
    out = []
    for issue in issues:
        message = issue.message
        for placeholder, original in back.items():
            message = message.replace(placeholder, original)
        if issue.path in paths or (issue.path, message) in seen:
            continue
        seen.add((issue.path, message))
        out.append(SpecIssue(issue.file, issue.path, message, issue.line))
    return out


_REFERENCES = {"name", "rack", "tor", "node", "router", "cluster", "vm", "parent", "endpoints"}


def _stand_in(data: Any, err: ValidationError, stand_in: dict[str, str]) -> Any | None:
    """A copy of `data` with each value `err` names stood in for, or None if one cannot be."""
    import copy
    import hashlib

    out = copy.deepcopy(data)
    names: set[str] = set()
    for e in err.errors():
        loc = [x for x in e["loc"] if not (isinstance(x, str) and x in _UNION_TAGS)]
        if not loc or e["type"] == "missing":
            return None
        parent: Any = out
        try:
            for key in loc[:-1]:
                parent = parent[key]
            value = parent[loc[-1]]
        except (KeyError, IndexError, TypeError):
            return None
        keys = [k for k in loc if isinstance(k, str)]
        if (
            isinstance(value, str)
            and keys
            and keys[-1] in _REFERENCES
            and e["type"] == "string_pattern_mismatch"
        ):
            names.add(value)
        elif isinstance(parent, dict) and loc[-1] != "name":
            del parent[loc[-1]]
        else:
            return None
    for value in names:
        stand_in.setdefault(value, "x" + hashlib.sha256(value.encode()).hexdigest()[:12])

    def swap(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return stand_in.get(node, node) if isinstance(node, str) else node

    return swap(out)


def _pydantic_issues(err: ValidationError, smap: SourceMap, prefix: tuple = ()) -> list[SpecIssue]:
    issues = []
    for e in err.errors():
        loc = (*prefix, *(x for x in e["loc"] if not (isinstance(x, str) and x in _UNION_TAGS)))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown field '{loc[-1]}'"
        elif e["type"] == "missing":
            msg = f"missing required field '{loc[-1]}'"
        elif e["type"] == "string_pattern_mismatch" and any(
            k in _REFERENCES for k in loc[-2:] if isinstance(k, str)
        ):
            msg = (
                f"invalid name {e.get('input')!r}: use lowercase letters, digits and '-', start with a"
                " letter, at most 15 characters (names become interface and namespace names)"
            )
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        issues.append(smap.issue(loc, msg))
    return issues


_UNION_TAGS = set(cr.KINDS)
_RESOURCE_ADAPTER: TypeAdapter[Any] = TypeAdapter(cr.CalicoResource)


def load_cluster_resources(
    spec: LabFile, base: Path, lab_map: SourceMap
) -> tuple[dict[str, list[Any]], list[SpecIssue]]:
    """Parse each cluster's Calico resources (inline or from a file) into typed models."""
    out: dict[str, list[Any]] = {}
    issues: list[SpecIssue] = []
    for ci, cluster in enumerate(spec.clusters):
        if isinstance(cluster.resources, str):
            rpath, reason = resource_file(base, cluster.resources)
            if rpath is None:
                issues.append(lab_map.issue(("clusters", ci, "resources"), reason))
                continue
            try:
                docs, maps = load_documents(rpath, str(base / cluster.resources))
            except SpecError as e:
                issues += e.issues
                continue
            places = [(m, ()) for m in maps]
        else:
            docs = cluster.resources
            places = [(lab_map, ("clusters", ci, "resources", i)) for i in range(len(docs))]
        parsed = []
        for doc, (smap, prefix) in zip(docs, places, strict=True):
            if not isinstance(doc, dict) or doc.get("kind") not in cr.KINDS:
                kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
                issues.append(
                    smap.issue(
                        (*prefix, "kind"),
                        f"unsupported resource kind {kind!r} (expected one of {', '.join(cr.KINDS)})",
                    )
                )
                continue
            try:
                parsed.append((_RESOURCE_ADAPTER.validate_python(doc), smap, prefix))
            except ValidationError as e:
                issues += _pydantic_issues(e, smap, prefix)
        out[cluster.name] = parsed
    return out, issues


def resource_file(base: Path, value: str) -> tuple[Path | None, str]:
    """The resource file a lab names (`resources: FILE`), resolved, or None and why not.

    kvlab reads it as root, so a lab file may only bring files of its own directory tree: the
    path is relative and stays inside the lab file's directory once '..' and symlinks resolve."""
    why = "kvlab reads it as root, so a lab file may only name files inside its own directory"
    if not value or not value.isprintable():
        return None, f"resources file {shown(value)} is not a usable file name"
    if Path(value).is_absolute():
        return (
            None,
            f"resources file {shown(value)} is an absolute path: give it relative to the lab file ({why})",
        )
    try:
        root = base.resolve()
        target = (base / value).resolve()
    except (OSError, RuntimeError) as e:
        return None, f"resources file {shown(value)} cannot be resolved: {e}"
    if not target.is_relative_to(root):
        return None, (
            f"resources file {shown(value)} leads outside the lab file's directory once '..' and symlinks "
            f"resolve ({why})"
        )
    return target, ""
