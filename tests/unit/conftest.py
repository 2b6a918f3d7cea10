"""Fixtures of the unit tests of the real stack's runtime."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def run_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private run directory (KVLAB_RUN_DIR) and no stack selected ($KVLAB_STACK unset)."""
    from harness.realstack.matrix_cli import STACK_ENV

    run = tmp_path / "run"
    monkeypatch.setenv("KVLAB_RUN_DIR", str(run))
    monkeypatch.delenv(STACK_ENV, raising=False)
    return run
