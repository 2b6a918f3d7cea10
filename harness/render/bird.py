"""BIRD configs from the `bird-configs/` Jinja2 templates: routers from the topology, nodes
from their cluster's Calico resources (through `harness.calico.confd`).

Defence in depth against injection: every value the templates interpolate passes a Jinja
`finalize` that refuses anything but numbers, addresses and printable one-line ASCII (no
newline or NUL can start a statement of its own), and the templates pass values through
context filters (`symbol`, `quoted`, `number`, `address`, `prefix`) that refuse what cannot
appear there. A refused value raises `UnsafeValue` (a SpecError, exit 2); the lab's
validation is meant to refuse it long before.

`check_rendered(spec)` renders every config a lab derives and parses each with `bird -p`
(`kvlab validate`, and `Lab.up()` before the netns runtime creates anything).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import jinja2

from harness.calico import cluster as cc
from harness.calico import confd
from harness.calico.cluster import Cluster
from harness.calico.resources import parse_community
from harness.errors import LabError, SpecError, SpecIssue
from harness.spec import BIRD_TEMPLATE_DIR, LabSpec, cluster_resources
from harness.topology import Topology, resolve
from harness.yamlsrc import format_path, shown

TEMPLATE_DIR = BIRD_TEMPLATE_DIR
ROLE_TEMPLATES = {"spine": "router.conf.j2", "tor": "router.conf.j2", "external": "router.conf.j2"}
CHECK_WORKERS = 4
"""Concurrent `bird -p` processes of `check_rendered` (each takes about 2 ms)."""

_ONE_LINE = re.compile(r"[\x20-\x7e]*")
_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ADDRESS_TYPES = (
    ipaddress.IPv4Address,
    ipaddress.IPv4Network,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Address,
    ipaddress.IPv6Network,
    ipaddress.IPv6Interface,
)


class UnsafeValue(SpecError):
    """A value impossible where a BIRD template would put it: refused, never rendered."""

    def __init__(self, template: str | None, value: Any, reason: str):
        super().__init__(
            [SpecIssue(f"bird-configs/{template}", "", f"refusing to render {shown(value)}: {reason}")]
        )


@jinja2.pass_context
def _finalize(ctx: jinja2.runtime.Context, value: Any) -> Any:
    """Every `{{ ... }}`: a number, an IP address or network, or one line of printable ASCII."""
    if isinstance(value, bool) or value is None:
        raise UnsafeValue(ctx.name, value, "not a value of a BIRD config")
    if isinstance(value, (int, *_ADDRESS_TYPES)):
        return value
    if isinstance(value, str) and _ONE_LINE.fullmatch(value):
        return value
    if isinstance(value, str):
        raise UnsafeValue(ctx.name, value, "a newline, NUL, control or non-ASCII character in a BIRD config")
    raise UnsafeValue(ctx.name, value, f"a {type(value).__name__} is no value of a BIRD config")


@jinja2.pass_context
def _symbol(ctx: jinja2.runtime.Context, value: Any) -> str:
    """A BIRD symbol (protocol, filter or template name)."""
    if not isinstance(value, str) or not _SYMBOL.fullmatch(value):
        raise UnsafeValue(ctx.name, value, "not a BIRD symbol ([A-Za-z_][A-Za-z0-9_]*, at most 64)")
    return value


@jinja2.pass_context
def _quoted(ctx: jinja2.runtime.Context, value: Any) -> str:
    """Text inside a BIRD string literal: no quote or backslash can end or escape it."""
    text = str(value)
    if '"' in text or "\\" in text:
        raise UnsafeValue(ctx.name, value, "a quote or backslash inside a BIRD string")
    return text


@jinja2.pass_context
def _number(ctx: jinja2.runtime.Context, value: Any) -> int:
    """An integer (AS numbers, timers, priorities, community parts)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise UnsafeValue(ctx.name, value, "not an unsigned 32-bit number")
    return value


