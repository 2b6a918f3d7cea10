"""Which lab a private request gets from the pytest plugin on a runtime without parallel
instances (containerlab): the session's lab, shared and restored, for its own spec; an
instance of its own, released like one elsewhere, for another spec (a scenario's own lab).
The real stack cannot run here: `Lab.up`/`Lab.down` are recorded instead of run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import pytest_plugin
from harness.lab import Lab

REPO = Path(__file__).resolve().parents[2]


class _Config:
    """What LabFactory reads of pytest's config."""

    def __init__(self, **options: Any):
        self.options = {
            "--runtime": "containerlab",
            "--stack": None,
            "--keep-lab": False,
            "--reuse-lab": False,
        }
        self.options.update(options)
        self.rootpath = REPO
        self.stash: dict[Any, Any] = {}  # pytest.Stash's mapping interface

    def getoption(self, name: str) -> Any:
        return self.options[name]


@pytest.fixture
def brought(monkeypatch: pytest.MonkeyPatch, run_root: Path) -> list[tuple[str, str]]:
    """(what, spec file name) for every lab the factory brings up or tears down."""
    done: list[tuple[str, str]] = []
    monkeypatch.setattr(Lab, "up", lambda self: done.append(("up", Path(self.spec.source).name)) or self)
    monkeypatch.setattr(Lab, "down", lambda self: done.append(("down", Path(self.spec.source).name)))
    monkeypatch.setattr(Lab, "restore_placement", lambda self: [])
    return done


def test_the_session_lab_is_shared_and_another_spec_gets_its_own_instance(
    brought: list[tuple[str, str]],
) -> None:
    factory = pytest_plugin.LabFactory(_Config(**{"--lab": "labs/default.yml"}))  # type: ignore[arg-type]
    shared = factory(REPO / "labs" / "default.yml", private=True)
    assert factory(REPO / "labs" / "default.yml", private=True) is shared
    assert factory(REPO / "labs" / "default.yml") is shared
    factory.release(shared)  # the shared lab stays for the session
    assert brought == [("up", "default.yml")]
    own = factory(REPO / "labs" / "single-rack.yml", private=True)
    assert own is not shared
    assert own.name.startswith("single-rack-")
    factory.release(own)
    assert brought == [("up", "default.yml"), ("up", "single-rack.yml"), ("down", "single-rack.yml")]
    factory.close()
    assert brought[-1] == ("down", "default.yml")


def test_a_spec_already_up_is_shared_too(brought: list[tuple[str, str]]) -> None:
    factory = pytest_plugin.LabFactory(_Config(**{"--lab": "labs/default.yml"}))  # type: ignore[arg-type]
    first = factory(REPO / "labs" / "single-rack.yml")
    assert factory(REPO / "labs" / "single-rack.yml", private=True) is first
    assert brought == [("up", "single-rack.yml")]


def test_on_the_netns_runtime_every_private_request_gets_its_own_instance(
    brought: list[tuple[str, str]],
) -> None:
    factory = pytest_plugin.LabFactory(_Config(**{"--runtime": "netns", "--lab": "labs/default.yml"}))  # type: ignore[arg-type]
    one = factory(REPO / "labs" / "default.yml", private=True)
    two = factory(REPO / "labs" / "default.yml", private=True)
    assert one is not two
    assert brought == [("up", "default.yml"), ("up", "default.yml")]
