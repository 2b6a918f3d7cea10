"""Benchmark: live migration of a nested cluster node's VM (labs/nested.yml, vm-red between p1-n1
and p1-n2), with a TCP canary from ext1 to red-n1's pod in the nested pool 198.51.100.0/26.

For each migration:
- session back: migration completed -> the new parent node's `Local_Workload_203_0_113_10`
  Established (the nested node only notices the move when its next keepalive is reset by the
  new parent node; the lab sets keepaliveTime 10s),
- ToR via target: migration completed -> tor1's best route for the nested pool via the new node,
- canary max gap: the longest wait of ext1's single TCP connection for an echo (TCP
  retransmission backoff stretches it beyond the route outage),
plus whether the canary connection survived (same connection, nothing lost, no reset).
Prints min/median/max and writes bench/results/nested.json.

    .venv/bin/python bench/bench_nested.py --migrations 4
    .venv/bin/python bench/bench_nested.py --lab labs/nested-qemu.yml   # red-n1 in a QEMU guest
    .venv/bin/python bench/bench_nested.py --lab labs/nested-dual-stack.yml --family 6   # over IPv6

Results go to bench/results/<lab file's stem>.json (`-v6` appended for --family 6).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.birdc import BirdError  # noqa: E402
from harness.lab import Lab  # noqa: E402
from harness.wait import eventually  # noqa: E402

NODE_IP = {
    4: {"p1-n1": "198.18.1.11", "p1-n2": "198.18.1.12"},
    6: {"p1-n1": "2001:db8::c612:10b", "p1-n2": "2001:db8::c612:10c"},
}
POOL = {4: "198.51.100.0/26", 6: "2001:db8:51:100::/120"}  # v6: labs/nested-dual-stack.yml
PEER = {4: "Local_Workload_203_0_113_10", 6: "Local_Workload_2001_db8_203_113__10"}


def one(lab: Lab, target: str, family: int = 4) -> dict[str, Any]:
    peer = PEER[family]

    def established() -> float | None:
        states = {s.name: s.state for s in lab.speaker(target, family).sessions()}
        return time.time() if states.get(peer) == "Established" else None

    def tor_via() -> float | None:
        best = lab.router("tor1", family).best_route(POOL[family])
        return time.time() if best is not None and best.via == NODE_IP[family][target] else None

    # Watched from before the migration (neither holds before it: the target has no such peer
    # and tor1 routes the pool via the source), so a family that is back before lab.migrate
    # returns (it follows every family of the nested node) is timed when it is back.
    at: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() and len(at) < 2:
            for key, check in (("session", established), ("tor", tor_via)):
                if key not in at:
                    with contextlib.suppress(BirdError, OSError):
                        when = check()
                        if when is not None:
                            at[key] = when
            done.wait(0.05)

    with lab.canary("ext1", "red-n1", family=family) as probe:
        probe.wait_sent(5)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        record = lab.migrate("vm-red", target)
        eventually(
            lambda: len(at) == 2, timeout=60, interval=0.05, what=f"{peer} on {target} and tor1 via {target}"
        )
        done.set()
        watcher.join(timeout=10)
        session_at, tor_at = at["session"], at["tor"]
        echoed = probe.progress["echoed"]
        probe.wait_for(
            lambda p: p["echoed"] > echoed + 5 and p["outstanding"] <= 2, timeout=60, what="echoes again"
        )
        report = probe.stop()
    return {
        "session_back_s": session_at - record.ended,
        "tor_via_target_s": tor_at - record.ended,
        "canary_max_gap_ms": report.max_gap_ms,
        "survived": report.same_connection and report.lost == 0 and report.resets == 0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--migrations", type=int, default=4)
    ap.add_argument("--lab", type=Path, default=REPO / "labs" / "nested.yml", help="nested.yml or a variant")
    ap.add_argument(
        "--family", type=int, choices=(4, 6), default=4, help="6: labs/nested-dual-stack.yml's IPv6 half"
    )
    args = ap.parse_args()
    runs = []
    with Lab.from_file(args.lab, name=Lab.unique_name("bench-nested")) as lab:
        for i in range(args.migrations):
            target = "p1-n2" if i % 2 == 0 else "p1-n1"
            runs.append(one(lab, target, args.family))
            print(f"migration {i + 1}: {runs[-1]}", flush=True)
    summary: dict[str, Any] = {}
    for key in ("session_back_s", "tor_via_target_s", "canary_max_gap_ms"):
        values = [r[key] for r in runs]
        summary[key] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    summary["survived"] = sum(r["survived"] for r in runs)
    summary["migrations"] = len(runs)
    out = REPO / "bench" / "results" / f"{args.lab.stem}{'-v6' if args.family == 6 else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    for key in ("session_back_s", "tor_via_target_s", "canary_max_gap_ms"):
        s = summary[key]
        print(f"{key:>20}: min {s['min']:.2f}  median {s['median']:.2f}  max {s['max']:.2f}")
    print(f"{'survived':>20}: {summary['survived']}/{summary['migrations']}")
    return 0 if summary["survived"] == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
