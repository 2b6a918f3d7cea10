"""Benchmark: time from `Lab.up()` to every BGP session Established, per phase.

Labs: labs/default.yml (9 namespaces, 7 BIRDs, a QEMU VM), labs/dual-stack.yml (the same with
bird6 beside every BIRD: 14 daemons, twice the sessions) and generated fabrics `fabric-RxN`
(harness.generate.fabric_lab, R racks x N nodes; 8x4: 43 namespaces, 41 BIRDs). Each run brings
the lab up under a fresh name, records when each phase (namespaces, links, BIRD start,
convergence) ended, the memory (PSS) of the lab's processes once up, and tears it down. Prints
min / median / max per phase and writes bench/results/lab_up.json (--out); with both default and
dual-stack measured (they alternate run by run, so machine load hits both alike), also the
dual-stack/IPv4 ratio of the median totals (issue 14 asks for at most 1.5; `--max-dual-ratio`
makes a larger one exit 1).

    make bench                      # via bench/run.py
    .venv/bin/python bench/bench_lab_up.py --runs 3 --labs default dual-stack fabric-32x8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/run.py --compare points KVLAB_BENCH_SRC at another revision's checkout.
sys.path.insert(0, os.environ.get("KVLAB_BENCH_SRC", str(REPO)))

from harness.generate import fabric_lab, write_lab  # noqa: E402
from harness.lab import Lab  # noqa: E402
from harness.netlink import list_namespaces, namespace_pids  # noqa: E402
from harness.procs import mentioning  # noqa: E402
from harness.state import parse_namespace  # noqa: E402


class PhaseClock:
    """A Progress sink that records when each step ends (seconds since the run started)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.ends: dict[str, float] = {}

    def step(self, title: str, total: int | None = None) -> _Step:
        return _Step(self, title)


class _Step:
    def __init__(self, clock: PhaseClock, title: str) -> None:
        self.clock, self.title = clock, title

    def advance(self, n: int = 1, detail: str | None = None) -> None:
        pass

    def __enter__(self) -> _Step:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clock.ends[self.title] = time.monotonic() - self.clock.t0


def pss_kib(pid: int) -> int:
    """A process's proportional set size (shared pages split between their users), KiB."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def lab_pids(lab: Lab) -> set[int]:
    """Every process of a lab: those in its namespaces and those naming its run directory."""
    pids = {
        pid
        for ns in list_namespaces()
        if (parsed := parse_namespace(ns)) and parsed[0] == lab.name
        for pid in namespace_pids(ns)
    }
    return pids | set(mentioning(lab.runtime.run_dir))


def run_once(path: Path) -> dict[str, float]:
    clock = PhaseClock()
    lab = Lab.from_file(path, name=Lab.unique_name("bench"), progress=clock)
    try:
        lab.up()
        total = time.monotonic() - clock.t0
        sessions = len(lab.sessions())
        pids = lab_pids(lab)
        memory_mib = sum(pss_kib(p) for p in pids) / 1024
    finally:
        t_down = time.monotonic()
        lab.down()
    return {
        **clock.ends,
        "total": total,
        "down": time.monotonic() - t_down,
        "memory_mib": memory_mib,
        "processes": len(pids),
        "sessions": sessions,
    }


def lab_path(name: str, tmp: Path) -> Path:
    """labs/<name>.yml, or a generated fabric for `fabric-RxN`."""
    m = re.fullmatch(r"fabric-(\d+)x(\d+)", name)
    if m:
        racks, nodes = int(m.group(1)), int(m.group(2))
        return write_lab(fabric_lab(racks, nodes), tmp / f"{name}.yml")
    return REPO / "labs" / f"{name}.yml"


def summarize(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = [k for k in runs[0] if k not in ("sessions", "processes")]
    return {
        k: {
            "min": min(r[k] for r in runs),
            "median": statistics.median(r[k] for r in runs),
            "max": max(r[k] for r in runs),
        }
        for k in keys
    }


def measure_labs(labs: list[str], runs: int, tmp: Path) -> dict[str, dict]:
    """Bring each lab up `runs` times (default and dual-stack interleaved); print the phases."""
    results: dict[str, dict] = {}
    order = [n for n in labs if n in ("default", "dual-stack")]
    paired: dict[str, list] = {n: [] for n in order} if len(order) == 2 else {}
    for _ in range(runs if paired else 0):
        for name in order:
            paired[name].append(run_once(lab_path(name, tmp)))
    for name in labs:
        done = paired.get(name) or [run_once(lab_path(name, tmp)) for _ in range(runs)]
        results[name] = {"runs": done, "summary": summarize(done), "sessions": done[0]["sessions"]}
        print(
            f"\n{name}: {runs} runs, {done[0]['sessions']:.0f} BGP sessions "
            "(seconds since Lab.up() started, phase end times)"
        )
        print(f"  {'phase':<44}{'min':>8}{'median':>9}{'max':>8}")
        for phase, s in results[name]["summary"].items():
            print(f"  {phase:<44}{s['min']:8.2f}{s['median']:9.2f}{s['max']:8.2f}")
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--labs",
        nargs="*",
        default=["default", "dual-stack", "fabric-8x4"],
        help="default, dual-stack, fabric-8x4, ...",
    )
    ap.add_argument("--max-dual-ratio", type=float, default=None, help="exit 1 above this dual/v4 ratio")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "lab_up.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvlab-bench-") as tmp_name:  # generated lab files
        results = measure_labs(args.labs, args.runs, Path(tmp_name))
    ratio = None
    if "default" in results and "dual-stack" in results:
        v4 = results["default"]["summary"]["total"]["median"]
        dual = results["dual-stack"]["summary"]["total"]["median"]
        ratio = dual / v4
        results["dual_stack_ratio"] = {"total_median_v4": v4, "total_median_dual": dual, "ratio": ratio}
        print(f"\ndual-stack / IPv4 lab-up (median totals): {dual:.2f} s / {v4:.2f} s = {ratio:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {out}")
    if ratio is not None and args.max_dual_ratio is not None and ratio > args.max_dual_ratio:
        print(f"dual-stack lab-up ratio {ratio:.2f} is above {args.max_dual_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
