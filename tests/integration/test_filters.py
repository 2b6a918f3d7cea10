"""BGPFilter rules and Calico route priority on real BIRD, on every runtime.

Three labs:

- `language`: a lab of its own, one rack, two nodes peering eBGP with tor1 and iBGP with each
  other (a global BGPPeer with a peerSelector), both sessions carrying the BGPFilters `lang-a`
  then `lang-b`. Every rule acts on its own prefixes, and each test checks what tor1 (or the
  other node) receives from the node the routes were added on.
- `priority`: the default lab (two racks with the seed's `kubevirt-live-migration` filter on
  the ToR peers).
- `mesh`: a lab of its own, one rack with the node-to-node mesh and no filter.

Routes are added the way Felix adds them (`Lab.add_test_route`): kernel routes in the node
(protocol boot), on interfaces of their own, with metric 512 (elevated) or 1024 (normal), and
removed when the module ends. Which node owns which block comes from `lab.node_blocks()` (the
topology's plan on netns, Calico's BlockAffinities on the real stack): in the one-rack labs
node A is the owner of 203.0.113.0/25 and B the owner of 203.0.113.128/25 (r1-n1 and r1-n2 on
netns), in the default lab the probe addresses lie in r1-n1's and r1-n2's blocks.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from harness import checks
from harness.birdc import Route
from harness.calico import resources as cr
from harness.calico import seeds
from harness.errors import InvalidRequest, LabError
from harness.generate import fabric_lab
from harness.kernel import KernelRoute
from harness.lab import Lab
from harness.runtime.containerlab.ipam import block_owner
from harness.wait import eventually

pytestmark = pytest.mark.calico_3_32(
    "BGPFilter peerType, priority, communities, asPathPrefix and operations, and route priorities"
)

API = "projectcalico.org/v3"
TIMEOUT = 15.0
BIRD_INT_MAX = 2147483647
EBGP_LOCAL_PREF = 100  # what BIRD gives every route it receives over eBGP
ELEVATED = 512
NORMAL = 1024


@dataclass(frozen=True)
class AddedRoute:
    """A route the test programs into a node's kernel, as Felix would (`node`: a name, or the
    role "a"/"b" of a one-rack lab's two nodes)."""

    node: str
    prefix: str
    dev: str = "flt0"
    metric: int = 1024


@dataclass(frozen=True)
class Halves:
    """A one-rack lab whose two nodes own 203.0.113.0/25 (`a`) and 203.0.113.128/25 (`b`)."""

    lab: Lab
    a: str
    b: str

    def node(self, role: str) -> str:
        return {"a": self.a, "b": self.b}[role]


@dataclass(frozen=True)
class BlockProbes:
    """Probe addresses of node `node`: two in its own block `own_block`, two in `peer`'s (each
    one normal, one elevated), and the lab they are added to."""

    lab: Lab
    node: str
    peer: str
    own_block: str
    peer_block: str
    own_normal: str
    own_elevated: str
    peer_normal: str
    peer_elevated: str

    def peer_block_address(self, offset: int) -> str:
        """The address `offset` into `peer`'s block."""
        return offset_address(self.peer_block, offset)

    def routes(self) -> list[AddedRoute]:
        return [
            AddedRoute(self.node, f"{self.own_normal}/32", metric=NORMAL),
            AddedRoute(self.node, f"{self.own_elevated}/32", metric=ELEVATED),
            AddedRoute(self.node, f"{self.peer_normal}/32", metric=NORMAL),
            AddedRoute(self.node, f"{self.peer_elevated}/32", metric=ELEVATED),
        ]


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


def one_rack(name: str) -> dict[str, Any]:
    """fabric_lab's one rack of two nodes (blocks 203.0.113.0/25 and .128/25), no VM; its
    cluster named after the lab (kind cluster names are machine-wide on the real stack)."""
    data = fabric_lab(1, 2, name=f"flt-{name}")
    data["clusters"][0]["name"] = name
    data["vms"] = []
    return data


def language_lab() -> dict[str, Any]:
    """One rack, filters on every session."""
    data = one_rack("lang")
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


