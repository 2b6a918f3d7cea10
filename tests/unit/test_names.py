"""Instance names: one rule (the lab file's `name:`) for the CLI, pytest options and the API;
every path built from a name stays a direct child of the run root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import LabNameError, SpecError, UnknownLabError, UnsafePathError
from harness.generate import fabric_lab, write_lab
from harness.instances import down_lab
from harness.lab import Lab
from harness.labfile import load_lab
from harness.state import check_lab_name, lab_dir, lock_path, valid_lab_name

REPO = Path(__file__).resolve().parents[2]
VALID = ["a", "default", "single-rack", "r2-n1", "a--b", "x" * 32, "bench-nested-1a2b"]
INVALID = [
    "",
    "A",
    "Default",
    "1lab",
    "-lab",
    "lab-",
    "a.b",
    "a/b",
    "./../../tmp/x",
    "..",
    "a b",
    "a\n",
    "a\x00b",
    "x" * 33,
    "lab_1",
    "läb",
]


@pytest.fixture
def run_root(run_root: Path) -> Path:
    """The unit tests' private run directory (conftest), made."""
    run_root.mkdir()
    return run_root


@pytest.mark.parametrize("name", VALID)
def test_valid_names_pass(name: str) -> None:
    assert check_lab_name(name) == name


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names_are_refused_naming_the_option_and_the_rule(name: str) -> None:
    with pytest.raises(LabNameError) as err:
        check_lab_name(name, "--name")
    message = str(err.value)
    assert message.startswith("--name: ")
    assert "lowercase letters, digits and '-'" in message
    assert "32 characters" in message
    assert "\n" not in message  # a hostile name cannot break the one-line message


@pytest.mark.parametrize("name", VALID[:4] + INVALID[1:13])  # fabric_lab: "" = its default
def test_the_rule_is_the_lab_files_name_rule(name: str, tmp_path: Path) -> None:
    """What check_lab_name accepts is exactly what a lab file's `name:` accepts."""
    path = write_lab(fabric_lab(1, 1, name=name), tmp_path / "lab.yml")
    if valid_lab_name(name):
        assert load_lab(path).name == name
    else:
        with pytest.raises(SpecError) as err:
            load_lab(path)
        assert [i.path for i in err.value.issues] == ["name"]


def test_long_hostile_names_are_shortened_in_the_message() -> None:
    with pytest.raises(LabNameError) as err:
        check_lab_name("a." * 10_000)
    assert len(str(err.value)) < 300


@pytest.mark.parametrize("name", ["./../../tmp/x", "a.b", "..", ""])
def test_paths_from_bad_names_are_never_built(name: str, run_root: Path) -> None:
    with pytest.raises(LabNameError):
        lab_dir(name)
    with pytest.raises(LabNameError):
        lock_path(name)


def test_a_symlinked_run_directory_is_refused(run_root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_root / "evil").symlink_to(elsewhere)
    with pytest.raises(UnsafePathError, match="outside the run directory"):
        lab_dir("evil")
    (run_root / ".evil2.lock").symlink_to(elsewhere / "file")
    with pytest.raises(UnsafePathError):
        lock_path("evil2")
    assert lab_dir("fine") == run_root / "fine"


def test_the_api_refuses_bad_names_and_deletes_nothing(run_root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    escape = f"./../{victim.name}"  # relative to the run root: would name `victim`
    spec = load_lab(write_lab(fabric_lab(1, 1, name="small"), tmp_path / "small.yml"))
    with pytest.raises(LabNameError, match="name: "):
        Lab(spec, name=escape)
    with pytest.raises(LabNameError):
        Lab(spec, name="a.b")
    with pytest.raises(LabNameError):
        Lab.attach(escape)
    with pytest.raises(LabNameError):
        down_lab(escape)
    assert (victim / "keep").read_text() == "precious"
    assert list(run_root.iterdir()) == []


def test_unique_names_follow_the_rule() -> None:
    assert valid_lab_name(Lab.unique_name("default"))
    assert valid_lab_name(Lab.unique_name("x" * 40))
    with pytest.raises(LabNameError):
        Lab.unique_name("Bad.Base")


def test_attach_to_an_unknown_lab_is_bad_input(run_root: Path) -> None:
    with pytest.raises(UnknownLabError, match="no lab named 'nosuchlab' is running"):
        Lab.attach("nosuchlab")


def test_down_of_an_unknown_lab_creates_nothing(run_root: Path) -> None:
    assert down_lab("nosuchlab") is False
    assert list(run_root.iterdir()) == []


@pytest.mark.parametrize(("value", "code"), [("../../etc/x", 4), ("a.b", 4), ("single-rack", 0)])
def test_pytest_lab_option_follows_the_rule_when_it_is_a_name(value: str, code: int) -> None:
    """`pytest --lab` is a lab file or a lab's name: anything else is a usage error (exit 4)."""
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q", "--lab", value, __file__],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert res.returncode == code, res.stdout + res.stderr
    if code:
        assert f"--lab: {value!r} is no lab file and not a valid lab name" in res.stderr
