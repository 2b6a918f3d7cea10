"""Benchmark: real QEMU live migrations of vm1 on the default lab, alternating racks.

For each migration (with the TCP canary from ext1 running):
- QEMU pause: STOP on the source -> RESUME on the target (QEMU's own QMP timestamps),
- RARP seen -> spine FIB switched: the target's agent sees QEMU's RARP -> spine1's kernel
  forwards the VM's /32 toward the target's rack (polled every few ms),
- canary max gap: the longest time ext1's single TCP connection waited for an echo, and the
  part of it after the target's RESUME (the guest's own recovery: TCG translates its code anew
  in the new QEMU process),
plus QEMU's reported downtime and total migration time. Prints min/median/max, over all
migrations and per direction (r1->r2, r2->r1), and writes bench/results/migration.json (--out).

    make bench                                   # via bench/run.py, 10 migrations each way
    .venv/bin/python bench/bench_migration.py --migrations 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# bench/run.py --compare points KVLAB_BENCH_SRC at another revision's checkout.
sys.path.insert(0, os.environ.get("KVLAB_BENCH_SRC", str(REPO)))

from harness.lab import Lab  # noqa: E402


def first(events: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((e for e in events if all(e.get(k) == v for k, v in match.items())), None)


def measure(lab: Lab, record: Any) -> dict[str, float]:
    ev = sorted(record.events, key=lambda e: e["t"])
    stop = first(ev, source=f"qemu:{record.source}", kind="qmp", event="STOP")
    resume = first(ev, source=f"qemu:{record.target}", kind="qmp", event="RESUME")
    rarp = first(ev, source=f"agent:{record.target}", kind="seen")
    done = first(ev, kind="qmp", event="completed")
    _, node = lab.spec.node(record.target)
    tor = lab.spec.rack(node.rack).tor
    hop = next(
        str(link.b.address.ip) for link in lab.topo.links if {link.a.entity, link.b.entity} == {"spine1", tor}
    )
    fib = next(
        (
            e
            for e in ev
            if e["source"] == "bird:spine1" and e.get("fib_via") == hop and rarp and e["t"] >= rarp["t"]
        ),
        None,
    )
    canary = record.canary
    if canary is not None and not isinstance(canary, dict):
        canary = canary.to_json()  # a CanaryReport in later revisions, its JSON before
    if not (stop and resume and rarp and fib and done and canary):
        raise RuntimeError(f"incomplete record for {record.source} -> {record.target}")
    gap = canary.get("max_gap") or {}
    return {
        "qemu_pause_ms": (resume["t"] - stop["t"]) * 1000,
        "qemu_downtime_ms": float(done["downtime_ms"]),
        "qemu_total_ms": float(done["total_ms"]),
        "rarp_to_spine_fib_ms": (fib["t"] - rarp["t"]) * 1000,
        "canary_max_gap_ms": float(canary["max_gap_ms"]),
        # the guest's share: RESUME -> the echo that ended the longest gap (TCG's cold start)
        "resume_to_gap_end_ms": (float(gap.get("end", resume["t"])) - resume["t"]) * 1000,
        "canary_lost": float(canary["lost"]),
        "canary_resets": float(canary["resets"]),
    }


def summarize(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        k: {
            "min": min(r[k] for r in runs),
            "median": statistics.median(r[k] for r in runs),
            "max": max(r[k] for r in runs),
        }
        for k in runs[0]
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--migrations", type=int, default=20, help="in all, alternating directions")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "migration.json"))
    args = ap.parse_args()
    runs: list[dict[str, float]] = []
    directions: list[str] = []
    with Lab.from_file(REPO / "labs" / "default.yml", name=Lab.unique_name("benchmig")) as lab:
        for i in range(args.migrations):
            target = "r2-n1" if lab.vm("vm1").node.startswith("r1") else "r1-n1"
            record = lab.migrate("vm1", target, canary="ext1")
            runs.append(measure(lab, record))
            directions.append(f"{record.source[:2]}->{record.target[:2]}")
            print(
                f"  migration {i + 1:2d} {record.source} -> {record.target}: "
                + ", ".join(f"{k} {v:.1f}" for k, v in runs[-1].items()),
                flush=True,
            )
    summary = summarize(runs)
    by_direction = {
        d: summarize([r for r, rd in zip(runs, directions, strict=True) if rd == d])
        for d in sorted(set(directions))
    }
    print(f"\n{len(runs)} QEMU live migrations (TCG guest, 128 MiB), default lab, alternating racks")
    for title, table in (("all", summary), *by_direction.items()):
        print(f"  {title}")
        print(f"    {'figure':<24}{'min':>9}{'median':>9}{'max':>9}")
        for k, s in table.items():
            print(f"    {k:<24}{s['min']:9.1f}{s['median']:9.1f}{s['max']:9.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"runs": runs, "directions": directions, "summary": summary, "by_direction": by_direction}
    out.write_text(json.dumps(doc, indent=2))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