def mesh_lab() -> dict[str, Any]:
    """One rack with the node-to-node mesh on and no BGPFilter anywhere."""
    data = one_rack("mesh")
    _resource(data, "BGPConfiguration", "default")["spec"]["nodeToNodeMeshEnabled"] = True
    _resource(data, "BGPPeer", "rack-r1-tor")["spec"].pop("filters")
    data["clusters"][0]["resources"].remove(SEED_FILTER)
    return data


# Routes are added in list order: those a test expects to be missing come before those it
# waits for, so once the later ones arrived the earlier ones went through the same filters.
LANGUAGE_ROUTES = [
    AddedRoute("a", "203.0.113.161/32"),
    AddedRoute("a", "203.0.113.17/32"),
    AddedRoute("a", "203.0.113.177/32", dev="ne0"),
    AddedRoute("a", "203.0.113.196/32", dev="nin0"),
    AddedRoute("a", "203.0.113.36/32"),
    AddedRoute("a", "203.0.113.40/29"),
    AddedRoute("a", "203.0.113.210/32", dev="ifr0"),
    AddedRoute("a", "203.0.113.209/32"),
    AddedRoute("a", "203.0.113.221/32"),
    AddedRoute("b", "203.0.113.224/32"),
    AddedRoute("b", "203.0.113.229/32"),
    AddedRoute("a", "203.0.113.176/32", dev="ne0"),
    AddedRoute("a", "203.0.113.185/32", dev="nin0"),
    AddedRoute("a", "203.0.113.32/31"),
    AddedRoute("a", "203.0.113.208/32"),
    AddedRoute("a", "203.0.113.212/32", metric=512),
    AddedRoute("a", "203.0.113.213/32"),
    AddedRoute("a", "203.0.113.214/32"),
    AddedRoute("a", "203.0.113.215/32"),
    AddedRoute("a", "203.0.113.220/32"),
    AddedRoute("a", "203.0.113.24/32"),
    AddedRoute("a", "203.0.113.241/32"),
    AddedRoute("a", "203.0.113.49/32", dev="qk0"),
    AddedRoute("a", "203.0.113.16/32"),
    AddedRoute("b", "198.51.100.130/32"),
    AddedRoute("b", "203.0.113.228/32"),
    AddedRoute("b", "203.0.113.225/32"),
    AddedRoute("a", "203.0.113.200/32"),
]


# ---- helpers --------------------------------------------------------------------------------


def add_routes(lab: Lab, stack: ExitStack, routes: list[AddedRoute], node: Callable[[str], str]) -> None:
    """Program the routes like Felix does (a device per route group, then routes with a
    metric), each removed when `stack` closes; `node` names the node of a route's `node`."""
    for r in routes:
        stack.enter_context(lab.add_test_route(node(r.node), r.prefix, dev=r.dev, metric=r.metric))


def halves(lab: Lab) -> Halves:
    """Which node of the one-rack lab owns which half of 203.0.113.0/24 (Calico's choice on the
    real stack): each must own exactly one."""
    blocks = lab.node_blocks()
    a, b = (str(block_owner(blocks, ip)) for ip in ("203.0.113.0", "203.0.113.128"))
    assert sorted((a, b)) == ["r1-n1", "r1-n2"], f"blocks of {lab.name}: {blocks}"
    return Halves(lab, a, b)


def block_probes(lab: Lab, node: str, peer: str, own: tuple[int, int], other: tuple[int, int]) -> BlockProbes:
    """Probe addresses at offsets (normal, elevated) of `node`'s block and of `peer`'s."""
    blocks = lab.node_blocks()
    for n in (node, peer):
        assert len(blocks.get(n, [])) == 1, f"{n} should own exactly one block: {blocks}"
    mine, theirs = str(blocks[node][0]), str(blocks[peer][0])
    return BlockProbes(
        lab,
        node,
        peer,
        mine,
        theirs,
        offset_address(mine, own[0]),
        offset_address(mine, own[1]),
        offset_address(theirs, other[0]),
        offset_address(theirs, other[1]),
    )


def offset_address(block: str, offset: int) -> str:
    """The address `offset` into `block`."""
    return str(ipaddress.IPv4Network(block)[offset])


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
def language(own_lab: Callable[[dict[str, Any]], Lab]) -> Iterator[Halves]:
    lab = own_lab(language_lab())
    pair = halves(lab)
    with ExitStack() as stack:
        add_routes(lab, stack, LANGUAGE_ROUTES, pair.node)
        # The last routes added: once they arrived, everything before went through the filters.
        wait_for(lab, "tor1", "203.0.113.200/32", protocol_of(pair.a))
        wait_for(lab, pair.a, "203.0.113.225/32", session(lab, "Global", pair.b))
        wait_for(lab, "tor1", "198.51.100.130/32", protocol_of(pair.a))
        yield pair


