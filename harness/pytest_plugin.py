"""pytest plugin (registered through the `pytest11` entry point): a thin shell over `harness.lab`.

Options: --lab, --runtime, --keep-lab, --reuse-lab, --kvlab-diag-dir.
Fixtures:
- `kvlab_labs`: session-scoped factory; `kvlab_labs(spec_or_path)` returns a running `Lab`
  (the same one for every caller of the session); `private=True` brings up a new instance
  for that caller alone (for tests that change the lab, e.g. by migrating VMs).
  It reuses a running lab of the same spec (e.g. from `make lab-up`) and never tears that
  one down; otherwise it brings up a private instance under a unique name, owned by this
  process (reaped by the next run if this one is killed), torn down at session end.
- `lab`: the session's lab from --lab (default: labs/default.yml).
On a failing test that used a lab, a diagnostics bundle is written and named in the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.errors import LabError, PreflightError
from harness.lab import Lab, reap_stale
from harness.spec import LabSpec, load_lab
from harness.state import LabState, lab_dir

LabFactory = Callable[..., Lab]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kvlab", "kvlab lab harness")
    group.addoption("--lab", default="default", help="lab file or name in labs/ (default: default)")
    group.addoption("--runtime", default="netns", choices=["netns", "containerlab"], help="lab runtime")
    group.addoption("--keep-lab", action="store_true", help="leave labs this session brought up running")
    group.addoption(
        "--reuse-lab",
        action="store_true",
        help="require a running lab (from 'make lab-up'/'kvlab up'); never bring one up",
    )
    group.addoption(
        "--kvlab-diag-dir",
        default=None,
        help="where failure diagnostics go (default: <rootdir>/test-results/diagnostics)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: needs root, network namespaces and BIRD (integration)")
    if config.getoption("--keep-lab") and config.getoption("--reuse-lab"):
        raise pytest.UsageError(
            "--keep-lab and --reuse-lab contradict each other: a reused lab is never torn down"
        )


def _resolve(spec_or_path: str | Path | LabSpec) -> LabSpec:
    if isinstance(spec_or_path, LabSpec):
        return spec_or_path
    from harness.cli import resolve_spec_path

    return load_lab(resolve_spec_path(str(spec_or_path)))


def _running_same(spec: LabSpec) -> Lab | None:
    """A healthy running lab named like the spec, built from the same spec, still in its initial
    state (no VM migrated since `kvlab up`), if any."""
    state = LabState.load(lab_dir(spec.name))
    if state is None or state.vms:
        return None
    try:
        lab = Lab.attach(spec.name)
    except LabError:
        return None
    return lab if lab.is_running() and Path(state.spec_path) == Path(spec.source) else None


@pytest.fixture(scope="session")
def kvlab_labs(request: pytest.FixtureRequest) -> Iterator[LabFactory]:
    config = request.config
    runtime = config.getoption("--runtime")
    keep = config.getoption("--keep-lab")
    reuse_only = config.getoption("--reuse-lab")
    owned: list[Lab] = []
    cache: dict[str, Lab] = {}
    if os.geteuid() != 0 and runtime == "netns":
        pytest.skip("the netns runtime needs root (network namespaces, veth pairs, BIRD)")
    reap_stale()

    def make(spec_or_path: str | Path | LabSpec, *, private: bool = False) -> Lab:
        spec = _resolve(spec_or_path)
        key = spec.source
        if not private and key in cache:
            return cache[key]
        lab = None if private else _running_same(spec)
        if lab is None:
            if reuse_only:
                raise pytest.UsageError(
                    f"--reuse-lab: no running lab '{spec.name}' (run 'make lab-up' first)"
                )
            lab = Lab(
                spec, name=Lab.unique_name(spec.name), runtime=runtime, owner_pid=os.getpid(), keep=keep
            )
            try:
                lab.up()
            except PreflightError as e:
                pytest.fail(str(e), pytrace=False)
            owned.append(lab)
        if not private:
            cache[key] = lab
        lab.artifacts_dir = config.rootpath / "test-results" / "timelines"  # next to the test results
        return lab

    yield make
    for lab in reversed(owned):
        if keep:
            print(f"\nkvlab: --keep-lab: lab '{lab.name}' left running; 'kvlab down {lab.name}' removes it")
        else:
            lab.down()


@pytest.fixture(scope="session")
def lab(kvlab_labs: LabFactory, request: pytest.FixtureRequest) -> Lab:
    return kvlab_labs(request.config.getoption("--lab"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    labs = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Lab)]
    if not labs:
        return
    base = item.config.getoption("--kvlab-diag-dir") or (
        item.config.rootpath / "test-results" / "diagnostics"
    )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.nodeid)[-120:]
    for lab in labs:
        try:
            path = lab.diagnostics(Path(base) / safe)
        except Exception as e:  # never mask the test's own failure
            report.sections.append(
                ("kvlab diagnostics", f"could not collect diagnostics of '{lab.name}': {e}")
            )
            continue
        report.sections.append(("kvlab diagnostics", f"lab '{lab.name}': {path}"))
