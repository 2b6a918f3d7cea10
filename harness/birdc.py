"""Client for the BIRD 1.6 control socket, plus parsers for its replies.

BIRD's CLI protocol (``doc/reply_codes`` in the BIRD sources) is line based. Every reply
line starts either with a four digit code followed by ``-`` (more lines follow) or by a
space (last line of the reply), or with a single space: a *continuation* line that carries
the same code as the line before it.  Code classes:

* ``0xxx`` action completed (``0000`` OK, ``0001`` welcome, ``0003`` reconfigured, ...)
* ``1xxx`` table entries (``1002`` protocol list, ``1006`` protocol details, ``1007`` route,
  ``1008`` route type, ``1012`` route extended attributes, ...)
* ``2xxx`` table headings
* ``8xxx`` run-time errors, ``9xxx`` parse-time errors
* ``+`` spontaneous output (ignored here)

The parsers in this module work on ``(code, text)`` pairs, never on the human formatted
output of ``birdc``.  Captured replies of a real BIRD 1.6.8 live in ``tests/data/birdc``
(see ``scripts/capture_birdc.py``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Generic, TypeVar

from harness.errors import KvlabError
from harness.safefile import FileRefused, unix_socket

__all__ = [
    "CONFIGURE_OK_CODES",
    "BirdClient",
    "BirdError",
    "BirdUnavailable",
    "NextHop",
    "Protocol",
    "Reply",
    "Route",
    "parse_protocols",
    "parse_reply_lines",
    "parse_routes",
    "read_transcript",
    "transcript_meta",
]

Reply = list[tuple[int, str]]
_T = TypeVar("_T")

# Reply codes (BIRD 1.6 doc/reply_codes).
OK = 0
WELCOME = 1
READING_CONFIGURATION = 2
RECONFIGURED = 3
RECONFIGURATION_IN_PROGRESS = 4
RECONFIGURATION_QUEUED = 5
RECONFIGURATION_IGNORED_SHUTDOWN = 6
RECONFIGURATION_UNQUEUED = 17
PROTOCOL_LIST = 1002
PROTOCOL_DETAILS = 1006
ROUTE_LIST = 1007
ROUTE_DETAILS = 1008
ROUTE_EXT_ATTRS = 1012
ROUTE_NOT_FOUND = 8001
CONFIGURATION_FILE_ERROR = 8002
NO_PROTOCOLS_MATCH = 8003

#: ``configure`` reply codes that mean the configuration was accepted: 0003 Reconfigured,
#: 0004 Reconfiguration in progress, 0005 queued behind a running reconfiguration,
#: 0006 Reconfiguration ignored (BIRD is shutting down), 0017 queued config removed
#: because the one being applied is the same.
CONFIGURE_OK_CODES = frozenset(
    {
        RECONFIGURED,
        RECONFIGURATION_IN_PROGRESS,
        RECONFIGURATION_QUEUED,
        RECONFIGURATION_IGNORED_SHUTDOWN,
        RECONFIGURATION_UNQUEUED,
    }
)

_MAX_LINE = 4096  # BIRD's CLI line limit is far below this


class BirdError(KvlabError):
    """BIRD answered with an error code (8xxx run-time, 9xxx parse-time)."""

    def __init__(self, code: int, message: str, command: str | None = None) -> None:
        self.code = code
        self.message = message
        self.command = command
        where = f" (command {command!r})" if command is not None else ""
        super().__init__(f"BIRD error {code:04d}: {message}{where}")


class BirdUnavailable(BirdError):
    """The control socket is missing, refuses connections, timed out or closed (``code`` -1)."""

    def __init__(self, socket_path: str | os.PathLike[str], reason: str, command: str | None = None) -> None:
        self.socket_path = os.fspath(socket_path)
        super().__init__(-1, f"BIRD control socket {self.socket_path}: {reason}", command)


# --------------------------------------------------------------------------- framing


def _split_line(line: str) -> tuple[int | None, str, bool]:
    """Split one raw reply line into ``(code, text, last)``.

    ``code`` is None for a continuation line (leading space) and for spontaneous ``+``
    lines (the caller ignores those).  ``last`` is True for ``NNNN text`` lines.
    """
    if line.startswith(" "):
        return None, line[1:], False
    if len(line) >= 5 and line[:4].isdigit() and line[4] in "- ":
        return int(line[:4]), line[5:], line[4] == " "
    if len(line) == 4 and line.isdigit():  # tolerate a stripped trailing space
        return int(line), "", True
    raise ValueError(f"malformed BIRD reply line: {line!r}")


# '1007-' and '1007 ' -> 1007: a line's code and its separator in one slice and one lookup
_HEADS = {f"{c:04d}{sep}": c for c in range(10000) for sep in "- "}
_EOL = ("\n", "\r")


def parse_reply_lines(lines: Iterable[str]) -> Reply:
    """Turn raw reply lines into ``(code, text)`` pairs.

    Continuation lines get the code of the previous line; ``+`` (spontaneous) lines are
    dropped.  Text is kept verbatim (tabs and padding included).
    """
    with _no_gc():
        return _frame(lines)


def _frame(lines: Iterable[str]) -> Reply:
    """parse_reply_lines without its garbage collector pause."""
    out: Reply = []
    append = out.append
    heads = _HEADS
    code: int | None = None
    for line in lines:
        if line[-1:] in _EOL:
            line = line.rstrip("\r\n")
        if line[:1] == " ":
            if code is None:
                raise ValueError(f"continuation line without a preceding code: {line!r}")
            append((code, line[1:]))
        elif (c := heads.get(line[:5])) is not None:
            code = c
            append((c, line[5:]))
        elif line[:1] != "+":
            c2, text, _last = _split_line(line)
            code = c2
            append((c2, text))  # type: ignore[arg-type]
    return out


def _is_error(code: int) -> bool:
    return code >= 8000


def _raise_on_error(reply: Reply, command: str | None = None, allow: Iterable[int] = ()) -> None:
    if max(map(itemgetter(0), reply), default=0) < 8000:  # no error: one pass in C
        return
    allowed = set(allow)
    for code, text in reply:
        if _is_error(code) and code not in allowed:
            raise BirdError(code, text.strip(), command)


def read_transcript(path: str | os.PathLike[str]) -> Reply:
    """Load a captured transcript (raw reply lines; ``#`` lines are metadata)."""
    text = Path(path).read_text(encoding="utf-8")
    return parse_reply_lines(line for line in text.split("\n") if line and not line.startswith("#"))


def transcript_meta(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the ``# key: value`` metadata header of a captured transcript."""
    meta: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").split("\n"):
        if line.startswith("# ") and ":" in line:
            key, _, value = line[2:].partition(":")
            meta[key.strip()] = value.strip()
    return meta


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class NextHop:
    """One next hop of a route (``weight`` only for multipath routes)."""

    via: str | None
    interface: str | None
    weight: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"via": self.via, "interface": self.interface, "weight": self.weight}


class _decoded(Generic[_T]):
    """A property computed on first read and then kept in the instance (functools.cached_property
    without the lock Python 3.11 takes on every first read; routes are never shared that way)."""

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self.fn, self.name, self.__doc__ = fn, fn.__name__, fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass(frozen=True)
class Route:
    """One route (one alternative of a prefix) from ``show route all``.

    What BGP and the kernel protocol attach (``attributes``, and from them ``as_path``,
    ``communities``, ``local_pref``, ...) is decoded from the route's attribute lines the first
    time it is read: a table of 100k routes is parsed without decoding what nobody looks at."""

    prefix: str
    best: bool
    route_type: str  # unicast | device | unreachable | blackhole | prohibited | multipath
    via: str | None
    interface: str | None
    next_hops: tuple[NextHop, ...]
    protocol: str
    since: str
    preference: int
    source: str | None = None  # route source from the `Type:` line: BGP, static, device, inherit, ...
    attribute_lines: tuple[str, ...] = ()  # `Type: ...`, then BIRD's `key: value` lines, verbatim
    from_address: str | None = None  # `[proto time from X]`: the BGP peer when != gateway
    sync_error: bool = False  # `!` instead of `*`: best route that failed to reach the kernel
    info: str = ""  # protocol specific tail of the route line, e.g. "(100) [AS65004i]"

    @_decoded
    def attributes(self) -> dict[str, str]:
        """`Type` and every extended attribute (`BGP.as_path`, `Kernel.metric`, ...), by name."""
        out: dict[str, str] = {}
        for line in self.attribute_lines:
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    @_decoded
    def origin(self) -> str | None:
        return self.attributes.get("BGP.origin")

    @_decoded
    def as_path(self) -> tuple[int, ...]:
        """AS numbers in path order; an AS_SET `{a b}` is flattened into the sequence."""
        return tuple(map(int, _DIGITS.findall(self.attributes.get("BGP.as_path", ""))))

    @_decoded
    def med(self) -> int | None:
        return _int_or_none(self.attributes.get("BGP.med"))

    @_decoded
    def local_pref(self) -> int | None:
        return _int_or_none(self.attributes.get("BGP.local_pref"))

    @_decoded
    def communities(self) -> tuple[tuple[int, int], ...]:
        return tuple((int(x), int(y)) for x, y in _PAIR.findall(self.attributes.get("BGP.community", "")))

    @_decoded
    def large_communities(self) -> tuple[tuple[int, int, int], ...]:
        text = self.attributes.get("BGP.large_community", "")
        return tuple((int(x), int(y), int(z)) for x, y, z in _TRIPLE.findall(text))

    @_decoded
    def next_hop_attr(self) -> str | None:
        return self.attributes.get("BGP.next_hop")

    @_decoded
    def krt_metric(self) -> int | None:
        return _int_or_none(self.attributes.get("Kernel.metric"))

    @_decoded
    def krt_source(self) -> int | None:
        """`Kernel.source`: the kernel rtm_protocol number (3 = boot)."""
        return _int_or_none(self.attributes.get("Kernel.source"))

    def community_strings(self) -> list[str]:
        return [f"{a}:{b}" for a, b in self.communities]

    def large_community_strings(self) -> list[str]:
        return [f"{a}:{b}:{c}" for a, b, c in self.large_communities]

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "best": self.best,
            "via": self.via,
            "interface": self.interface,
            "protocol": self.protocol,
            "as_path": list(self.as_path),
            "communities": self.community_strings(),
            "local_pref": self.local_pref,
            "preference": self.preference,
            "route_type": self.route_type,
            "large_communities": self.large_community_strings(),
            "med": self.med,
            "origin": self.origin,
            "next_hops": [nh.to_json() for nh in self.next_hops],
        }


