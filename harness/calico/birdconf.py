"""BIRD 1.6 configs as a semantic model, to compare two of them.

A config is read into its parts, each under a key: global options (`router id`, `listen bgp`,
`log`, ...), functions (arguments and body), filters (body), and protocols with their options
after templates are applied (`protocol bgp X from bgp_template` gets the template's options,
its own override them; anonymous protocols get BIRD's names: kernel1, static1, ...). Options
are keyed by their keyword (`local as`, `neighbor`, `import`, `route <prefix>`, ...). Text is
compared as tokens: whitespace and comments never count, order inside a body always does.

`read(text, includes)` inlines `include "<name>"` from a mapping of sibling files (nothing is
opened here); `compare(ours, theirs)` lists every `Difference`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|/\*.*?\*/
    |(?P<tok>"[^"\n]*"|'[^'\n]*'|[A-Za-z0-9_.:]+(?:/\d+)?|&&|\|\||!=|!~|<=|>=|[=~<>!+\-*/%(){}\[\];,])""",
    re.X | re.S,
)
MAX_TOKENS = 2_000_000
"""Most tokens read from one config (a 4 MiB file has fewer)."""

# Protocol options BIRD 1.6 knows: the words that name an option (the rest of the statement
# is its value). A statement none of them starts is keyed by its whole text.
_PROTOCOL_OPTIONS = (
    "local as, neighbor, source address, multihop, ttl security, passive, import, export, next hop self, "
    "next hop keep, gateway, add paths, graceful restart time, graceful restart, connect delay time, "
    "connect retry time, error wait time, error forget time, keepalive time, hold time, startup hold time, "
    "rr client, rr cluster id, password, allow local as, description, debug, learn, persist, scan time, "
    "merge paths, interface, table, preference, igp table, import limit, receive limit, export limit, "
    "missing lladdr, direct, interpret communities, enable route refresh, enable as4, capabilities, "
    "advertise ipv4, route limit, deterministic med, med metric, bgp med, bgp local pref, path metric, "
    "prefer older, default bgp_med, default bgp_local_pref, check link, bfd, device routes, kernel table"
)
_GLOBAL_OPTIONS = (
    "router id, listen bgp, log, timeformat protocol, timeformat route, timeformat base, timeformat log, "
    "debug protocols, debug commands, mrtdump, mrtdump protocols, graceful restart wait"
)


def _keys(text: str) -> list[tuple[str, ...]]:
    """Option keys as word tuples, longest first (so `graceful restart time` wins over `graceful restart`)."""
    return sorted((tuple(k.split()) for k in text.split(", ")), key=len, reverse=True)


_OPTION_KEYS = _keys(_PROTOCOL_OPTIONS)
_GLOBAL_KEYS = _keys(_GLOBAL_OPTIONS)


class ConfigError(ValueError):
    """Text this reader cannot make a config of (unbalanced braces, unknown include, ...)."""


def tokens(text: str) -> list[str]:
    """The tokens of BIRD config text: comments and whitespace dropped."""
    out: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise ConfigError(f"line {line}: unexpected character {text[pos]!r}")
        if m.group("tok") is not None:
            out.append(m.group("tok"))
            if len(out) > MAX_TOKENS:
                raise ConfigError(f"more than {MAX_TOKENS} tokens")
        pos = m.end()
    return out


def statements(toks: list[str]) -> list[list[str]]:
    """Split tokens into statements: each ends with `;` or with the `}` closing its block
    (and a `;` right after it belongs to it)."""
    out: list[list[str]] = []
    cur: list[str] = []
    depth = 0
    i = 0
    while i < len(toks):
        t = toks[i]
        cur.append(t)
        if t in "{[(":
            depth += 1
        elif t in "}])":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced {t!r} after {' '.join(cur[-8:])!r}")
            if depth == 0 and t == "}":
                if i + 1 < len(toks) and toks[i + 1] == ";":
                    cur.append(";")
                    i += 1
                if not _continues(toks, i + 1):
                    out.append(cur)
                    cur = []
        elif t == ";" and depth == 0:
            out.append(cur)
            cur = []
        i += 1
    if depth or cur:
        raise ConfigError(f"unterminated statement {' '.join(cur[:8])!r}")
    return out


def _continues(toks: list[str], i: int) -> bool:
    """After a closing `}`: an `else` continues the statement."""
    return i < len(toks) and toks[i] == "else"


def _block(stmt: list[str]) -> tuple[list[str], list[str]]:
    """(head, body) of a statement ending in a `{ ... }` block."""
    if "{" not in stmt:
        raise ConfigError(f"expected a block in {' '.join(stmt[:8])!r}")
    start = stmt.index("{")
    end = len(stmt) - (2 if stmt[-1] == ";" else 1)
    if stmt[end] != "}":
        raise ConfigError(f"expected '}}' to end {' '.join(stmt[:8])!r}")
    return stmt[:start], stmt[start + 1 : end]


