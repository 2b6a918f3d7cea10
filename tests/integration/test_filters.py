"""BGPFilter rules and Calico route priority on real BIRD (netns runtime).

Three small labs, each brought up once for this module:

- `language`: one rack, two nodes peering eBGP with tor1 and iBGP with each other (a global
  BGPPeer with a peerSelector), both sessions carrying the BGPFilters `lang-a` then `lang-b`.
  Every rule acts on its own prefixes, and each test checks what tor1 (or the other node)
  receives from the node the routes were added on.
- `priority`: two racks with the seed's `kubevirt-live-migration` filter on the ToR peers.
- `mesh`: one rack with the node-to-node mesh and no filter.

Routes are added the way Felix adds them: kernel routes in the node's namespace (protocol
boot), on interfaces of their own, with metric 512 (elevated) or 1024 (normal).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import netlink
from harness.birdc import Route
from harness.calico import seeds
from harness.generate import fabric_lab, write_lab
from harness.kernel import KernelRoute
from harness.lab import Lab
from harness.wait import eventually

pytestmark = [
    pytest.mark.netns,
    pytest.mark.netns_only(
        "programs Felix-style kernel routes on veth devices it adds by netlink inside node namespaces"
    ),
]

API = "projectcalico.org/v3"
TIMEOUT = 15.0
BIRD_INT_MAX = 2147483647
EBGP_LOCAL_PREF = 100  # what BIRD gives every route it receives over eBGP


@dataclass(frozen=True)
class AddedRoute:
    """A route the test programs into a node's kernel, as Felix would."""

    node: str
    prefix: str
    dev: str = "flt0"
    metric: int = 1024


# ---- lab data -----------------------------------------------------------------------------


def _filter(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "BGPFilter", "metadata": {"name": name}, "spec": spec}


