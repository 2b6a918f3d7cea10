"""Benchmark: parsing BIRD's `show route all` reply of a large table (100k routes).

The reply is made of the shapes a real BIRD 1.6.8 sends (tests/data/birdc): BGP routes with two
alternatives each (AS path, next hop, local_pref, communities, a large community), static
blackholes and direct routes. Timed: framing + parsing into Route objects (`parse`), and the same
plus every route's JSON document as `kvlab routes --json` prints it (`parse+json`, which decodes
every attribute). Median of --runs; the goal is the parse of 100k routes in at most 1 s.

    .venv/bin/python bench/bench_birdc.py [--routes 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/run.py --compare points KVLAB_BENCH_SRC at another revision's checkout.
sys.path.insert(0, os.environ.get("KVLAB_BENCH_SRC", str(REPO)))

from harness import birdc  # noqa: E402

GOAL_S = 1.0


def reply_lines(routes: int) -> list[str]:
    """Raw reply lines of a `show route all` with `routes` routes (alternatives counted)."""
    lines: list[str] = []
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    made, i = 0, 0
    while made < routes:
        prefix = f"{ipaddress.IPv4Address(base + 4 * i)}/30"
        kind = i % 3
        if kind == 0:
            for alt, (gw, dev, proto, asn, star) in enumerate(
                (("198.18.3.4", "kc-r2r4", "r4", 65004, " *"), ("198.18.3.6", "kc-r2r5", "r5", 65005, ""))
            ):
                head = prefix if alt == 0 else ""
                lines += [
                    f"1007-{head:18} via {gw} on {dev} [{proto} 2026-12-02 03:52:08]{star} (100) [AS{asn}i]",
                    "1008-\tType: BGP unicast univ",
                    "1012-\tBGP.origin: IGP",
                    f" \tBGP.as_path: 64512 {asn}",
                    f" \tBGP.next_hop: {gw}",
                    " \tBGP.local_pref: 100",
                    " \tBGP.community: (65000,100) (65000,200)",
                    " \tBGP.large_community: (65000, 1, 2)",
                ]
                made += 1
        elif kind == 1:
            lines += [
                f"1007-{prefix:18} blackhole [static1 2026-12-02 03:52:07] * (200)",
                "1008-\tType: static unicast univ",
            ]
            made += 1
        else:
            lines += [
                f"1007-{prefix:18} dev eth0 [direct1 2026-12-02 03:52:07] * (240)",
                "1008-\tType: device unicast univ",
            ]
            made += 1
        i += 1
    return [*lines, "0000 "]


def timed(fn, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routes", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "birdc.json"))
    args = ap.parse_args()
    lines = reply_lines(args.routes)
    parsed = birdc.parse_routes(birdc.parse_reply_lines(lines))
    assert len(parsed) == args.routes, len(parsed)
    parse = timed(lambda: birdc.parse_routes(birdc.parse_reply_lines(lines)), args.runs)
    with_json = timed(
        lambda: [r.to_json() for r in birdc.parse_routes(birdc.parse_reply_lines(lines))], args.runs
    )
    result = {
        "routes": args.routes,
        "reply_lines": len(lines),
        "runs": args.runs,
        "parse_s": {"min": min(parse), "median": statistics.median(parse), "max": max(parse)},
        "parse_json_s": {
            "min": min(with_json),
            "median": statistics.median(with_json),
            "max": max(with_json),
        },
        "goal_parse_s": GOAL_S,
    }
    for label, key in (("parse", "parse_s"), ("parse+json", "parse_json_s")):
        v = result[key]
        figures = f"{v['min']:.2f} / {v['median']:.2f} / {v['max']:.2f} s"
        print(f"{label:11} {args.routes} routes: {figures} (min / median / max)")
    verdict = "meets" if result["parse_s"]["median"] <= GOAL_S else "misses"
    print(f"parse median {result['parse_s']['median']:.2f} s {verdict} the goal of {GOAL_S} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
