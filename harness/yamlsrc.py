"""YAML loading that remembers where each value came from, refuses duplicate keys, and bounds
what a hostile file can cost.

PyYAML silently keeps the last of two equal keys; a lab file with `name:` twice in one
mapping is a typo the user must hear about, with its line number.

kvlab runs as root and reads whatever lab or resource file it is handed, so loading is bounded:
- only regular files are read: a FIFO, device, socket or directory is refused after `stat`,
  before it is opened; the file is then opened non-blocking and checked again with `fstat`;
- at most `MAX_FILE_BYTES` (4 MiB) per file; a file whose content disagrees with its size
  (a /proc or /sys pseudo-file, a file changing meanwhile) is refused;
- libyaml composes the nodes (a 4 MiB file in seconds, nesting capped by libyaml itself);
  aliases and merge keys (`<<`) are then counted as the tree they expand to before anything
  is built: at most `MAX_NODES` (500,000) nodes per file, so a billion-laughs or merge-key
  bomb is refused in milliseconds; at most `MAX_DEPTH` levels; no alias may contain itself;
- mapping keys are scalars of at most `MAX_KEY_CHARS` printable characters; collections carry
  no tags (`!!python/...` and the like are refused, scalars go through PyYAML's safe constructor).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from harness.errors import SpecError, SpecIssue
from harness.safefile import FileRefused, read_regular

Path_ = tuple[str | int, ...]

MAX_FILE_BYTES = 4 * 1024 * 1024
"""Largest lab or resource file read (a Calico export of thousands of BGPPeers is under 1 MiB)."""

MAX_NODES = 500_000
"""Most YAML nodes (scalars, sequences, mappings) one file may expand to, aliases counted expanded."""

MAX_DEPTH = 64
"""Deepest nesting of sequences and mappings (lab files need about 8)."""

MAX_KEY_CHARS = 512
"""Longest mapping key (a Kubernetes label key is at most 317 characters)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


_GO_INT = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
_GO_FLOAT = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


def _go_scalars(loader: Any) -> Any:
    """`loader` resolving plain scalars as Kubernetes does (go-yaml): YAML 1.1 without base-60
    numbers, so `65000:100` is the string a community is, not the integer 3900100."""
    plain = {"tag:yaml.org,2002:int": _GO_INT, "tag:yaml.org,2002:float": _GO_FLOAT}
    resolvers = {
        first: [(tag, plain.get(tag, rx)) for tag, rx in entries]
        for first, entries in loader.yaml_implicit_resolvers.items()
    }
    return type(f"Go{loader.__name__}", (loader,), {"yaml_implicit_resolvers": resolvers})


# libyaml composes about ten times faster than pure Python and caps nesting at 1000 levels
# itself; without it, pure Python's recursion limit stops deep nesting (a RecursionError).
_COMPOSER: Any = _go_scalars(getattr(yaml, "CSafeLoader", yaml.SafeLoader))
_REWORD_CHARS = 64 * 1024  # bad YAML up to this size is parsed again in pure Python for its wording