@pytest.fixture(scope="module")
def priority(migration_lab: Lab) -> Iterator[BlockProbes]:
    """The default lab (a private instance where the runtime has them); on netns r1-n1 adds
    .21, .20 (its block .0/26) and .71, .70 (r1-n2's .64/26)."""
    lab = migration_lab
    seed = cr.BGPFilter.model_validate(SEED_FILTER)
    peers = [r for r in lab.spec.resources("kv") if isinstance(r, cr.BGPPeer)]
    assert seed in lab.spec.resources("kv"), "the default lab carries the seed's filter"
    assert {tuple(p.spec.filters) for p in peers} == {(seed.metadata.name,)}, peers
    probes = block_probes(lab, "r1-n1", "r1-n2", own=(21, 20), other=(7, 6))
    with ExitStack() as stack:
        add_routes(lab, stack, probes.routes(), str)
        wait_for(lab, "tor1", f"{probes.peer_elevated}/32", protocol_of("r1-n1"))
        yield probes


@pytest.fixture(scope="module")
def mesh(own_lab: Callable[[dict[str, Any]], Lab]) -> Iterator[BlockProbes]:
    """On netns r1-n1 adds .21, .20 (its block .0/25) and .201, .200 (r1-n2's .128/25)."""
    lab = own_lab(mesh_lab())
    pair = halves(lab)
    probes = block_probes(lab, pair.a, pair.b, own=(21, 20), other=(73, 72))
    with ExitStack() as stack:
        add_routes(lab, stack, probes.routes(), str)
        wait_for(lab, "tor1", f"{probes.peer_elevated}/32", protocol_of(pair.a))
        yield probes


# ---- the filter language (lab `language`) -------------------------------------------------
#
# A owns 203.0.113.0/25, B owns 203.0.113.128/25 (r1-n1 and r1-n2 on netns). By default (no
# rule matching) a /32 in the other node's block reaches tor1, one in the node's own block does
# not (aggregation).


def from_a(pair: Halves, prefix: str, at: str = "tor1") -> Route:
    """The route `at` (tor1 or B) has for `prefix` from A."""
    lab = pair.lab
    return learned(lab, at, prefix, protocol_of(pair.a) if at == "tor1" else session(lab, "Global", pair.a))


def assert_tor_lacks(lab: Lab, *prefixes: str) -> None:
    for prefix in prefixes:
        assert lab.router("tor1").routes(prefix) == [], f"tor1 should not have {prefix}"


def test_cidr_in_reject(language: Halves) -> None:
    """`cidr` In + Reject: a /32 inside 203.0.113.160/29 is withheld; a neighbour outside is not."""
    assert_tor_lacks(language.lab, "203.0.113.161/32")
    from_a(language, "203.0.113.200/32")


def test_cidr_equal_accept_skips_aggregation(language: Halves) -> None:
    """`cidr` Equal + Accept on a /32 of A's own block: Accept ends the filter before
    `calico_aggr`, so tor1 gets it; the /32 next to it is aggregated as usual."""
    from_a(language, "203.0.113.16/32")
    assert_tor_lacks(language.lab, "203.0.113.17/32")


def test_cidr_not_equal(language: Halves) -> None:
    """NotEqual 203.0.113.176/32 + Reject (on ne0): every route but .176 is rejected."""
    from_a(language, "203.0.113.176/32")
    assert_tor_lacks(language.lab, "203.0.113.177/32")


def test_cidr_not_in(language: Halves) -> None:
    """NotIn 203.0.113.184/29 + Reject (on nin0): routes outside the CIDR are rejected."""
    from_a(language, "203.0.113.185/32")
    assert_tor_lacks(language.lab, "203.0.113.196/32")


def test_prefix_length(language: Halves) -> None:
    """In 203.0.113.32/28 with prefixLength 30..31 + Accept: only the /31 escapes aggregation."""
    from_a(language, "203.0.113.32/31")
    assert_tor_lacks(language.lab, "203.0.113.36/32", "203.0.113.40/29")


