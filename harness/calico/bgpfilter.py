"""How a BGPFilter becomes BIRD 1.6 config, and how route priority travels through BIRD.

An emulation of what calico-node's confd renders (facts from shared/design/calico-semantics.md
and Calico's confd template functions and BGP processor; the code and wording are kvlab's).

BGPFilter functions
    Every BGPFilter of the cluster with rules for a direction and family becomes one BIRD
    function, named ``'bgp_<name>_importFilterV4'`` / ``'bgp_<name>_exportFilterV4'`` (quoted:
    filter names may contain ``-``; names too long for BIRD's 64-character symbols are cut and
    suffixed with a hash). The function takes ``(bool is_same_as)`` when any rule of that
    direction has a ``peerType``, else no argument. Each rule, in order, is one statement:

        if (<condition>&&<condition>...) then { <operation>; ... accept; }
        reject;                                   <- a rule with no match field

    and a rule with ``peerType`` is wrapped in ``if (is_same_as) then { ... }`` (iBGP) or
    ``if (!is_same_as) then { ... }`` (eBGP). A function whose rules all miss returns, and
    evaluation goes on with the next filter, then Calico's default handling. ``accept`` and
    ``reject`` inside a function end the whole BIRD filter: an export Accept therefore skips
    ``calico_export_to_bgp_peers`` (aggregation, disabled pools), and an import Accept skips
    the preference-200 bump below.

Route priority
    Kernel metric ("priority", lower wins) and BGP LOCAL_PREF (higher wins) map onto each
    other as ``local_pref = 2147483647 - priority``. A peer's export filter first makes both
    known: a BGP-learned route keeps its local_pref and gets ``krt_metric`` from it; a
    kernel-learned route gets ``bgp_local_pref`` from its ``krt_metric`` (the normal priority
    when undefined). User export functions then run (so ``priority`` rules can match), then
    ``calico_export_to_bgp_peers``, whose ``calico_aggr`` lets a /32 with a metric below the
    normal priority out of its block. A peer's import filter runs the user import functions,
    then gives a route whose local_pref says "better than normal" BIRD ``preference = 200``,
    then accepts. The kernel protocol's export filter turns a BGP route's local_pref back into
    ``krt_metric`` (BIRD 1.6 drops a ``krt_metric`` set by a BGP import filter).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from harness.calico import resources as cr

BIRD_INT_MAX = 2147483647
"""2^31 - 1: priorities and local_pref convert as ``local_pref = BIRD_INT_MAX - priority``."""

OVERRIDE_PREFERENCE = 200
"""BIRD route preference an elevated imported route gets (kernel-learned routes have 10, BGP 100)."""

MAX_SYMBOL = 64
"""BIRD's limit on symbol length; longer filter names are cut and hashed."""

_HASH_CHARS = 16
_OPERATORS = {"Equal": "=", "NotEqual": "!=", "In": "~", "NotIn": "!~"}
_DIRECTIONS = ("import", "export")


def local_pref(priority: int) -> int:
    """The BGP local_pref that carries a kernel route priority (metric)."""
    return BIRD_INT_MAX - priority


def priority(local_pref_value: int) -> int:
    """The kernel route priority (metric) a BGP local_pref stands for."""
    return BIRD_INT_MAX - local_pref_value


# -- names ---------------------------------------------------------------------------------


def _fit(name: str, limit: int) -> str:
    """`name` if it fits in `limit` characters, else its head + '_' + 16 hex digits of its SHA-256."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest().upper()[:_HASH_CHARS]
    return f"{name[: limit - _HASH_CHARS - 1]}_{digest}"


def function_name(filter_name: str, direction: str, family: int = 4) -> str:
    """The quoted BIRD function name of one filter, direction ('import'|'export') and family."""
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be 'import' or 'export', not {direction!r}")
    suffix = f"_{direction}FilterV{family}"
    name = _fit(filter_name, MAX_SYMBOL - len("bgp_") - len(suffix))
    return f"'bgp_{name}{suffix}'"


def rules(spec: cr.BGPFilterSpec, direction: str, family: int = 4) -> list[cr.FilterRule]:
    """The ordered rules of one direction and family."""
    return list(getattr(spec, f"{direction}V{family}"))


def takes_peer_type(spec: cr.BGPFilterSpec, direction: str, family: int = 4) -> bool:
    """Whether the direction's function takes `is_same_as` (some rule has a peerType)."""
    return any(r.peerType is not None for r in rules(spec, direction, family))


