"""Running the kvlab CLI as a user would: `python -m harness.cli ...` from the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KVLAB = [sys.executable, "-m", "harness.cli"]


def kvlab(*argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run kvlab (without KVLAB_DEBUG: errors as users see them); `check`: it must exit 0."""
    env = {k: v for k, v in os.environ.items() if k != "KVLAB_DEBUG"}
    res = subprocess.run([*KVLAB, *argv], capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    if check:
        assert res.returncode == 0, res.stderr
    return res
