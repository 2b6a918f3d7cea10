"""What `kvlab import` reads of a customer's ToR configs (`--tor FILE`): a BIRD config's AS and
neighbors, so the import can check the ToR's AS, find which rack it serves and the AS above it.
The lab's ToRs run kvlab's own ToR template; what a config holds beyond that (filters, other
protocols, a config that is no BIRD config) is a warning, never reproduced silently."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import SpecIssue
from harness.yamlsrc import read_file

MAX_TOR_BYTES = 1024 * 1024
_COMMENT = re.compile(r"#[^\n]*|/\*.*?\*/", re.S)
_LOCAL_AS = re.compile(r"\blocal(?:\s+[0-9a-fA-F.:]+)?\s+as\s+(\d{1,10})\s*;")
_NEIGHBOR = re.compile(r"\bneighbor\s+([0-9.]{7,15})(?:\s+port\s+\d+)?\s+as\s+(\d{1,10})\s*;")
_ROUTER_ID = re.compile(r"\brouter\s+id\s+([0-9.]{7,15})\s*;")
_FILTERS = re.compile(r"\bfilter\s+([A-Za-z_][A-Za-z0-9_]*)\s*\{")
_PROTOCOLS = re.compile(r"\bprotocol\s+([a-z0-9]+)\b")
_SUPPORTED_PROTOCOLS = {"bgp", "device", "direct", "kernel", "static"}


@dataclass
class TorConfig:
    """A ToR's BIRD config as far as the import reads it."""

    file: str
    router_id: ipaddress.IPv4Address | None = None
    local_as: set[int] = field(default_factory=set)
    neighbors: dict[ipaddress.IPv4Address, int] = field(default_factory=dict)
    filters: list[str] = field(default_factory=list)
    other_protocols: list[str] = field(default_factory=list)


def read_tor_config(path: str | Path) -> tuple[TorConfig | None, list[SpecIssue]]:
    """A ToR config, or None with a warning when it is no BIRD config (another vendor's).
    Raises SpecError for a file that cannot be read (not a regular file, too large)."""
    name = str(path)
    text = _COMMENT.sub(" ", read_file(path, name, MAX_TOR_BYTES))
    if not re.search(r"\bprotocol\s+bgp\b", text):
        return None, [
            SpecIssue(
                name,
                "",
                "not a BIRD config (no 'protocol bgp'): its ToR is reproduced as kvlab's BIRD ToR "
                "from the BGPPeers alone; nothing of this config is",
            )
        ]
    conf = TorConfig(file=name)
    notes: list[SpecIssue] = []
    if m := _ROUTER_ID.search(text):
        conf.router_id = _v4(m.group(1))
    conf.local_as = {int(a) for a in _LOCAL_AS.findall(text)}
    for ip, asn in _NEIGHBOR.findall(text):
        addr = _v4(ip)
        if addr is not None:
            conf.neighbors[addr] = int(asn)
    conf.filters = sorted(set(_FILTERS.findall(text)))
    conf.other_protocols = sorted({p for p in _PROTOCOLS.findall(text) if p not in _SUPPORTED_PROTOCOLS})
    if conf.filters:
        notes.append(
            SpecIssue(
                name,
                "",
                f"filters {', '.join(conf.filters)} are not reproduced: the lab's ToR runs kvlab's ToR "
                "template (import all, the live-migration guide's community preference)",
            )
        )
    if conf.other_protocols:
        notes.append(SpecIssue(name, "", f"protocols {', '.join(conf.other_protocols)} are not reproduced"))
    if len(conf.local_as) > 1:
        notes.append(
            SpecIssue(name, "", f"several local AS numbers ({sorted(conf.local_as)}): the lab's ToR has one")
        )
    return conf, notes


def _v4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


__all__ = ["TorConfig", "read_tor_config"]
