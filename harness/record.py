"""The record of a live migration: what happened when, from every source (the harness's phases,
node agents, routers' views, QEMU or KubeVirt, the canary). The data type both runtimes' migration
drivers produce and every consumer (CLI, timeline, tests) reads."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from harness.canary.report import CanaryReport
from harness.errors import LabError


@dataclass
class MigrationRecord:
    """A migration as it happened; `to_json()` is the `kvlab migrate --json` document, and every
    field of it is a field or property here under the same name (`duration_ms`, `canary`: a typed
    `CanaryReport`; `events` each with its `ms` since `started` in the JSON)."""

    vm: str
    ip: str
    source: str
    target: str
    status: str = "running"  # running | completed | failed
    reason: str | None = None
    started: float = field(default_factory=time.time)
    ended: float | None = None
    convergence_until: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    canary: CanaryReport | None = None  # the TCP canary's report, when one ran
    ip6: str | None = None  # dual stack: the VM's IPv6 address (its /128's events carry family 6)
    canaries: dict[str, CanaryReport] | None = None  # dual stack: each family's canary ("4", "6")

    @property
    def duration_ms(self) -> float | None:
        """Milliseconds from start to end (None while running), as in the JSON."""
        return None if self.ended is None else round((self.ended - self.started) * 1000, 1)

    def phase(self, name: str, **fields: Any) -> None:
        self.events.append({"t": time.time(), "source": "harness", "kind": "phase", "phase": name, **fields})

    def first(self, **match: Any) -> dict[str, Any] | None:
        """The first event whose fields equal `match` (e.g. kind='state', node='r2-n1', state='Live')."""
        return next((e for e in self.events if all(e.get(k) == v for k, v in match.items())), None)

    def to_json(self) -> dict[str, Any]:
        t0 = self.started
        return {
            "vm": self.vm,
            "ip": self.ip,
            "source": self.source,
            "target": self.target,
            "status": self.status,
            "reason": self.reason,
            "started": self.started,
            "ended": self.ended,
            "duration_ms": self.duration_ms,
            "convergence_until": self.convergence_until,
            "events": [
                {**e, "ms": round((e["t"] - t0) * 1000, 1)} for e in sorted(self.events, key=lambda e: e["t"])
            ],
            **({"canary": self.canary.to_json()} if self.canary is not None else {}),
            **({"ip6": self.ip6} if self.ip6 is not None else {}),
            **({"canaries": {f: c.to_json() for f, c in self.canaries.items()}} if self.canaries else {}),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> MigrationRecord:
        """A record back from its JSON document (`duration_ms` and each event's `ms` are derived)."""
        canary = doc.get("canary")
        return cls(
            vm=doc["vm"],
            ip=doc["ip"],
            source=doc["source"],
            target=doc["target"],
            status=doc["status"],
            reason=doc.get("reason"),
            started=doc["started"],
            ended=doc.get("ended"),
            convergence_until=doc.get("convergence_until"),
            events=[{k: v for k, v in e.items() if k != "ms"} for e in doc.get("events", [])],
            canary=None if canary is None else CanaryReport.from_json(canary),
            ip6=doc.get("ip6"),
            canaries={f: CanaryReport.from_json(c) for f, c in doc["canaries"].items()}
            if doc.get("canaries")
            else None,
        )


class MigrationFailed(LabError):
    """A migration did not complete. It was settled first: `record` says where the VM runs
    (its `source`, after a rollback) and what happened."""

    def __init__(self, record: MigrationRecord):
        self.record = record
        super().__init__(
            f"migration of {record.vm} {record.source} -> {record.target} failed: {record.reason}"
        )
