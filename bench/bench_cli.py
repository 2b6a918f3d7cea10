"""Benchmark: whole-process time of `kvlab routes tor1 --json` and `kvlab status --json` on a
running default lab (each a fresh Python process, as a user runs it: imports, reading the lab,
asking BIRD).

With several --src checkouts (bench/run.py --compare), one lab serves them all and the commands
run in turn A B A B ..., so a ratio holds while the machine's speed drifts. Prints min / median /
max per command and checkout and writes bench/results/cli.json (--out). Goal: <= 150 ms each.

    .venv/bin/python bench/bench_cli.py [--runs 10] [--src DIR ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/run.py --compare points KVLAB_BENCH_SRC at another revision's checkout.
sys.path.insert(0, os.environ.get("KVLAB_BENCH_SRC", str(REPO)))

from harness.lab import Lab  # noqa: E402

GOAL_S = 0.150
COMMANDS = {"routes": ["routes", "tor1", "--json"], "status": ["status", "--json"]}


def time_command(src: Path, lab: str, argv: list[str]) -> float:
    """Seconds of one `python -m harness.cli ARGV --lab/LAB` run with `src` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as a user runs it: compiled once, then cached
    args = [*argv, "--lab", lab] if argv[0] == "routes" else [argv[0], lab, *argv[1:]]
    started = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=src, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if res.returncode != 0:
        raise RuntimeError(f"kvlab {' '.join(args)} ({src}) failed: {res.stderr.strip()}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--src", action="append", help="checkout whose harness the CLI runs (repeatable)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "cli.json"))
    args = ap.parse_args()
    srcs = [Path(s).resolve() for s in (args.src or [os.environ.get("KVLAB_BENCH_SRC", str(REPO))])]
    times: dict[str, dict[str, list[float]]] = {str(s): {c: [] for c in COMMANDS} for s in srcs}
    with Lab.from_file(REPO / "labs" / "default.yml", name=Lab.unique_name("benchcli")) as lab:
        for src in srcs:  # warm-up: the page cache, compiled bytecode
            for argv in COMMANDS.values():
                time_command(src, lab.name, argv)
        for _ in range(args.runs):
            for src in srcs:
                for cmd, argv in COMMANDS.items():
                    times[str(src)][cmd].append(time_command(src, lab.name, argv))
    result = {
        src: {
            cmd: {"min": min(v), "median": statistics.median(v), "max": max(v), "runs": v}
            for cmd, v in per.items()
        }
        for src, per in times.items()
    }
    for src, per in result.items():
        print(src)
        for cmd, v in per.items():
            verdict = "meets" if v["median"] <= GOAL_S else "misses"
            print(
                f"  kvlab {' '.join(COMMANDS[cmd])}: {v['min'] * 1000:.0f} / {v['median'] * 1000:.0f} / "
                f"{v['max'] * 1000:.0f} ms (min / median / max), {verdict} the goal of {GOAL_S * 1000:.0f} ms"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"goal_s": GOAL_S, "results": result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