def _key(stmt: list[str], known: list[tuple[str, ...]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(option key, value) of a statement (without its `;`)."""
    body = stmt[:-1] if stmt and stmt[-1] == ";" else stmt
    for key in known:
        if tuple(body[: len(key)]) == key:
            return key, tuple(body[len(key) :])
    if body and body[0] == "route" and len(body) > 1:
        return ("route", body[1]), tuple(body[2:])
    return tuple(body), ()


@dataclass
class Protocol:
    kind: str
    name: str
    options: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Config:
    """A BIRD config's semantic parts (see the module docstring)."""

    globals: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)
    functions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    protocols: dict[str, Protocol] = field(default_factory=dict)

    def parts(self) -> dict[str, tuple[str, ...]]:
        """Every comparable part under a readable key, as tokens."""
        out: dict[str, tuple[str, ...]] = {}
        for key, value in self.globals.items():
            out[f"global {' '.join(key)}"] = value
        for name, body in self.functions.items():
            out[f"function {name}"] = body
        for name, body in self.filters.items():
            out[f"filter {name}"] = body
        for name, proto in self.protocols.items():
            out[f"protocol {proto.kind} {name}"] = ()
            for key, value in proto.options.items():
                out[f"protocol {proto.kind} {name}: {' '.join(key)}"] = value
        return out


def inline(text: str, includes: Mapping[str, str]) -> str:
    """`text` with each `include "<name>";` replaced by includes[name]; ConfigError for another."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in includes:
            raise ConfigError(
                f"include {name!r}: only {', '.join(sorted(includes)) or 'no file'} may be included"
            )
        return includes[name]

    return re.sub(r'^[ \t]*include\s+"([^"\n]*)"\s*;', sub, text, flags=re.M)


def read(text: str, includes: Mapping[str, str] | None = None) -> Config:
    """The semantic model of a config (includes inlined from `includes`)."""
    cfg = Config()
    templates: dict[str, tuple[str, str | None, list[list[str]]]] = {}
    counts: dict[str, int] = {}
    pending: list[tuple[str, str, str | None, list[list[str]]]] = []
    for stmt in statements(tokens(inline(text, includes or {}))):
        head = stmt[0]
        if head == "function":
            top, body = _block(stmt)
            cfg.functions[_name(top, 1)] = (*top[2:], "{", *body, "}")
        elif head == "filter" and "{" in stmt:
            top, body = _block(stmt)
            cfg.filters[_name(top, 1)] = tuple(body)
        elif head in ("template", "protocol"):
            top, body = _block(stmt)
            kind = _name(top, 1)
            rest = top[2:]
            parent = None
            if "from" in rest:
                parent = _name(rest, rest.index("from") + 1)
                rest = rest[: rest.index("from")]
            if rest:
                name = _name(rest, 0)
            elif head == "protocol":
                counts[kind] = counts.get(kind, 0) + 1
                name = f"{kind}{counts[kind]}"
            else:
                raise ConfigError(f"template {kind} without a name")
            inner = statements(body)
            if head == "template":
                templates[name] = (kind, parent, inner)
            else:
                pending.append((kind, name, parent, inner))
        else:
            key, value = _key(stmt, _GLOBAL_KEYS)
            cfg.globals[key] = value
    for kind, name, parent, inner in pending:
        options: dict[tuple[str, ...], tuple[str, ...]] = {}
        chain: list[list[list[str]]] = [inner]
        seen = {name}
        while parent is not None:
            if parent in seen or parent not in templates:
                raise ConfigError(f"protocol {name}: no template {parent!r}")
            seen.add(parent)
            _, parent_of, body = templates[parent]
            chain.append(body)
            parent = parent_of
        for body in reversed(chain):
            for s in body:
                key, value = _key(s, _OPTION_KEYS)
                options[key] = value
        cfg.protocols[name] = Protocol(kind, name, options)
    return cfg


def _name(toks: list[str], i: int) -> str:
    if i >= len(toks):
        raise ConfigError(f"a name is missing after {' '.join(toks)!r}")
    return toks[i]


# -- comparing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One part that differs: present on one side only, or with other tokens."""

    key: str
    ours: tuple[str, ...] | None  # None: not in our config
    theirs: tuple[str, ...] | None  # None: not in theirs

    def diff(self) -> list[str]:
        """A readable unified diff of the part (expected first)."""
        a = pretty(self.theirs) if self.theirs is not None else []
        b = pretty(self.ours) if self.ours is not None else []
        head = [
            f"@@ {self.key}"
            + (
                " (only in ours)"
                if self.theirs is None
                else " (missing in ours)"
                if self.ours is None
                else ""
            )
        ]
        return (
            head
            + [
                line.rstrip("\n")
                for line in difflib.unified_diff(a, b, "expected", "kvlab", n=2, lineterm="")
            ][2:]
        )


def compare(ours: Config, theirs: Config) -> list[Difference]:
    """Every part that is not the same in both configs, sorted by key."""
    a, b = ours.parts(), theirs.parts()
    return [Difference(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def pretty(toks: tuple[str, ...] | None) -> list[str]:
    """Tokens laid out one statement a line, indented by block depth (for diffs)."""
    if not toks:
        return ["(empty)"] if toks is not None else []
    lines: list[str] = []
    cur: list[str] = []
    depth = 0

    def flush() -> None:
        if cur:
            lines.append("  " * depth + _join(cur))
            cur.clear()

    for t in toks:
        if t == "{":
            cur.append(t)
            flush()
            depth += 1
        elif t == "}":
            flush()
            depth = max(0, depth - 1)
            cur.append(t)
        elif t == ";":
            cur.append(t)
            flush()
        else:
            cur.append(t)
    flush()
    return lines


_KEYWORDS = {"if", "then", "else", "and", "or", "not", "filter", "function", "where", "case", "print"}


def _join(toks: list[str]) -> str:
    """Tokens as one line, spaced the way BIRD configs are usually written."""
    out = ""
    prev = ""
    for t in toks:
        tight = (
            t in ");,]"
            or prev in ("(", "[", "!")
            or (t == "(" and prev[-1:].isalnum() and prev not in _KEYWORDS)
        )
        if out and not tight:
            out += " "
        out += t
        prev = t
    return out


__all__ = [
    "Config",
    "ConfigError",
    "Difference",
    "Protocol",
    "compare",
    "inline",
    "pretty",
    "read",
    "statements",
    "tokens",
]
