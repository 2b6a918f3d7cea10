"""`make bench`: every figure of the scale-and-speed table against its goal.

Runs the bench/bench_*.py scripts (each usable alone) as separate processes, reads their JSON,
prints one row per figure (median, goal, verdict) and writes bench/results/bench.json.

With `--compare REV` the same scripts also run against REV (a git worktree of it in a temp
directory, first on the Python path of every process of that run: the labs' node agents too),
interleaved with the current checkout in the same run where the script allows it (lab ups run
A B A B ..., the CLI commands against one lab), and each row gets REV's figure and the ratio
new/REV. The machine is noisy and shared: trust ratios from one run over absolute figures
across runs.

    make bench                       # the whole table (about 15 minutes)
    make bench QUICK=1               # a few minutes: no 32x8 / 64x8 labs, fewer runs
    .venv/bin/python bench/run.py --quick --compare main
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
BENCHES = ("birdc", "cli", "lab_up", "migration")


@dataclass
class Plan:
    """How much of each benchmark to run."""

    lab_runs: int = 5
    big_labs: tuple[str, ...] = ("fabric-32x8", "fabric-64x8")
    migrations: int = 20  # in all, alternating directions: 10 each way
    cli_runs: int = 10
    birdc_runs: int = 5
    only: tuple[str, ...] = BENCHES
    labs: tuple[str, ...] = ("default", "fabric-8x4")
    compare_big: bool = False  # the big labs for the previous revision too

    @classmethod
    def quick(cls) -> Plan:
        return cls(lab_runs=2, big_labs=(), migrations=4, cli_runs=5, birdc_runs=3)


@dataclass
class Row:
    """One figure of the table: `value(results)` for a checkout's results, and its goal."""

    figure: str
    unit: str
    goal: float
    value: Callable[[dict[str, Any]], float | None] = field(repr=False)
    at_most: bool = True  # the goal is an upper bound (all of ours are)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _lab(name: str, key: str, scale: float = 1.0) -> Callable[[dict[str, Any]], float | None]:
    def get(res: dict[str, Any]) -> float | None:
        runs = res.get("lab_up", {}).get(name, [])
        return _median([r[key] * scale for r in runs if key in r])

    return get


def _mig(
    key: str, stat: str = "median", direction: str | None = None
) -> Callable[[dict[str, Any]], float | None]:
    def get(res: dict[str, Any]) -> float | None:
        doc = res.get("migration")
        if not doc:
            return None
        table = doc["summary"] if direction is None else doc.get("by_direction", {}).get(direction)
        return None if table is None else table[key][stat]

    return get


def _asymmetry(res: dict[str, Any]) -> float | None:
    """The larger per-direction median QEMU pause over the smaller one."""
    dirs = (res.get("migration") or {}).get("by_direction", {})
    pauses = [d["qemu_pause_ms"]["median"] for d in dirs.values()]
    return max(pauses) / max(min(pauses), 0.1) if len(pauses) == 2 else None


def _cli(cmd: str) -> Callable[[dict[str, Any]], float | None]:
    def get(res: dict[str, Any]) -> float | None:
        v = res.get("cli", {}).get(cmd)
        return None if v is None else v["median"] * 1000

    return get


def _birdc(res: dict[str, Any]) -> float | None:
    doc = res.get("birdc")
    return None if not doc else doc["parse_s"]["median"]


ROWS = [
    Row("default lab up (QEMU VM ready)", "s", 2.5, _lab("default", "total")),
    Row("8 racks x 4 nodes up", "s", 3.0, _lab("fabric-8x4", "total")),
    Row("32 racks x 8 nodes up", "s", 20.0, _lab("fabric-32x8", "total")),
    Row("memory of the 32x8 lab (PSS)", "GB", 2.0, _lab("fabric-32x8", "memory_mib", 1 / 1024)),
    Row("64 racks x 8 nodes up", "s", 60.0, _lab("fabric-64x8", "total")),
    Row("kvlab routes tor1 --json", "ms", 150.0, _cli("routes")),
    Row("kvlab status --json", "ms", 150.0, _cli("status")),
    Row("birdc parse, 100k routes", "s", 1.0, _birdc),
    Row("canary max gap, p50", "ms", 40.0, _mig("canary_max_gap_ms")),
    Row("canary max gap, max", "ms", 150.0, _mig("canary_max_gap_ms", "max")),
    Row("QEMU pause r1->r2, p50", "ms", 40.0, _mig("qemu_pause_ms", direction="r1->r2")),
    Row("QEMU pause r2->r1, p50", "ms", 40.0, _mig("qemu_pause_ms", direction="r2->r1")),
    Row("pause asymmetry (larger/smaller p50)", "x", 2.0, _asymmetry),
    Row("RARP seen -> spine FIB switched, p50", "ms", 15.0, _mig("rarp_to_spine_fib_ms")),
]


class Checkout:
    """A tree of kvlab sources the benchmarks run against."""

    def __init__(self, label: str, src: Path) -> None:
        self.label, self.src = label, src
        self.results: dict[str, Any] = {"lab_up": {}}
        self.errors: list[str] = []

    def run(self, script: str, args: list[str], timeout: float) -> dict[str, Any] | None:
        """Run bench/<script> with this checkout first on the path; its JSON, or None (error kept)."""
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = Path(f.name)
        env = {**os.environ, "KVLAB_BENCH_SRC": str(self.src), "PYTHONPATH": str(self.src)}
        argv = [sys.executable, str(BENCH / script), *args, "--out", str(out)]
        print(f"[{self.label}] {script} {' '.join(args)}", flush=True)
        try:
            res = subprocess.run(argv, cwd=self.src, env=env, timeout=timeout, capture_output=True, text=True)
            if res.returncode != 0:
                tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
                self.errors.append(f"{script} {' '.join(args)}: exit {res.returncode}: {' | '.join(tail)}")
                return None
            return json.loads(out.read_text())
        except (subprocess.TimeoutExpired, OSError, ValueError) as e:
            self.errors.append(f"{script} {' '.join(args)}: {type(e).__name__}: {e}")
            return None
        finally:
            out.unlink(missing_ok=True)