@dataclass(frozen=True)
class Protocol:
    """One protocol instance from ``show protocols [all]``."""

    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str
    description: str | None = None
    bgp_state: str | None = None
    neighbor_address: str | None = None
    neighbor_as: int | None = None
    local_as: int | None = None
    last_error: str | None = None
    routes_imported: int | None = None
    routes_exported: int | None = None
    routes_preferred: int | None = None
    routes_filtered: int | None = None
    details: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def established(self) -> bool:
        """True for a BGP session in state Established (protocol up)."""
        if self.proto != "BGP" or self.state != "up":
            return False
        state = self.bgp_state if self.bgp_state is not None else self.info.split(" ", 1)[0]
        return state == "Established"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "proto": self.proto,
            "table": self.table,
            "state": self.state,
            "since": self.since,
            "info": self.info,
            "established": self.established(),
            "description": self.description,
            "bgp_state": self.bgp_state,
            "neighbor_address": self.neighbor_address,
            "neighbor_as": self.neighbor_as,
            "local_as": self.local_as,
            "last_error": self.last_error,
            "routes_imported": self.routes_imported,
            "routes_exported": self.routes_exported,
            "routes_preferred": self.routes_preferred,
            "routes_filtered": self.routes_filtered,
        }


# --------------------------------------------------------------------------- protocols

