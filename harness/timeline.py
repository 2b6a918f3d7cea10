"""Draw a migration record (`MigrationRecord.to_json()`) as a PNG timeline.

One horizontal lane per source of events - the harness's phases, QEMU on each node, each node
agent, each router's BIRD, the TCP canary - with time (ms since the migration started) on x:

- events are markers with short labels (phase names, agent states with their route metric,
  "via X" and communities at the routers, QMP events);
- spans are bars: the agent's state (Target, Live, TimeWait, ...) and each router's best path
  until they change, QEMU's precopy, the VM's pause (STOP on the source to RESUME on the target,
  also a band across every lane), the canary's gaps (red, labelled with their length);
- long stretches where nothing happens (QEMU's precopy, the source pod lingering) are cut out
  of the time axis: a hatched band marks each cut and says how long it was, and each segment
  has its own ticks.

matplotlib is imported lazily, with the Agg backend: no display is needed.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.safefile import FileRefused, read_regular, replace_file

WIDTH_PX, HEIGHT_PX, DPI = 1600, 900, 100
RECORD_LIMIT = 64 << 20  # a migration record drawn from a file: larger ones are refused
LABEL_SIZE = 8.0  # points
ROW_PT = 10.5  # points between label rows
BAR_H = 0.2  # state / route bars, in lane units (a lane is 1.0 high)
GAP_H = 0.3  # the canary's gaps
MIN_SLOTS = 6  # the plot is at least this many lanes high

STATE_COLORS = {
    "Base": "#b8c2cc",
    "Target": "#f2c14e",
    "Live": "#4caf50",
    "TimeWait": "#f08a24",
}
NO_ROUTE = "#eef1f4"
PHASE_COLORS = ("#c9dcf2", "#a9c6e8")
PAUSE_COLOR = "#8e44ad"
GAP_COLOR = "#d62728"
CANARY_COLOR = "#2ca02c"
PRECOPY_COLOR = "#9ecae1"
VIA_COLORS = ("#6baed6", "#fd8d3c", "#74c476", "#9e9ac8", "#fdd0a2", "#c7e9c0", "#dadaeb", "#fc9272")


@dataclass
class _Label:
    lane: int
    ms: float
    text: str
    color: str = "#222222"
    bold: bool = False
    inside: float | None = None  # the label's bar ends here (ms): write the label in it if it fits


@dataclass
class _Axis:
    """A time axis with the idle stretches cut out: real ms <-> display position in [0, 1]."""

    real: list[float]  # knots: start/end of each segment, ascending
    disp: list[float]
    segments: list[tuple[float, float, float, float]]  # (ms from, ms to, x from, x to)
    cuts: list[tuple[float, float, float, float]]  # (x from, x to, ms from, ms to)

    def x(self, ms: float) -> float:
        import numpy as np

        return float(np.interp(ms, self.real, self.disp))

    @property
    def lo(self) -> float:
        return self.real[0]

    @property
    def hi(self) -> float:
        return self.real[-1]


def _axis(times: list[float], weights: list[float]) -> _Axis:
    """Cluster `times`, cut out the long gaps between clusters, give each cluster room by its weight."""
    pts = sorted(zip(times, weights, strict=True)) or [(0.0, 1.0)]
    lo, hi = pts[0][0], pts[-1][0]
    total = max(hi - lo, 1.0)
    cut_over = max(0.15 * total, 100.0)
    clusters: list[list[tuple[float, float]]] = [[pts[0]]]
    for p in pts[1:]:
        if p[0] - clusters[-1][-1][0] > cut_over:
            clusters.append([p])
        else:
            clusters[-1].append(p)
    cut_w = 0.03 if len(clusters) > 1 else 0.0
    room = 1.0 - cut_w * (len(clusters) - 1)
    need = [sum(w for _, w in c) + 3.0 for c in clusters]
    real: list[float] = []
    disp: list[float] = []
    segments, cuts = [], []
    x = 0.0
    for i, c in enumerate(clusters):
        a, b = c[0][0], c[-1][0]
        span = b - a
        pad = max(0.05 * span, 0.02 * total if len(clusters) == 1 else 0.5, 0.5)
        if span < 2.0:  # a lone event: a few ms of room, mostly after it
            a, b = a - max(pad, 1.0), b + max(pad, 5.0)
        else:
            a, b = a - pad, b + pad
        w = room * need[i] / sum(need)
        if i:
            cuts.append((x, x + cut_w, real[-1], a))
            x += cut_w
        real += [a, b]
        disp += [x, x + w]
        segments.append((a, b, x, x + w))
        x += w
    return _Axis(real, disp, segments, cuts)


def _lane_source(e: dict[str, Any]) -> str:
    """An event's lane: its source, except that a router's view of the VM's /128 (dual stack,
    `family` 6) gets a lane of its own, `bird6:<router>`."""
    source = str(e.get("source", "?"))
    if e.get("kind") == "route" and e.get("family") == 6 and source.startswith("bird:"):
        return "bird6:" + source.removeprefix("bird:")
    return source


def _lanes(record: dict[str, Any], events: list[dict[str, Any]]) -> list[str]:
    src, dst = record.get("source"), record.get("target")
    seen = list(dict.fromkeys(e.get("source", "?") for e in events))

    def rank(s: str) -> tuple[int, int, str]:
        kind, _, name = s.partition(":")
        node_rank = 0 if name == src else 1 if name == dst else 2
        order = {"harness": 0, "qemu": 1, "agent": 2, "bird": 3, "bird6": 3, "canary": 4}
        return (order.get(kind, 5), node_rank if kind in ("qemu", "agent") else 0, name or kind)

    lanes = sorted(seen, key=rank)
    if record.get("canary") and "canary" not in lanes:
        lanes.append("canary")
    return lanes


def _lane_title(lane: str, record: dict[str, Any]) -> str:
    kind, _, name = lane.partition(":")
    role = {record.get("source"): " (source)", record.get("target"): " (target)"}.get(name, "")
    pretty = {"agent": "agent", "qemu": "QEMU", "bird": "BIRD", "bird6": "bird6"}.get(kind)
    if pretty:
        return f"{pretty} {name}{role}"
    return lane


def _metric(m: Any) -> str:
    return "no route" if m is None else f"m{m}"


def _canary_summary(c: dict[str, Any]) -> tuple[str, bool]:
    ok = c.get("resets", 0) == 0 and c.get("lost", 0) == 0 and c.get("same_connection", True)
    parts = [
        f"canary {'ok' if ok else 'DISRUPTED'}:",
        f"sent {c.get('sent', '?')}",
        f"echoed {c.get('echoed', '?')}",
        f"lost {c.get('lost', '?')}",
        f"resets {c.get('resets', '?')}",
    ]
    if c.get("max_gap_ms") is not None:
        parts.append(f"max gap {c['max_gap_ms']:.1f} ms")
    if "same_connection" in c:
        parts.append("same connection" if c["same_connection"] else "connection replaced")
    if "fresh_connection_ok" in c:
        parts.append("fresh connection " + ("ok" if c["fresh_connection_ok"] else "FAILED"))
    return "  ·  ".join(parts).replace(":  ·  ", ": ", 1), ok


@dataclass
class Drawing:
    """A drawn timeline: the figure, its axes, the lanes top to bottom (lane i is at y = i), and
    `x(ms)`, where a moment lies on the axes (0..1) once idle stretches are cut out.

    Artists carry what they show as their gid: `phase:<name>`, `state:<state>` (an agent's state
    bar), `route:<via>` (a router's best path), `precopy`, `pause` (STOP -> RESUME), `canary`,
    `canary-gap`, `cut`."""

    figure: Any
    ax: Any
    lanes: list[str]
    x: Callable[[float], float]

    def artists(self, gid: str) -> list[Any]:
        """The axes' artists whose gid is `gid`."""
        return [a for a in self.ax.get_children() if a.get_gid() == gid]


def plot_record(record: dict[str, Any], path: Path, *, title: str | None = None) -> Path:
    """Draw `record` (a `MigrationRecord.to_json()` dict, or the record itself) to a PNG at `path`."""
    import matplotlib.pyplot as plt

    drawing = draw_record(record, title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    try:
        drawing.figure.savefig(png, dpi=DPI, format="png")
    finally:
        plt.close(drawing.figure)
    replace_file(path, png.getvalue())  # a symlink planted at `path` is replaced, not written through
    return path


def draw_record(record: dict[str, Any], *, title: str | None = None) -> Drawing:
    """The timeline of `record` drawn on a new matplotlib figure (Agg; the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as pe
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    if hasattr(record, "to_json"):
        record = record.to_json()
    t0 = record.get("started")
    events = []
    for e in record.get("events", []):
        ms = e.get("ms")
        if ms is None and t0 is not None and e.get("t") is not None:
            ms = round((e["t"] - t0) * 1000, 1)
        if ms is not None:
            events.append({**e, "ms": float(ms), "source": _lane_source(e), "kind": e.get("kind", "?")})
    events.sort(key=lambda e: e["ms"])

    def rel(t: float | None) -> float | None:
        return None if t is None or t0 is None else (t - t0) * 1000

    lanes = _lanes(record, events)
    lane_of = {name: i for i, name in enumerate(lanes)}
    n = max(len(lanes), 1)

    # -- the time axis: every moment worth showing, weighted by how many labels it brings
    times, weights = [0.0], [0.0]
    for e in events:
        light = e["kind"] == "qmp" and e.get("event") == "MIGRATION_PASS"
        times.append(e["ms"])
        weights.append(0.3 if light else 1.0)
        if e["kind"] == "canary-gap" and rel(e.get("end")) is not None:
            times.append(rel(e["end"]))
            weights.append(0.0)
    if record.get("duration_ms") is not None:
        times.append(float(record["duration_ms"]))
        weights.append(0.0)
    axis = _axis(times, weights)
    X = axis.x
    x_end = 1.0

    height_px = HEIGHT_PX if n <= 11 else HEIGHT_PX + 60 * (n - 11)
    fig = plt.figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI)
    left, right = 0.115, 0.985
    bottom, top = 0.14 * HEIGHT_PX / height_px, 1 - 0.105 * HEIGHT_PX / height_px
    ax = fig.add_axes((left, bottom, right - left, top - bottom))
    ax.set_xlim(0, 1)
    slots = max(n, MIN_SLOTS)  # few lanes: keep them lane-sized, in the middle
    off = (slots - n) / 2
    ax.set_ylim(slots - 0.5 - off, -0.5 - off)  # first lane on top
    ax.set_yticks(range(n))
    ax.set_yticklabels([_lane_title(lane, record) for lane in lanes] or [""], fontsize=10)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    for i in range(n):
        if i % 2 == 0:
            ax.axhspan(i - 0.5, i + 0.5, color="#f5f6f8", zorder=0, lw=0)

    labels: list[_Label] = []
    half: dict[int, float] = {}  # lanes with bars taller than BAR_H: their half height
    legend: dict[str, Any] = {}

    def bar(
        lane: int, a: float, b: float, color: str, gid: str, *, h: float = BAR_H, z: float = 2, **kw: Any
    ) -> None:
        xa, xb = X(a), X(b) if b <= axis.hi else x_end
        style = {"facecolor": "none", "lw": 0} if "hatch" in kw else {"color": color, "lw": 0}
        xs = [xa, max(xb, xa + 0.0015)]
        ax.fill_between(xs, lane - h / 2, lane + h / 2, zorder=z, gid=gid, **style, **kw)

    def mark(lane: int, ms: float, marker: str, color: str, size: float = 7, z: float = 5) -> None:
        ax.plot([X(ms)], [lane], marker=marker, color=color, ms=size, mec="white", mew=0.8, zorder=z, ls="")

    # -- harness phases: a bar from each phase to the next, a diamond and the name at each
    phases = [e for e in events if e["kind"] == "phase"]
    for i, e in enumerate(phases):
        lane = lane_of[e["source"]]
        if i + 1 < len(phases):
            bar(lane, e["ms"], phases[i + 1]["ms"], PHASE_COLORS[i % 2], f"phase:{e['phase']}")
        color = GAP_COLOR if e["phase"] == "failed" else "#1f3b5c"
        mark(lane, e["ms"], "D", color, 6)
        text = e["phase"] + (f" ({e['reason']})" if e.get("reason") else "")
        labels.append(_Label(lane, e["ms"], text, color, bold=True))
    if phases:
        legend["harness phase"] = Patch(color=PHASE_COLORS[0])

    # -- agents: state ribbons, route operations, capture, what they saw
    for lane_name in (name for name in lanes if name.startswith("agent:")):
        lane = lane_of[lane_name]
        mine = [e for e in events if e["source"] == lane_name]
        states = [e for e in mine if e["kind"] == "state"]
        for i, e in enumerate(states):
            state = e.get("state", "?")
            color = STATE_COLORS.get(state, "#999999")
            if e.get("metric") is None and state in ("Base",):
                color = NO_ROUTE
            if i + 1 < len(states):
                end = states[i + 1]["ms"]
            elif state == "TimeWait" and rel(record.get("convergence_until")) is not None:
                end = rel(record["convergence_until"])
            else:
                end = math.inf
            bar(lane, e["ms"], end, color, f"state:{state}")
            if state in STATE_COLORS:
                legend.setdefault(f"agent {state}", Patch(color=STATE_COLORS[state]))
            mark(lane, e["ms"], "o", STATE_COLORS.get(state, "#666666"), 7)
            text = f"{state} {_metric(e.get('metric'))}"
            labels.append(_Label(lane, e["ms"], text, "#333333", bold=True))
            if end != math.inf and end > axis.hi:
                ax.annotate(
                    f"{state} until +{end / 1000:.1f} s \u2192",
                    (x_end, lane),
                    xytext=(-3, -3),
                    textcoords="offset points",
                    ha="right",
                    va="top",
                    fontsize=LABEL_SIZE - 1,
                    color="#8a4a00",
                    zorder=7,
                )
        for e in mine:
            if e["kind"] == "route":
                add = e.get("op") == "add"
                mark(lane, e["ms"], "^" if add else "v", "#2e7d32" if add else "#c62828", 8)
                labels.append(
                    _Label(lane, e["ms"], ("+" if add else "\u2212") + f"route {_metric(e.get('metric'))}")
                )
            elif e["kind"] == "capture":
                mark(lane, e["ms"], "P", "#555555", 7)
                labels.append(_Label(lane, e["ms"], "capture armed", "#555555"))
            elif e["kind"] == "seen":
                mark(lane, e["ms"], "*", "#e6550d", 11, z=6)
                labels.append(_Label(lane, e["ms"], f"{e.get('what', '?')} seen", "#a63603"))

    # -- routers: the best path as a ribbon coloured by next hop, a label at each change
    via_color: dict[str, str] = {}
    for lane_name in (name for name in lanes if name.startswith(("bird:", "bird6:"))):
        lane = lane_of[lane_name]
        routes = [e for e in events if e["source"] == lane_name and e["kind"] == "route"]
        for i, e in enumerate(routes):
            via = e.get("best_via")
            end = routes[i + 1]["ms"] if i + 1 < len(routes) else math.inf
            if via is None:
                bar(lane, e["ms"], end, NO_ROUTE, "route:none")
                mark(lane, e["ms"], "s", GAP_COLOR, 6)
                labels.append(_Label(lane, e["ms"], "no route", GAP_COLOR, bold=True))
                continue
            color = via_color.setdefault(via, VIA_COLORS[len(via_color) % len(VIA_COLORS)])
            bar(lane, e["ms"], end, color, f"route:{via}")
            if e.get("communities"):
                bar(lane, e["ms"], end, "none", "community", hatch="////", edgecolor="#00000060", z=2.5)
            mark(lane, e["ms"], "s", "#2b4d6e", 6)
            text = f"via {via}"
            if e.get("best_protocol"):
                text += f" ({e['best_protocol']})"
            if e.get("communities"):
                text += " " + " ".join(e["communities"])
            if e.get("paths", 1) > 1:
                text += f" {e['paths']} paths"
            if e.get("ecmp"):
                text += " ECMP"
            labels.append(_Label(lane, e["ms"], text, "#1c3550"))
        if routes:
            legend.setdefault("best path (colour = next hop)", Patch(color=VIA_COLORS[0]))
            if any(e.get("communities") for e in routes):
                legend.setdefault("with community", Patch(facecolor="white", hatch="////", edgecolor="#555"))

    # -- QEMU: precopy bar, QMP events, the pause STOP (source) -> RESUME (target)
    qmp = [e for e in events if e["kind"] == "qmp"]
    for lane_name in (name for name in lanes if name.startswith("qemu:")):
        lane = lane_of[lane_name]
        mine = [e for e in qmp if e["source"] == lane_name]
        active = next(
            (e for e in mine if e.get("event") == "MIGRATION" and e.get("status") == "active"), None
        )
        done = next(
            (e for e in mine if e.get("event") == "MIGRATION" and e.get("status") in ("completed", "failed")),
            None,
        )
        if active and done:
            bar(lane, active["ms"], done["ms"], PRECOPY_COLOR, "precopy")
            legend.setdefault("QEMU precopy", Patch(color=PRECOPY_COLOR))
        for e in mine:
            ev = e.get("event", "?")
            if ev == "MIGRATION_PASS":
                mark(lane, e["ms"], "|", "#7f8c8d", 7, z=4)
                continue
            if ev == "STOP":
                mark(lane, e["ms"], "s", PAUSE_COLOR, 8)
                labels.append(_Label(lane, e["ms"], "STOP", PAUSE_COLOR, bold=True))
            elif ev == "RESUME":
                mark(lane, e["ms"], ">", PAUSE_COLOR, 9)
                labels.append(_Label(lane, e["ms"], "RESUME", PAUSE_COLOR, bold=True))
            elif ev == "MIGRATION":
                status = e.get("status", "")
                bad = status in ("failed", "cancelled")
                mark(lane, e["ms"], "o", GAP_COLOR if bad else "#3182bd", 6)
                labels.append(_Label(lane, e["ms"], f"MIGRATION {status}", GAP_COLOR if bad else "#1c4f7a"))
            elif ev == "completed" and e.get("total_ms") is not None:
                mark(lane, e["ms"], "o", "#1c4f7a", 5)
                text = f"stats: total {e['total_ms']} ms, downtime {e.get('downtime_ms')} ms"
                labels.append(_Label(lane, e["ms"], text, "#1c4f7a"))
            else:
                mark(lane, e["ms"], "o", "#7f8c8d", 5)
                labels.append(_Label(lane, e["ms"], ev, "#444444"))
    stop = next(
        (e for e in qmp if e.get("event") == "STOP" and e["source"] == f"qemu:{record.get('source')}"), None
    )
    stop = stop or next((e for e in qmp if e.get("event") == "STOP"), None)
    resume = None
    if stop:
        resume = next(
            (
                e
                for e in qmp
                if e.get("event") == "RESUME" and e["ms"] >= stop["ms"] and e["source"] != stop["source"]
            ),
            None,
        ) or next((e for e in qmp if e.get("event") == "RESUME" and e["ms"] >= stop["ms"]), None)
    if stop and resume:
        xa, xb = X(stop["ms"]), X(resume["ms"])
        ax.axvspan(xa, xb, color=PAUSE_COLOR, alpha=0.10, lw=0, zorder=1, gid="pause")
        for xx in (xa, xb):
            ax.axvline(xx, color=PAUSE_COLOR, lw=0.8, ls=(0, (3, 3)), alpha=0.6, zorder=1)
        paused = resume["ms"] - stop["ms"]
        ax.annotate(
            f"VM paused {paused:.1f} ms",
            ((xa + xb) / 2, 1),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
            fontweight="bold",
            color=PAUSE_COLOR,
            annotation_clip=False,
        )
        legend["VM paused (STOP \u2192 RESUME)"] = Patch(color=PAUSE_COLOR, alpha=0.25)

    # -- canary: a green line while it ran, red bars for its gaps, crosses for resets
    if "canary" in lane_of:
        lane = lane_of["canary"]
        c = record.get("canary") or {}
        a, b = rel(c.get("started")), rel(c.get("ended"))
        if a is not None or b is not None:
            xa = X(a) if a is not None else 0.0
            xb = X(b) if b is not None and b <= axis.hi else x_end
            ax.plot(
                [xa, xb],
                [lane, lane],
                color=CANARY_COLOR,
                lw=2,
                zorder=2,
                solid_capstyle="butt",
                gid="canary",
            )
            legend["canary echoing"] = Line2D([], [], color=CANARY_COLOR, lw=2)
        for e in events:
            if e["kind"] == "canary-gap":
                end = rel(e.get("end"))
                end = end if end is not None else e["ms"] + float(e.get("gap_ms") or 0)
                bar(lane, e["ms"], end, GAP_COLOR, "canary-gap", h=GAP_H, z=3)
                half[lane] = GAP_H / 2
                text = f"gap {float(e.get('gap_ms') or end - e['ms']):.1f} ms"
                text += " (open)" if e.get("open") else ""
                labels.append(_Label(lane, e["ms"], text, GAP_COLOR, bold=bool(e.get("longest")), inside=end))
                legend["canary gap"] = Patch(color=GAP_COLOR)
            elif e["kind"] == "canary-reset":
                mark(lane, e["ms"], "X", GAP_COLOR, 10, z=6)
                labels.append(_Label(lane, e["ms"], f"reset ({e.get('error', '?')})", GAP_COLOR, bold=True))
                legend["canary reset"] = Line2D([], [], marker="X", color=GAP_COLOR, ls="")

    # -- anything else: a grey dot and its kind
    handled = {"phase", "state", "route", "capture", "seen", "qmp", "canary-gap", "canary-reset"}
    for e in events:
        if e["kind"] not in handled:
            lane = lane_of[e["source"]]
            mark(lane, e["ms"], "o", "#999999", 5)
            labels.append(_Label(lane, e["ms"], str(e["kind"]), "#555555"))

    # -- cuts in the time axis, ticks per segment
    for xa, xb, ma, mb in axis.cuts:
        ax.axvspan(xa, xb, facecolor="white", hatch="///", edgecolor="#c0c4c8", lw=0, zorder=4, gid="cut")
        ax.annotate(
            f"\u2026{mb - ma:,.0f} ms\u2026",
            ((xa + xb) / 2, 0),
            xycoords=("data", "axes fraction"),
            xytext=(0, -5),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize=8,
            fontstyle="italic",
            color="#666666",
            annotation_clip=False,
        )
    ticks, ticklabels = [], []
    for i, (a, b, xa, xb) in enumerate(axis.segments):
        nb = max(2, int((xb - xa) * 14))
        lo = xa + (0.025 if i > 0 else 0.0)  # no tick right next to a cut: its label goes there
        hi = xb - (0.025 if i + 1 < len(axis.segments) else 0.0)
        for v in MaxNLocator(nbins=nb, steps=[1, 2, 2.5, 5, 10]).tick_values(a, b):
            if a <= v <= b:
                xv = X(v)
                if lo <= xv <= hi:
                    ticks.append(xv)
                    ticklabels.append(f"{v:g}")
    ax.set_xticks(ticks)
    ax.set_xticklabels(ticklabels, fontsize=9)
    ax.grid(axis="x", color="#dde1e5", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    xlabel = "ms since the migration started"
    if axis.cuts:
        xlabel += "  (hatched bands: idle time cut out; each segment has its own scale)"
    ax.set_xlabel(xlabel, fontsize=10)
    ax.tick_params(axis="y", length=0)

    _place_labels(fig, ax, labels, X, slots, pe, half)

    if not events:
        ax.text(0.5, (n - 1) / 2, "no events recorded", ha="center", va="center", fontsize=14, color="#888")

    # -- title, canary summary, legend
    if title is None:
        title = f"{record.get('vm', '?')} ({record.get('ip', '?')}): {record.get('source', '?')} \u2192 "
        title += f"{record.get('target', '?')}, {record.get('status', '?')}"
        if record.get("duration_ms") is not None:
            title += f" in {record['duration_ms']:g} ms"
        if record.get("reason"):
            title += f" ({record['reason']})"
    failed = record.get("status") == "failed"
    fig.text(
        left,
        0.975,
        title,
        fontsize=14,
        fontweight="bold",
        va="top",
        ha="left",
        color=GAP_COLOR if failed else "black",
    )
    if record.get("canary"):
        summary, ok = _canary_summary(record["canary"])
        fig.text(
            left,
            0.975 - 30 / height_px,
            summary,
            fontsize=10.5,
            va="top",
            ha="left",
            color="#1b5e20" if ok else "#b71c1c",
            fontweight="normal" if ok else "bold",
        )
    if legend:
        fig.legend(
            list(legend.values()),
            list(legend.keys()),
            loc="lower center",
            ncol=min(len(legend), 6),
            fontsize=9,
            frameon=False,
            bbox_to_anchor=(0.5 * (left + right), 0.0),
        )
    return Drawing(fig, ax, lanes, X)


def _place_labels(
    fig: Any, ax: Any, labels: list[_Label], X: Any, n: int, pe: Any, half: dict[int, float]
) -> None:
    """Put each label next to its marker, in the first free row above or below its lane.

    `half` is the half height of a lane's tallest bar (in lane units) where it is more than BAR_H.
    """
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    ax_box = ax.get_window_extent(renderer)
    pt = fig.dpi / 72
    lane_pt = (ax_box.height / max(n, 1)) / pt

    def lane_rows(lane: int) -> list[float]:
        base = max(5.0, half.get(lane, BAR_H / 2) * lane_pt + 1.5)
        per_side = 1 + max(0, int((lane_pt / 2 + 2 - LABEL_SIZE - base) // ROW_PT))
        return [s * (base + k * ROW_PT) for k in range(per_side) for s in (1, -1)]  # points, up first

    ends: dict[tuple[int, int], float] = {}
    gap_px = 6
    for lab in sorted(labels, key=lambda lab: (lab.lane, lab.ms)):
        rows = lane_rows(lab.lane)
        x_px = to_px((X(lab.ms), lab.lane))[0]
        ann = ax.annotate(
            lab.text,
            (X(lab.ms), lab.lane),
            xytext=(3, rows[0]),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=LABEL_SIZE,
            color=lab.color,
            fontweight="bold" if lab.bold else "normal",
            zorder=8,
            annotation_clip=False,
            path_effects=[pe.withStroke(linewidth=2.5, foreground="white")],
        )
        w = ann.get_window_extent(renderer).width
        if lab.inside is not None and to_px((X(lab.inside), lab.lane))[0] - x_px > w + 8:
            ann.xy = ((X(lab.ms) + X(lab.inside)) / 2, lab.lane)
            ann.xyann = (0, 0)
            ann.set_ha("center")
            ann.set_va("center")
            ann.set_color("white")
            ann.set_path_effects([])
            continue
        flip = x_px + 3 * pt + w > ax_box.x1 + 4  # would run off the right edge: end at the marker
        start = x_px - 3 * pt - w if flip else x_px + 3 * pt
        best, best_over = 0, math.inf
        for r in range(len(rows)):
            over = ends.get((lab.lane, r), -math.inf) + gap_px - start
            if over <= 0:
                best = r
                break
            if over < best_over:
                best, best_over = r, over
        ends[(lab.lane, best)] = start + w
        dy = rows[best]
        ann.set_ha("right" if flip else "left")
        ann.set_va("bottom" if dy > 0 else "top")
        ann.xyann = (-3 if flip else 3, dy)
        if abs(dy) > abs(rows[0]) + ROW_PT / 2:  # a higher row: a thin line back to the marker
            ax.plot(
                [X(lab.ms), X(lab.ms)],
                [lab.lane, lab.lane - (dy - math.copysign(2, dy)) * pt / (ax_box.height / n)],
                color=lab.color,
                lw=0.5,
                alpha=0.6,
                zorder=7,
            )


def write_artifacts(
    record: dict[str, Any], directory: Path, stem: str, *, draw: bool = True
) -> tuple[Path, Path]:
    """Write `record` as `<stem>.json` and its timeline as `<stem>.png` in `directory`.

    `draw=False` writes the record only (milliseconds, where drawing takes seconds under load):
    `draw_pending(directory)` draws its PNG later, off the timed path. Returns both paths."""
    if hasattr(record, "to_json"):
        record = record.to_json()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, png_path = directory / f"{stem}.json", directory / f"{stem}.png"
    replace_file(json_path, (json.dumps(record, indent=2, default=str) + "\n").encode())
    if draw:
        plot_record(record, png_path)
    return json_path, png_path


def draw_pending(directory: Path) -> tuple[list[Path], list[str]]:
    """Draw `<stem>.png` for every `<stem>.json` record in `directory` whose PNG is missing or
    older than the record. Returns the PNGs drawn and, a line each, the records that could not be."""
    drawn: list[Path] = []
    failed: list[str] = []
    for json_path in sorted(Path(directory).glob("*.json")):
        png_path = json_path.with_suffix(".png")
        if png_path.exists() and png_path.stat().st_mtime >= json_path.stat().st_mtime:
            continue
        try:
            data = read_regular(json_path, RECORD_LIMIT, what="migration records", follow_symlinks=False)
            drawn.append(plot_record(json.loads(data), png_path))
        except FileRefused as e:
            failed.append(f"{json_path}: not drawn: {e}")
        except Exception as e:  # one broken record must not keep the others from being drawn
            failed.append(f"{json_path}: {type(e).__name__}: {e}")
    return drawn, failed