def previous_revision(rev: str) -> tuple[Path, Path]:
    """A detached git worktree of `rev` in a temp dir: (the temp dir, the worktree)."""
    tmp = Path(tempfile.mkdtemp(prefix="kvlab-bench-rev-"))
    tree = tmp / "src"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(tree), rev],
        check=True,
    )
    return tmp, tree


def run_all(checkouts: list[Checkout], plan: Plan) -> None:
    new = checkouts[0]
    if "birdc" in plan.only:  # small and CPU-bound, one after the other
        for c in checkouts:
            c.results["birdc"] = c.run("bench_birdc.py", ["--runs", str(plan.birdc_runs)], 600)
    if "cli" in plan.only:  # one lab, every checkout's commands in turn
        srcs = [a for c in checkouts for a in ("--src", str(c.src))]
        cli = new.run("bench_cli.py", ["--runs", str(plan.cli_runs), *srcs], 900)
        for c in checkouts:
            c.results["cli"] = (cli or {}).get("results", {}).get(str(c.src))
    if "lab_up" in plan.only:  # A B A B ..., one run each
        labs = [(name, plan.lab_runs) for name in plan.labs] + [(n, 1) for n in plan.big_labs]
        for name, runs in labs:
            # a big lab of the previous revision may need many GB (a process per node agent):
            # only with --compare-big
            those = checkouts if name not in plan.big_labs or plan.compare_big else checkouts[:1]
            for _ in range(runs):
                for c in those:
                    doc = c.run("bench_lab_up.py", ["--runs", "1", "--labs", name], 900)
                    if doc:
                        c.results["lab_up"].setdefault(name, []).extend(doc[name]["runs"])
    if "migration" in plan.only:  # one lab per checkout
        for c in checkouts:
            args = ["--migrations", str(plan.migrations)]
            c.results["migration"] = c.run("bench_migration.py", args, 1800)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def report(checkouts: list[Checkout]) -> list[dict[str, Any]]:
    """Print the table; the rows as JSON."""
    new, old = checkouts[0], checkouts[1] if len(checkouts) > 1 else None
    head = f"{'figure':<40}{'goal':>10}{'now':>10}  verdict"
    if old:
        head += f"{old.label:>14}{'now/' + old.label:>14}"
    print("\n" + head)
    rows = []
    for row in ROWS:
        v = row.value(new.results)
        ok = None if v is None else (v <= row.goal if row.at_most else v >= row.goal)
        verdict = "not run" if ok is None else "meets" if ok else "MISSES"
        goal = f"{'<=' if row.at_most else '>='}{_fmt(row.goal)} {row.unit}"
        line = f"{row.figure:<40}{goal:>10}{_fmt(v):>10}  {verdict:<8}"
        entry: dict[str, Any] = {
            "figure": row.figure,
            "unit": row.unit,
            "goal": row.goal,
            "value": v,
            "meets": ok,
        }
        if old:
            ov = row.value(old.results)
            ratio = v / ov if v is not None and ov else None
            line += f"{_fmt(ov):>12}{_fmt(ratio):>14}"
            entry.update({"previous": ov, "ratio": ratio})
        print(line)
        rows.append(entry)
    for c in checkouts:
        for e in c.errors:
            print(f"[{c.label}] error: {e}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few minutes: no 32x8/64x8 labs, fewer runs")
    ap.add_argument("--compare", metavar="REV", help="also run git revision REV, side by side")
    ap.add_argument("--out", default=str(BENCH / "results" / "bench.json"))
    ap.add_argument("--only", nargs="+", choices=BENCHES, help="run these benchmarks only")
    ap.add_argument("--labs", nargs="+", help="labs to bring up (default, fabric-RxN), instead of the plan's")
    ap.add_argument("--runs", type=int, help="lab ups per lab, instead of the plan's")
    ap.add_argument("--big", nargs="*", help="big labs (run once each), instead of fabric-32x8 fabric-64x8")
    ap.add_argument("--compare-big", action="store_true", help="the big labs for REV too (memory!)")
    args = ap.parse_args()
    plan = Plan.quick() if args.quick else Plan()
    if args.only:
        plan.only = tuple(args.only)
    if args.labs:
        plan.labs, plan.big_labs = tuple(args.labs), ()
    if args.runs:
        plan.lab_runs = args.runs
    if args.big is not None:
        plan.big_labs = tuple(args.big)
    plan.compare_big = args.compare_big
    checkouts = [Checkout("now", REPO)]
    tmp = None
    if args.compare:
        tmp, tree = previous_revision(args.compare)
        checkouts.append(Checkout(args.compare, tree))
    started = time.time()
    try:
        run_all(checkouts, plan)
    finally:
        if tmp is not None:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "src")], check=False
            )
            shutil.rmtree(tmp, ignore_errors=True)
    rows = report(checkouts)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    doc = {
        "started": started,
        "seconds": time.time() - started,
        "commit": commit.stdout.strip(),
        "compare": args.compare,
        "plan": asdict(plan),
        "rows": rows,
        "results": {c.label: c.results for c in checkouts},
        "errors": {c.label: c.errors for c in checkouts},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 1 if any(c.errors for c in checkouts) else 0


if __name__ == "__main__":
    sys.exit(main())
