"""The PNG timeline of a migration record (harness.timeline)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.canary.report import CanaryReport
from harness.record import MigrationRecord
from harness.timeline import (
    GAP_COLOR,
    STATE_COLORS,
    Drawing,
    _axis,
    draw_pending,
    draw_record,
    plot_record,
    write_artifacts,
)

pytest_plugins = ["pytester"]

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
    rec.canary = CanaryReport(
        target="x:7007",
        sent=164,
        echoed=163,
        lost=1,
        resets=1,
        same_connection=False,
        max_gap_ms=61.649,
        gaps=[],
        fresh_connection_ok=True,
        started=T0 - 0.0115,
        ended=T0 + 1.663,
    )
    return rec.to_json()


def png_info(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking it is one."""
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    return image.shape[1], image.shape[0]


def without(record: dict[str, Any], **match: Any) -> dict[str, Any]:
    """`record` less the events whose fields equal `match`."""
    events = [e for e in record["events"] if not all(e.get(k) == v for k, v in match.items())]
    return {**record, "events": events}


def ms_of(**match: Any) -> float:
    """When the first event of the synthetic record whose fields equal `match` happened, as its
    JSON says (to 0.1 ms)."""
    return next(e["ms"] for e in synthetic_record()["events"] if all(e.get(k) == v for k, v in match.items()))


def extent(artist: Any) -> tuple[float, float, float, float]:
    """(x from, x to, y from, y to) of a bar, band or line, in data coordinates."""
    if hasattr(artist, "get_paths"):
        v = artist.get_paths()[0].vertices
        return float(v[:, 0].min()), float(v[:, 0].max()), float(v[:, 1].min()), float(v[:, 1].max())
    if hasattr(artist, "get_width"):
        x, y = artist.get_x(), artist.get_y()
        return x, x + artist.get_width(), y, y + artist.get_height()
    xs, ys = artist.get_xdata(), artist.get_ydata()
    return min(xs), max(xs), min(ys), max(ys)


@pytest.fixture
def drawing() -> Iterator[Drawing]:
    d = draw_record(synthetic_record())
    yield d
    close(d)


def close(d: Drawing) -> None:
    import matplotlib.pyplot as plt

    plt.close(d.figure)


def rendered(d: Drawing) -> np.ndarray:
    """The figure as the PNG shows it: rows x columns x RGB (0-255), rendered in memory."""
    d.figure.canvas.draw()
    return np.asarray(d.figure.canvas.buffer_rgba())[:, :, :3].astype(int)


def region(d: Drawing, image: np.ndarray, ms: tuple[float, float], lane: float, h: float) -> np.ndarray:
    """The pixels between `ms[0]` and `ms[1]` and `h` lane heights around `lane`, as a list of RGB."""
    (x0, y0), (x1, y1) = d.ax.transData.transform([(d.x(ms[0]), lane - h / 2), (d.x(ms[1]), lane + h / 2)])
    rows = image.shape[0]
    top, bottom = sorted((rows - y0, rows - y1))
    return image[round(top) : round(bottom), round(x0) : round(x1)].reshape(-1, 3)


def share(pixels: np.ndarray, color: str) -> float:
    """The fraction of `pixels` within a few levels of `color` ('#rrggbb')."""
    rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
    return float((np.abs(pixels - rgb).max(axis=1) <= 8).mean())


def test_synthetic_record_covers_every_event_kind() -> None:
    kinds = {e["kind"] for e in synthetic_record()["events"]}
    assert kinds >= {"phase", "state", "route", "seen", "capture", "qmp", "canary-gap", "canary-reset"}


def test_a_lane_per_source_in_order_source_before_target(drawing: Drawing) -> None:
    titles = [t.get_text() for t in drawing.ax.get_yticklabels()]
    assert titles == [
        "harness",
        "QEMU r2-n2 (source)",
        "QEMU r2-n1 (target)",
        "agent r2-n2 (source)",
        "agent r2-n1 (target)",
        "BIRD spine1",
        "BIRD tor1",
        "BIRD tor2",
        "canary",
    ]
    assert [tick for tick in drawing.ax.get_yticks()] == list(range(len(titles)))


def test_agent_states_are_bars_from_each_state_to_the_next(drawing: Drawing) -> None:
    lane = drawing.lanes.index("agent:r2-n1")
    x = drawing.x
    live = ms_of(source="agent:r2-n1", state="Live")  # 495.15, as the record rounds it
    expected = {  # state: (from ms, to ms); TimeWait lasts to convergence_until, beyond the axis
        "Target": (50.6, live),
        "Live": (live, 515.6),
    }
    for state, (a, b) in expected.items():
        (bar,) = [art for art in drawing.artists(f"state:{state}") if extent(art)[2] > lane - 1]
        assert extent(bar) == pytest.approx((x(a), x(b), lane - 0.1, lane + 0.1))
    timewait = [extent(art) for art in drawing.artists("state:TimeWait")]
    assert timewait == [pytest.approx((x(515.6), 1.0, lane - 0.1, lane + 0.1))]
    texts = [t.get_text() for t in drawing.ax.texts]
    assert "TimeWait until +10.5 s \u2192" in texts
    assert {"Target no route", "Live m512", "TimeWait m512", "RARP seen", "+route m512"} <= set(texts)


