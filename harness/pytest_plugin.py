"""pytest plugin (registered through the `pytest11` entry point): a thin shell over `harness.lab`.

Options: --lab, --runtime, --stack, --keep-lab, --reuse-lab, --kvlab-diag-dir.
Fixtures:
- `kvlab_labs`: session-scoped factory; `kvlab_labs(spec_or_path)` returns a running `Lab`
  (the same one for every caller of the session); `private=True` brings up a new instance
  for that caller alone (for tests that change the lab, e.g. by migrating VMs), and
  `kvlab_labs.release(lab)` tears such an instance down before the session ends.
  It reuses a running lab of the same spec and runtime (e.g. from `make lab-up`) and never
  tears that one down; otherwise it brings up a private instance under a unique name, owned by
  this process (reaped by the next run if this one is killed), torn down at session end.
- `lab`: the session's lab from --lab (default: labs/default.yml), handed to each module with
  every VM back on its spec node (`Lab.restore_placement()`).
Marker `netns_only(reason)`: a test that reaches into the netns runtime (namespaces, node
agents, mock VMs, QEMU); under another --runtime it is skipped, saying why.
Marker `migration`: a test that live-migrates a VM; under --runtime containerlab with a stack
whose live_migration is False (Calico < 3.32) it is skipped, saying why. Marker
`calico_3_32(reason)`: the same for a test that needs another Calico 3.32 feature.
A runtime that cannot run on this machine (PreflightError) fails the tests that need a lab;
under `--runtime containerlab` outside CI it skips them instead, with what is missing.
On a failing test that used a lab, a diagnostics bundle is written and named in the report.
Every migration a test makes is recorded as JSON in test-results/timelines/ at once; its PNG
timeline is drawn at the end of the session, so that drawing (seconds under load) never counts
in a test's timings. A record that cannot be drawn fails the session, naming the record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from harness.diagnostics import collect
from harness.errors import KvlabError, LabError, LabNameError, PreflightError
from harness.instances import reap_stale
from harness.lab import Lab
from harness.labfile import load_lab, resolve_spec_path
from harness.runtime import RUNTIMES, get_runtime
from harness.runtime.base import RuntimeOptions
from harness.runtime.containerlab.versions import MATRIX, get_versions
from harness.spec import LabSpec
from harness.state import LabState, lab_dir
from harness.timeline import draw_pending

TIMELINES = pytest.StashKey[Path]()  # where this session's labs record their migrations
TIMELINE_LINES = pytest.StashKey[list[str]]()  # what drawing them at the end has to say


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kvlab", "kvlab lab harness")
    group.addoption("--lab", default="default", help="lab file or name in labs/ (default: default)")
    group.addoption("--runtime", default="netns", choices=list(RUNTIMES), help="lab runtime")
    group.addoption(
        "--stack",
        default=None,
        choices=list(MATRIX),
        metavar="NAME",
        help="containerlab: the stack versions, an entry of harness.runtime.containerlab.versions.MATRIX "
        "(default: versions.DEFAULT)",
    )
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
    config.addinivalue_line(
        "markers",
        "netns_only(reason): reaches into the netns runtime; skipped under another --runtime, saying why",
    )
    config.addinivalue_line(
        "markers",
        "migration: live-migrates a VM; skipped on a containerlab stack without live-migration support",
    )
    config.addinivalue_line(
        "markers",
        "calico_3_32(reason): needs what Calico 3.32 added (route priorities); skipped like `migration`",
    )
    if config.getoption("--keep-lab") and config.getoption("--reuse-lab"):
        raise pytest.UsageError(
            "--keep-lab and --reuse-lab contradict each other: a reused lab is never torn down"
        )
    _check_lab_option(config.getoption("--lab"))
    if config.getoption("--stack") is not None and config.getoption("--runtime") == "netns":
        raise pytest.UsageError("--stack applies to --runtime containerlab only")


def _check_lab_option(value: str) -> None:
    """--lab is a lab file, or a lab's name under the instance-name rule (else a usage error)."""
    from harness.labfile import lab_file_stem

    if not Path(value).is_file():
        try:
            lab_file_stem(value, "--lab")
        except LabNameError as e:
            raise pytest.UsageError(str(e)) from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    runtime = config.getoption("--runtime")
    if runtime == "netns":
        return
    no_migration = _stack_without_migration(config.getoption("--stack"))
    for item in items:
        if no_migration and item.get_closest_marker("migration") is not None:
            item.add_marker(pytest.mark.skip(reason=no_migration))
        needs = item.get_closest_marker("calico_3_32")
        if no_migration and needs is not None:
            why = needs.kwargs.get("reason") or (needs.args[0] if needs.args else "a Calico 3.32 feature")
            item.add_marker(pytest.mark.skip(reason=f"{no_migration}: needs {why}"))
        mark = item.get_closest_marker("netns_only")
        if mark is None:
            continue
        why = mark.kwargs.get("reason") or (mark.args[0] if mark.args else "it reaches into its internals")
        item.add_marker(pytest.mark.skip(reason=f"needs the netns runtime: {why}"))