# `%-8s %-8s %-8s %-5s %-10s %s`: name proto table state since info.  `since` is one
# token with the default time format, two with `timeformat protocol iso long`.
_PROTO_LINE = re.compile(
    r"^(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>\S+)\s+"
    r"(?P<since>\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?|\S+)(?:\s+(?P<info>.*?))?\s*$"
)
_ROUTE_COUNTS = re.compile(r"(\d+)\s+(imported|filtered|exported|preferred)")


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.split()[0])
    except (ValueError, IndexError):
        return None


def _protocol_from(line: str, details: list[str]) -> Protocol:
    m = _PROTO_LINE.match(line)
    if not m:
        raise ValueError(f"unparsable protocol line: {line!r}")
    kv: dict[str, str] = {}
    description: str | None = None
    for d in details:
        key, sep, value = d.strip().partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Description":
            description = value
        kv.setdefault(key, value)
    counts = {kind: int(n) for n, kind in _ROUTE_COUNTS.findall(kv.get("Routes", ""))}
    return Protocol(
        name=m["name"],
        proto=m["proto"],
        table=m["table"],
        state=m["state"],
        since=m["since"],
        info=m["info"] or "",
        description=description,
        bgp_state=kv.get("BGP state"),
        neighbor_address=kv.get("Neighbor address"),
        neighbor_as=_int_or_none(kv.get("Neighbor AS")),
        local_as=_int_or_none(kv.get("Local AS")),
        last_error=kv.get("Last error"),
        routes_imported=counts.get("imported"),
        routes_exported=counts.get("exported"),
        routes_preferred=counts.get("preferred"),
        routes_filtered=counts.get("filtered"),
        details=kv,
    )


