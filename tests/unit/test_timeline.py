"""The PNG timeline of a migration record (harness.timeline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.record import MigrationRecord
from harness.timeline import _axis, plot_record, write_artifacts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
T0 = 1_700_000_000.0


def synthetic_record(*, status: str = "completed") -> dict[str, Any]:
    """A QEMU migration with a canary, with every kind of event the harness records."""
    rec = MigrationRecord("vm1", "203.0.113.10", "r2-n2", "r2-n1", started=T0)

    def at(ms: float, source: str, kind: str, **fields: Any) -> None:
        rec.events.append({"t": T0 + ms / 1000, "source": source, "kind": kind, **fields})

    def agent(ms: float, node: str, kind: str, **fields: Any) -> None:
        at(ms, f"agent:{node}", kind, node=node, vm="vm1", **fields)

    def bird(ms: float, router: str, via: str | None, proto: str | None, **fields: Any) -> None:
        view = {"paths": 1 if via else 0, "best_via": via, "best_protocol": proto, "communities": []}
        view |= {"ecmp": False, **fields}
        at(ms, f"bird:{router}", "route", router=router, prefix="203.0.113.10/32", **view)

    def qmp(ms: float, node: str, event: str, **fields: Any) -> None:
        at(ms, f"qemu:{node}", "qmp", event=event, **fields)

    at(0.4, "harness", "phase", phase="prepare")
    agent(0.7, "r2-n2", "state", state="Base", reason="migration source", metric=1024)
    for ms, router, via, proto in [
        (1.4, "spine1", "198.19.0.3", "bgp_tor2"),
        (2.1, "tor1", "198.19.0.0", "bgp_spine1"),
        (2.4, "tor2", "198.18.2.12", "bgp_r2_n2"),
    ]:
        bird(ms, router, via, proto)
    agent(50.6, "r2-n1", "state", state="Target", reason="migration target created", metric=None)
    agent(58.8, "r2-n1", "capture", ifname="calie47a3cb23cf")
    at(58.9, "harness", "phase", phase="target ready")
    at(58.95, "harness", "phase", phase="QEMU migration", announce="RARP")
    qmp(61.6, "r2-n2", "MIGRATION", status="setup")
    qmp(61.8, "r2-n2", "migrate")
    qmp(62.9, "r2-n2", "MIGRATION_PASS")
    qmp(62.95, "r2-n2", "MIGRATION", status="active")
    qmp(470.3, "r2-n2", "MIGRATION_PASS")
    qmp(470.4, "r2-n2", "STOP")
    qmp(472.2, "r2-n2", "MIGRATION", status="completed")
    gap_end = T0 + 0.5340
    at(472.4, "canary", "canary-gap", end=gap_end, gap_ms=61.6, open=False, longest=True, target="x:7007")
    at(480.0, "canary", "canary-reset", error="ECONNRESET", target="x:7007")
    qmp(494.8, "r2-n1", "RESUME")
    agent(495.1, "r2-n1", "seen", what="RARP")
    agent(495.15, "r2-n1", "state", state="Live", reason="RARP from VM", metric=512)
    qmp(495.2, "r2-n2", "completed", total_ms=411, downtime_ms=2, setup_ms=1)
    agent(496.6, "r2-n1", "route", op="add", prefix="203.0.113.10/32", metric=512)
    bird(500.0, "tor2", None, None)  # a moment without a route
    bird(501.0, "tor2", "198.18.2.11", "bgp_r2_n1", paths=2, ecmp=True)
    bird(503.0, "spine1", "198.19.0.3", "bgp_tor2", communities=["65000:100"])
    bird(503.1, "tor1", "198.19.0.0", "bgp_spine1", communities=["65000:100"])
    bird(503.2, "tor2", "198.18.2.11", "bgp_r2_n1", communities=["65000:100"])
    agent(515.6, "r2-n1", "state", state="TimeWait", reason="migration ended", metric=512)
    at(515.7, "harness", "phase", phase="completed")
    rec.ended = T0 + 0.5157
    rec.convergence_until = rec.ended + 10
    agent(1516.2, "r2-n2", "state", state="Base", reason="VM left this node", metric=None)
    agent(1517.0, "r2-n2", "route", op="del", prefix="203.0.113.10/32", metric=1024)
    at(1580.0, "canary", "canary-gap", end=T0 + 1.6, gap_ms=20.0, open=True, longest=False, target="x:7007")
    at(1591.2, "harness", "phase", phase="source cleaned up")
    at(1592.0, "harness", "something-new", detail="an event kind the timeline does not know")
    rec.status = status
    rec.canary = {
        "sent": 164,
        "echoed": 163,
        "lost": 1,
        "resets": 1,
        "same_connection": False,
        "max_gap_ms": 61.649,
        "fresh_connection_ok": True,
        "started": T0 - 0.0115,
        "ended": T0 + 1.663,
    }
    return rec.to_json()


def png_info(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking it is one."""
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    return image.shape[1], image.shape[0]


