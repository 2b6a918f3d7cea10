"""Reading what a customer hands over: `kubectl get ... -o yaml` / `calicoctl get -o yaml` dumps.

The dumps are hostile input (kvlab runs as root): they are read with the safe, bounded YAML loader
(harness.yamlsrc: regular files of at most 4 MiB, bounded alias expansion and nesting), `List`
wrappers are unwrapped, and each object keeps where it came from (file, line, path) so every
warning names it. Kubernetes bookkeeping (managedFields, status of Calico objects, uid,
resourceVersion, ...) is ignored; everything else that is not reproduced is a warning.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.calico import resources as cr
from harness.errors import SpecIssue
from harness.yamlsrc import SourceMap, format_path, load_documents, shown

CALICO_API_VERSIONS = ("projectcalico.org/v3", "crd.projectcalico.org/v1")
BOOKKEEPING = frozenset(
    {
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
        "finalizers",
        "ownerReferences",
        "generateName",
    }
)
"""Metadata the API server keeps for itself: ignored without a warning."""


@dataclass(frozen=True)
class DumpObject:
    """One object of a dump and where it is (its document's source map and path inside it)."""

    data: dict[str, Any]
    smap: SourceMap
    path: tuple[Any, ...]

    @property
    def kind(self) -> str:
        kind = self.data.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def api_version(self) -> str:
        api = self.data.get("apiVersion")
        return api if isinstance(api, str) else ""

    @property
    def name(self) -> str:
        meta = self.data.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else ""

    def note(self, sub: tuple[Any, ...], message: str) -> SpecIssue:
        """A warning about this object (or a field `sub` of it), naming file, line and path."""
        label = f"{self.kind or 'object'} {shown(self.name) if self.name else '(no name)'}"
        path = (*self.path, *sub)
        return SpecIssue(self.smap.file, format_path(path), f"{label}: {message}", self.smap.line(path))

    def get(self, *keys: str) -> Any:
        """A nested value (None where a level is missing or not a mapping)."""
        value: Any = self.data
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value


def read_dump(path: str | Path) -> tuple[list[DumpObject], list[SpecIssue]]:
    """Every object of a dump file (List wrappers unwrapped), and warnings for what is no object.
    Raises SpecError for a file that cannot be read or is not safe YAML."""
    display = str(path)
    docs, maps = load_documents(Path(path), display)
    objects: list[DumpObject] = []
    notes: list[SpecIssue] = []
    for doc, smap in zip(docs, maps, strict=True):
        for obj, where in _unwrapped(doc, ()):
            if not isinstance(obj, dict):
                notes.append(smap.issue(where, f"not an object ({type(obj).__name__}): left out"))
                continue
            objects.append(DumpObject(obj, smap, where))
    return objects, notes


def _unwrapped(doc: Any, where: tuple[Any, ...]) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    if (
        isinstance(doc, dict)
        and str(doc.get("kind", "")).endswith("List")
        and isinstance(doc.get("items"), list)
    ):
        for i, item in enumerate(doc["items"]):
            yield from _unwrapped(item, (*where, "items", i))
    else:
        yield doc, where


def object_name(obj: DumpObject) -> str | None:
    """The object's metadata.name if it is a Kubernetes name (DNS-1123 subdomain), else None."""
    try:
        return cr.dns_subdomain(obj.name) if obj.name else None
    except ValueError:
        return None


def valid_labels(obj: DumpObject, sub: tuple[Any, ...], notes: list[SpecIssue]) -> dict[str, str]:
    """The labels at `sub` that have Kubernetes' syntax; each other one a warning."""
    raw = obj.get(*sub)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        notes.append(obj.note(sub, "labels are not a mapping: left out"))
        return {}
    out: dict[str, str] = {}
    for key, value in raw.items():
        try:
            cr.check_labels({str(key): value if isinstance(value, str) else str(value)})
        except ValueError as e:
            notes.append(obj.note((*sub, str(key)), f"label left out: {e}"))
            continue
        out[str(key)] = value if isinstance(value, str) else str(value)
    return out


__all__ = ["BOOKKEEPING", "CALICO_API_VERSIONS", "DumpObject", "object_name", "read_dump", "valid_labels"]
