"""Fixtures of the unit tests: a private run directory, and a rendered containerlab lab."""

from __future__ import annotations

from pathlib import Path

import pytest
from clab_fakes import DEFAULT_LAB, NO_SCHEMAS, full_machine

from harness.labfile import load_lab
from harness.runtime.base import LabContext
from harness.runtime.containerlab import schemas
from harness.runtime.containerlab.render import render_containerlab
from harness.runtime.containerlab.runtime import ContainerlabRuntime
from harness.runtime.containerlab.versions import DEFAULT


@pytest.fixture
def run_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private run directory (KVLAB_RUN_DIR)."""
    run = tmp_path / "run"
    monkeypatch.setenv("KVLAB_RUN_DIR", str(run))
    return run


@pytest.fixture
def clab(run_root: Path) -> ContainerlabRuntime:
    """A containerlab runtime whose run dir holds the default lab rendered as `up` renders it
    (instance 'tlab', the default stack, a machine that has everything)."""
    spec = load_lab(DEFAULT_LAB).model_copy(update={"name": "tlab"})
    runtime = ContainerlabRuntime(
        "tlab", probes=full_machine(), versions=DEFAULT, context=LabContext.of(spec)
    )
    render_containerlab(
        spec, runtime.render_dir, use_emulation=True, image="kvlab/tor:test", run_dir=runtime.run_dir
    )
    return runtime


@pytest.fixture
def need_schemas() -> None:
    """Skips a test without the upstream schemas (shared/schemas, or KVLAB_SHARED)."""
    if not schemas.schemas_available():
        pytest.skip(NO_SCHEMAS.format(schemas.schema_dir()))
