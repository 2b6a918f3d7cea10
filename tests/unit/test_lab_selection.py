"""Several labs on one machine: every command takes the lab the same way (`--lab NAME`, and the
positional LAB where a command had it), a command with no lab named uses the only running lab
and, when several run, exits 2 listing them. The README's CLI table lists every option. The
migration record has the same fields in Python as in its JSON document.

Run state is faked with state files in a private run root (no lab, no root needed)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.canary.client import Gap
from harness.canary.report import CanaryReport
from harness.errors import UnknownLabError
from harness.record import MigrationRecord

REPO = Path(__file__).resolve().parents[2]
ON_A_LAB = ["status", "down", "routes", "migrate", "diag"]
ON_A_FILE = ["up", "validate", "render"]


def fake_running(root: Path, *names: str) -> None:
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "state.json").write_text("{}")


@pytest.fixture
def run_root(run_root: Path) -> Path:
    """The unit tests' private run directory (conftest), made."""
    run_root.mkdir()
    return run_root


def test_the_only_running_lab_is_the_default(run_root: Path) -> None:
    fake_running(run_root, "acme")
    assert cli.resolve_running(None) == "acme"


def test_several_running_and_none_named_is_a_usage_error_listing_them(run_root: Path) -> None:
    fake_running(run_root, "acme", "default")
    with pytest.raises(cli.UsageError, match=r"2 labs are running \(acme, default\): name one with --lab"):
        cli.resolve_running(None)
    assert cli.resolve_running("acme") == "acme"


def test_none_running(run_root: Path) -> None:
    with pytest.raises(UnknownLabError, match="no lab is running"):
        cli.resolve_running(None)
    assert cli.resolve_running(None, none_ok=True) == "default"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ON_A_LAB + ON_A_FILE)
def test_every_command_takes_the_lab_as_lab_option(command: str) -> None:
    extra = {"routes": ["tor1"], "migrate": ["vm1", "--to", "r2-n1"], "render": ["--out", "x"]}
    args = cli.build_parser().parse_args([command, *extra.get(command, []), "--lab", "acme"])
    assert cli.lab_arg(args) == ("acme", "--lab")


@pytest.mark.parametrize("command", ["up", "down", "status", "diag", "validate", "render"])
def test_the_positional_form_is_kept_and_must_agree(command: str) -> None:
    extra = ["--out", "x"] if command == "render" else []
    parser = cli.build_parser()
    assert cli.lab_arg(parser.parse_args([command, "acme", *extra])) == ("acme", "LAB")
    assert cli.lab_arg(parser.parse_args([command, "acme", "--lab", "acme", *extra])) == ("acme", "--lab")
    with pytest.raises(cli.UsageError, match="name different labs"):
        cli.lab_arg(parser.parse_args([command, "acme", "--lab", "other", *extra]))


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "--json"],
        ["down"],
        ["diag"],
        ["routes", "tor1"],
        ["migrate", "vm1", "--to", "n"],
    ],
)
def test_cli_with_two_labs_and_none_named_exits_2_listing_them(argv: list[str], tmp_path: Path) -> None:
    root = tmp_path / "run"
    fake_running(root, "acme", "default")
    env = {k: v for k, v in os.environ.items() if k != cli.DEBUG_ENV} | {"KVLAB_RUN_DIR": str(root)}
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr == "kvlab: 2 labs are running (acme, default): name one with --lab NAME\n"
    assert sorted(p.name for p in root.iterdir()) == ["acme", "default"]  # nothing touched


def test_the_readme_cli_table_lists_every_option() -> None:
    readme = (REPO / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `kvlab (\w+)[^\n]*$", readme, re.M)}
    missing = []
    for name, sub in _subparsers().items():
        row = rows.get(name)
        if row is None:
            missing.append(f"kvlab {name}: no row")
            continue
        for action in sub._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help" and f"`{opt}" not in row and f" {opt}" not in row:
                    missing.append(f"kvlab {name}: {opt}")
    assert not missing, missing


def record() -> MigrationRecord:
    rec = MigrationRecord("vm1", "203.0.113.10", "r1-n1", "r2-n1", started=1000.0)
    rec.phase("prepare")
    rec.events[-1]["t"] = 1000.25
    rec.status, rec.ended = "completed", 1000.5
    rec.canary = CanaryReport(
        target="203.0.113.10:7007",
        sent=50,
        echoed=50,
        lost=0,
        resets=0,
        same_connection=True,
        max_gap_ms=12.5,
        gaps=[Gap(1000.1, 1000.2, 100.0)],
        fresh_connection_ok=True,
    )
    return rec


def test_the_record_has_its_json_fields() -> None:
    rec = record()
    doc = rec.to_json()
    assert rec.duration_ms == doc["duration_ms"] == 500.0
    for key, value in doc.items():
        if key == "events":
            continue
        assert hasattr(rec, key), key
        attr = getattr(rec, key)
        assert (attr.to_json() if key == "canary" else attr) == value, key
    assert isinstance(rec.canary, CanaryReport)
    for key, value in doc["canary"].items():  # the canary report too: every JSON key an attribute
        attr = getattr(rec.canary, key)
        assert (attr.to_json() if key == "max_gap" and attr else attr) == value or key == "gaps", key
    assert [g.to_json() for g in rec.canary.gaps] == doc["canary"]["gaps"]


def test_the_record_reads_back_from_json() -> None:
    doc = record().to_json()
    back = MigrationRecord.from_json(doc)
    assert back.to_json() == doc
    assert back.canary is not None
    assert back.canary.gaps[0].ms == 100.0
