"""Shared test helpers. The `lab` fixtures come from the kvlab pytest plugin (harness.pytest_plugin)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _netns_missing() -> str | None:
    """What this machine lacks for the netns runtime (None: nothing, or CI, where a missing
    prerequisite is a failure, never a silent skip)."""
    if os.environ.get("CI"):
        return None
    if os.geteuid() != 0:
        return "needs root (network namespaces); run 'sudo make test'"
    if shutil.which("bird", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        return "needs BIRD ('make setup' installs the Debian package 'bird')"
    return None


def _docker_missing() -> str | None:
    """What this machine lacks for the plain-Docker tests (None under CI: there it fails)."""
    if os.environ.get("CI"):
        return None
    if os.geteuid() != 0:
        return "needs root (Docker daemon, debootstrap); run 'sudo make test'"
    from harness.errors import PreflightError
    from harness.runtime.containerlab.docker import docker_client

    try:
        docker_client(timeout=10)
    except PreflightError as e:
        return f"needs a Docker daemon: {e.missing[0]}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests on the netns runtime need root and BIRD, tests marked `needs_docker` a
    Docker daemon; say so clearly instead of failing obscurely. Under another --runtime these
    prerequisites do not apply: the runtime's preflight says what is missing, and the plugin
    skips the `netns_only` tests."""
    docker_items = [item for item in items if item.get_closest_marker("needs_docker")]
    docker_reason = _docker_missing() if docker_items else None
    for item in docker_items:
        if docker_reason:
            item.add_marker(pytest.mark.skip(reason=docker_reason))
    if config.getoption("--runtime") != "netns":
        return
    reason = _netns_missing()
    for item in items:
        if (
            "integration" in item.nodeid.split("/")
            or item.get_closest_marker("netns")
            or item.get_closest_marker("netns_only")
        ):
            item.add_marker(pytest.mark.netns)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def mock_default_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labs/default.yml with every VM a mock VM (a namespace), for tests that reach into the VM."""
    from labfiles import lab_data, write_lab_data

    data = lab_data("default")
    data["name"] = "default-mock"
    for vm in data["vms"]:
        vm["backend"] = "mock"
    return write_lab_data(data, tmp_path_factory.mktemp("labs") / "default-mock.yml")


@pytest.fixture(scope="session")
def mock_lab(kvlab_labs, mock_default_path: Path):  # type: ignore[no-untyped-def]
    """A private instance of the default lab with mock VMs, shared by the tests of a session."""
    return kvlab_labs(mock_default_path)


@pytest.fixture(scope="session")
def migration_lab_path(pytestconfig: pytest.Config, mock_default_path: Path) -> Path:
    """The default lab for scenario tests that migrate its VM: with mock VMs on the netns runtime
    (fast, and the netns-only tests of the same module reach into them), as it is elsewhere (the
    runtime's own VMs, e.g. KubeVirt's on containerlab)."""
    if pytestconfig.getoption("--runtime") == "netns":
        return mock_default_path
    return REPO / "labs" / "default.yml"


@pytest.fixture(scope="module")
def migration_lab(kvlab_labs, migration_lab_path: Path):  # type: ignore[no-untyped-def]
    """A private instance of the migration lab for one test module (its VMs move), released
    when the module ends."""
    lab = kvlab_labs(migration_lab_path, private=True)
    yield lab
    kvlab_labs.release(lab)
