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


@pytest.fixture(scope="session")
def mock_default_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labs/default.yml with every VM a mock VM (a namespace), for tests that reach into the VM."""
    import yaml

    data = yaml.safe_load((REPO / "labs" / "default.yml").read_text())
    data["name"] = "default-mock"
    for vm in data["vms"]:
        vm["backend"] = "mock"
    data["clusters"][0]["resources"] = str(REPO / "labs" / "calico" / "default.yaml")
    path = tmp_path_factory.mktemp("labs") / "default-mock.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def mock_lab(kvlab_labs, mock_default_path: Path):  # type: ignore[no-untyped-def]
    """A private instance of the default lab with mock VMs, shared by the tests of a session."""
    return kvlab_labs(mock_default_path)