def test_equal_with_prefix_length_never_matches(language: Halves) -> None:
    """Calico quirk: Equal + prefixLength compares a prefix with a set and never matches, so
    `Reject Equal 203.0.113.240/29{32,32}` lets 203.0.113.241/32 through."""
    from_a(language, "203.0.113.241/32")


def test_not_equal_with_prefix_length_always_matches(language: Halves) -> None:
    """Calico quirk: NotEqual + prefixLength always matches, even a route inside the set:
    `Accept NotEqual 203.0.113.48/29{32,32}` accepts 203.0.113.49/32 (A's own block)."""
    from_a(language, "203.0.113.49/32")


def test_interface(language: Halves) -> None:
    """`interface: "ifr*"` (a BIRD pattern) + Reject: the route via ifr0 is withheld."""
    assert_tor_lacks(language.lab, "203.0.113.210/32")
    from_a(language, "203.0.113.200/32")  # same block, device flt0


def test_source_remote_peers(language: Halves) -> None:
    """`source: RemotePeers`: A passes on 198.51.100.130/32, which it learned from B
    over iBGP; B, which has it from its kernel, does not send it to tor1 (outside every
    pool, and its rule for it is iBGP-only)."""
    learned(language.lab, language.a, "198.51.100.130/32", session(language.lab, "Global", language.b))
    routes = language.lab.router("tor1").routes("198.51.100.130/32")
    assert [r.protocol for r in routes] == [protocol_of(language.a)], routes


def test_peer_type(language: Halves) -> None:
    """`peerType`: the iBGP-only Reject of .208 spares tor1 and hits B; the eBGP-only
    Reject of .209 is the other way round."""
    from_a(language, "203.0.113.208/32")
    assert not has_route(
        language.lab, language.b, "203.0.113.208/32", session(language.lab, "Global", language.a)
    )
    assert_tor_lacks(language.lab, "203.0.113.209/32")
    from_a(language, "203.0.113.209/32", at=language.b)


def test_priority_and_add_community(language: Halves) -> None:
    """`priority: 512` matches the metric-512 route only; its `addCommunity` operations add a
    standard and a large community."""
    elevated = from_a(language, "203.0.113.212/32")
    assert elevated.communities == ((64512, 512),)
    assert elevated.large_communities == ((64512, 1, 2),)
    normal = from_a(language, "203.0.113.213/32")
    assert normal.communities == ()
    assert normal.large_communities == ()


def test_prepend_as_path(language: Halves) -> None:
    """`prependASPath [64999, 64998]`: the path starts with the listed order. BIRD 1.6 puts the
    node's AS on an eBGP route before export filters run, so tor1 sees it after them."""
    assert from_a(language, "203.0.113.214/32").as_path == (64999, 64998, 64512)
    assert from_a(language, "203.0.113.214/32", at=language.b).as_path == (64999, 64998)


def test_set_priority_on_export(language: Halves) -> None:
    """`setPriority 300` on export sets local_pref 2147483647 - 300; over iBGP B keeps it,
    prefers the route (preference 200, above normal) and programs metric 300. eBGP does not
    carry local_pref: tor1 has BIRD's default 100."""
    route = from_a(language, "203.0.113.215/32", at=language.b)
    assert route.local_pref == BIRD_INT_MAX - 300
    assert route.preference == 200
    kernel = wait_kernel(language.lab, language.b, "203.0.113.215/32", 300)
    assert kernel.gateway == str(language.lab.topo.node_address[language.a].ip)
    assert from_a(language, "203.0.113.215/32").local_pref == EBGP_LOCAL_PREF


def test_communities_match(language: Halves) -> None:
    """`communities`: B tags .224 with 64512:7 on iBGP export; A's `Reject communities
    64512:7` then keeps it from tor1, while the untagged .225 passes."""
    from_b = session(language.lab, "Global", language.b)
    assert learned(language.lab, language.a, "203.0.113.224/32", from_b).communities == ((64512, 7),)
    assert learned(language.lab, language.a, "203.0.113.225/32", from_b).communities == ()
    from_a(language, "203.0.113.225/32")  # .225 went through A's export: so did .224
    assert_tor_lacks(language.lab, "203.0.113.224/32")


