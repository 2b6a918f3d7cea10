"""The GitHub workflows do what the Makefile and the version matrix promise: checked by running
what they run (their make goals with `make -n`, their `python3 -m` steps with the system Python's
standard library only, the tool downloads with stand-in tools), not by reading their text."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.runtime.containerlab import matrix_cli, pins
from harness.runtime.containerlab.versions import CONTAINERLAB, DEFAULT, MATRIX, get_versions

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean
        doc["on"] = doc.pop(True)
    return doc


def runs(doc: dict[str, Any]) -> list[str]:
    return [step["run"] for job in doc["jobs"].values() for step in job["steps"] if "run" in step]


def make_calls(script: str) -> list[tuple[list[str], dict[str, str]]]:
    """(goals, VAR=value arguments) of every `make ...` command of a shell script (through sudo;
    options skipped)."""
    calls = []
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for token in lexer:
            if token in ("&&", "||", ";", "|", "(", ")"):
                commands.append([])
            else:
                commands[-1].append(token)
        for words in commands:
            while words and (words[0] == "sudo" or words[0].startswith("-") or "=" in words[0]):
                words.pop(0)
            if words[:1] == ["make"]:
                goals, variables = [], {}
                args = iter(words[1:])
                for w in args:
                    if w in ("-C", "-f", "-I", "-o", "-W"):
                        next(args, None)  # the option's value
                    elif "=" in w:
                        key, _, value = w.partition("=")
                        variables[key] = value
                    elif not w.startswith("-"):
                        goals.append(w)
                calls.append((goals, variables))
    return calls


def make_goals(script: str) -> list[str]:
    return [g for goals, _ in make_calls(script) for g in goals]


@pytest.fixture(scope="module")
def nightly() -> dict[str, Any]:
    return load("nightly.yml")


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load("ci.yml")


def test_nightly_runs_on_schedule_and_by_hand(nightly: dict[str, Any]) -> None:
    assert nightly["on"]["schedule"][0]["cron"]
    assert "workflow_dispatch" in nightly["on"]


def test_nightly_matrix_is_the_version_matrix(nightly: dict[str, Any]) -> None:
    (job,) = nightly["jobs"].values()
    matrix = job["strategy"]["matrix"]
    assert matrix["stack"] == list(MATRIX)
    assert matrix["lab"] == list(matrix_cli.NIGHTLY_LABS) == ["default", "nested"]
    extra = matrix.get("include", [])
    baseline = [s.name for s in MATRIX.values() if not s.live_migration]
    assert baseline  # the Calico 3.31 entry
    assert [(e["stack"], e["lab"], e["experimental"]) for e in extra] == [
        (name, "default", True) for name in baseline
    ]
    assert matrix["exclude"] == [{"stack": name} for name in baseline]
    # the jobs GitHub runs (excludes first, then includes: an include that would change an
    # original value of a combination is a job of its own)
    jobs = [
        {"stack": s, "lab": lab, "experimental": x}
        for s in matrix["stack"]
        for lab in matrix["lab"]
        for x in matrix["experimental"]
        if not any(
            all({"stack": s, "lab": lab, "experimental": x}[k] == v for k, v in e.items())
            for e in matrix["exclude"]
        )
    ]
    jobs += extra
    assert sorted((j["stack"], j["lab"], j["experimental"]) for j in jobs) == sorted(matrix_cli.cells())
    # the nested lab is a required cell on every stack with live-migration support
    required = {(s, lab) for s, lab, x in matrix_cli.cells() if not x}
    assert {(s.name, "nested") for s in MATRIX.values() if s.live_migration} <= required
    assert job["continue-on-error"] == "${{ matrix.experimental }}"
    assert job["strategy"]["fail-fast"] is False
    for lab in {*matrix["lab"], *(e["lab"] for e in extra)}:
        assert (REPO / "labs" / f"{lab}.yml").is_file()


def test_matrix_cli_lists_the_nightly_cells() -> None:
    res = subprocess.run(
        [sys.executable, "-S", "-m", "harness.runtime.containerlab.matrix_cli", "cells"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = [line.split() for line in res.stdout.splitlines()]
    assert lines == [[s, lab, "experimental" if x else "required"] for s, lab, x in matrix_cli.cells()]
    assert [DEFAULT.name, "nested", "required"] in lines


def test_every_nightly_lab_is_one_the_containerlab_runtime_builds(nightly: dict[str, Any]) -> None:
    """Every job's lab renders and validates for its stack (nested clusters included: issue 17),
    and what plan.plan_lab refuses is in no job."""
    from harness.labfile import load_lab
    from harness.runtime.containerlab.render import plan_lab, render_containerlab
    from harness.runtime.containerlab.validate import validate_rendered
    from harness.topology import resolve

    for stack, lab, _ in matrix_cli.cells():
        spec = load_lab(REPO / "labs" / f"{lab}.yml")
        plan_lab(resolve(spec))
        out = Path(tempfile.mkdtemp(prefix=f"nightly-{lab}-"))
        try:
            render_containerlab(spec, out, versions=MATRIX[stack], use_emulation=True)
            report = validate_rendered(out, bird=False)
            assert report.ok, (stack, lab, report.issues)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    assert resolve(load_lab(REPO / "labs" / "nested.yml")).nested_vm  # a nested lab is among them


def test_the_nested_cell_builds_the_guest_image_from_debian_packages(nightly: dict[str, Any]) -> None:
    """The runner is Ubuntu: the nested cell builds the guest image in a Debian container first,
    into the cache `make lab-up` reads."""
    (job,) = nightly["jobs"].values()
    runs = [s.get("run", "") for s in job["steps"]]
    lab_up = next(i for i, r in enumerate(runs) if "make lab-up" in r)
    guest = next(i for i, r in enumerate(runs) if "scripts/guest-image-in-debian.sh" in r)
    assert guest < lab_up
    assert job["steps"][guest]["if"] == "matrix.lab == 'nested'"
    script = (REPO / "scripts" / "guest-image-in-debian.sh").read_text()
    assert "debian:bookworm" in script
    assert "kvlab image build guest" in script
    assert '"$cache:/var/cache/kvlab/images"' in script


def test_every_job_and_long_step_has_a_timeout(nightly: dict[str, Any], ci: dict[str, Any]) -> None:
    for doc in (nightly, ci):
        for job in doc["jobs"].values():
            assert 0 < job["timeout-minutes"] <= 360
    (job,) = nightly["jobs"].values()
    for step in job["steps"]:
        if "lab-up" in step.get("run", "") or "nightly-test" in step.get("run", ""):
            assert step["timeout-minutes"] < job["timeout-minutes"]


def test_make_goals_in_workflows_exist() -> None:
    scripts = [*runs(load("nightly.yml")), *runs(load("ci.yml")), (REPO / ".ci" / "run").read_text()]
    goals = {g for s in scripts for g in make_goals(s)}
    assert {"setup-containerlab", "lab-up", "nightly-test", "nightly-diag", "lab-down", "test"} <= goals
    for goal in sorted(goals):
        res = subprocess.run(
            ["make", "-n", goal], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
        )
        assert res.returncode == 0, f"make {goal}: {res.stderr}"


def kvlab_commands(commands: list[list[str]]) -> list[list[str]]:
    """The kvlab and pytest commands among `make -n` output (what a lab run does)."""
    return [c for c in commands if c and c[0].endswith(("/kvlab", "/pytest"))]


@pytest.mark.parametrize("stack", list(MATRIX))
def test_nightly_job_is_make_nightly_step_by_step(nightly: dict[str, Any], stack: str) -> None:
    """The workflow's make steps, run in order with the job's variables, do what `make nightly`
    does (the same kvlab and pytest commands, in the same order), and the diagnostics and
    lab-down steps run always."""
    (job,) = nightly["jobs"].values()
    env = {"LAB": "default", "STACK": stack}
    steps = [(s.get("if"), make_calls(s["run"])) for s in job["steps"] if "run" in s and "make " in s["run"]]
    done: list[list[str]] = []
    for _, calls in steps:
        for goals, variables in calls:
            values = {k: env.get(v.strip("$"), v) if v.startswith("$") else v for k, v in variables.items()}
            done += make_dry_run(*goals, **values)
    assert kvlab_commands(done) == kvlab_commands(make_dry_run("nightly", **env))
    assert [c[1:3] for c in kvlab_commands(done) if c[0].endswith("/kvlab")] == [
        ["up", "default"],
        ["diag", "default"],
        ["down", "default"],
    ]
    assert [cond for cond, calls in steps if calls[0][0][0] in ("nightly-diag", "lab-down")] == [
        "always()",
        "always()",
    ]


def make_dry_run(*goals: str, **variables: str) -> list[list[str]]:
    """The commands `make -n` would run for `goals`, each split into words."""
    res = subprocess.run(
        ["make", "-n", "--no-print-directory", *goals, *(f"{k}={v}" for k, v in variables.items())],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    text = re.sub(r"\\\n\s*", " ", res.stdout)  # a recipe line continued with a backslash
    return [shlex.split(line) for line in text.splitlines() if line.strip()]


def test_nightly_uploads_everything_nightly_test_writes(nightly: dict[str, Any]) -> None:
    """The junit file and the diagnostics `make nightly-test` writes, and `kvlab diag`'s bundle,
    lie under the job's RESULTS, which is under the uploaded path."""
    (job,) = nightly["jobs"].values()
    (upload,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()"
    for stack in MATRIX:
        results = (
            job["env"]["RESULTS"]
            .replace("${{ matrix.lab }}", "default")
            .replace("${{ matrix.stack }}", stack)
        )
        assert results.startswith(upload["with"]["path"])
        (pytest_cmd,) = [
            c for c in make_dry_run("nightly-test", LAB="default", STACK=stack) if "--junitxml" in c
        ]
        assert pytest_cmd[0].endswith("/bin/pytest")
        assert pytest_cmd[pytest_cmd.index("--junitxml") + 1] == f"{results}/junit.xml"
        assert pytest_cmd[pytest_cmd.index("--kvlab-diag-dir") + 1] == f"{results}/diagnostics"
        assert pytest_cmd[pytest_cmd.index("--stack") + 1] == stack
        (diag,) = [c for c in make_dry_run("nightly-diag", LAB="default", STACK=stack) if "diag" in c]
        assert diag[diag.index("--out") + 1] == f"{results}/kvlab-diag"


STAND_INS = {
    # every tool the step calls: logs its argv; curl prints what a checksum file holds
    "curl": """url="${@: -1}"; echo "curl $url" >> "$LOG"
case "$url" in
  */checksums.txt) echo "0000  containerlab_${CONTAINERLAB_VERSION}_linux_amd64.deb" ;;
  *.sha256sum) echo "0000  kind-linux-amd64" ;;
  *.sha256) echo "0000" ;;
esac""",
    "sha256sum": 'echo "sha256sum $* $(cat)" >> "$LOG"',
    "sudo": '"$@"',
    **{
        tool: f'echo "{tool} $*" >> "$LOG"'
        for tool in ("apt-get", "install", "containerlab", "kind", "kubectl")
    },
    # the runner's python3 before any venv exists: the standard library only
    "python3": f'exec {sys.executable} -S "$@"',
}


def run_step(script: str, tmp_path: Path, env: dict[str, str]) -> list[str]:
    """Run a workflow step's script with stand-ins for every tool (tmp_path/bin first on PATH), in
    the checkout; the stand-ins' log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in STAND_INS.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log"
    log.write_text("")
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir(exist_ok=True)
    res = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=REPO,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "RUNNER_TEMP": str(runner_temp), **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return log.read_text().splitlines()


@pytest.mark.parametrize("stack", list(MATRIX))
def test_nightly_installs_the_pinned_tools_checked(
    nightly: dict[str, Any], stack: str, tmp_path: Path
) -> None:
    """The tools step downloads exactly the pinned containerlab, and the stack's kind and
    kubectl (pins.tool_urls, what the pins check asks for), checks each against its checksum
    file, and installs the three."""
    (job,) = nightly["jobs"].values()
    (step,) = [s for s in job["steps"] if "kubectl" in s.get("run", "") and "curl" in s.get("run", "")]
    assert re.fullmatch(r"\d+\.\d+\.\d+", nightly["env"]["CONTAINERLAB_VERSION"])
    log = run_step(step["run"], tmp_path, {"STACK": stack, **nightly["env"]})
    fetched = {line.split()[1] for line in log if line.startswith("curl ")}
    assert fetched == {
        pin.url for pin in pins.tool_urls(MATRIX[stack], nightly["env"]["CONTAINERLAB_VERSION"])
    }
    checks = [line for line in log if line.startswith("sha256sum")]
    assert [c.split()[-1] for c in checks] == [
        f"containerlab_{CONTAINERLAB}_linux_amd64.deb",
        "kind",
        "kubectl",
    ]
    assert all(c.split()[1:3] == ["-c", "-"] for c in checks)
    assert any(line.startswith("install -m 0755 kind kubectl /usr/local/bin/") for line in log)
    assert any(line.startswith("apt-get install") and "containerlab_" in line for line in log)


def test_makefile_stack_default_is_the_matrix_default() -> None:
    (up,) = kvlab_commands(make_dry_run("lab-up", RUNTIME="containerlab"))
    assert up[up.index("--stack") + 1] == DEFAULT.name


def test_every_file_and_module_the_workflows_name_exists() -> None:
    """Paths (comments included) and `python -m` modules in the workflows, the Makefile and
    .ci/run: each names a file or module of this checkout."""
    texts = [*(p.read_text() for p in WORKFLOWS.glob("*.yml")), (REPO / "Makefile").read_text()]
    texts.append((REPO / ".ci" / "run").read_text())
    text = "\n".join(texts)
    paths = set(
        re.findall(
            r"(?<![\w/.$-])((?:\.ci|scripts|labs|tests|harness|bench|images|kind-configs)/[\w./-]*\w)", text
        )
    )
    modules = set(re.findall(r"-m (harness(?:\.\w+)+)", text))
    assert paths
    assert modules
    for path in sorted(paths):
        assert (REPO / path).exists(), path
    for module in sorted(modules):
        file = REPO / Path(*module.split("."))
        assert file.with_suffix(".py").is_file() or (file / "__main__.py").is_file(), module


def test_ci_runs_the_netns_suite_in_a_privileged_container_with_docker(ci: dict[str, Any]) -> None:
    (job,) = ci["jobs"].values()
    options = job["container"]["options"].split()
    assert "--privileged" in options
    assert options[options.index("-v") + 1] == "/var/lib/docker"  # dockerd inside: overlay2
    entry = [s for s in job["steps"] if "run" in s and (".ci/run" in s["run"] or "make test" in s["run"])]
    assert entry
    assert entry[0]["env"]["CI"] == "true"


def test_readme_shows_the_matrix() -> None:
    assert matrix_cli.table() in (REPO / "README.md").read_text()


def test_nightly_checks_every_pin_before_installing_anything(nightly: dict[str, Any], tmp_path: Path) -> None:
    """The first step after the checkout is the pins check of the job's stack with the tools: it
    asks for every pin (stack and tools) and fails the job when one does not answer; it runs
    with the standard library only (nothing is installed yet). Nothing is downloaded or built
    before it."""
    (job,) = nightly["jobs"].values()
    steps = job["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@")
    argv = shlex.split(steps[1]["run"])
    assert argv[:2] == ["python3", "-m"]
    module = __import__(argv[2], fromlist=["main"])
    for stack in MATRIX:
        args = [stack if a == "$STACK" else a for a in argv[3:]]
        asked: list[str] = []

        def http(method: str, url: str, headers: dict[str, str], asked: list[str] = asked) -> pins.Response:
            asked.append(url)
            return 200, {}, b""

        assert module.main(args, http=http) == 0
        assert sorted(set(asked)) == sorted({p.url for p in pins.stack_pins(MATRIX[stack], tools=True)})
        assert module.main(args, http=lambda m, u, h: (404, {}, b"")) == 2
    listed = subprocess.run(
        [sys.executable, "-S", "-m", argv[2], "list", *[a for a in argv[4:] if a != "$STACK"]],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr  # stdlib only
    assert len(listed.stdout.splitlines()) == len(pins.stack_pins(get_versions(None), tools=True))
    later = " ".join(s.get("run", "") for s in steps[2:])
    assert "curl" in later  # the installs come after it
    assert "make " in later  # and the deploy
    assert "curl" not in steps[1]["run"]
    assert "make" not in steps[1]["run"]


def test_nightly_frees_the_disk_and_measures_it(nightly: dict[str, Any]) -> None:
    (job,) = nightly["jobs"].values()
    runs = [s.get("run", "") for s in job["steps"]]
    lab_up = next(i for i, r in enumerate(runs) if "make lab-up" in r)
    free = next(i for i, r in enumerate(runs) if "rm -rf /usr/share/dotnet" in r)
    measured = [i for i, r in enumerate(runs) if "docker system df" in r]
    assert free < lab_up < measured[0]
    assert len(measured) == 2
    for i in measured:
        assert job["steps"][i]["if"] == "always()"
        assert '"$RESULTS/disk.txt"' in runs[i]