def test_the_pause_is_a_band_from_stop_on_the_source_to_resume_on_the_target(drawing: Drawing) -> None:
    (band,) = drawing.artists("pause")
    assert extent(band)[:2] == pytest.approx((drawing.x(470.4), drawing.x(494.8)))
    assert "VM paused 24.4 ms" in [t.get_text() for t in drawing.ax.texts]
    no_resume = draw_record(without(synthetic_record(), event="RESUME"))
    try:
        assert no_resume.artists("pause") == []
        assert not any(t.get_text().startswith("VM paused") for t in no_resume.ax.texts)
    finally:
        close(no_resume)


def test_canary_gaps_are_red_bars_as_long_as_the_gap(drawing: Drawing) -> None:
    lane = drawing.lanes.index("canary")
    x = drawing.x
    gaps = sorted(extent(a) for a in drawing.artists("canary-gap"))
    assert gaps == [
        pytest.approx((x(472.4), x(534.0), lane - 0.15, lane + 0.15)),
        pytest.approx((x(1580.0), x(1600.0), lane - 0.15, lane + 0.15)),
    ]
    texts = [t.get_text() for t in drawing.ax.texts]
    assert {"gap 61.6 ms", "gap 20.0 ms (open)", "reset (ECONNRESET)"} <= set(texts)
    (line,) = drawing.artists("canary")  # echoing from before the migration to after its end
    assert extent(line) == (0.0, 1.0, lane, lane)


def test_routers_best_paths_change_colour_with_the_next_hop(drawing: Drawing) -> None:
    lane = drawing.lanes.index("bird:tor2")
    x = drawing.x
    (none,) = drawing.artists("route:none")
    assert extent(none)[:2] == pytest.approx((x(500.0), x(501.0)))
    old = drawing.artists("route:198.18.2.12")
    new = sorted(extent(a) for a in drawing.artists("route:198.18.2.11"))
    assert [extent(a)[:2] for a in old] == [pytest.approx((x(2.4), x(500.0)))]
    assert new[0][:2] == pytest.approx((x(501.0), x(503.2)))
    assert new[-1][1] == 1.0  # the last best path lasts to the end
    assert old[0].get_facecolor().tolist() != drawing.artists("route:198.18.2.11")[0].get_facecolor().tolist()
    tagged = [extent(a) for a in drawing.artists("community") if extent(a)[2] > lane - 1]
    assert tagged == [pytest.approx((x(503.2), 1.0, lane - 0.1, lane + 0.1))]


def test_idle_stretches_are_cut_out_and_say_how_long(drawing: Drawing) -> None:
    cuts = sorted(extent(a)[:2] for a in drawing.artists("cut"))
    assert len(cuts) == 2
    assert drawing.x(63.0) < cuts[0][0] < cuts[0][1] < drawing.x(470.3)  # QEMU's precopy
    assert drawing.x(516.0) < cuts[1][0] < cuts[1][1] < drawing.x(1516.2)  # the source lingering
    texts = [t.get_text() for t in drawing.ax.texts]
    assert [t for t in texts if t.startswith("\u2026")] == ["\u2026401 ms\u2026", "\u2026975 ms\u2026"]


def test_title_and_canary_summary(drawing: Drawing) -> None:
    title, summary = (t.get_text() for t in drawing.figure.texts)
    assert title == "vm1 (203.0.113.10): r2-n2 \u2192 r2-n1, completed in 515.7 ms"
    assert summary.startswith("canary DISRUPTED: sent 164")
    assert "max gap 61.6 ms" in summary
    assert "connection replaced" in summary
    failed = draw_record(synthetic_record(status="failed"), title="my own title")
    try:
        assert failed.figure.texts[0].get_text() == "my own title"
    finally:
        close(failed)


def test_the_image_shows_the_bars_the_pause_and_the_gaps_in_their_colours(drawing: Drawing) -> None:
    image = rendered(drawing)
    assert image.shape[:2] == (900, 1600)
    target = drawing.lanes.index("agent:r2-n1")
    assert share(region(drawing, image, (497.0, 513.0), target, 0.15), STATE_COLORS["Live"]) > 0.9
    canary = drawing.lanes.index("canary")
    gap = region(drawing, image, (474.0, 532.0), canary, 0.25)
    assert share(gap, GAP_COLOR) > 0.6  # the rest is the white label written inside it
    # the pause band tints the QEMU target lane between STOP and RESUME, and only there
    qemu_target = drawing.lanes.index("qemu:r2-n1")
    inside = region(drawing, image, (475.0, 490.0), qemu_target, 0.1).mean(axis=0)
    outside = region(drawing, image, (500.0, 515.0), qemu_target, 0.1).mean(axis=0)
    assert outside[1] - inside[1] > 10  # less green: purple
    assert inside[2] > inside[1]