# -- one rule ------------------------------------------------------------------------------


def _community(value: str) -> tuple[str, str]:
    """('(a, b)', 'bgp_community') or ('(a, b, c)', 'bgp_large_community')."""
    parts = cr.parse_community(value)
    attr = "bgp_community" if len(parts) == 2 else "bgp_large_community"
    return "(" + ", ".join(str(p) for p in parts) + ")", attr


def _prefix(cidr: str) -> str:
    """A rule's CIDR as the BGPFilter writes it (calico-node does not rewrite it): the model
    accepts only a prefix without host bits, in BIRD's syntax."""
    return cidr


def _prefix_set(cidr: str, bounds: cr.PrefixLength, family: int) -> str:
    """`[ C{min,max} ]`: min is at least the CIDR's length, max at most the family's maximum."""
    length = ipaddress.ip_network(cidr, strict=False).prefixlen
    top = 32 if family == 4 else 128
    low = length if bounds.min is None else max(length, bounds.min)
    high = top if bounds.max is None else min(top, bounds.max)
    return f"[ {_prefix(cidr)}{{{low},{high}}} ]"


def conditions(rule: cr.FilterRule, family: int = 4) -> list[str]:
    """The BIRD expressions a rule's match fields become, in Calico's order (all must hold).

    With `prefixLength` the CIDR becomes a prefix set, so `Equal`/`NotEqual` compare a prefix
    with a set: BIRD finds them never equal (Equal never matches, NotEqual always does). That is
    Calico's behaviour and is kept.
    """
    out = []
    if rule.cidr is not None and rule.matchOperator is not None:
        bounds = rule.prefixLength
        target = _prefix(rule.cidr) if bounds is None else _prefix_set(rule.cidr, bounds, family)
        out.append(f"(net {_OPERATORS[rule.matchOperator]} {target})")
    if rule.source == "RemotePeers":
        out.append("((defined(source))&&(source ~ [ RTS_BGP ]))")
    if rule.interface is not None:
        out.append(f'((defined(ifname))&&(ifname ~ "{rule.interface}"))')
    if rule.communities is not None:
        value, attr = _community(rule.communities.values[0])
        out.append(f"({value} ~ {attr})")
    if rule.asPathPrefix:
        out.append(f"(bgp_path ~ [= {' '.join(str(a) for a in rule.asPathPrefix)} * =])")
    if rule.priority is not None:
        out.append(f"(defined(bgp_local_pref)&&(bgp_local_pref = {local_pref(rule.priority)}))")
    return out


def operations(rule: cr.FilterRule) -> list[str]:
    """The BIRD statements of a rule's operations, in order."""
    out = []
    for op in rule.operations:
        if op.addCommunity is not None:
            value, attr = _community(op.addCommunity.value)
            out.append(f"{attr}.add({value});")
        elif op.prependASPath is not None:
            # Each prepend goes in front, so prepend the last AS first: the path then starts
            # with the listed sequence.
            out += [f"bgp_path.prepend({asn});" for asn in reversed(op.prependASPath.prefix)]
        elif op.setPriority is not None:
            out.append(f"bgp_local_pref = {local_pref(op.setPriority.value)};")
    return out


def statement(rule: cr.FilterRule, family: int = 4) -> str:
    """One rule as one BIRD statement (one line)."""
    body = " ".join([*operations(rule), f"{rule.action.lower()};"])
    conds = conditions(rule, family)
    text = f"if ({'&&'.join(conds)}) then {{ {body} }}" if conds else body
    if rule.peerType == "iBGP":
        text = f"if (is_same_as) then {{ {text} }}"
    elif rule.peerType == "eBGP":
        text = f"if (!is_same_as) then {{ {text} }}"
    return text


# -- the functions of all filters ----------------------------------------------------------


