"""Fixtures of the unit tests of the real stack's runtime."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def run_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private run directory (KVLAB_RUN_DIR)."""
    run = tmp_path / "run"
    monkeypatch.setenv("KVLAB_RUN_DIR", str(run))
    return run