def format_path(path: Path_) -> str:
    """('clusters', 0, 'nodes', 2, 'rack') -> 'clusters[0].nodes[2].rack'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def shown(value: Any, limit: int = 64) -> str:
    """A value as it may appear in a one-line message: repr'd (control characters escaped),
    cut to about `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


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


# -- reading a file -----------------------------------------------------------------------


def read_file(path: str | Path, name: str, limit: int = MAX_FILE_BYTES) -> str:
    """The text of a regular file of at most `limit` bytes; SpecError naming `name` otherwise.

    Nothing but a regular file is ever opened, and it is opened non-blocking (a FIFO swapped in
    after the `stat` cannot block): harness.safefile."""

    def refuse(message: str) -> SpecError:
        return SpecError([SpecIssue(name, "", message)])

    try:
        data = read_regular(path, limit, what="lab and resource files")
    except FileRefused as e:
        raise refuse(str(e)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise refuse(f"is not UTF-8 text (byte {e.start})") from None


# -- bounding what a document expands to -----------------------------------------------------


class _Budget:
    """Counts the nodes of documents as their aliases and merge keys expand (memoised by node
    identity, so a bomb costs what its text costs), and finds nesting and recursion."""

    def __init__(self, name: str):
        self.name = name
        self.total = 0
        self._memo: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
        self._active: set[int] = set()

    def _refuse(self, node: yaml.Node, message: str) -> SpecError:
        return SpecError([SpecIssue(self.name, "", message, node.start_mark.line + 1)])

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in self._memo:
            return self._memo[key]
        if key in self._active:
            raise self._refuse(node, "a YAML alias refers to a node that contains it (recursive alias)")
        if isinstance(node, yaml.ScalarNode):
            return 1, 0
        self._active.add(key)
        children = (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        )
        size, height = 1, 0
        for child in children:
            s, h = self._measure(child)
            size, height = min(size + s, MAX_NODES + 1), max(height, h + 1)
        self._active.discard(key)
        if height > MAX_DEPTH:
            raise self._refuse(node, f"nested more than {MAX_DEPTH} levels deep")
        if size > MAX_NODES:
            raise self._refuse(
                node,
                f"expands to more than {MAX_NODES:,} YAML nodes (aliases and merge keys counted "
                "expanded): an alias or merge-key bomb?",
            )
        self._memo[key] = (size, height)
        return size, height

    def add(self, node: yaml.Node) -> None:
        size, _ = self._measure(node)
        self.total += size
        if self.total > MAX_NODES:
            raise self._refuse(node, f"the file expands to more than {MAX_NODES:,} YAML nodes")


# -- building Python data with line numbers ---------------------------------------------------


class _Builder:
    """Builds plain Python data from composed (and measured) nodes, recording lines and
    duplicate keys. Merge keys follow the YAML merge spec: the mapping's own keys win, then
    the merged mappings in order."""

    def __init__(self, smap: SourceMap, issues: list[SpecIssue], loader: yaml.SafeLoader):
        self.smap = smap
        self.issues = issues
        self.loader = loader

    def _issue(self, path: Path_, message: str, node: yaml.Node) -> None:
        self.issues.append(SpecIssue(self.smap.file, format_path(path), message, node.start_mark.line + 1))

    def build(self, node: yaml.Node, path: Path_ = ()) -> Any:
        self.smap.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _COLLECTION_TAGS:
            self._issue(path, f"unsupported YAML tag {shown(node.tag)}: plain mappings and lists only", node)
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(n, (*path, i)) for i, n in enumerate(node.value)]
        return self.scalar(node)

    def scalar(self, node: yaml.Node) -> Any:
        if node.tag == _VALUE_TAG:  # a bare '=' key: a string, as yaml.safe_load reads it
            return node.value
        return self.loader.construct_object(node, deep=True)

    def _key(self, key_node: yaml.Node, path: Path_) -> tuple[bool, Any]:
        if not isinstance(key_node, yaml.ScalarNode):
            self._issue(path, "a mapping key must be a plain value, not a list or mapping", key_node)
            return False, None
        key = self.scalar(key_node)
        if isinstance(key, str) and (len(key) > MAX_KEY_CHARS or not key.isprintable()):
            self._issue(
                path,
                f"key {shown(key)} is not a field name (control characters, or longer than "
                f"{MAX_KEY_CHARS} characters)",
                key_node,
            )
            return False, None
        return True, key

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for key, value in self._merged(value_node, path).items():
                    merged.setdefault(key, value)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            ok, key = self._key(key_node, (*path, "<key>"))
            if not ok:
                continue
            if key in out:
                first = self.smap.lines.get((*path, key), "?")
                self._issue(
                    (*path, str(key)), f"duplicate key {shown(key)} (first on line {first})", key_node
                )
                continue
            self.smap.lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, (*path, key))
        return {**{k: v for k, v in merged.items() if k not in out}, **out}

    def _merged(self, value_node: yaml.Node, path: Path_) -> dict[Any, Any]:
        """What a `<<:` value contributes: a mapping, or a list of mappings (earlier ones win)."""
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        out: dict[Any, Any] = {}
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self._issue(path, "a merge key '<<' takes a mapping or a list of mappings", source)
                continue
            for key, value in self._mapping(source, path).items():
                out.setdefault(key, value)
        return out


def load_documents(
    path: str | Path, display: str | None = None, limit: int = MAX_FILE_BYTES
) -> tuple[list[Any], list[SourceMap]]:
    """Load every document of a YAML file, with a source map each. Raises SpecError on a file
    that is not a regular file, is too large, or holds bad or explosive YAML."""
    name = display or str(path)
    return loads_documents(read_file(path, name, limit), name)


def loads_documents(text: str, name: str) -> tuple[list[Any], list[SourceMap]]:
    """Load every document of YAML text (named `name` in issues), with a source map each."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise SpecError([SpecIssue(name, "", f"larger than {MAX_FILE_BYTES // 1024 // 1024} MiB")])
    issues: list[SpecIssue] = []
    docs: list[Any] = []
    maps: list[SourceMap] = []
    budget = _Budget(name)
    loader = yaml.SafeLoader("")
    try:
        for node in yaml.compose_all(text, Loader=_COMPOSER):
            if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
                continue  # an empty document (e.g. a manifest ending in '---')
            budget.add(node)
            smap = SourceMap(name)
            docs.append(_Builder(smap, issues, loader).build(node))
            maps.append(smap)
    except yaml.YAMLError as e:
        raise SpecError([_yaml_issue(_reworded(e, text), name, text)]) from None
    except RecursionError:
        raise SpecError([SpecIssue(name, "", f"nested more than {MAX_DEPTH} levels deep")]) from None
    finally:
        loader.dispose()
    if issues:
        raise SpecError(issues)
    return docs, maps


def _reworded(error: yaml.YAMLError, text: str) -> yaml.YAMLError:
    """The pure-Python parser's error for the same (small) text: it says what it found where,
    where libyaml says what it did not find."""
    if not hasattr(yaml, "CSafeLoader") or len(text) > _REWORD_CHARS:
        return error
    try:
        for _ in yaml.compose_all(text, Loader=yaml.SafeLoader):
            pass
    except yaml.YAMLError as e:
        return e
    except RecursionError:
        pass
    return error


def _yaml_issue(e: yaml.YAMLError, name: str, text: str) -> SpecIssue:
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow: no mark, a position
        line = text.count("\n", 0, e.position) + 1
        return SpecIssue(
            name, "", f"invalid YAML: unacceptable character #x{e.character:04x} ({e.reason})", line
        )
    mark = getattr(e, "problem_mark", None)
    line = mark.line + 1 if mark else None
    problem = getattr(e, "problem", None) or str(e)
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and cmark is not None and (mark is None or cmark.line != mark.line):
        problem += f" ({context} that starts on line {cmark.line + 1})"
    return SpecIssue(name, "", "invalid YAML: " + " ".join(problem.split()), line)