def parse_protocols(reply: Reply) -> list[Protocol]:
    """Parse a ``show protocols [all]`` reply (1002 lines, 1006 detail lines).

    ``8003 No protocols match`` yields an empty list; other errors raise BirdError.
    """
    _raise_on_error(reply, allow=(NO_PROTOCOLS_MATCH,))
    out: list[Protocol] = []
    current: str | None = None
    details: list[str] = []
    for code, text in reply:
        if code == PROTOCOL_LIST:
            if current is not None:
                out.append(_protocol_from(current, details))
            current, details = text, []
        elif code == PROTOCOL_DETAILS and current is not None and text.strip():
            details.append(text)
    if current is not None:
        out.append(_protocol_from(current, details))
    return out


# --------------------------------------------------------------------------- routes

_NEXTHOP = re.compile(r"^via (?P<gw>\S+) on (?P<iface>\S+)(?: weight (?P<weight>\d+))?")
_PAIR = re.compile(r"\((\d+),\s*(\d+)\)")
_TRIPLE = re.compile(r"\((\d+),\s*(\d+),\s*(\d+)\)")
_DIGITS = re.compile(r"\d+")
_DEST_WORDS = frozenset(("unreachable", "blackhole", "prohibited", "multipath"))
# A route line without its prefix: `<dest> [<proto> <since>[ from <addr>]][ *| !]<info>`; the
# brackets are the first " [" and the first "]" after it.
_ROUTE_REST = re.compile(r"(.*?) \[([^\]]*)\]( [*!])?(.*)", re.DOTALL)
_Dest = tuple[str, "str | None", "str | None", "tuple[NextHop, ...]"]


def _next_hop(via: str | None, interface: str | None, weight: int | None = None) -> NextHop:
    """A NextHop without the frozen dataclass's __init__ (one object.__setattr__ per field)."""
    hop = object.__new__(NextHop)
    hop.__dict__.update(via=via, interface=interface, weight=weight)
    return hop


def _dest(text: str) -> _Dest:
    """``(route_type, via, interface, next_hops)`` of a route line's destination part."""
    dest = text.strip()
    via = iface = None
    words = dest.split(" ")
    if len(words) == 4 and words[0] == "via" and words[2] == "on":
        route_type, via, iface = "unicast", words[1], words[3]
    elif len(words) == 2 and words[0] == "dev":
        route_type, iface = "device", words[1]
    elif dest in _DEST_WORDS:
        route_type = dest
    else:
        route_type = dest or "unknown"
    hops = (_next_hop(via, iface),) if via is not None or iface is not None else ()
    return route_type, via, iface, hops


