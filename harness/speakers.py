"""Routers and nodes as probes: their BIRD (over its control socket) and their kernel routing
table, through whatever runtime runs them. What tests and the CLI ask a lab's speakers."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from typing import Protocol as Interface

from harness.birdc import BirdClient, Protocol, Route

if TYPE_CHECKING:  # harness.kernel imports pyroute2: the CLI's fast path reads BIRD only
    from harness.kernel import KernelRoute


SPEAKER_KINDS = ("router", "node")
"""The kinds of lab entity that run BIRD."""


def runs_bird(family: int, families: Collection[int], *, v4_only: bool = False) -> bool:
    """Whether a router or node runs BIRD for `family` in a lab routing `families`: `bird` (4)
    always, `bird6` (6) in a dual-stack lab unless the speaker is `v4_only` (a nested node
    without an IPv6 address: its cluster has no IPv6 pools)."""
    return family in families and (family == 4 or not v4_only)


def bird_daemons(
    entities: Mapping[str, str], families: Collection[int], v4_only: Collection[str] = ()
) -> list[tuple[str, int]]:
    """Every BIRD of a lab as (entity, family), in the order status lists sessions: each router's
    and node's `bird` (entities: name -> kind, in lab order), then each one's `bird6`."""
    return [
        (entity, family)
        for family in sorted(families)
        for entity, kind in entities.items()
        if kind in SPEAKER_KINDS and runs_bird(family, families, v4_only=entity in v4_only)
    ]


class Probed(Interface):
    """What the probes need of a runtime (every `harness.runtime.base.Runtime` is one): which lab,
    where a speaker's BIRD listens, its kernel routes, and the way into its network namespace."""

    lab: str

    def bird_socket(self, entity: str, family: int = 4) -> Path: ...

    def kernel_routes(
        self, entity: str, prefix: str | None = None, family: int | None = None
    ) -> list[KernelRoute]: ...

    def netns_path(self, entity: str) -> str | None: ...


@dataclass(frozen=True)
class Session:
    """A BGP session as one BIRD (router or node) reports it."""

    router: str
    name: str
    peer: str | None
    state: str
    last_error: str | None = None
    family: int = 4  # 4: BIRD's session, 6: bird6's

    @property
    def established(self) -> bool:
        return self.state == "Established"

    def to_json(self) -> dict[str, Any]:
        """The status contract's session; bird6's sessions add `"family": 6` (IPv4 is implied)."""
        out: dict[str, Any] = {
            "router": self.router,
            "name": self.name,
            "peer": self.peer,
            "state": self.state,
        }
        if self.family != 4:
            out["family"] = self.family
        return out


class BirdSpeaker:
    """A router or node: something with a BIRD daemon (family 4: `bird`, 6: `bird6`) and a
    kernel routing table (of that family)."""

    def __init__(self, runtime: Probed, name: str, family: int = 4):
        self.runtime = runtime
        self.name = name
        self.family = family

    def client(self) -> BirdClient:
        return BirdClient(self.runtime.bird_socket(self.name, self.family))

    def protocols(self) -> list[Protocol]:
        with self.client() as c:
            return c.protocols()

    def sessions(self) -> list[Session]:
        return [
            Session(
                self.name,
                p.name,
                p.neighbor_address,
                p.bgp_state or p.info or p.state,
                p.last_error,
                self.family,
            )
            for p in self.protocols()
            if p.proto == "BGP"
        ]

    def routes(self, prefix: str | None = None) -> list[Route]:
        """BIRD's routes (all alternatives, best flagged), optionally for one exact prefix."""
        with self.client() as c:
            return c.routes(prefix)

    def best_route(self, prefix: str) -> Route | None:
        return next((r for r in self.routes(prefix) if r.best), None)

    def kernel_routes(self, prefix: str | None = None) -> list[KernelRoute]:
        return self.runtime.kernel_routes(self.name, prefix, self.family)

    def birdc(self, command: str) -> list[tuple[int, str]]:
        with self.client() as c:
            return c.command(command)

    def __repr__(self) -> str:
        six = " (bird6)" if self.family == 6 else ""
        return f"<{type(self).__name__} {self.name}{six} of lab {self.runtime.lab}>"
