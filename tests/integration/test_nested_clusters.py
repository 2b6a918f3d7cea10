"""Nested clusters: Kubernetes clusters in VMs of a parent cluster peering
eBGP with the parent's workload peering IP (Calico's nested-cluster guide, labs/nested.yml).

- `nested`: labs/nested.yml as it is: clusters red and blue in vm-red and vm-blue on p1-n1,
  vm-green on p1-n2 selected by no BGPPeer; and, as a second parameter, labs/nested-qemu.yml,
  the same lab where red-n1 runs in a real QEMU guest (the netns runtime's VM backends differ;
  on another runtime every VM is the runtime's own real guest, so labs/nested.yml is all).
- `rogue`: the same lab where red and blue each add a second IP pool their parent never agreed
  to (each nested node holds a block of it, so it announces it, as a nested calico-node would);
  red's parent filter ends with a Reject (as labs/nested.yml), blue's is the guide's filter as
  written (an Accept and nothing else).
- a private copy of `nested` (each variant) for the live migration of a nested node's VM.

Scenario tests: they run on every runtime (`--runtime`) that can run nested labs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from labfiles import cluster_of, lab_data, resource, write_lab_data
from nestedlab import add_pool, addresses, assert_canary_clean, best, session_errors, sessions

from harness.birdc import Route
from harness.lab import Lab
from harness.wait import eventually

REPO = Path(__file__).resolve().parents[2]
NESTED = REPO / "labs" / "nested.yml"
NESTED_QEMU = REPO / "labs" / "nested-qemu.yml"  # red-n1 in a QEMU guest (netns)
PEERING_IP = "169.254.0.179"
PARENT_AS, TOR_AS = 64512, 65001
TOR_IP = "198.18.1.1"
NESTED_AS = {"red": 65101, "blue": 65102}
POOLS = {"red": "198.51.100.0/26", "blue": "198.51.100.64/26"}
ROGUE = {"red": "198.51.100.128/26", "blue": "198.51.100.192/26"}  # the unapproved pools' blocks
NODE_IP = {"p1-n1": "198.18.1.11", "p1-n2": "198.18.1.12"}
TIMEOUT = 20.0


def _variant(pytestconfig: pytest.Config, which: str) -> Path:
    """The lab file of a variant: 'mock' (labs/nested.yml) or 'qemu' (labs/nested-qemu.yml, on
    the netns runtime only: elsewhere every VM is a real guest already)."""
    if which == "mock":
        return NESTED
    if pytestconfig.getoption("--runtime") != "netns":
        pytest.skip("every VM is the runtime's own real guest here: labs/nested.yml covers it")
    return NESTED_QEMU


VARIANTS = pytest.mark.parametrize("variant", ["mock", "qemu"])


@pytest.fixture(scope="module", params=["mock", "qemu"])
def nested(kvlab_labs, pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> Lab:  # type: ignore[no-untyped-def]
    return kvlab_labs(_variant(pytestconfig, request.param))


# ---- sessions -----------------------------------------------------------------------------


def test_local_workload_sessions_are_established_for_selected_vms_only(nested: Lab) -> None:
    assert sessions(nested, "p1-n1") == {
        "Global_198_18_1_1": "Established",
        "Local_Workload_203_0_113_10": "Established",  # vm-red, color == 'red'
        "Local_Workload_203_0_113_11": "Established",  # vm-blue, color == 'blue'
    }
    assert sessions(nested, "p1-n2") == {"Global_198_18_1_1": "Established"}  # vm-green: no peer
    for node in ("red-n1", "blue-n1"):
        assert sessions(nested, node) == {"Global_169_254_0_179": "Established"}


def test_kvlab_status_lists_nested_clusters_with_their_parent(nested: Lab) -> None:
    status = nested.status()
    assert {c["name"]: c["parent"] for c in status["clusters"]} == {
        "parent": None,
        "red": "parent",
        "blue": "parent",
    }
    workload = [s for s in status["sessions"] if s["name"].startswith("Local_Workload_")]
    assert {(s["router"], s["peer"], s["state"]) for s in workload} == {
        ("p1-n1", "203.0.113.10", "Established"),
        ("p1-n1", "203.0.113.11", "Established"),
    }


def test_peering_ip_is_on_the_host_side_of_selected_workloads_only(nested: Lab) -> None:
    for vm in ("vm-red", "vm-blue"):
        assert f"{PEERING_IP}/32" in addresses(nested, "p1-n1", nested.workload_interface(vm)), vm
    assert f"{PEERING_IP}/32" not in addresses(nested, "p1-n2", nested.workload_interface("vm-green"))


# ---- routes -------------------------------------------------------------------------------


@pytest.mark.parametrize("cluster", ["red", "blue"])
def test_tor_learns_each_nested_pool_via_the_parent_node(nested: Lab, cluster: str) -> None:
    route = best(nested, "tor1", POOLS[cluster])
    assert route.via == NODE_IP["p1-n1"]
    assert route.as_path == (PARENT_AS, NESTED_AS[cluster])
    alternatives = nested.router("tor1").routes(POOLS[cluster])
    assert len(alternatives) == 1, f"one path only, got {alternatives}"


@pytest.mark.parametrize("cluster", ["red", "blue"])
def test_the_other_parent_node_learns_each_nested_pool_back_from_the_tor(nested: Lab, cluster: str) -> None:
    """The parent's ToR peer has numAllowedLocalASNumbers: 1: p1-n2 (no nested VM) takes tor1's
    route to each nested pool although its AS path carries the parent's own AS (BGP's loop check
    would drop it), as it must to reach a nested node's VM after it migrates away."""
    route = best(nested, "p1-n2", POOLS[cluster])
    assert route.via == TOR_IP
    assert route.as_path == (TOR_AS, PARENT_AS, NESTED_AS[cluster])