def _ipv4(parse: Any, what: str) -> Any:
    """A filter for an IPv4 `what` (address: router IDs, neighbours; prefix: blocks, pools)."""

    @jinja2.pass_context
    def check(ctx: jinja2.runtime.Context, value: Any) -> str:
        try:
            return str(parse(str(value)))
        except ValueError:
            raise UnsafeValue(ctx.name, value, f"not an IPv4 {what}") from None

    return check


def _of_family(parse: dict[int, Any], what: str) -> Any:
    """A filter for an IP `what` of the config's family (`{{ x | ip(cfg.family) }}`)."""

    @jinja2.pass_context
    def check(ctx: jinja2.runtime.Context, value: Any, family: int) -> str:
        try:
            return str(parse[family](str(value)))
        except (ValueError, KeyError):
            raise UnsafeValue(ctx.name, value, f"not an IPv{family} {what}") from None

    return check


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    env.filters.update(
        symbol=_symbol,
        quoted=_quoted,
        number=_number,
        address=_ipv4(ipaddress.IPv4Address, "address"),
        prefix=_ipv4(ipaddress.IPv4Network, "prefix"),
        ip=_of_family({4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}, "address"),
        net=_of_family({4: ipaddress.IPv4Network, 6: ipaddress.IPv6Network}, "prefix"),
    )
    return env


def render_router(topo: Topology, name: str, log_file: str | None = None, family: int = 4) -> str:
    """A router's BIRD (family 4) or bird6 (family 6) config."""
    router = topo.spec.router(name)
    template = _env().get_template(router.template or ROLE_TEMPLATES[router.role])
    return template.render(
        router=router,
        family=family,
        router_id=topo.router_id[name],
        neighbors=topo.router_neighbors(name, family),
        community=parse_community(router.elevated_community),
        ecmp=False,
        log_file=log_file,
    )


def render_node(
    topo: Topology, node: str, resources: list[Any], log_file: str | None = None, family: int = 4
) -> str:
    """A lab node's BIRD (family 4) or bird6 (family 6) config, from its cluster's Calico resources."""
    return render_node_config(confd.node_bird_config(topo, node, resources, log_file, family))


def render_calico_node(cluster: Cluster, node: str, family: int = 4, log_file: str | None = None) -> str:
    """A node's BIRD config (BIRD for IPv4, bird6 for IPv6) from Calico resources alone."""
    return render_node_config(confd.node_config(cluster, node, family, log_file))


def render_node_config(cfg: confd.NodeBirdConfig) -> str:
    """node.conf.j2 of a computed node config: the one renderer of every calico-node emulation."""
    return _env().get_template("node.conf.j2").render(cfg=cfg)


# -- bird -p --------------------------------------------------------------------------------


def bird_executable(bird: str = "bird") -> str:
    """The BIRD daemon's path; LabError when BIRD is not installed."""
    exe = shutil.which(bird) or shutil.which(bird, path="/usr/sbin:/sbin")
    if exe is None:
        raise LabError("BIRD is not installed (Debian package 'bird'); run 'make setup'")
    return exe


def parse_error(text: str, exe: str) -> str | None:
    """BIRD's objection to a config (`bird -p` reading it from stdin: no file is written), or None.

    A config given to this must log to stderr: BIRD opens a configured log file while parsing."""
    stdin = "/dev/stdin"
    res = subprocess.run(
        [exe, "-p", "-c", stdin], input=text, capture_output=True, text=True, check=False, timeout=60
    )
    if res.returncode == 0:
        return None
    return _explain(text, (res.stderr or res.stdout).strip(), stdin)


def check_config(text: str, bird: str = "bird") -> None:
    """Parse-check a config with `bird -p`; raises LabError with BIRD's message."""
    message = parse_error(text, bird_executable(bird))
    if message is not None:
        raise LabError(f"BIRD rejects the rendered config: {message}")


BIRD6_SUFFIX = "/bird6"
"""`rendered_configs` labels a bird6 config `<entity>/bird6`."""


def daemon_of(label: str) -> str:
    """The BIRD daemon that reads a config of `rendered_configs` (by its label)."""
    return "bird6" if label.endswith(BIRD6_SUFFIX) else "bird"


LogFile = Callable[[str, int], "str | None"]
"""(entity, family) -> the log file its BIRD config names (None: stderr)."""


