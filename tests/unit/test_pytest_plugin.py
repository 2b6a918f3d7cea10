"""harness.pytest_plugin: the `lab` fixture puts VMs back home per module and waits out the
convergence; migration tests skip on a stack without KubeVirt live-migration support."""

from __future__ import annotations

import time
from typing import Any

import pytest
from clab_fakes import (
    DEFAULT_LAB,
)

from harness.errors import WaitTimeout
from harness.kernel import KernelRoute
from harness.labfile import load_lab
from harness.runtime.containerlab.versions import MATRIX
from harness.topology import resolve


class _MovedLab:
    """What the fixture helper needs of a Lab whose vm1 was just migrated home to r1-n1."""

    def __init__(self, metrics: list[int]) -> None:
        self.metrics = metrics
        spec = load_lab(DEFAULT_LAB)
        self.topo = resolve(spec)
        self.runtime = self
        self.restored = 0

    def restore_placement(self) -> list[str]:
        self.restored += 1
        return ["vm1"]

    def vm_location(self, vm: str) -> dict[str, str]:
        return {"node": "r1-n1", "ifname": "eth0"}

    def priorities(self, node: str) -> Any:
        from harness.calico.felix import Priorities

        return Priorities(normal=1024, elevated=512, convergence=0.5)

    def kernel_routes(self, entity: str, prefix: str | None = None) -> list[KernelRoute]:
        metric = self.metrics.pop(0) if len(self.metrics) > 1 else self.metrics[0]
        return [KernelRoute(prefix or "", None, "cali0", metric, "static", 254, "unicast", 253)]


def test_the_lab_fixture_is_per_module_and_waits_out_the_convergence(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import pytest_plugin

    monkeypatch.setattr(pytest_plugin, "RESTORE_SLACK", 0.5)

    assert pytest_plugin.lab._fixture_function_marker.scope == "module"
    moved = _MovedLab([512, 512, 1024])
    pytest_plugin._restore_placement(moved)  # type: ignore[arg-type]
    assert moved.restored == 1
    assert moved.metrics == [1024]  # it asked until the route was back at the normal priority
    stuck = _MovedLab([512])
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="vm1's route on r1-n1 back at the normal priority 1024"):
        pytest_plugin._restore_placement(stuck)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5


class _Config:
    def __init__(self, clab: str, stack: str | None = None) -> None:
        self.options = {"--runtime": clab, "--stack": stack}

    def getoption(self, name: str) -> Any:
        return self.options[name]


class _Item:
    def __init__(self, *marks: str) -> None:
        self.marks = set(marks)
        self.added: list[Any] = []

    def get_closest_marker(self, name: str) -> Any:
        return name if name in self.marks else None

    def add_marker(self, mark: Any) -> None:
        self.added.append(mark)


@pytest.mark.parametrize("stack", list(MATRIX))
def test_migration_tests_skip_on_a_stack_without_live_migration(
    stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness import pytest_plugin

    migrating, other = _Item("migration"), _Item()
    pytest_plugin.pytest_collection_modifyitems(_Config("containerlab", stack), [migrating, other])  # type: ignore[arg-type]
    assert other.added == []
    if MATRIX[stack].live_migration:
        assert migrating.added == []
    else:
        (mark,) = migrating.added
        assert mark.name == "skip"
        assert mark.kwargs["reason"].startswith(
            f"stack {stack} predates KubeVirt live-migration support (Calico < 3.32"
        )
    netns = _Item("migration")
    pytest_plugin.pytest_collection_modifyitems(_Config("netns"), [netns])  # type: ignore[arg-type]
    assert netns.added == []  # the netns runtime has no stack
