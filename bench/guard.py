"""A shield for benchmark labs on a shared machine (bench only, not the harness).

`kvlab down --all` and the reaping of crashed labs in another run root (another KVLAB_RUN_DIR
on the same machine) take a lab's namespaces for leftovers while no process in them names the
lab's run directory yet: between its first namespace and its first daemon, a lab being built is
torn down under its builder. `GuardedProgress` starts, as soon as the first namespace exists, a
sleeping process inside it that names the run directory; the lab's `down` kills it with the rest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

GUARD_CODE = "import time\nwhile True: time.sleep(3600)"


class GuardedProgress:
    """A Progress sink (harness.progress) that guards lab `lab` (run dir `run_dir`) and passes
    every step on to `inner` (or records nothing)."""

    def __init__(self, lab: str, run_dir: Path, inner: Any = None) -> None:
        self.lab, self.run_dir, self.inner = lab, run_dir, inner
        self.guarded = False

    def step(self, title: str, total: int | None = None) -> Any:
        inner = self.inner.step(title, total) if self.inner is not None else None
        return _GuardStep(self, title, inner)

    def guard(self) -> None:
        from harness.netlink import list_namespaces

        prefix = f"kvlab.{self.lab}."
        ns = next((n for n in list_namespaces() if n.startswith(prefix)), None)
        if ns is None:
            return
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", GUARD_CODE, f"{self.run_dir}/guard"]
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
        self.guarded = True


class _GuardStep:
    def __init__(self, owner: GuardedProgress, title: str, inner: Any) -> None:
        self.owner, self.title, self.inner = owner, title, inner

    def advance(self, n: int = 1, detail: str | None = None) -> None:
        if not self.owner.guarded and self.title == "namespaces":
            self.owner.guard()
        if self.inner is not None:
            self.inner.advance(n, detail)

    def __enter__(self) -> _GuardStep:
        if self.inner is not None:
            self.inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.inner is not None:
            self.inner.__exit__(*exc)