def test_as_path_prefix(language: Halves) -> None:
    """`asPathPrefix`: B prepends 64999 to .228 and 64998 to .229 on iBGP export. On eBGP
    export the path already starts with the node's AS (BIRD 1.6), so `[64999]` misses .228 and
    `[64512, 64998]` catches .229."""
    from_b = session(language.lab, "Global", language.b)
    assert learned(language.lab, language.a, "203.0.113.228/32", from_b).as_path == (64999,)
    assert learned(language.lab, language.a, "203.0.113.229/32", from_b).as_path == (64998,)
    assert from_a(language, "203.0.113.228/32").as_path == (64512, 64999)
    assert_tor_lacks(language.lab, "203.0.113.229/32")


def test_import_rule(language: Halves) -> None:
    """Import `asPathPrefix [65001, 65100]` + addCommunity: on A the route tor1 passes on
    from spine1 (ext1's link) is tagged, tor1's own connected link is not."""
    ext_link = str(language.lab.topo.host_link("ext1").subnet)
    tor_link = str(
        next(link.subnet for link in language.lab.topo.links if "tor1" in (link.a.entity, link.b.entity))
    )
    tor1 = session(language.lab, "Node", "tor1")
    via_spine = wait_for(language.lab, language.a, ext_link, tor1)
    assert via_spine.as_path == (65001, 65100)
    assert via_spine.communities == ((64512, 65),)
    from_tor = wait_for(language.lab, language.a, tor_link, tor1)
    assert from_tor.as_path == (65001,)
    assert from_tor.communities == ()


def test_accept_ends_evaluation(language: Halves) -> None:
    """`lang-a` accepts .220, so `lang-b`'s Reject of 203.0.113.220/31 never runs for it."""
    from_a(language, "203.0.113.220/32")


def test_fall_through_to_next_filter(language: Halves) -> None:
    """No `lang-a` rule matches .221 or .24: evaluation goes on in `lang-b`, which rejects .221
    and accepts .24 (from A's own block, so past aggregation too)."""
    assert_tor_lacks(language.lab, "203.0.113.221/32")
    from_a(language, "203.0.113.24/32")


# ---- route priority with the seed filter (lab `priority`) ---------------------------------
#
# Both racks' ToR peers carry the seed's kubevirt-live-migration filter; r1-n1 adds probes in
# its own block and in r1-n2's.


def test_elevated_route_reaches_tor_with_community(priority: BlockProbes) -> None:
    """A metric-512 /32 outside r1-n1's block: exported with 65000:100, which tor1's import
    filter turns into preference 200."""
    best = priority.lab.router("tor1").best_route(f"{priority.peer_elevated}/32")
    assert best is not None
    assert best.protocol == protocol_of("r1-n1")
    assert best.communities == ((65000, 100),)
    assert best.preference == 200


def test_normal_route_reaches_tor_without_community(priority: BlockProbes) -> None:
    """The same kind of /32 at metric 1024 is exported too (outside the node's block, any
    priority), without the community."""
    route = wait_for(priority.lab, "tor1", f"{priority.peer_normal}/32", protocol_of("r1-n1"))
    assert route.communities == ()
    assert route.preference == 100


def test_elevated_route_inside_own_block_escapes_aggregation(priority: BlockProbes) -> None:
    """Inside r1-n1's block: the metric-512 /32 reaches tor1 (tagged), the metric-1024 one is
    covered by the block."""
    tor1 = priority.lab.router("tor1")
    route = wait_for(priority.lab, "tor1", f"{priority.own_elevated}/32", protocol_of("r1-n1"))
    assert route.communities == ((65000, 100),)
    assert tor1.routes(f"{priority.own_normal}/32") == []
    assert tor1.best_route(priority.own_block) is not None


def test_other_rack_installs_tagged_route_at_elevated_metric(priority: BlockProbes) -> None:
    """r2-n1 gets the route through tor1, spine1 and tor2 with the community; its import rule
    sets priority 512 (local_pref 2147483135) and the kernel protocol programs metric 512.

    As in calico-node, the import Accept ends the filter before the preference-200 bump, so
    the route keeps BGP's preference 100. A normal route arrives with eBGP's local_pref 100,
    which the kernel filter turns into metric 2147483647 - 100."""
    lab, elevated = priority.lab, f"{priority.peer_elevated}/32"
    route = wait_for(lab, "r2-n1", elevated, session(lab, "Node", "tor2"))
    assert route.communities == ((65000, 100),)
    assert route.local_pref == BIRD_INT_MAX - ELEVATED
    assert route.preference == 100
    assert route.as_path == (65002, 65100, 65001, 64512)
    wait_kernel(lab, "r2-n1", elevated, ELEVATED)
    wait_kernel(lab, "r2-n1", f"{priority.peer_normal}/32", BIRD_INT_MAX - EBGP_LOCAL_PREF)


