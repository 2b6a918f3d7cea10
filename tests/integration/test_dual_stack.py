"""Dual stack on real BIRD (`bird` and `bird6`): labs/dual-stack.yml, through the Lab interface.

- sessions: every router and node runs both daemons; every IPv4 and IPv6 session is Established;
- a live migration of vm1 (a QEMU guest) from r1-n1 to r2-n1 with one TCP canary per family:
  the VM's /32 and /128 both follow it (one best route each at spine1 via tor2, tagged
  65000:100), the target programs both at the elevated metric 512 and both return to 1024
  after the convergence time; neither canary loses a message or its connection;
- the IPv6 half of the seeds' `kubevirt-live-migration` BGPFilter (exportV6/importV6) proven by
  routes at the ToR and at a node of the other rack, and disproven by a copy of the resources
  whose v6 rules differ (the v4 rules stay as shipped: the v4 half still works there).

Scenario tests: they run on every runtime. The containerlab runtime renders dual-stack labs
(checked by the unit tests); the nightly is the first to run these there.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labfiles import lab_data

from harness import checks
from harness.lab import Lab
from harness.record import MigrationRecord
from harness.wait import eventually

pytestmark = pytest.mark.migration

VM4, VM6 = "203.0.113.10/32", "2001:db8:203:113::10/128"
TAG = "65000:100"
ROUTERS = ("tor1", "tor2", "spine1")
BIRD_INT_MAX = 2147483647
EBGP_LOCAL_PREF = 100


@pytest.fixture(scope="module")
def dual(kvlab_labs) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    """A private instance of labs/dual-stack.yml (vm1 a QEMU guest on r1-n1)."""
    lab = kvlab_labs(Path(__file__).resolve().parents[2] / "labs" / "dual-stack.yml", private=True)
    try:
        yield lab
    finally:
        kvlab_labs.release(lab)


def test_every_v4_and_v6_session_is_established(dual: Lab) -> None:
    sessions = dual.wait_established()
    by_family = {f: [s for s in sessions if s.family == f] for f in (4, 6)}
    assert all(s.established for s in sessions)
    assert len(by_family[6]) == len(by_family[4]) > 0
    # the same sessions in both daemons: every router and node runs bird and bird6
    assert {(s.router, s.name) for s in by_family[4] if s.router in ROUTERS} == {
        (s.router, s.name) for s in by_family[6] if s.router in ROUTERS
    }
    v6_peers = {s.peer for s in by_family[6]}
    assert "2001:db8::c612:20b" in v6_peers  # r2-n1's IPv6 twin of 198.18.2.11, seen by tor2
    assert len(dual.sessions_expected()) == 2 * len([e for e in dual.sessions_expected() if "/6" not in e])


@pytest.fixture(scope="module")
def migrated(dual: Lab) -> MigrationRecord:
    assert dual.vm_location("vm1")["node"] == "r1-n1"
    for prefix in (VM4, VM6):  # before: inside r1-n1's blocks, no host route at the fabric
        for router in ROUTERS:
            checks.no_route(dual, router, prefix)
    return dual.migrate("vm1", "r2-n1", canary="ext1")


def test_both_canaries_keep_their_connection(migrated: MigrationRecord) -> None:
    assert migrated.status == "completed", migrated.reason
    assert migrated.canaries is not None
    assert set(migrated.canaries) == {"4", "6"}
    for family, report in migrated.canaries.items():
        c = report.to_json()
        assert c["target"].startswith("2001:db8:203:113::10" if family == "6" else "203.0.113.10"), c[
            "target"
        ]
        assert (c["lost"], c["resets"], c["same_connection"]) == (0, 0, True), (family, c)
        assert c["sent"] > 0
        assert c["fresh_connection_ok"], (family, c)


def test_both_routes_follow_the_vm_elevated_then_normal(dual: Lab, migrated: MigrationRecord) -> None:
    assert migrated.status == "completed", migrated.reason
    checks.never_ecmp(migrated)
    for family in (4, 6):
        for router in ROUTERS:
            checks.target_preferred(dual, migrated, router, "r2-n1", family)
            checks.ended_via(dual, migrated, router, "r2-n1", community=TAG, family=family)
    # the record carries both families' route events: the agent's kernel routes and BIRD's views
    added = {e["prefix"] for e in migrated.events if e["kind"] == "route" and e.get("op") == "add"}
    assert {VM4, VM6} <= added
    # right after: spine1 has one best /32 and one best /128, via tor2, tagged
    spine_hop = {
        4: checks.hop_toward(dual, "spine1", "r2-n1", 4),
        6: checks.hop_toward(dual, "spine1", "r2-n1", 6),
    }
    for family, prefix in ((4, VM4), (6, VM6)):
        best = checks.best_via_node(dual, "spine1", prefix, "r2-n1", community=TAG)
        assert best.via == spine_hop[family]
        assert best.interface == "tor2"
        checks.elevated_toward(dual, "vm1", "r1-n1", "r2-n1", community=TAG, family=family)
        checks.kernel_route(dual, "r2-n1", prefix, metric=512, dev=dual.workload_interface("vm1", "r2-n1"))
    # after the convergence time: both back to 1024 on the target, untagged at spine1
    wait = dual.priorities("r2-n1").convergence + 10
    for family, prefix in ((4, VM4), (6, VM6)):
        assert dual.priorities("r2-n1", family).normal == 1024
        eventually(
            lambda p=prefix: checks.kernel_route(dual, "r2-n1", p, metric=1024),
            timeout=wait,
            interval=0.5,
            what=f"r2-n1's {prefix} to return to metric 1024",
        )
        eventually(
            lambda p=prefix: checks.best_via_node(dual, "spine1", p, "r2-n1", without_community=TAG),
            timeout=5,
            what=f"spine1's {prefix} to lose {TAG} and stay on rack 2",
        )


# -- the IPv6 half of the live-migration filter, at the ToR ---------------------------------

PROBE6 = "2001:db8:203:113::50/128"  # in r1-n2's block ::40/122: r1-n1 exports it as a /128
PROBE4 = "203.0.113.80/32"  # in r1-n2's block .64/26


def _filter_lab(name: str, v6_rules: dict[str, Any] | None) -> dict[str, Any]:
    """labs/dual-stack.yml as data (mock VM), its live-migration filter's v6 rules replaced."""
    data = lab_data("dual-stack")
    data["name"] = name
    for vm in data["vms"]:
        vm["backend"] = "mock"
    if v6_rules is not None:
        res = data["clusters"][0]["resources"]
        lm = next(
            r for r in res if r["kind"] == "BGPFilter" and r["metadata"]["name"] == "kubevirt-live-migration"
        )
        lm["spec"].update(copy.deepcopy(v6_rules))
    return data


