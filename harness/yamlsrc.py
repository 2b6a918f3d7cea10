"""YAML loading that remembers where each value came from and refuses duplicate keys.

PyYAML silently keeps the last of two equal keys; a lab file with `name:` twice in one
mapping is a typo the user must hear about, with its line number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import SpecError, SpecIssue

Path_ = tuple[str | int, ...]


def format_path(path: Path_) -> str:
    """('clusters', 0, 'nodes', 2, 'rack') -> 'clusters[0].nodes[2].rack'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class SourceMap:
    """Maps data paths of a loaded YAML document to 1-based line numbers."""

    def __init__(self, file: str):
        self.file = file
        self.lines: dict[Path_, int] = {}

    def line(self, path: Path_) -> int | None:
        """Line of `path`, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    def issue(self, path: Path_, message: str) -> SpecIssue:
        return SpecIssue(self.file, format_path(path), message, self.line(path))


def _construct(node: yaml.Node, path: Path_, smap: SourceMap, issues: list[SpecIssue]) -> Any:
    smap.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        _flatten_merge_keys(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in out:
                issues.append(
                    SpecIssue(
                        smap.file,
                        format_path((*path, str(key))),
                        f"duplicate key '{key}' (first on line {smap.lines.get((*path, key), '?')})",
                        key_node.start_mark.line + 1,
                    )
                )
                continue
            smap.lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, (*path, key), smap, issues)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(n, (*path, i), smap, issues) for i, n in enumerate(node.value)]
    return _scalar(node)


def _flatten_merge_keys(node: yaml.MappingNode) -> None:
    """Resolve YAML merge keys (`<<: *anchor`) the way yaml.safe_load does."""
    loader = yaml.SafeLoader("")
    try:
        loader.flatten_mapping(node)
    finally:
        loader.dispose()


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def load_documents(path: str | Path, display: str | None = None) -> tuple[list[Any], list[SourceMap]]:
    """Load every document of a YAML file, with a source map each. Raises SpecError on bad YAML."""
    p = Path(path)
    name = display or str(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError([SpecIssue(name, "", f"cannot read file: {e.strerror}")]) from e
    return loads_documents(text, name)


def loads_documents(text: str, name: str) -> tuple[list[Any], list[SourceMap]]:
    issues: list[SpecIssue] = []
    docs: list[Any] = []
    maps: list[SourceMap] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            smap = SourceMap(name)
            if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
                continue  # an empty document (e.g. a manifest ending in '---')
            docs.append(_construct(node, (), smap, issues))
            maps.append(smap)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(e, "problem", None) or str(e)
        context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and cmark is not None and (mark is None or cmark.line != mark.line):
            problem += f" ({context} that starts on line {cmark.line + 1})"
        raise SpecError([SpecIssue(name, "", f"invalid YAML: {problem}", line)]) from e
    if issues:
        raise SpecError(issues)
    return docs, maps
