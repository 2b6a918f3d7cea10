"""Acceptance of `kvlab import` (issue 16): the customer-style dump of tests/data/customer
imported, brought up with `kvlab up`, every BGP session Established (route reflectors included),
an imported VM live-migrated across racks with the canary, and `--as-customer` showing the
customer's own prefixes. Through the CLI, as a user does it."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import REPO
from clirun import kvlab as run_kvlab

from harness.lab import Lab

pytestmark = [
    pytest.mark.netns,
    pytest.mark.migration,
    pytest.mark.netns_only("runs `kvlab import` + `kvlab up` of an imported lab with route reflectors"),
]
DATA = REPO / "tests" / "data" / "customer"


def kvlab(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_kvlab(*argv, check=check, timeout=600)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    out = tmp_path_factory.mktemp("acme") / "acme"
    path = kvlab(
        "import",
        *("--nodes", str(DATA / "nodes.yaml"), "--calico", str(DATA / "calico.yaml")),
        *(
            "--vmis",
            str(DATA / "vmis.yaml"),
            "--tor",
            str(DATA / "tor-a.conf"),
            "--tor",
            str(DATA / "tor-d.conf"),
        ),
        *("--out", str(out)),
    ).stdout.strip()
    name = Lab.unique_name("acme")
    try:
        kvlab("up", path, "--name", name)
        yield name, Path(path)
    finally:
        kvlab("down", "--lab", name, check=False)


def status(name: str, *extra: str) -> dict:  # type: ignore[type-arg]
    return json.loads(kvlab("status", "--lab", name, "--json", *extra).stdout)


def test_every_session_established_route_reflectors_included(imported: tuple[str, Path]) -> None:
    name, _ = imported
    doc = status(name)
    sessions = doc["sessions"]
    assert all(s["state"] == "Established" for s in sessions), [
        s for s in sessions if s["state"] != "Established"
    ]
    assert len(doc["nodes"]) == 10
    assert {n["rack"] for n in doc["nodes"]} == {"rack-a", "rack-b", "rack-c", "rack-d"}
    by_router: dict[str, set[str]] = {}
    for s in sessions:
        by_router.setdefault(s["router"], set()).add(s["peer"])
    # rack-a's worker peers with its ToR and both route reflectors; the reflectors with each other
    assert by_router["kv-a-w-1"] == {"198.18.1.1", "198.18.1.21", "198.18.1.22"}
    assert {"198.18.1.22", "198.18.1.23"} <= by_router["kv-a-rr-1"]
    assert by_router["tor-rack-b"] >= {f"198.18.2.{i}" for i in (21, 22, 23, 24)}


def test_an_imported_vm_migrates_across_racks_with_the_canary(imported: tuple[str, Path]) -> None:
    name, _ = imported
    rec = json.loads(
        kvlab("migrate", "web-1", "--to", "kv-d-w-1", "--lab", name, "--canary", "ext1", "--json").stdout
    )
    assert (rec["status"], rec["source"], rec["target"]) == ("completed", "kv-b-w-2", "kv-d-w-1"), rec[
        "reason"
    ]
    c = rec["canary"]
    assert (c["lost"], c["resets"], c["same_connection"], c["fresh_connection_ok"]) == (0, 0, True, True), c
    routes = json.loads(kvlab("routes", "spine1", rec["ip"] + "/32", "--lab", name, "--json").stdout)
    best = [r for r in routes if r["best"]]
    assert len(best) == 1
    assert best[0]["protocol"] == "bgp_tor_rack_d"
    assert "65000:100" in best[0]["communities"]
    # and back, named the customer's way
    back = kvlab(
        "migrate",
        "shop/web-1",
        "--to",
        "kv-b-w-2.dc1.acme.example",
        "--lab",
        name,
        "--canary",
        "ext1",
        "--json",
        "--as-customer",
    )
    rec = json.loads(back.stdout)
    assert (rec["status"], rec["target"], rec["ip"]) == ("completed", "kv-b-w-2", "10.244.7.70"), rec[
        "reason"
    ]


def test_as_customer_shows_the_customers_prefixes(imported: tuple[str, Path]) -> None:
    name, _ = imported
    lab_doc, customer = status(name), status(name, "--as-customer")
    vms = {v["name"]: v["ip"] for v in customer["vms"]}
    assert vms == {"web-1": "10.244.7.70", "db-primary": "10.244.3.200", "vm3": "10.244.12.9"}
    assert {n["ip"] for n in customer["nodes"]} >= {"10.20.1.21", "10.20.2.22", "10.20.4.21"}
    assert customer["clusters"][0]["pools"] == ["10.244.0.0/16"]
    assert {s["peer"] for s in customer["sessions"] if s["router"] == "kv-d-w-1"} == {"10.20.4.254"}
    for n in lab_doc["nodes"]:
        assert ipaddress.IPv4Address(n["ip"]) in ipaddress.IPv4Network("198.18.0.0/15")
    routes = json.loads(
        kvlab("routes", "tor-rack-b", "10.244.7.70/32", "--lab", name, "--json", "--as-customer").stdout
    )
    assert [(r["prefix"], r["via"]) for r in routes if r["best"]] == [("10.244.7.70/32", "10.20.2.22")]
    text = kvlab("status", "--lab", name, "--as-customer").stdout
    assert "10.20.2.254/24" in text  # rack-b's ToR as the customer numbers it
    assert "198.18.2.1" not in text