@pytest.mark.parametrize("cluster", ["red", "blue"])
def test_nested_pool_is_reachable_from_the_external_host(nested: Lab, cluster: str) -> None:
    assert_canary_clean(nested, "ext1", f"{cluster}-n1")


def test_parent_exports_nothing_to_nested_clusters(nested: Lab) -> None:
    for node in ("red-n1", "blue-n1"):
        learned = [r for r in nested.speaker(node).routes() if r.protocol == "Global_169_254_0_179"]
        assert learned == [], f"{node} learned {[r.prefix for r in learned]} from its parent"
    # ... while the parent does hold routes it could have sent (its blocks, the ToR's routes)
    assert best(nested, "p1-n1", "203.0.113.64/26").protocol == "Global_198_18_1_1"


def test_nested_pools_stay_with_their_own_cluster(nested: Lab) -> None:
    """red's pool never reaches blue through the parent (no-export), only the ToR gets both."""
    assert nested.speaker("blue-n1").best_route(POOLS["red"]) is None
    assert nested.speaker("red-n1").best_route(POOLS["blue"]) is None


# ---- a route outside the nested pool --------------------------------------------------------


def _rogue_spec(tmp: Path) -> Path:
    """labs/nested.yml with inline resources; red and blue each add a pool the parent does not
    accept, and blue's parent filter is the guide's (no trailing Reject)."""
    data = lab_data("nested")
    data["name"] = "nested-rogue"
    for cluster, cidr in ROGUE.items():
        add_pool(data, cluster, cidr)
    blue = resource(cluster_of(data, "parent"), "BGPFilter", "accept-nested-blue-pool")["spec"]
    blue["importV4"] = [r for r in blue["importV4"] if r["action"] != "Reject"]
    # A parent cluster name of its own: on the real stack this lab is a kind cluster beside the
    # module's nested lab (kind cluster names are machine-wide).
    for cluster in data["clusters"]:
        if cluster["name"] == "parent":
            cluster["name"] = "rogue-parent"
        elif cluster.get("parent") == "parent":
            cluster["parent"] = "rogue-parent"
    return write_lab_data(data, tmp / "nested-rogue.yml")