# The copies: one whose v6 export rule matches priority 511 (nothing Felix programs), one whose v6
# import rule matches a community nobody adds. The v4 rules stay as shipped.
EXPORT_CHANGED = {
    "exportV6": [
        {
            "action": "Accept",
            "peerType": "eBGP",
            "priority": 511,
            "operations": [{"addCommunity": {"value": TAG}}],
        }
    ]
}
IMPORT_CHANGED = {
    "importV6": [
        {
            "action": "Accept",
            "communities": {"values": ["65000:999"]},
            "operations": [{"setPriority": {"value": 512}}],
        }
    ]
}


@pytest.fixture(scope="module")
def filter_labs(own_lab) -> dict[str, Lab]:  # type: ignore[no-untyped-def]
    return {
        "shipped": own_lab(_filter_lab("ds-filter", None)),
        "export": own_lab(_filter_lab("ds-filter-ex6", EXPORT_CHANGED)),
        "import": own_lab(_filter_lab("ds-filter-im6", IMPORT_CHANGED)),
    }


def _tor1_best(lab: Lab, prefix: str, *, tagged: bool) -> Any:
    kw = {"community": TAG} if tagged else {"without_community": TAG}
    return eventually(
        lambda: checks.best_via_node(lab, "tor1", prefix, "r1-n1", **kw),
        timeout=15,
        what=f"tor1 to get r1-n1's {prefix} {'tagged' if tagged else 'untagged'}",
    )


def _r2n1_metric(lab: Lab, prefix: str, metric: int) -> None:
    eventually(
        lambda: checks.kernel_route(lab, "r2-n1", prefix, metric=metric),
        timeout=15,
        what=f"r2-n1 to install {prefix} at metric {metric}",
    )


def test_shipped_v6_rules_carry_priority_across_racks(filter_labs: dict[str, Lab]) -> None:
    """r1-n1's elevated /128 reaches tor1 tagged 65000:100 (preference 200 there: the ToR's
    import filter) and r2-n1 installs it at 512 (importV6 restores the priority); a normal
    /128 goes untagged and is installed at the eBGP mapping."""
    lab = filter_labs["shipped"]
    with lab.add_test_route("r1-n1", PROBE6, dev="dsf0", metric=512):
        best = _tor1_best(lab, PROBE6, tagged=True)
        assert best.preference == 200, checks.describe([best])
        _r2n1_metric(lab, PROBE6, 512)
    eventually(lambda: checks.no_route(lab, "tor1", PROBE6), timeout=15, what="tor1 to drop the probe")
    with lab.add_test_route("r1-n1", PROBE6, dev="dsf0", metric=1024):
        best = _tor1_best(lab, PROBE6, tagged=False)
        assert best.preference == 100, checks.describe([best])
        _r2n1_metric(lab, PROBE6, BIRD_INT_MAX - EBGP_LOCAL_PREF)


def test_a_changed_v6_export_rule_no_longer_tags(filter_labs: dict[str, Lab]) -> None:
    """exportV6 matching priority 511: the elevated /128 reaches tor1 untagged (preference 100)
    and r2-n1 does not elevate it; its /32 twin is still tagged (exportV4 as shipped)."""
    lab = filter_labs["export"]
    with (
        lab.add_test_route("r1-n1", PROBE6, dev="dsf0", metric=512),
        lab.add_test_route("r1-n1", PROBE4, dev="dsf1", metric=512),
    ):
        best = _tor1_best(lab, PROBE6, tagged=False)
        assert best.preference == 100, checks.describe([best])
        _r2n1_metric(lab, PROBE6, BIRD_INT_MAX - EBGP_LOCAL_PREF)
        _tor1_best(lab, PROBE4, tagged=True)
        _r2n1_metric(lab, PROBE4, 512)


def test_a_changed_v6_import_rule_no_longer_restores_priority(filter_labs: dict[str, Lab]) -> None:
    """importV6 matching 65000:999: the elevated /128 still reaches tor1 tagged (exportV6 as
    shipped), but r2-n1 installs it at the eBGP mapping, not 512; its /32 twin at 512."""
    lab = filter_labs["import"]
    with (
        lab.add_test_route("r1-n1", PROBE6, dev="dsf0", metric=512),
        lab.add_test_route("r1-n1", PROBE4, dev="dsf1", metric=512),
    ):
        _tor1_best(lab, PROBE6, tagged=True)
        _r2n1_metric(lab, PROBE6, BIRD_INT_MAX - EBGP_LOCAL_PREF)
        _r2n1_metric(lab, PROBE4, 512)
