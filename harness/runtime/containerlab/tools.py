"""Running the command-line tools of the real stack (containerlab, kind, crictl in a kind node)
from the runtime: short ones for their exit code and output, long ones (`containerlab deploy`)
streamed to a log and the progress line, each with a deadline and an error naming the tool.
"""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import Any

from harness.errors import LabError


def run_tool(argv: list[str], *, timeout: float, cwd: Path | None = None) -> tuple[int, str]:
    """(exit code, output) of a tool; LabError naming it when it cannot be run."""
    try:
        res = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise LabError(
            f"'{argv[0]}' is not installed (run 'kvlab up --runtime containerlab' for the list)"
        ) from None
    except subprocess.TimeoutExpired:
        raise LabError(f"'{' '.join(argv)}' did not finish within {timeout:g} s") from None
    return res.returncode, res.stdout + (res.stderr if res.returncode else "")


def try_tool(argv: list[str], *, timeout: float, cwd: Path | None = None) -> list[str]:
    """Run a teardown tool; what went wrong (nothing: []) instead of raising."""
    try:
        rc, out = run_tool(argv, timeout=timeout, cwd=cwd)
    except LabError as e:
        return [str(e)]
    return [] if rc == 0 else [f"'{' '.join(argv)}' exit {rc}: {out.strip()[-500:]}"]


def stream_tool(
    argv: list[str], step: Any, *, what: str, timeout: float, log: Path, cwd: Path | None = None
) -> None:
    """Run a long tool, its output to `log` and to the progress line; killed at `timeout`."""
    tail: deque[str] = deque(maxlen=40)
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as e:
        raise LabError(f"{what}: cannot run {argv[0]}: {e}") from e
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    assert proc.stdout is not None
    try:
        with proc, open(log, "a") as fh:
            for line in proc.stdout:
                fh.write(line)
                tail.append(line.rstrip())
                step.advance(0, detail=line.strip()[:90])
    except BaseException:
        proc.kill()
        raise
    finally:
        timer.cancel()
    if proc.returncode != 0:
        why = f"killed after {timeout:g} s" if proc.returncode < 0 else f"exit {proc.returncode}"
        raise LabError(f"{what} failed ({why}; full output in {log}):\n" + "\n".join(tail))
