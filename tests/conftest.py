"""Shared test helpers. The `lab` fixtures come from the kvlab pytest plugin (harness.pytest_plugin)."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.lab import Lab

REPO = Path(__file__).resolve().parents[1]

# A shell that starts a job in the background (`make test &`, nohup) ignores SIGINT, and an
# ignored signal stays ignored in every child: the Ctrl-C tests' children (kvlab, labs) would
# never see theirs. Ctrl-C is part of what the suite proves, so give it its usual meaning.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


# Test directories: the scenario tests (every runtime), the netns runtime's own machinery, the
# containerlab runtime's parts under plain Docker (and unit/, which needs nothing).
SCENARIOS, NETNS, CONTAINERLAB = "integration", "netns", "containerlab"


@pytest.hookimpl(tryfirst=True)  # before the plugin's hook, which skips `netns_only` elsewhere
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of the netns runtime's own machinery (tests/netns/) are `netns_only`. Integration
    tests on the netns runtime need root and BIRD, tests marked `needs_docker` a Docker daemon;
    say so clearly instead of failing obscurely. Under another --runtime these prerequisites do
    not apply: the runtime's preflight says what is missing, and the plugin skips the
    `netns_only` tests."""
    for item in items:
        if _directory(item) == NETNS and item.get_closest_marker("netns_only") is None:
            item.add_marker(pytest.mark.netns_only("a test of the netns runtime itself"))
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
            _directory(item) in (SCENARIOS, NETNS)
            or item.get_closest_marker("netns")
            or item.get_closest_marker("netns_only")
        ):
            item.add_marker(pytest.mark.netns)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def _directory(item: pytest.Item) -> str:
    """The directory under tests/ an item's file is in ('' for tests/ itself)."""
    try:
        parts = item.path.relative_to(REPO / "tests").parts
    except ValueError:  # a test file elsewhere
        return ""
    return parts[0] if len(parts) > 1 else ""


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
def migration_lab_path(pytestconfig: pytest.Config, mock_default_path: Path) -> Path:
    """The default lab for scenario tests that migrate its VM or run commands in it: with mock
    VMs on the netns runtime (fast, and commands run in their namespaces), as it is elsewhere
    (the runtime's own VMs, e.g. KubeVirt's on containerlab, reached over SSH)."""
    if pytestconfig.getoption("--runtime") == "netns":
        return mock_default_path
    return REPO / "labs" / "default.yml"


@pytest.fixture(scope="session")
def guest_lab(kvlab_labs, migration_lab_path: Path):  # type: ignore[no-untyped-def]
    """The default lab whose VM takes commands (`lab.run("vm1", ...)`), shared by the session."""
    return kvlab_labs(migration_lab_path)


def _private(kvlab_labs, path: Path) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    """A private instance of the lab file `path`, released when the generator resumes or closes."""
    lab = kvlab_labs(path, private=True)
    try:
        yield lab
    finally:
        kvlab_labs.release(lab)


@pytest.fixture(scope="module")
def migration_lab(kvlab_labs, migration_lab_path: Path) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    """A private instance of the migration lab for one test module that changes it (moves its
    VM, adds routes), released when the module ends (the shared lab, restored, on a runtime
    without parallel instances)."""
    yield from _private(kvlab_labs, migration_lab_path)


@pytest.fixture(scope="module")
def guest_migration_lab(kvlab_labs) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    """A private instance of labs/default.yml for one test module: its VM is the runtime's real
    guest (QEMU on netns, KubeVirt's on containerlab), live-migrated by the module's tests."""
    for lab in _private(kvlab_labs, REPO / "labs" / "default.yml"):
        assert lab.topo.workload("vm1").backend == "qemu"
        yield lab


@pytest.fixture(scope="module")
def own_lab(  # type: ignore[no-untyped-def]
    kvlab_labs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[dict[str, Any]], Lab]]:
    """`own_lab(data)`: a private instance of the lab `data` (a lab file's content) for this
    module, released when the module ends. On a runtime without parallel instances a lab of its
    own runs beside the session's lab, so its clusters need names of their own (kind cluster
    names are machine-wide)."""
    from labfiles import write_lab_data

    made: list[Lab] = []

    def make(data: dict[str, Any]) -> Lab:
        path = write_lab_data(data, tmp_path_factory.mktemp("labs") / f"{data['name']}.yml")
        lab = kvlab_labs(path, private=True)
        made.append(lab)
        return lab

    yield make
    for lab in made:
        kvlab_labs.release(lab)