def test_synthetic_record_covers_every_event_kind() -> None:
    kinds = {e["kind"] for e in synthetic_record()["events"]}
    assert kinds >= {"phase", "state", "route", "seen", "capture", "qmp", "canary-gap", "canary-reset"}


def test_plot_record_renders_every_event_kind(tmp_path: Path) -> None:
    out = plot_record(synthetic_record(), tmp_path / "sub" / "timeline.png")
    assert out == tmp_path / "sub" / "timeline.png"
    assert out.stat().st_size > 10_000
    assert png_info(out) == (1600, 900)


def test_plot_record_uses_agg_and_a_given_title(tmp_path: Path) -> None:
    import matplotlib

    plot_record(synthetic_record(status="failed"), tmp_path / "t.png", title="my own title")
    assert matplotlib.get_backend().lower() == "agg"
    assert png_info(tmp_path / "t.png") == (1600, 900)


def test_plot_record_accepts_a_migration_record(tmp_path: Path) -> None:
    rec = MigrationRecord("vm1", "203.0.113.10", "r2-n2", "r2-n1")
    rec.phase("prepare")
    assert png_info(plot_record(rec, tmp_path / "r.png")) == (1600, 900)  # type: ignore[arg-type]


def test_record_without_events_still_renders(tmp_path: Path) -> None:
    rec = MigrationRecord("vm1", "203.0.113.10", "r2-n2", "r2-n1", started=T0).to_json()
    out = plot_record(rec, tmp_path / "empty.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert png_info(out) == (1600, 900)


def test_bare_minimum_record_renders(tmp_path: Path) -> None:
    out = plot_record(
        {"events": [{"ms": 1.0, "source": "harness", "kind": "phase", "phase": "x"}]}, tmp_path / "m.png"
    )
    assert png_info(out) == (1600, 900)


def test_many_lanes_grow_the_figure(tmp_path: Path) -> None:
    events = [
        {"ms": float(i), "source": f"bird:r{i:02d}", "kind": "route", "best_via": "10.0.0.1", "paths": 1}
        for i in range(14)
    ]
    width, height = png_info(plot_record({"events": events}, tmp_path / "lanes.png"))
    assert width == 1600
    assert height > 900


def test_write_artifacts_writes_json_and_png(tmp_path: Path) -> None:
    record = synthetic_record()
    json_path, png_path = write_artifacts(record, tmp_path / "artifacts", "migration-vm1")
    assert json_path == tmp_path / "artifacts" / "migration-vm1.json"
    assert png_path == tmp_path / "artifacts" / "migration-vm1.png"
    assert json.loads(json_path.read_text()) == record
    assert png_path.stat().st_size > 10_000
    assert png_info(png_path) == (1600, 900)


@pytest.mark.parametrize(
    ("times", "cuts"),
    [
        ([0.0, 1.0, 2.0, 60.0, 63.0], 0),  # close enough: one segment
        ([0.0, 60.0, 470.0, 516.0, 1516.0, 1591.0], 2),  # precopy and source cleanup cut out
        ([5.0], 0),
    ],
)
def test_time_axis_cuts_idle_stretches(times: list[float], cuts: int) -> None:
    axis = _axis(times, [1.0] * len(times))
    assert len(axis.cuts) == cuts
    assert len(axis.segments) == cuts + 1
    xs = [axis.x(t) for t in times]
    assert xs == sorted(xs)
    assert all(0.0 <= x <= 1.0 for x in xs)
    assert axis.lo < min(times)
    assert axis.hi > max(times)