def _stack_without_migration(name: str | None) -> str | None:
    """The skip reason for migration tests when the selected stack (--stack, else the default)
    has no KubeVirt live-migration support; None when it has (or is unknown: the runtime
    reports that)."""
    try:
        stack = get_versions(name)
    except KeyError:
        return None
    if stack.live_migration:
        return None
    return (
        f"stack {stack.name} predates KubeVirt live-migration support (Calico < 3.32; "
        f"it has Calico {stack.calico})"
    )


def _unavailable(runtime: str, err: PreflightError) -> NoReturn:
    """A runtime that cannot run here. netns, or any runtime under CI: a failure. Another
    runtime on a developer's machine (no real stack installed): a skip saying what is missing."""
    if runtime != "netns" and not os.environ.get("CI"):
        pytest.skip(f"runtime '{err.runtime}' cannot run on this machine: {'; '.join(err.missing)}")
    pytest.fail(str(err), pytrace=False)


def _resolve(spec_or_path: str | Path | LabSpec) -> LabSpec:
    if isinstance(spec_or_path, LabSpec):
        return spec_or_path
    return load_lab(resolve_spec_path(str(spec_or_path)))


def _running_same(spec: LabSpec, runtime: str) -> Lab | None:
    """A healthy running lab named like the spec, built from the same spec on the same runtime,
    still in its initial state (no VM migrated since `kvlab up`), if any."""
    state = LabState.load(lab_dir(spec.name))
    if state is None or state.vms or state.runtime != runtime:
        return None
    try:
        lab = Lab.attach(spec.name)
    except LabError:
        return None
    return lab if lab.is_running() and Path(state.spec_path) == Path(spec.source) else None