def rendered_configs(
    spec: LabSpec,
    log_file: LogFile | None = None,
    *,
    topo: Topology | None = None,
    resources: dict[str, list[Any]] | None = None,
) -> list[tuple[str, tuple[str | int, ...], str]]:
    """(entity, its path in the lab file, config) of every router and node, nested ones
    included, as the netns runtime renders them (logging to stderr, or to `log_file(entity,
    family)`); in a dual-stack lab also each one's bird6 config, labelled `<entity>/bird6`.
    `topo` and `resources`: the spec's, when the caller has them already."""
    topo = resolve(spec) if topo is None else topo
    resources = cluster_resources(spec) if resources is None else resources
    logs: LogFile = log_file or (lambda _entity, _family: None)
    # what confd reads of each cluster, derived once (not once per node: quadratic in nodes)
    state = {c.name: cc.from_topology(topo, c.name, resources.get(c.name, [])) for c in spec.clusters}
    out = []
    for family in spec.families:
        suffix = "" if family == 4 else BIRD6_SUFFIX
        out += [
            (r.name + suffix, ("routers", i), render_router(topo, r.name, logs(r.name, family), family))
            for i, r in enumerate(spec.routers)
        ]
        for ci, cluster in enumerate(spec.clusters):
            for ni, node in enumerate(cluster.nodes):
                if not topo.runs_family(node.name, family):
                    continue  # a nested cluster without IPv6 pools
                cfg = confd.node_config(state[cluster.name], node.name, family, logs(node.name, family))
                out.append((node.name + suffix, ("clusters", ci, "nodes", ni), render_node_config(cfg)))
    return out


_LOG_LINE = re.compile(r'^log "[^"\n]*" all;$', re.M)


def logging_to_stderr(text: str) -> str:
    """A rendered config with its log file replaced by stderr: the text the template renders
    without a log file (what `bird -p` can parse without opening the file)."""
    return _LOG_LINE.sub("log stderr all;", text, count=1)


def check_rendered(
    spec: LabSpec,
    configs: list[tuple[str, tuple[str | int, ...], str]] | None = None,
    bird: str = "bird",
    workers: int = CHECK_WORKERS,
) -> int:
    """Parse every BIRD config of a lab (`configs`, else rendered here) with `bird -p`,
    concurrently; returns how many passed. A config naming a log file is parsed as logging to
    stderr (`logging_to_stderr`). Raises SpecError naming each router or node BIRD refuses and
    why, LabError when BIRD is not installed. Creates nothing."""
    exe = {"bird": bird_executable(bird)}
    configs = rendered_configs(spec) if configs is None else configs
    if any(daemon_of(label) == "bird6" for label, _, _ in configs):
        exe["bird6"] = bird_executable("bird6")
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(configs)))) as pool:
        errors = list(pool.map(lambda c: parse_error(logging_to_stderr(c[2]), exe[daemon_of(c[0])]), configs))
    issues = [
        SpecIssue(spec.source, format_path(path), f"BIRD rejects the config rendered for '{entity}': {error}")
        for (entity, path, _), error in zip(configs, errors, strict=True)
        if error is not None
    ]
    if issues:
        raise SpecError(issues)
    return len(configs)


def _explain(text: str, message: str, path: str) -> str:
    """Replace the config file name in BIRD's message with the offending line itself."""
    m = re.search(re.escape(path) + r":(\d+):(\d+) (.*)", message)
    if not m:
        return " ".join(message.replace(path, "<rendered config>").split())
    line_no, col, what = int(m.group(1)), m.group(2), m.group(3)
    lines = text.splitlines()
    line = lines[line_no - 1].strip() if 0 < line_no <= len(lines) else ""
    return f"line {line_no}, column {col}: {what}: {line!r}"


__all__ = [
    "UnsafeValue",
    "bird_executable",
    "check_config",
    "check_rendered",
    "daemon_of",
    "logging_to_stderr",
    "parse_error",
    "render_calico_node",
    "render_node",
    "render_node_config",
    "render_router",
    "rendered_configs",
]
