"""Two labs up at once on one machine: every command names its lab the same way (`--lab NAME`,
or the positional LAB where a command had it), each acts on its own lab only, and a command that
names none exits 2 listing the labs that run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import kvlab

from harness.lab import Lab

pytestmark = [
    pytest.mark.netns,
    pytest.mark.netns_only("runs two instances of a lab side by side (the netns runtime's --name)"),
]


@pytest.fixture(scope="module")
def two_labs() -> Iterator[tuple[str, str]]:
    a, b = Lab.unique_name("sel-a"), Lab.unique_name("sel-b")
    try:
        kvlab("up", "labs/single-rack.yml", "--name", a)
        kvlab("up", "--lab", "labs/single-rack.yml", "--name", b)
        yield a, b
    finally:
        kvlab("down", "--lab", a, check=False)
        kvlab("down", b, check=False)


def test_status_names_the_lab_either_way(two_labs: tuple[str, str]) -> None:
    a, b = two_labs
    for argv in (["status", "--lab", a, "--json"], ["status", a, "--json"]):
        doc = json.loads(kvlab(*argv).stdout)
        assert doc["lab"] == a
        assert all(s["state"] == "Established" for s in doc["sessions"]), doc["sessions"]
    assert json.loads(kvlab("status", "--lab", b, "--json").stdout)["lab"] == b


def test_without_a_name_the_choice_is_listed(two_labs: tuple[str, str]) -> None:
    a, b = two_labs
    for argv in (["status"], ["routes", "tor1"], ["migrate", "vm1", "--to", "r1-n2"], ["down"], ["diag"]):
        res = kvlab(*argv, check=False)
        assert res.returncode == 2, (argv, res.stderr)
        assert "labs are running" in res.stderr
        assert a in res.stderr
        assert b in res.stderr
        assert res.stderr.count("\n") == 1
    assert json.loads(kvlab("status", "--lab", a, "--json").stdout)["lab"] == a  # nothing was torn down


def test_routes_migrate_and_diag_act_on_the_named_lab_only(two_labs: tuple[str, str], tmp_path: Path) -> None:
    a, b = two_labs
    routes = json.loads(kvlab("routes", "tor1", "203.0.113.0/26", "--lab", b, "--json").stdout)
    assert any(r["best"] for r in routes), routes
    rec = json.loads(kvlab("migrate", "vm1", "--to", "r1-n2", "--lab", a, "--json").stdout)
    assert (rec["status"], rec["target"]) == ("completed", "r1-n2")
    where = {
        lab: {v["name"]: v["node"] for v in json.loads(kvlab("status", "--lab", lab, "--json").stdout)["vms"]}
        for lab in (a, b)
    }
    assert where == {a: {"vm1": "r1-n2"}, b: {"vm1": "r1-n1"}}
    out = kvlab("diag", "--lab", b, "--out", str(tmp_path)).stdout.strip()
    assert b in out
    assert Path(out).exists()


def test_as_customer_needs_an_imported_lab(two_labs: tuple[str, str]) -> None:
    a, _ = two_labs
    res = kvlab("status", "--lab", a, "--as-customer", check=False)
    assert res.returncode == 2
    assert "was not made by 'kvlab import' (no customer-map.yaml next to it)" in res.stderr


def test_validate_and_render_take_a_running_lab_by_name(two_labs: tuple[str, str], tmp_path: Path) -> None:
    a, _ = two_labs
    assert "valid lab 'single-rack'" in kvlab("validate", "--lab", a).stderr
    kvlab("render", "--lab", a, "--out", str(tmp_path))
    assert (tmp_path / "tor1.conf").exists() or any(tmp_path.rglob("*.conf"))
