"""BIRD configs from the `bird-configs/` Jinja2 templates: routers from the topology, nodes
from their cluster's Calico resources (through `harness.calico.confd`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from harness.calico import confd
from harness.calico.resources import parse_community
from harness.errors import LabError
from harness.topology import Topology

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "bird-configs"
ROLE_TEMPLATES = {"spine": "router.conf.j2", "tor": "router.conf.j2", "external": "router.conf.j2"}


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_router(topo: Topology, name: str, log_file: str | None = None) -> str:
    router = topo.spec.router(name)
    template = _env().get_template(router.template or ROLE_TEMPLATES[router.role])
    return template.render(
        router=router,
        router_id=topo.router_id[name],
        neighbors=topo.router_neighbors(name),
        community=parse_community(router.elevated_community),
        ecmp=False,
        log_file=log_file,
    )


def render_node(topo: Topology, node: str, resources: list[Any], log_file: str | None = None) -> str:
    cfg = confd.node_bird_config(topo, node, resources, log_file)
    return _env().get_template("node.conf.j2").render(cfg=cfg)


def check_config(text: str, bird: str = "bird") -> None:
    """Parse-check a config with `bird -p`; raises LabError with BIRD's message."""
    exe = shutil.which(bird) or shutil.which(bird, path="/usr/sbin:/sbin")
    if exe is None:
        raise LabError("BIRD is not installed (Debian package 'bird'); run 'make setup'")
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as fh:
        fh.write(text)
        fh.flush()
        res = subprocess.run([exe, "-p", "-c", fh.name], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise LabError(
            f"BIRD rejects the rendered config: {_explain(text, (res.stderr or res.stdout).strip(), fh.name)}"
        )


def _explain(text: str, message: str, path: str) -> str:
    """Replace the temporary file name in BIRD's message with the offending line itself."""
    import re

    m = re.search(re.escape(path) + r":(\d+):(\d+) (.*)", message)
    if not m:
        return message.replace(path, "<rendered config>")
    line_no, col, what = int(m.group(1)), m.group(2), m.group(3)
    lines = text.splitlines()
    line = lines[line_no - 1].strip() if 0 < line_no <= len(lines) else ""
    return f"line {line_no}, column {col}: {what}: {line!r}"
