"""Shared test helpers. The `lab` fixtures come from the kvlab pytest plugin (harness.pytest_plugin)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests need root and BIRD; say so clearly instead of failing obscurely."""
    reason = None
    if os.geteuid() != 0:
        reason = "needs root (network namespaces); run 'sudo make test'"
    elif shutil.which("bird", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        reason = "needs BIRD ('make setup' installs the Debian package 'bird')"
    if reason and os.environ.get("CI"):
        reason = None  # in CI a missing prerequisite is a failure, never a silent skip
    for item in items:
        if "integration" in item.nodeid.split("/") or item.get_closest_marker("netns"):
            item.add_marker(pytest.mark.netns)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