def _source(text: str) -> tuple[str, str | None, str | None]:
    """``(type line, its value, route source)`` of a 1008 line: ``\\tType: BGP unicast univ`` ->
    ``("Type: BGP unicast univ", "BGP unicast univ", "BGP")``; no `Type:` line -> value None."""
    t = text.strip()
    if not t.startswith("Type:"):
        return t, None, None
    value = t[5:].strip()
    return t, value, value.split(" ", 1)[0] if value else None


def _origin(text: str) -> tuple[str, str, str | None]:
    """``(protocol, since, from address)`` of the bracketed part of a route line."""
    proto, _, since = text.partition(" ")
    from_address = None
    if " from " in since:
        since, _, from_address = since.partition(" from ")
    return proto, since.strip(), from_address


def _route_fields(rest: str, dests: _Memo[str], origins: _Memo[str]) -> dict[str, Any] | None:
    """The fields a route line gives without its prefix (``<dest> [<proto> <since>[ from <addr>]]
    [ *| !]<info>``), None if the line does not parse. `source` and `attribute_lines` are placeholders
    that the route's `Type:` and attribute lines fill in."""
    m = _ROUTE_REST.match(rest.strip())
    if m is None:
        return None
    dest, origin, mark, tail = m.groups()
    route_type, via, iface, next_hops = dests[dest]
    proto, since, from_address = origins[origin]
    info = tail.strip()
    preference = 0
    if info.startswith("("):  # "(100)", or "(100/0)" with the IGP metric
        end = 1
        while end < len(info) and info[end].isdigit():
            end += 1
        if end > 1:
            preference = int(info[1:end])
    return {
        "prefix": None,
        "best": mark is not None,
        "route_type": route_type,
        "via": via,
        "interface": iface,
        "next_hops": next_hops,
        "protocol": proto,
        "since": since,
        "preference": preference,
        "source": None,
        "attribute_lines": (),
        "from_address": from_address,
        "sync_error": mark == " !",
        "info": info,
    }


