"""The canary's report as a typed object: the same fields in Python as in its JSON document
(`CanaryReport.to_json`, `from_json`), read by the controller and by migration records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.canary.client import DEFAULT_GAP_THRESHOLD_MS, DEFAULT_RATE, REPORT_VERSION, Gap
from harness.errors import KvlabError


class CanaryError(KvlabError):
    """The canary client could not start, or ended without a report."""


@dataclass
class CanaryReport:
    """What the canary saw (see the module docstring for the JSON document)."""

    target: str
    sent: int
    echoed: int
    lost: int
    resets: int
    same_connection: bool
    max_gap_ms: float
    gaps: list[Gap]
    max_gap: Gap | None = None
    fresh_connection_ok: bool | None = None
    fresh_connection_error: str | None = None
    rate: float = DEFAULT_RATE
    gap_threshold_ms: float = DEFAULT_GAP_THRESHOLD_MS
    started: float | None = None
    ended: float | None = None
    duration_s: float | None = None
    stop_reason: str | None = None
    drained: bool = True
    warmup_ms: float | None = None  # first message -> first echo (not counted as a gap)
    out_of_order: int = 0
    duplicates: int = 0
    corrupt: int = 0
    rtt_ms: dict[str, float] | None = None
    connections: list[dict[str, Any]] = field(default_factory=list)
    resets_detail: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CanaryReport:
        if doc.get("version", REPORT_VERSION) != REPORT_VERSION:
            raise CanaryError(
                f"canary report version {doc.get('version')} (this harness reads {REPORT_VERSION})"
            )
        known = set(cls.__dataclass_fields__)
        fields = {k: v for k, v in doc.items() if k in known}
        fields["gaps"] = [Gap(**g) for g in doc.get("gaps", [])]
        fields["max_gap"] = Gap(**doc["max_gap"]) if doc.get("max_gap") else None
        return cls(**fields)

    @property
    def version(self) -> int:
        """The report format's version (the JSON document's `version`)."""
        return REPORT_VERSION

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["gaps"] = [g.to_json() for g in self.gaps]
        doc["max_gap"] = self.max_gap.to_json() if self.max_gap else None
        return {"version": REPORT_VERSION, **doc}

    def gaps_over(self, ms: float) -> list[Gap]:
        return [g for g in self.gaps if g.ms > ms]

    def summary(self) -> str:
        fresh = {True: "ok", False: "FAILED", None: "not checked"}[self.fresh_connection_ok]
        return (
            f"canary -> {self.target}: sent {self.sent}, echoed {self.echoed}, lost {self.lost}, "
            f"resets {self.resets}, same connection {self.same_connection}, "
            f"max gap {self.max_gap_ms:.1f} ms, {len(self.gaps)} gap(s) > {self.gap_threshold_ms:g} ms, "
            f"fresh connection {fresh}"
        )


__all__ = ["CanaryError", "CanaryReport", "Gap"]