def test_same_rack_node_installs_tagged_route_at_elevated_metric(priority: BlockProbes) -> None:
    """r1-n2 learns it back from tor1 (numAllowedLocalASNumbers 1) and programs metric 512."""
    kernel = wait_kernel(priority.lab, "r1-n2", f"{priority.peer_elevated}/32", ELEVATED)
    assert kernel.gateway == str(priority.lab.topo.tor_address["tor1"].ip)


def test_a_test_route_is_exported_and_goes_with_its_block(priority: BlockProbes) -> None:
    """The probe the tests above stand on (`Lab.add_test_route`): inside its block the route is
    in the node's kernel on the device it made and tor1 learns it; after the block route, device
    and tor1's route are gone. A prefix the node routes itself (the VM's /32) and one outside
    the lab's address plan are refused."""
    lab, prefix = priority.lab, f"{priority.peer_block_address(9)}/32"
    with lab.add_test_route("r1-n1", prefix, dev="kvtest0", metric=ELEVATED):
        wait_for(lab, "tor1", prefix, protocol_of("r1-n1"))
        assert [(r.dev, r.metric) for r in lab.node("r1-n1").kernel_routes(prefix)] == [("kvtest0", ELEVATED)]
    checks.no_kernel_route(lab, "r1-n1", prefix)
    assert lab.run("r1-n1", ["ip", "link", "show", "dev", "kvtest0"]).returncode != 0, "kvtest0 is left"
    eventually(lambda: checks.no_route(lab, "tor1", prefix), timeout=TIMEOUT, what=f"tor1 to drop {prefix}")
    vm = lab.vm("vm1")
    with pytest.raises(LabError, match="already routes"), lab.add_test_route(vm.node, f"{vm.ip}/32"):
        pass
    with (
        pytest.raises(InvalidRequest, match="outside the lab's address plan"),
        lab.add_test_route("r1-n1", "192.0.2.0/24"),
    ):
        pass


# ---- route priority over the mesh, no filter (lab `mesh`) ---------------------------------
#
# A adds probes in its own block and in B's (r1-n1 and r1-n2 on netns).


def test_mesh_peer_gets_elevated_metric_from_local_pref(mesh: BlockProbes) -> None:
    """iBGP carries the priority as local_pref: B prefers the mesh route (preference 200)
    and programs metric 512 via A; the normal route keeps metric 1024."""
    lab, a, b = mesh.lab, mesh.node, mesh.peer
    route = wait_for(lab, b, f"{mesh.peer_elevated}/32", session(lab, "Mesh", a))
    assert route.best
    assert route.local_pref == BIRD_INT_MAX - ELEVATED
    assert route.preference == 200
    kernel = wait_kernel(lab, b, f"{mesh.peer_elevated}/32", ELEVATED)
    assert kernel.gateway == str(lab.topo.node_address[a].ip)
    normal = wait_kernel(lab, b, f"{mesh.peer_normal}/32", NORMAL)
    assert normal.gateway == str(lab.topo.node_address[a].ip)


def test_elevated_route_bypasses_aggregation_without_filter(mesh: BlockProbes) -> None:
    """With no filter, `calico_aggr` itself lets the metric-512 /32 of A's block out (to
    tor1 and over the mesh) and keeps the metric-1024 one in."""
    lab, a, b = mesh.lab, mesh.node, mesh.peer
    route = wait_for(lab, "tor1", f"{mesh.own_elevated}/32", protocol_of(a))
    assert route.communities == ()
    wait_kernel(lab, b, f"{mesh.own_elevated}/32", ELEVATED)
    assert lab.router("tor1").routes(f"{mesh.own_normal}/32") == []
    assert lab.node(b).routes(f"{mesh.own_normal}/32") == []