@pytest.fixture(scope="module")
def rogue(kvlab_labs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    lab = kvlab_labs(_rogue_spec(tmp_path_factory.mktemp("rogue")), private=True)
    yield lab
    kvlab_labs.release(lab)


def test_route_outside_the_nested_pool_is_refused_by_the_parent(rogue: Lab) -> None:
    # red announces it (its node holds a block of red's second pool) ...
    eventually(lambda: best(rogue, "red-n1", ROGUE["red"]), timeout=TIMEOUT, what="red-n1 to route it")
    # ... the parent accepts red's pool from the same session, and refuses the rogue route
    eventually(lambda: best(rogue, "p1-n1", POOLS["red"]), timeout=TIMEOUT, what="p1-n1 to learn red's pool")
    eventually(
        lambda: best(rogue, "p1-n1", ROGUE["blue"]), timeout=TIMEOUT, what="p1-n1 to learn blue's rogue pool"
    )  # the same moment's updates from red went through the same import filter
    assert rogue.speaker("p1-n1").routes(ROGUE["red"]) == []
    assert rogue.speaker("p1-n1").kernel_routes(ROGUE["red"]) == []
    assert rogue.router("tor1").routes(ROGUE["red"]) == []


def test_guide_filter_without_a_final_reject_lets_any_route_in(rogue: Lab) -> None:
    """The guide's accept-nested-ip-pools has one Accept rule; a route it does not match falls
    through to calico-node's default import (accept). The parent node installs blue's route
    from a pool nobody approved; export-to-tor still keeps it from the ToR."""
    route = eventually(
        lambda: best(rogue, "p1-n1", ROGUE["blue"]),
        timeout=TIMEOUT,
        what="p1-n1 to import blue's unapproved route",
    )
    assert route.protocol == "Local_Workload_203_0_113_11"
    assert route.as_path == (NESTED_AS["blue"],)
    assert rogue.speaker("p1-n1").kernel_routes(ROGUE["blue"]), "installed in the parent's kernel"
    assert rogue.router("tor1").routes(ROGUE["blue"]) == []


# ---- live migration of a nested node's VM ---------------------------------------------------


@pytest.mark.migration
@VARIANTS
def test_migrating_a_nested_nodes_vm_keeps_its_session_and_pool_reachable(  # type: ignore[no-untyped-def]
    kvlab_labs, pytestconfig: pytest.Config, variant: str
) -> None:
    lab = kvlab_labs(_variant(pytestconfig, variant), private=True)
    hold = 240.0  # BIRD's default hold time: the session must be back well within it
    with lab.canary("ext1", "red-n1") as probe, session_errors(lab, "red-n1") as errors:
        probe.wait_sent(5)
        record = lab.migrate("vm-red", "p1-n2")
        assert record.status == "completed"
        # lab.migrate follows a nested node's VM until its routing is back (drawn on the timeline)
        assert record.first(kind="phase", phase="nested session back on p1-n2"), record.reason
        assert record.first(kind="phase", phase="tor1: nested pool via p1-n2"), record.reason
        eventually(
            lambda: sessions(lab, "p1-n2").get("Local_Workload_203_0_113_10") == "Established",
            timeout=hold / 4,
            interval=0.2,
            what="red-n1's session to come back through p1-n2",
        )
        route = eventually(
            lambda: _via(lab, "tor1", POOLS["red"], NODE_IP["p1-n2"]),
            timeout=TIMEOUT,
            what="tor1 to reach red's pool via p1-n2",
        )
        # TCP retransmits (with backoff) until the pool is reachable again: wait for the echoes
        echoed = probe.progress["echoed"]
        probe.wait_for(
            lambda p: p["echoed"] > echoed + 5 and p["outstanding"] <= 2,
            timeout=hold / 4,
            what="the canary's echoes to catch up through p1-n2",
        )
        report = probe.stop()
    assert route.as_path == (PARENT_AS, NESTED_AS["red"])
    assert "Local_Workload_203_0_113_10" not in sessions(lab, "p1-n1")
    assert sessions(lab, "red-n1") == {"Global_169_254_0_179": "Established"}
    assert f"{PEERING_IP}/32" in addresses(lab, "p1-n2", lab.workload_interface("vm-red"))
    # the canary's one TCP connection survived: nothing lost, never reset
    assert report.same_connection, report.summary()
    assert report.resets == 0, report.summary()
    assert report.lost == 0, report.summary()
    assert report.max_gap_ms < hold * 1000, report.summary()
    # blue, still on p1-n1, was never disturbed
    assert sessions(lab, "p1-n1")["Local_Workload_203_0_113_11"] == "Established"
    # The old parent node's NOTIFICATION never reached red-n1 (its source, the peering IP, is
    # the new parent node's own address there: dropped as martian); red-n1 learned of the move
    # from the new parent node resetting its next keepalive's connection.
    assert errors, "red-n1's session never went down"
    assert not [e for e in errors if e.startswith("Received:")], f"a NOTIFICATION arrived: {errors}"
    assert [e for e in errors if e.startswith("Socket:")], errors


def _via(lab: Lab, router: str, prefix: str, gateway: str) -> Route:
    route = best(lab, router, prefix)
    assert route.via == gateway, f"{prefix} via {route.via}, expected {gateway}"
    return route