class LabFactory:
    """What `kvlab_labs` yields: call it for a running Lab; `release(lab)` ends a private one early."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.runtime: str = config.getoption("--runtime")
        self.options = RuntimeOptions(stack=config.getoption("--stack"))
        self.keep: bool = config.getoption("--keep-lab")
        self.reuse_only: bool = config.getoption("--reuse-lab")
        self.owned: list[Lab] = []
        self.cache: dict[str, Lab] = {}

    def __call__(self, spec_or_path: str | Path | LabSpec, *, private: bool = False) -> Lab:
        spec = _resolve(spec_or_path)
        key = spec.source
        if private and self._shares(spec):
            # One instance per machine (containerlab: kind cluster names are machine-wide): the
            # test gets the shared lab, with every VM back on its spec node.
            lab = self(spec, private=False)
            _restore_placement(lab)
            return lab
        if not private and key in self.cache:
            return self.cache[key]
        lab = None if private else _running_same(spec, self.runtime)
        if lab is None:
            if self.reuse_only:
                raise pytest.UsageError(
                    f"--reuse-lab: no running lab '{spec.name}' (run 'make lab-up' first)"
                )
            try:
                lab = Lab(
                    spec,
                    name=Lab.unique_name(spec.name),
                    runtime=self.runtime,
                    options=self.options,
                    owner_pid=os.getpid(),
                    keep=self.keep,
                )
                lab.up()
            except PreflightError as e:
                _unavailable(self.runtime, e)
            self.owned.append(lab)
        if not private:
            self.cache[key] = lab
        lab.artifacts_dir = self.config.rootpath / "test-results" / "timelines"  # next to the test results
        self.config.stash[TIMELINES] = lab.artifacts_dir
        return lab

    def _shares(self, spec: LabSpec) -> bool:
        """Whether a private request for `spec` gets the shared instance instead: on a runtime
        without parallel instances, for the session's lab (--lab) and any spec already up. Another
        spec (a scenario's own lab) gets a private instance, released like one elsewhere."""
        if get_runtime(self.runtime).parallel_instances:
            return False
        try:
            session = str(resolve_spec_path(self.config.getoption("--lab")).resolve())
        except KvlabError:
            session = None
        return spec.source in (session, *self.cache) or _running_same(spec, self.runtime) is not None

    def release(self, lab: Lab) -> None:
        """Tear down a private lab this session brought up (others: nothing to do)."""
        if lab in self.owned and lab not in self.cache.values():
            self.owned.remove(lab)
            self._end(lab)

    def close(self) -> None:
        for lab in reversed(self.owned):
            self._end(lab)
        self.owned.clear()

    def _end(self, lab: Lab) -> None:
        if self.keep:
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(
                    f"kvlab: --keep-lab: lab '{lab.name}' left running; 'kvlab down {lab.name}' removes it"
                )
        else:
            lab.down()


@pytest.fixture(scope="session")
def kvlab_labs(request: pytest.FixtureRequest) -> Iterator[LabFactory]:
    runtime = request.config.getoption("--runtime")
    if runtime == "netns" and os.geteuid() != 0:
        pytest.skip("the netns runtime needs root (network namespaces, veth pairs, BIRD)")
    if runtime != "netns":
        # One clear verdict for the session before anything runs (netns says it at `up`).
        try:
            options = RuntimeOptions(stack=request.config.getoption("--stack"))
            get_runtime(runtime)("kvlab-preflight", options=options).preflight()
        except PreflightError as e:
            _unavailable(runtime, e)
    reap_stale()
    factory = LabFactory(request.config)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def lab(kvlab_labs: LabFactory, request: pytest.FixtureRequest) -> Lab:
    """The session's lab, handed to each module with every VM on its spec node (a module before
    may have migrated one; on runtimes without parallel instances that module's private lab is
    this one)."""
    shared = kvlab_labs(request.config.getoption("--lab"))
    _restore_placement(shared)
    return shared


RESTORE_SLACK = 30.0  # seconds beyond Felix's convergence time for a restored VM's route to settle


def _restore_placement(lab: Lab) -> None:
    """Every VM back on its spec node (`Lab.restore_placement()`), and for each one moved, its
    node's route back at the normal priority (Felix's convergence time over), so the next tests
    see the steady state rather than a migration's aftermath."""
    from harness import checks
    from harness.wait import eventually

    for vm in lab.restore_placement():
        node = lab.vm_location(vm)["node"]
        prefix = f"{lab.topo.workload(vm).ip}/32"
        prio = lab.priorities(node)
        eventually(
            lambda n=node, p=prefix, m=prio.normal: checks.kernel_route(lab, n, p, metric=m),
            timeout=prio.convergence + RESTORE_SLACK,
            interval=0.5,
            what=f"{vm}'s route on {node} back at the normal priority {prio.normal} after restoring it there",
        )


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
            path = collect(lab, Path(base) / safe)
        except Exception as e:  # never mask the test's own failure
            report.sections.append(
                ("kvlab diagnostics", f"could not collect diagnostics of '{lab.name}': {e}")
            )
            continue
        report.sections.append(("kvlab diagnostics", f"lab '{lab.name}': {path}"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Draw the timelines of the migrations this session's tests recorded, now that no test is
    timing anything; a record that cannot be drawn fails the session."""
    directory = session.config.stash.get(TIMELINES, None)
    if directory is None or not directory.is_dir():
        return
    started = time.monotonic()
    drawn, failed = draw_pending(directory)
    lines = [f"could not draw the timeline of {line}" for line in failed]
    if drawn or failed:
        took = f"{time.monotonic() - started:.1f} s, after the tests"
        lines.insert(0, f"drew {len(drawn)} migration timeline(s) in {directory} ({took})")
    session.config.stash[TIMELINE_LINES] = lines
    if failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """What drawing the timelines had to say, in the session summary."""
    for i, line in enumerate(config.stash.get(TIMELINE_LINES, [])):
        terminalreporter.write_line(f"kvlab: {line}", red=i > 0)