class _Memo(dict[_T, Any]):
    """A dict that computes a missing value from its key with `fn` (and keeps it): a route
    table repeats the same few gateways, protocols, times and `Type:` lines many times."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, key: Any) -> Any:
        value = self[key] = self.fn(key)
        return value


def _parse_routes(reply: Iterable[tuple[int, str]]) -> list[Route]:
    """Routes of a reply in one pass: a route is complete when the next route line (or the end)
    comes; its `Type:` (1008) and attribute (1012) lines and multipath next hops fall in between.

    The hot path is one dict lookup and copy per route line and one list append per attribute
    line: what follows the prefix on a route line (destination, protocol, time, tail) and the
    `Type:` line repeat across a table and are decoded once per distinct text."""
    dests: _Memo[str] = _Memo(_dest)
    origins: _Memo[str] = _Memo(_origin)
    templates: _Memo[str] = _Memo(lambda rest: _route_fields(rest, dests, origins))
    sources: _Memo[str] = _Memo(_source)
    new = object.__new__
    set_dict = object.__setattr__
    out: list[Route] = []
    # the route being read: its fields from the route line, next hops, `Type:` line, attributes
    fields: dict[str, Any] | None = None
    hops: list[NextHop] = []
    type_line: tuple[str, str | None, str | None] | None = None
    attrs: list[str] = []  # lines before the first route land here and are dropped
    add_attr = attrs.append
    prefix: str | None = None

    def finish() -> None:
        assert fields is not None
        if hops:  # multipath: the `\tvia ... weight N` lines
            fields["next_hops"] = next_hops = tuple(hops)
            fields["via"], fields["interface"] = next_hops[0].via, next_hops[0].interface
        if type_line is None:
            fields["attribute_lines"] = tuple(attrs)
        else:
            fields["source"] = type_line[2]
            fields["attribute_lines"] = (type_line[0], *attrs)
        route = new(Route)
        set_dict(route, "__dict__", fields)
        out.append(route)

    for code, text in reply:
        if code == ROUTE_EXT_ATTRS:
            add_attr(text)
        elif code == ROUTE_LIST:
            if text[:1] == "\t":  # "\tvia A on IF weight N": next hop of a multipath route
                if fields is None:
                    raise ValueError(f"next hop line before any route: {text!r}")
                m = _NEXTHOP.match(text.strip())
                if not m:
                    raise ValueError(f"unparsable next hop line: {text!r}")
                w = m["weight"]
                hops.append(_next_hop(m["gw"], m["iface"], int(w) if w else None))
                continue
            if fields is not None:
                finish()
            if text[:1].isspace():  # another alternative for the same prefix
                if prefix is None:
                    raise ValueError(f"route alternative without a prefix: {text!r}")
                rest = text
            else:
                prefix, _, rest = text.partition(" ")
            template = templates[rest]
            if template is None:
                raise ValueError(f"unparsable route line: {prefix} {rest.strip()!r}")
            fields = template.copy()
            fields["prefix"] = prefix
            hops, type_line, attrs = [], None, []
            add_attr = attrs.append
        elif code == ROUTE_DETAILS and type_line is None:
            t = sources[text]
            if t[1] is not None:
                type_line = t
    if fields is not None:
        finish()
    return out


def parse_routes(reply: Reply) -> list[Route]:
    """Parse a ``show route [...] [all]`` reply (1007 route, 1008 type, 1012 attribute lines).

    ``8001 Network not in table`` (the answer to an exact prefix query without match)
    yields an empty list; other errors raise BirdError.
    """
    _raise_on_error(reply, allow=(ROUTE_NOT_FOUND,))
    with _no_gc():
        return _parse_routes(reply)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while a large reply becomes objects: they hold no
    cycles, and the collector would otherwise walk them again and again as they are made."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --------------------------------------------------------------------------- client


def _connect_unix(path: str, timeout: float) -> socket.socket:
    """A connection to the Unix socket `path`, never through a symlink (kvlab runs as root: a
    symlink planted in the run directory must not lead to another lab's or any other socket):
    `path` must be a socket before the connect and the same one after it."""
    try:
        before = unix_socket(path)
    except FileNotFoundError:
        raise BirdUnavailable(path, "socket does not exist") from None
    except FileRefused as e:
        raise BirdUnavailable(path, f"refused: {e}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        after = os.lstat(path)
    except OSError as e:
        sock.close()
        raise BirdUnavailable(path, f"cannot connect: {e.strerror or e}") from e
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        sock.close()
        raise BirdUnavailable(path, "refused: the socket was replaced while connecting")
    return sock


class BirdClient:
    """One connection to a BIRD control socket.

    Not thread-safe by design: BIRD serialises commands per connection, so give every
    thread its own client.  Usable as a context manager; connects lazily.
    """

    def __init__(self, socket_path: str | os.PathLike[str], timeout: float = 5.0) -> None:
        self.socket_path = os.fspath(socket_path)
        self.timeout = timeout
        self.greeting: str | None = None
        self._sock: socket.socket | None = None
        self._buf = b""

    # -- connection -----------------------------------------------------------
    def connect(self) -> BirdClient:
        """Connect and read the ``0001`` greeting (done implicitly by the first command)."""
        if self._sock is not None:
            return self
        sock = _connect_unix(self.socket_path, self.timeout)
        self._sock, self._buf = sock, b""
        try:
            greeting = self._read_reply(None)
        except BaseException:
            self.close()
            raise
        self.greeting = parse_reply_lines(greeting)[-1][1] if greeting else None
        return self

    @property
    def version(self) -> str | None:
        """BIRD version from the greeting (``"1.6.8"``), if connected."""
        if not self.greeting:
            return None
        m = re.search(r"BIRD (\S+)", self.greeting)
        return m.group(1) if m else None

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock, self._buf = None, b""

    def __enter__(self) -> BirdClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw exchange -----------------------------------------------------------
    def _read_line(self, command: str | None) -> str:
        assert self._sock is not None
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as e:
                self.close()
                raise BirdUnavailable(
                    self.socket_path, f"timed out after {self.timeout}s waiting for a reply", command
                ) from e
            except OSError as e:
                self.close()
                raise BirdUnavailable(self.socket_path, f"read failed: {e.strerror or e}", command) from e
            if not chunk:
                self.close()
                raise BirdUnavailable(self.socket_path, "connection closed by BIRD", command)
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", errors="replace")

    def _read_reply(self, command: str | None) -> list[str]:
        lines: list[str] = []
        while True:
            line = self._read_line(command)
            lines.append(line)
            if len(line) >= 5 and line[:4].isdigit() and line[4] == " ":
                return lines
            if len(line) == 4 and line.isdigit():
                return lines

    def raw(self, line: str) -> list[str]:
        """Send one command and return the reply lines exactly as received (no newline)."""
        if "\n" in line or "\r" in line:
            raise ValueError("a BIRD command must be a single line")
        if len(line) > _MAX_LINE:
            raise ValueError("command too long")
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(line.encode("utf-8") + b"\n")
        except OSError as e:
            self.close()
            raise BirdUnavailable(self.socket_path, f"write failed: {e.strerror or e}", line) from e
        return self._read_reply(line)

    def command(self, line: str, *, check: bool = True) -> Reply:
        """Send one command; return ``(code, text)`` per reply line.

        Continuation lines are separate entries carrying the previous line's code.  With
        ``check`` (default) an 8xxx/9xxx code raises BirdError.
        """
        reply = parse_reply_lines(self.raw(line))
        if check:
            _raise_on_error(reply, line)
        return reply

    # -- typed helpers ----------------------------------------------------------
    def protocols(self, pattern: str | None = None) -> list[Protocol]:
        """``show protocols all [pattern]``; ``pattern`` is a name or a quoted glob."""
        cmd = "show protocols all" + (f" {pattern}" if pattern else "")
        return _with_command(cmd, parse_protocols, self.command(cmd, check=False))

    def protocol(self, name: str) -> Protocol:
        """One protocol by exact name (BirdError if BIRD does not know it)."""
        found = [p for p in self.protocols(name) if p.name == name]
        if not found:
            raise BirdError(NO_PROTOCOLS_MATCH, f"no protocol named {name}", f"show protocols all {name}")
        return found[0]

    def routes(
        self,
        prefix: str | None = None,
        *,
        for_address: str | None = None,
        table: str | None = None,
        protocol: str | None = None,
        primary_only: bool = False,
    ) -> list[Route]:
        """``show route [<prefix>|for <addr>] [table T] [protocol P] [primary] all``.

        ``prefix`` (CIDR) is an exact-prefix match in BIRD 1.6; ``for_address`` is the
        longest-prefix match for an address (or prefix).  No match gives ``[]``.
        """
        if prefix is not None and for_address is not None:
            raise ValueError("give either prefix or for_address, not both")
        parts = ["show route"]
        if prefix is not None:
            parts.append(prefix)
        if for_address is not None:
            parts.append(f"for {for_address}")
        if table is not None:
            parts.append(f"table {table}")
        if protocol is not None:
            parts.append(f"protocol {protocol}")
        if primary_only:
            parts.append("primary")
        parts.append("all")
        cmd = " ".join(parts)
        return _with_command(cmd, parse_routes, self.command(cmd, check=False))

    def configure(self, path: str | os.PathLike[str] | None = None) -> str:
        """``configure ["path"]``; return the final status text.

        BirdError unless the reply carries one of CONFIGURE_OK_CODES (``birdc configure``
        exits 0 even when BIRD rejects the file, so the codes are what count).
        """
        if path is None:
            cmd = "configure"
        else:
            p = os.fspath(path)
            if '"' in p:
                raise ValueError(f"configuration path must not contain a double quote: {p!r}")
            cmd = f'configure "{p}"'
        reply = self.command(cmd)  # 8002 (config file error) raises here
        ok = [(c, t) for c, t in reply if c in CONFIGURE_OK_CODES]
        if not ok:
            code, text = reply[-1] if reply else (-1, "empty reply")
            raise BirdError(code, f"configuration not applied: {text}", cmd)
        return ok[-1][1]


def _with_command(cmd: str, parse: Callable[[Reply], _T], reply: Reply) -> _T:
    """Run a parser on a reply, naming ``cmd`` in any BirdError it raises."""
    try:
        return parse(reply)
    except BirdError as e:
        if e.command is None:
            raise BirdError(e.code, e.message, cmd) from None
        raise