def test_negative_controls_without_the_gap_or_the_pause_the_image_lacks_them() -> None:
    plain = draw_record(without(without(synthetic_record(), kind="canary-gap"), event="STOP"))
    try:
        image = rendered(plain)
        canary = plain.lanes.index("canary")
        assert share(region(plain, image, (474.0, 532.0), canary, 0.25), GAP_COLOR) < 0.01
        qemu_target = plain.lanes.index("qemu:r2-n1")
        inside = region(plain, image, (475.0, 490.0), qemu_target, 0.1).mean(axis=0)
        outside = region(plain, image, (500.0, 515.0), qemu_target, 0.1).mean(axis=0)
        assert abs(outside[1] - inside[1]) < 3
    finally:
        close(plain)


def test_plot_record_writes_the_drawing_as_a_png(tmp_path: Path) -> None:
    import matplotlib

    out = plot_record(synthetic_record(), tmp_path / "sub" / "timeline.png")
    assert out == tmp_path / "sub" / "timeline.png"
    assert png_info(out) == (1600, 900)
    assert matplotlib.get_backend().lower() == "agg"


def test_a_migration_record_object_draws_like_its_json() -> None:
    rec = MigrationRecord("vm1", "203.0.113.10", "r2-n2", "r2-n1", started=T0)
    rec.phase("prepare")
    rec.phase("completed")
    d = draw_record(rec)  # type: ignore[arg-type]
    try:
        assert d.lanes == ["harness"]
        assert len(d.artists("phase:prepare")) == 1
    finally:
        close(d)


def test_a_record_without_events_says_so() -> None:
    rec = MigrationRecord("vm1", "203.0.113.10", "r2-n2", "r2-n1", started=T0).to_json()
    d = draw_record(rec)
    try:
        assert "no events recorded" in [t.get_text() for t in d.ax.texts]
    finally:
        close(d)


def test_bare_minimum_record_draws_its_one_event() -> None:
    d = draw_record({"events": [{"ms": 1.0, "source": "harness", "kind": "phase", "phase": "x"}]})
    try:
        assert d.lanes == ["harness"]
        assert "x" in [t.get_text() for t in d.ax.texts]
    finally:
        close(d)


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
    assert png_info(png_path) == (1600, 900)


def test_records_now_timelines_later(tmp_path: Path) -> None:
    """What Lab.migrate does under the pytest plugin: the record at once, the PNG afterwards."""
    record = synthetic_record()
    json_path, png_path = write_artifacts(record, tmp_path, "a", draw=False)
    assert json.loads(json_path.read_text()) == record
    assert not png_path.exists()
    (tmp_path / "broken.json").write_text("{not json")
    drawn, failed = draw_pending(tmp_path)
    assert drawn == [png_path]
    assert png_info(png_path) == (1600, 900)
    assert len(failed) == 1
    assert failed[0].startswith(f"{tmp_path / 'broken.json'}: JSONDecodeError")
    assert draw_pending(tmp_path) == ([], failed)  # an up-to-date PNG is not drawn again


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


# -- the pytest plugin draws the timelines after the tests ---------------------------------------------

INNER_CONFTEST = """
from pathlib import Path
from harness.pytest_plugin import TIMELINES

def pytest_configure(config):
    config.stash[TIMELINES] = Path(str(config.rootpath)) / "timelines"
"""

INNER_TEST = """
import json
from pathlib import Path
from harness.timeline import write_artifacts

RECORD = json.loads(Path(__file__).with_name("record.json").read_text())

def test_migrates(request):
    directory = Path(str(request.config.rootpath)) / "timelines"
    json_path, png_path = write_artifacts(RECORD, directory, "vm1", draw=False)  # as Lab.migrate does
    assert json_path.exists()
    assert not png_path.exists()  # nothing is drawn while the test runs
"""


def test_the_plugin_draws_the_recorded_timelines_after_the_session(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makefile(".json", record=json.dumps(synthetic_record()))
    pytester.makepyfile(INNER_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [r"kvlab: drew 1 migration timeline\(s\) in .*timelines \(\d+\.\d s, after the tests\)"]
    )
    assert png_info(pytester.path / "timelines" / "vm1.png") == (1600, 900)


def test_a_record_the_plugin_cannot_draw_fails_the_session(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makefile(".json", record=json.dumps({"events": [{"ms": "soon", "kind": "phase"}]}))
    pytester.makepyfile(INNER_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["kvlab: could not draw the timeline of *vm1.json: *"])
