"""The CLI's error contract: every error is one line on stderr with the README's exit code
(2 bad input, 1 the lab did not do it, 130 interrupted), never a traceback.

Bad input is refused before anything is looked up or created, so these run without a lab.
The paths that need a running lab (an unknown router, BIRD unreachable) are in
tests/integration/test_reaping.py.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness import cli
from harness.birdc import BirdError, BirdUnavailable
from harness.errors import LabError, UnknownLabError, WaitTimeout

REPO = Path(__file__).resolve().parents[2]
RULE = "lowercase letters, digits and '-'"
UNKNOWN = f"nosuchlab-{secrets.token_hex(3)}"
# A directory outside the run root that a path-shaped name would reach (as root: deleted).
VICTIM = Path(tempfile.gettempdir()) / f"kvlab-victim-{secrets.token_hex(3)}"
ESCAPE = f"./../..{VICTIM}"

# (argv, exit code, text the one-line message must contain)
CASES: list[tuple[list[str], int, str]] = [
    (["down", ESCAPE], 2, f"LAB: '{ESCAPE}' is not a valid lab name: {RULE}"),
    (["up", "default", "--name", ESCAPE], 2, f"--name: '{ESCAPE}' is not a valid lab name"),
    (["up", "default", "--name", "a.b"], 2, "--name: 'a.b' is not a valid lab name"),
    (["up", "default", "--name", "Lab"], 2, "--name: 'Lab'"),
    (["up", "default", "--name", "x" * 33], 2, "at most 32 characters"),
    (["up", "default", "--name", "a\nb"], 2, "--name: 'a\\nb'"),
    (["up", "default", "--name", ""], 2, "--name: ''"),
    (["status", "../x"], 2, "LAB: '../x' is not a valid lab name"),
    (["status", UNKNOWN], 2, f"no lab named '{UNKNOWN}' is running"),
    (["diag", "a/b"], 2, "LAB: 'a/b'"),
    (["routes", "tor1", "not-a-prefix"], 2, "PREFIX: not an IP prefix"),
    (["routes", "tor1", "fe80::/64%eth0"], 2, "PREFIX: not an IP prefix"),
    (["routes", "tor1", "203.0.113.0/26", "--family", "6"], 2, "is IPv4, but --family 6"),
    (["routes", "tor1", "203.0.113.10/24"], 2, "has host bits set"),
    (["routes", "tor1", "203.0.113.0/26\ndown"], 2, "PREFIX:"),
    (["routes", "tor1", "--lab", "a.b"], 2, "--lab: 'a.b' is not a valid lab name"),
    (["routes", "tor1", "--lab", UNKNOWN], 2, f"no lab named '{UNKNOWN}'"),
    (["migrate", "vm1", "--to", "r2-n1", "--lab", "../x"], 2, "--lab: '../x'"),
    (["up", "nosuchlab.yml"], 2, "LAB: nosuchlab.yml: no such lab file"),
    (["up", "labs/../../nope.yml"], 2, "is no lab file and not a valid lab name"),
    (["frob"], 2, "invalid choice: 'frob'"),
    (
        ["import", "--nodes", "nosuch.yaml", "--calico", "x", "--out", f"/tmp/{UNKNOWN}"],
        2,
        "nosuch.yaml: cannot read",
    ),
    (
        [
            "import",
            "--nodes",
            "tests/data/customer/nodes.yaml",
            "--calico",
            "tests/data/customer/calico.yaml",
            "--out",
            f"/tmp/{UNKNOWN}",
            "--max-nodes-per-rack",
            "0",
        ],
        2,
        "--max-nodes-per-rack: at least 1",
    ),
    (["import", "--nodes", "n", "--calico", "c", "--out", "o", "--name", "a.b"], 2, "--name: 'a.b'"),
    (["status", "a", "--lab", "b"], 2, "LAB 'a' and --lab 'b' name different labs"),
    (["up", "--runtime", "nope"], 2, "argument --runtime: invalid choice"),
]


@pytest.fixture(scope="module")
def results() -> dict[int, subprocess.CompletedProcess[str]]:
    """Every case run as `python -m harness.cli ...`, all at once."""
    VICTIM.mkdir()
    (VICTIM / "keep").write_text("precious")
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "harness.cli", *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env={k: v for k, v in os.environ.items() if k != cli.DEBUG_ENV},
            )
            for argv, _, _ in CASES
        ]
        out = {}
        for i, proc in enumerate(procs):
            stdout, stderr = proc.communicate(timeout=60)
            out[i] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert (VICTIM / "keep").read_text() == "precious"
    finally:
        (VICTIM / "keep").unlink()
        VICTIM.rmdir()
    return out


@pytest.mark.parametrize("i", range(len(CASES)), ids=[" ".join(c[0])[:40] for c in CASES])
def test_error_paths_exit_with_one_line(i: int, results: dict[int, subprocess.CompletedProcess[str]]) -> None:
    _argv, code, text = CASES[i]
    res = results[i]
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.endswith("\n")
    assert res.stderr.startswith("kvlab")
    assert text in res.stderr
    assert res.stdout == ""


def test_bad_input_creates_no_run_state(results: dict[int, subprocess.CompletedProcess[str]]) -> None:
    """None of the cases made a run directory or lock file for the names they gave."""
    root = Path(os.environ.get("KVLAB_RUN_DIR", "/run/kvlab"))
    assert not (root / UNKNOWN).exists()
    assert not (root / f".{UNKNOWN}.lock").exists()
    assert not (root / "a.b").exists()
    assert not Path(f"/tmp/{UNKNOWN}").exists()  # a refused import writes nothing


def _raising(exc: BaseException):  # type: ignore[no-untyped-def]
    def command(args: object) -> int:
        raise exc

    return command


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (UnknownLabError("no lab named 'x' is running"), 2, "kvlab: no lab named 'x' is running"),
        (BirdUnavailable("/run/kvlab/x/tor1/bird.ctl", "connection refused"), 1, "connection refused"),
        (BirdError(8001, "Protocol is down", "show route"), 1, "BIRD error 8001"),
        (WaitTimeout("every BGP session to be Established"), 1, "kvlab: every BGP session"),
        (LabError("it broke\nhalfway"), 1, "kvlab: it broke\\nhalfway"),
        (KeyboardInterrupt(), 130, "kvlab: interrupted"),
        (RuntimeError("surprise"), 1, "kvlab: internal error: RuntimeError: surprise (set KVLAB_DEBUG=1"),
    ],
)
def test_main_maps_errors_to_exit_codes(
    exc: BaseException,
    code: int,
    text: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr(cli, "cmd_status", _raising(exc))
    assert cli.main(["status"]) == code
    err = capsys.readouterr().err
    assert text in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_kvlab_debug_shows_the_traceback_of_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    monkeypatch.setattr(cli, "cmd_status", _raising(RuntimeError("surprise")))
    assert cli.main(["status"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "RuntimeError: surprise" in err
    assert err.rstrip().endswith("kvlab: internal error: RuntimeError: surprise")