def function_definitions(filters: Iterable[cr.BGPFilter], family: int = 4) -> list[str]:
    """BIRD function definitions for every filter (by name), one list entry per line."""
    lines: list[str] = []
    for f in sorted(filters, key=lambda f: f.metadata.name):
        directions = [d for d in _DIRECTIONS if rules(f.spec, d, family)]
        if not directions:
            continue
        lines.append(f"# v{family} BGPFilter {f.metadata.name}")
        for d in directions:
            arg = "bool is_same_as" if takes_peer_type(f.spec, d, family) else ""
            lines.append(f"function {function_name(f.metadata.name, d, family)}({arg}) {{")
            lines += [f"  {statement(r, family)}" for r in rules(f.spec, d, family)]
            lines.append("}")
    if not lines:
        lines.append(f"# No v{family} BGPFilters configured")
    return lines


# -- one BGP session's filters -------------------------------------------------------------


def _calls(
    names: Sequence[str], filters: Mapping[str, cr.BGPFilter], direction: str, same_as: bool, family: int
) -> list[str]:
    """Calls of a peer's filter functions for one direction, in the peer's order.

    A name with no BGPFilter, or a filter without rules for this direction and family, adds
    nothing (calico-node skips it the same way).
    """
    out = []
    for name in names:
        f = filters.get(name)
        if f is None or not rules(f.spec, direction, family):
            continue
        arg = ("true" if same_as else "false") if takes_peer_type(f.spec, direction, family) else ""
        out.append(f"{function_name(name, direction, family)}({arg});")
    return out


def import_filter(
    names: Sequence[str],
    filters: Mapping[str, cr.BGPFilter],
    *,
    same_as: bool,
    normal_priority: int,
    family: int = 4,
) -> list[str]:
    """The body of a peer's `import filter { ... }`, one list entry per line."""
    return [
        *_calls(names, filters, "import", same_as, family),
        f"if (defined(bgp_local_pref)&&(bgp_local_pref > {local_pref(normal_priority)})) then",
        f"  preference = {OVERRIDE_PREFERENCE};",
        "accept;",
    ]


def export_filter(
    names: Sequence[str],
    filters: Mapping[str, cr.BGPFilter],
    *,
    same_as: bool,
    normal_priority: int,
    family: int = 4,
) -> list[str]:
    """The body of a peer's `export filter { ... }`, one list entry per line."""
    internal = "true" if same_as else "false"
    return [
        # `defined(bgp_local_pref)` alone cannot tell the two apart: BIRD gives every route
        # it prepares for BGP export a local_pref of 100. `source = RTS_BGP` can.
        "if (defined(source) && source = RTS_BGP && defined(bgp_local_pref)) then {",
        f"  krt_metric = {BIRD_INT_MAX} - bgp_local_pref;",
        "} else {",
        f"  if (!defined(krt_metric)) then {{ krt_metric = {normal_priority}; }}",
        f"  bgp_local_pref = {BIRD_INT_MAX} - krt_metric;",
        "}",
        *_calls(names, filters, "export", same_as, family),
        f"calico_export_to_bgp_peers({internal});",
        "reject;",
    ]


def kernel_priority(normal_priority: int) -> list[str]:
    """Statements of `filter calico_kernel_programming` that give BGP routes their kernel metric."""
    return [
        "if (defined(source) && (source = RTS_BGP) && !defined(krt_metric)) then {",
        f"  krt_metric = {normal_priority};",
        "  if (defined(bgp_local_pref)) then {",
        f"    krt_metric = {BIRD_INT_MAX} - bgp_local_pref;",
        "  }",
        f"  if (krt_metric < {normal_priority}) then {{",
        f"    preference = {OVERRIDE_PREFERENCE};",
        "  }",
        "}",
    ]


def aggregation(block: str, normal_priority: int) -> list[str]:
    """`calico_aggr` statements for one affine block: export it, and of the routes inside it
    only those whose metric is below the normal priority (elevated routes)."""
    return [
        f"if ( net = {block} ) then {{ accept; }}",
        f"if ( net ~ {block} && krt_metric < {normal_priority} ) then {{ accept; }}",
        f"if ( net ~ {block} ) then {{ reject; }}",
    ]


__all__ = [
    "BIRD_INT_MAX",
    "MAX_SYMBOL",
    "OVERRIDE_PREFERENCE",
    "aggregation",
    "conditions",
    "export_filter",
    "function_definitions",
    "function_name",
    "import_filter",
    "kernel_priority",
    "local_pref",
    "operations",
    "priority",
    "rules",
    "statement",
    "takes_peer_type",
]