def _resource(data: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    res = data["clusters"][0]["resources"]
    return next(r for r in res if r["kind"] == kind and r["metadata"]["name"] == name)


def _eq(cidr: str) -> dict[str, str]:
    return {"cidr": cidr, "matchOperator": "Equal"}


def _in(cidr: str) -> dict[str, str]:
    return {"cidr": cidr, "matchOperator": "In"}


LANG_A = _filter(
    "lang-a",
    exportV4=[
        {"action": "Reject", **_in("203.0.113.160/29")},
        {"action": "Accept", **_eq("203.0.113.16/32")},
        {"action": "Reject", "interface": "ne0", "cidr": "203.0.113.176/32", "matchOperator": "NotEqual"},
        {"action": "Reject", "interface": "nin0", "cidr": "203.0.113.184/29", "matchOperator": "NotIn"},
        {"action": "Accept", **_in("203.0.113.32/28"), "prefixLength": {"min": 30, "max": 31}},
        {"action": "Reject", "interface": "ifr*"},
        {"action": "Accept", "source": "RemotePeers", **_in("198.51.100.128/25")},
        {"action": "Accept", "peerType": "iBGP", **_in("198.51.100.128/25")},
        {"action": "Reject", "peerType": "iBGP", **_eq("203.0.113.208/32")},
        {"action": "Reject", "peerType": "eBGP", **_eq("203.0.113.209/32")},
        {
            "action": "Accept",
            "priority": 512,
            **_in("203.0.113.212/31"),
            "operations": [
                {"addCommunity": {"value": "64512:512"}},
                {"addCommunity": {"value": "64512:1:2"}},
            ],
        },
        {
            "action": "Accept",
            **_eq("203.0.113.214/32"),
            "operations": [{"prependASPath": {"prefix": [64999, 64998]}}],
        },
        {"action": "Accept", **_eq("203.0.113.215/32"), "operations": [{"setPriority": {"value": 300}}]},
        {"action": "Reject", "communities": {"values": ["64512:7"]}},
        # On eBGP export BIRD 1.6 has put the node's own AS in front before filters run.
        {"action": "Reject", "asPathPrefix": [64999]},
        {"action": "Reject", "asPathPrefix": [64512, 64998]},
        {
            "action": "Accept",
            "peerType": "iBGP",
            **_eq("203.0.113.224/32"),
            "operations": [{"addCommunity": {"value": "64512:7"}}],
        },
        {"action": "Accept", "peerType": "iBGP", **_eq("203.0.113.225/32")},
        {
            "action": "Accept",
            "peerType": "iBGP",
            **_eq("203.0.113.228/32"),
            "operations": [{"prependASPath": {"prefix": [64999]}}],
        },
        {
            "action": "Accept",
            "peerType": "iBGP",
            **_eq("203.0.113.229/32"),
            "operations": [{"prependASPath": {"prefix": [64998]}}],
        },
        {"action": "Accept", **_eq("203.0.113.220/32")},
        {"action": "Reject", **_eq("203.0.113.240/29"), "prefixLength": {"min": 32}},
        {
            "action": "Accept",
            "interface": "qk0",
            "cidr": "203.0.113.48/29",
            "matchOperator": "NotEqual",
            "prefixLength": {"min": 32},
        },
    ],
    importV4=[
        {
            "action": "Accept",
            "asPathPrefix": [65001, 65100],
            "operations": [{"addCommunity": {"value": "64512:65"}}],
        },
    ],
)
LANG_B = _filter(
    "lang-b",
    exportV4=[
        {"action": "Reject", **_in("203.0.113.220/31")},
        {"action": "Accept", **_eq("203.0.113.24/32")},
    ],
)
SEED_FILTER = seeds.kubevirt_live_migration_filter()


def language_lab() -> dict[str, Any]:
    """One rack (r1-n1: 203.0.113.0/25, r1-n2: 203.0.113.128/25), filters on every session."""
    data = fabric_lab(1, 2, name="flt-lang")
    tor_peer = _resource(data, "BGPPeer", "rack-r1-tor")["spec"]
    # Without allowing its own AS back, a node ignores what tor1 reflects from the other node.
    del tor_peer["numAllowedLocalASNumbers"]
    tor_peer["filters"] = ["lang-a", "lang-b"]
    data["clusters"][0]["resources"] += [
        copy.deepcopy(LANG_A),
        copy.deepcopy(LANG_B),
        {
            "apiVersion": API,
            "kind": "BGPPeer",
            "metadata": {"name": "rack-r1-nodes"},
            "spec": {"peerSelector": "rack == 'r1'", "filters": ["lang-a", "lang-b"]},
        },
    ]
    return data


def priority_lab() -> dict[str, Any]:
    """Two racks (blocks /26: r1-n1 .0, r1-n2 .64, r2-n1 .128, r2-n2 .192), seed filter on the ToRs."""
    data = fabric_lab(2, 2, name="flt-prio")
    for rack in ("r1", "r2"):
        _resource(data, "BGPPeer", f"rack-{rack}-tor")["spec"]["filters"] = ["kubevirt-live-migration"]
    assert SEED_FILTER in data["clusters"][0]["resources"]  # fabric_lab carries the seed filter
    return data


def mesh_lab() -> dict[str, Any]:
    """One rack with the node-to-node mesh on and no BGPFilter anywhere."""
    data = fabric_lab(1, 2, name="flt-mesh")
    _resource(data, "BGPConfiguration", "default")["spec"]["nodeToNodeMeshEnabled"] = True
    _resource(data, "BGPPeer", "rack-r1-tor")["spec"].pop("filters")
    data["clusters"][0]["resources"].remove(SEED_FILTER)
    return data


# Routes are added in list order: those a test expects to be missing come before those it
# waits for, so once the later ones arrived the earlier ones went through the same filters.
LANGUAGE_ROUTES = [
    AddedRoute("r1-n1", "203.0.113.161/32"),
    AddedRoute("r1-n1", "203.0.113.17/32"),
    AddedRoute("r1-n1", "203.0.113.177/32", dev="ne0"),
    AddedRoute("r1-n1", "203.0.113.196/32", dev="nin0"),
    AddedRoute("r1-n1", "203.0.113.36/32"),
    AddedRoute("r1-n1", "203.0.113.40/29"),
    AddedRoute("r1-n1", "203.0.113.210/32", dev="ifr0"),
    AddedRoute("r1-n1", "203.0.113.209/32"),
    AddedRoute("r1-n1", "203.0.113.221/32"),
    AddedRoute("r1-n2", "203.0.113.224/32"),
    AddedRoute("r1-n2", "203.0.113.229/32"),
    AddedRoute("r1-n1", "203.0.113.176/32", dev="ne0"),
    AddedRoute("r1-n1", "203.0.113.185/32", dev="nin0"),
    AddedRoute("r1-n1", "203.0.113.32/31"),
    AddedRoute("r1-n1", "203.0.113.208/32"),
    AddedRoute("r1-n1", "203.0.113.212/32", metric=512),
    AddedRoute("r1-n1", "203.0.113.213/32"),
    AddedRoute("r1-n1", "203.0.113.214/32"),
    AddedRoute("r1-n1", "203.0.113.215/32"),
    AddedRoute("r1-n1", "203.0.113.220/32"),
    AddedRoute("r1-n1", "203.0.113.24/32"),
    AddedRoute("r1-n1", "203.0.113.241/32"),
    AddedRoute("r1-n1", "203.0.113.49/32", dev="qk0"),
    AddedRoute("r1-n1", "203.0.113.16/32"),
    AddedRoute("r1-n2", "198.51.100.130/32"),
    AddedRoute("r1-n2", "203.0.113.228/32"),
    AddedRoute("r1-n2", "203.0.113.225/32"),
    AddedRoute("r1-n1", "203.0.113.200/32"),
]
PRIORITY_ROUTES = [
    AddedRoute("r1-n1", "203.0.113.21/32", metric=1024),  # own block, normal
    AddedRoute("r1-n1", "203.0.113.20/32", metric=512),  # own block, elevated
    AddedRoute("r1-n1", "203.0.113.71/32", metric=1024),  # r1-n2's block, normal
    AddedRoute("r1-n1", "203.0.113.70/32", metric=512),  # r1-n2's block, elevated
]
MESH_ROUTES = [
    AddedRoute("r1-n1", "203.0.113.21/32", metric=1024),  # own block, normal
    AddedRoute("r1-n1", "203.0.113.20/32", metric=512),  # own block, elevated
    AddedRoute("r1-n1", "203.0.113.201/32", metric=1024),  # r1-n2's block, normal
    AddedRoute("r1-n1", "203.0.113.200/32", metric=512),  # r1-n2's block, elevated
]


# ---- helpers --------------------------------------------------------------------------------


def add_routes(lab: Lab, routes: list[AddedRoute]) -> None:
    """Program the routes like Felix does: a device per route group, then routes with a metric.

    The devices are veth pairs with both ends in the node (the kernel here may lack `dummy`).
    """
    for node, dev in sorted({(r.node, r.dev) for r in routes}):
        ns = lab.runtime.ns(node)  # type: ignore[attr-defined]
        with netlink.ipr(ns) as ip:
            if not ip.link_lookup(ifname=dev):
                ip.link("add", ifname=dev, kind="veth", peer={"ifname": f"{dev}p"})
        netlink.link_up(ns, f"{dev}p")
        netlink.link_up(ns, dev)
    for r in routes:
        netlink.add_route(lab.runtime.ns(r.node), r.prefix, dev=r.dev, metric=r.metric)  # type: ignore[attr-defined]


def protocol_of(node: str) -> str:
    """The name of a router's BGP protocol towards a node."""
    return "bgp_" + node.replace("-", "_")


def session(lab: Lab, kind: str, peer: str) -> str:
    """The name of a node's BGP protocol towards a peer: `Global_<ip>` (the node BGPPeer of
    lab `language`), `Mesh_<ip>`, or `Node_<ip>` for its rack's ToR."""
    ip = lab.topo.tor_address[peer].ip if kind == "Node" else lab.topo.node_address[peer].ip
    return f"{kind}_{str(ip).replace('.', '_')}"


def from_speaker(routes: list[Route], protocol: str) -> Route | None:
    return next((r for r in routes if r.protocol == protocol), None)


def learned(lab: Lab, speaker: str, prefix: str, protocol: str) -> Route:
    """The route `speaker` has for `prefix` over `protocol`, waited for (routes that cross two
    hops, e.g. r1-n2 -> r1-n1 -> tor1, may arrive after the fixture's own wait)."""
    return wait_for(lab, speaker, prefix, protocol)


def wait_for(lab: Lab, speaker: str, prefix: str, protocol: str) -> Route:
    """Wait until `speaker` has a route for `prefix` learned over `protocol`."""

    def check() -> Route:
        route = from_speaker(lab.speaker(speaker).routes(prefix), protocol)
        assert route is not None, f"{speaker} has no {prefix} from {protocol}"
        return route

    return eventually(check, timeout=TIMEOUT, what=f"{speaker} to learn {prefix} over {protocol}")


def wait_kernel(lab: Lab, node: str, prefix: str, metric: int) -> KernelRoute:
    """Wait until BIRD programmed `prefix` into the node's kernel at `metric`."""

    def check() -> KernelRoute:
        found = [r for r in lab.node(node).kernel_routes(prefix) if r.protocol == "bird"]
        assert [r.metric for r in found] == [metric], f"{node}: {prefix} from BIRD: {found}"
        return found[0]

    return eventually(check, timeout=TIMEOUT, what=f"{node} to program {prefix} at metric {metric}")


def has_route(lab: Lab, speaker: str, prefix: str, protocol: str) -> bool:
    return from_speaker(lab.speaker(speaker).routes(prefix), protocol) is not None


@pytest.fixture(scope="module")
def tmp_labs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flt")


@contextmanager
def running(data: dict[str, Any], path: Path, routes: list[AddedRoute]) -> Iterator[Lab]:
    """A private lab instance with the routes added; torn down on exit, whatever happens."""
    write_lab(data, path)
    with Lab.from_file(path, name=Lab.unique_name("flt"), owner_pid=os.getpid()) as lab:
        add_routes(lab, routes)
        yield lab


@pytest.fixture(scope="module")
def language(tmp_labs: Path) -> Iterator[Lab]:
    with running(language_lab(), tmp_labs / "language.yml", LANGUAGE_ROUTES) as lab:
        # The last routes added: once they arrived, everything before went through the filters.
        wait_for(lab, "tor1", "203.0.113.200/32", protocol_of("r1-n1"))
        wait_for(lab, "r1-n1", "203.0.113.225/32", session(lab, "Global", "r1-n2"))
        wait_for(lab, "tor1", "198.51.100.130/32", protocol_of("r1-n1"))
        yield lab


@pytest.fixture(scope="module")
def priority(tmp_labs: Path) -> Iterator[Lab]:
    with running(priority_lab(), tmp_labs / "priority.yml", PRIORITY_ROUTES) as lab:
        wait_for(lab, "tor1", "203.0.113.70/32", protocol_of("r1-n1"))
        yield lab


@pytest.fixture(scope="module")
def mesh(tmp_labs: Path) -> Iterator[Lab]:
    with running(mesh_lab(), tmp_labs / "mesh.yml", MESH_ROUTES) as lab:
        wait_for(lab, "tor1", "203.0.113.200/32", protocol_of("r1-n1"))
        yield lab


# ---- the filter language (lab `language`) -------------------------------------------------
#
# r1-n1 owns 203.0.113.0/25, r1-n2 owns 203.0.113.128/25. By default (no rule matching) a /32
# in the other node's block reaches tor1, one in the node's own block does not (aggregation).


def from_r1_n1(lab: Lab, prefix: str, at: str = "tor1") -> Route:
    """The route `at` (tor1 or r1-n2) has for `prefix` from r1-n1."""
    return learned(lab, at, prefix, protocol_of("r1-n1") if at == "tor1" else session(lab, "Global", "r1-n1"))


def assert_tor_lacks(lab: Lab, *prefixes: str) -> None:
    for prefix in prefixes:
        assert lab.router("tor1").routes(prefix) == [], f"tor1 should not have {prefix}"


def test_cidr_in_reject(language: Lab) -> None:
    """`cidr` In + Reject: a /32 inside 203.0.113.160/29 is withheld; a neighbour outside is not."""
    assert_tor_lacks(language, "203.0.113.161/32")
    from_r1_n1(language, "203.0.113.200/32")


def test_cidr_equal_accept_skips_aggregation(language: Lab) -> None:
    """`cidr` Equal + Accept on a /32 of r1-n1's own block: Accept ends the filter before
    `calico_aggr`, so tor1 gets it; the /32 next to it is aggregated as usual."""
    from_r1_n1(language, "203.0.113.16/32")
    assert_tor_lacks(language, "203.0.113.17/32")


def test_cidr_not_equal(language: Lab) -> None:
    """NotEqual 203.0.113.176/32 + Reject (on ne0): every route but .176 is rejected."""
    from_r1_n1(language, "203.0.113.176/32")
    assert_tor_lacks(language, "203.0.113.177/32")


def test_cidr_not_in(language: Lab) -> None:
    """NotIn 203.0.113.184/29 + Reject (on nin0): routes outside the CIDR are rejected."""
    from_r1_n1(language, "203.0.113.185/32")
    assert_tor_lacks(language, "203.0.113.196/32")


def test_prefix_length(language: Lab) -> None:
    """In 203.0.113.32/28 with prefixLength 30..31 + Accept: only the /31 escapes aggregation."""
    from_r1_n1(language, "203.0.113.32/31")
    assert_tor_lacks(language, "203.0.113.36/32", "203.0.113.40/29")


def test_equal_with_prefix_length_never_matches(language: Lab) -> None:
    """Calico quirk: Equal + prefixLength compares a prefix with a set and never matches, so
    `Reject Equal 203.0.113.240/29{32,32}` lets 203.0.113.241/32 through."""
    from_r1_n1(language, "203.0.113.241/32")


def test_not_equal_with_prefix_length_always_matches(language: Lab) -> None:
    """Calico quirk: NotEqual + prefixLength always matches, even a route inside the set:
    `Accept NotEqual 203.0.113.48/29{32,32}` accepts 203.0.113.49/32 (r1-n1's own block)."""
    from_r1_n1(language, "203.0.113.49/32")


def test_interface(language: Lab) -> None:
    """`interface: "ifr*"` (a BIRD pattern) + Reject: the route via ifr0 is withheld."""
    assert_tor_lacks(language, "203.0.113.210/32")
    from_r1_n1(language, "203.0.113.200/32")  # same block, device flt0


def test_source_remote_peers(language: Lab) -> None:
    """`source: RemotePeers`: r1-n1 passes on 198.51.100.130/32, which it learned from r1-n2
    over iBGP; r1-n2, which has it from its kernel, does not send it to tor1 (outside every
    pool, and its rule for it is iBGP-only)."""
    learned(language, "r1-n1", "198.51.100.130/32", session(language, "Global", "r1-n2"))
    routes = language.router("tor1").routes("198.51.100.130/32")
    assert [r.protocol for r in routes] == [protocol_of("r1-n1")], routes


def test_peer_type(language: Lab) -> None:
    """`peerType`: the iBGP-only Reject of .208 spares tor1 and hits r1-n2; the eBGP-only
    Reject of .209 is the other way round."""
    from_r1_n1(language, "203.0.113.208/32")
    assert not has_route(language, "r1-n2", "203.0.113.208/32", session(language, "Global", "r1-n1"))
    assert_tor_lacks(language, "203.0.113.209/32")
    from_r1_n1(language, "203.0.113.209/32", at="r1-n2")


def test_priority_and_add_community(language: Lab) -> None:
    """`priority: 512` matches the metric-512 route only; its `addCommunity` operations add a
    standard and a large community."""
    elevated = from_r1_n1(language, "203.0.113.212/32")
    assert elevated.communities == ((64512, 512),)
    assert elevated.large_communities == ((64512, 1, 2),)
    normal = from_r1_n1(language, "203.0.113.213/32")
    assert normal.communities == ()
    assert normal.large_communities == ()


def test_prepend_as_path(language: Lab) -> None:
    """`prependASPath [64999, 64998]`: the path starts with the listed order. BIRD 1.6 puts the
    node's AS on an eBGP route before export filters run, so tor1 sees it after them."""
    assert from_r1_n1(language, "203.0.113.214/32").as_path == (64999, 64998, 64512)
    assert from_r1_n1(language, "203.0.113.214/32", at="r1-n2").as_path == (64999, 64998)


def test_set_priority_on_export(language: Lab) -> None:
    """`setPriority 300` on export sets local_pref 2147483647 - 300; over iBGP r1-n2 keeps it,
    prefers the route (preference 200, above normal) and programs metric 300. eBGP does not
    carry local_pref: tor1 has BIRD's default 100."""
    route = from_r1_n1(language, "203.0.113.215/32", at="r1-n2")
    assert route.local_pref == BIRD_INT_MAX - 300
    assert route.preference == 200
    kernel = wait_kernel(language, "r1-n2", "203.0.113.215/32", 300)
    assert kernel.gateway == str(language.topo.node_address["r1-n1"].ip)
    assert from_r1_n1(language, "203.0.113.215/32").local_pref == EBGP_LOCAL_PREF


def test_communities_match(language: Lab) -> None:
    """`communities`: r1-n2 tags .224 with 64512:7 on iBGP export; r1-n1's `Reject communities
    64512:7` then keeps it from tor1, while the untagged .225 passes."""
    r1_n2 = session(language, "Global", "r1-n2")
    assert learned(language, "r1-n1", "203.0.113.224/32", r1_n2).communities == ((64512, 7),)
    assert learned(language, "r1-n1", "203.0.113.225/32", r1_n2).communities == ()
    from_r1_n1(language, "203.0.113.225/32")  # .225 went through r1-n1's export: so did .224
    assert_tor_lacks(language, "203.0.113.224/32")


def test_as_path_prefix(language: Lab) -> None:
    """`asPathPrefix`: r1-n2 prepends 64999 to .228 and 64998 to .229 on iBGP export. On eBGP
    export the path already starts with the node's AS (BIRD 1.6), so `[64999]` misses .228 and
    `[64512, 64998]` catches .229."""
    r1_n2 = session(language, "Global", "r1-n2")
    assert learned(language, "r1-n1", "203.0.113.228/32", r1_n2).as_path == (64999,)
    assert learned(language, "r1-n1", "203.0.113.229/32", r1_n2).as_path == (64998,)
    assert from_r1_n1(language, "203.0.113.228/32").as_path == (64512, 64999)
    assert_tor_lacks(language, "203.0.113.229/32")


def test_import_rule(language: Lab) -> None:
    """Import `asPathPrefix [65001, 65100]` + addCommunity: on r1-n1 the route tor1 passes on
    from spine1 (ext1's link) is tagged, tor1's own connected link is not."""
    ext_link = str(language.topo.host_link("ext1").subnet)
    tor_link = str(
        next(link.subnet for link in language.topo.links if "tor1" in (link.a.entity, link.b.entity))
    )
    tor1 = session(language, "Node", "tor1")
    via_spine = wait_for(language, "r1-n1", ext_link, tor1)
    assert via_spine.as_path == (65001, 65100)
    assert via_spine.communities == ((64512, 65),)
    from_tor = wait_for(language, "r1-n1", tor_link, tor1)
    assert from_tor.as_path == (65001,)
    assert from_tor.communities == ()


def test_accept_ends_evaluation(language: Lab) -> None:
    """`lang-a` accepts .220, so `lang-b`'s Reject of 203.0.113.220/31 never runs for it."""
    from_r1_n1(language, "203.0.113.220/32")


def test_fall_through_to_next_filter(language: Lab) -> None:
    """No `lang-a` rule matches .221 or .24: evaluation goes on in `lang-b`, which rejects .221
    and accepts .24 (from r1-n1's own block, so past aggregation too)."""
    assert_tor_lacks(language, "203.0.113.221/32")
    from_r1_n1(language, "203.0.113.24/32")


# ---- route priority with the seed filter (lab `priority`) ---------------------------------
#
# r1-n1 owns 203.0.113.0/26, r1-n2 203.0.113.64/26; both racks' ToR peers carry the seed's
# kubevirt-live-migration filter.

ELEVATED = 512
NORMAL = 1024


def test_elevated_route_reaches_tor_with_community(priority: Lab) -> None:
    """A metric-512 /32 outside r1-n1's block: exported with 65000:100, which tor1's import
    filter turns into preference 200."""
    best = priority.router("tor1").best_route("203.0.113.70/32")
    assert best is not None
    assert best.protocol == protocol_of("r1-n1")
    assert best.communities == ((65000, 100),)
    assert best.preference == 200


def test_normal_route_reaches_tor_without_community(priority: Lab) -> None:
    """The same kind of /32 at metric 1024 is exported too (outside the node's block, any
    priority), without the community."""
    route = wait_for(priority, "tor1", "203.0.113.71/32", protocol_of("r1-n1"))
    assert route.communities == ()
    assert route.preference == 100


def test_elevated_route_inside_own_block_escapes_aggregation(priority: Lab) -> None:
    """Inside r1-n1's block: the metric-512 /32 reaches tor1 (tagged), the metric-1024 one is
    covered by the block."""
    route = wait_for(priority, "tor1", "203.0.113.20/32", protocol_of("r1-n1"))
    assert route.communities == ((65000, 100),)
    assert priority.router("tor1").routes("203.0.113.21/32") == []
    assert priority.router("tor1").best_route("203.0.113.0/26") is not None


def test_other_rack_installs_tagged_route_at_elevated_metric(priority: Lab) -> None:
    """r2-n1 gets the route through tor1, spine1 and tor2 with the community; its import rule
    sets priority 512 (local_pref 2147483135) and the kernel protocol programs metric 512.

    As in calico-node, the import Accept ends the filter before the preference-200 bump, so
    the route keeps BGP's preference 100. A normal route arrives with eBGP's local_pref 100,
    which the kernel filter turns into metric 2147483647 - 100."""
    route = wait_for(priority, "r2-n1", "203.0.113.70/32", session(priority, "Node", "tor2"))
    assert route.communities == ((65000, 100),)
    assert route.local_pref == BIRD_INT_MAX - ELEVATED
    assert route.preference == 100
    assert route.as_path == (65002, 65100, 65001, 64512)
    wait_kernel(priority, "r2-n1", "203.0.113.70/32", ELEVATED)
    wait_kernel(priority, "r2-n1", "203.0.113.71/32", BIRD_INT_MAX - EBGP_LOCAL_PREF)


def test_same_rack_node_installs_tagged_route_at_elevated_metric(priority: Lab) -> None:
    """r1-n2 learns it back from tor1 (numAllowedLocalASNumbers 1) and programs metric 512."""
    kernel = wait_kernel(priority, "r1-n2", "203.0.113.70/32", ELEVATED)
    assert kernel.gateway == str(priority.topo.tor_address["tor1"].ip)


# ---- route priority over the mesh, no filter (lab `mesh`) ---------------------------------
#
# r1-n1 owns 203.0.113.0/25, r1-n2 203.0.113.128/25.


def test_mesh_peer_gets_elevated_metric_from_local_pref(mesh: Lab) -> None:
    """iBGP carries the priority as local_pref: r1-n2 prefers the mesh route (preference 200)
    and programs metric 512 via r1-n1; the normal route keeps metric 1024."""
    route = wait_for(mesh, "r1-n2", "203.0.113.200/32", session(mesh, "Mesh", "r1-n1"))
    assert route.best
    assert route.local_pref == BIRD_INT_MAX - ELEVATED
    assert route.preference == 200
    kernel = wait_kernel(mesh, "r1-n2", "203.0.113.200/32", ELEVATED)
    assert kernel.gateway == str(mesh.topo.node_address["r1-n1"].ip)
    normal = wait_kernel(mesh, "r1-n2", "203.0.113.201/32", NORMAL)
    assert normal.gateway == str(mesh.topo.node_address["r1-n1"].ip)


def test_elevated_route_bypasses_aggregation_without_filter(mesh: Lab) -> None:
    """With no filter, `calico_aggr` itself lets the metric-512 /32 of r1-n1's block out (to
    tor1 and over the mesh) and keeps the metric-1024 one in."""
    route = wait_for(mesh, "tor1", "203.0.113.20/32", protocol_of("r1-n1"))
    assert route.communities == ()
    wait_kernel(mesh, "r1-n2", "203.0.113.20/32", ELEVATED)
    assert mesh.router("tor1").routes("203.0.113.21/32") == []
    assert mesh.node("r1-n2").routes("203.0.113.21/32") == []
