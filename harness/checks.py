"""Assertions about routing that scenario tests (ours and users') are built from.

Each check looks at real state (birdc, kernel) or at a migration's record and raises
AssertionError with what it found, else returns something truthy, so
`eventually(lambda: check(...), ...)` waits for it. They work for any runtime through `Lab`
and the record every runtime's migration driver produces (`harness.record`).
"""

from __future__ import annotations

import ipaddress
import json
from collections import deque
from typing import TYPE_CHECKING, Any

from harness.birdc import Route
from harness.kernel import KernelRoute
from harness.wait import eventually

if TYPE_CHECKING:
    from harness.lab import Lab
    from harness.record import MigrationRecord


def describe(routes: list[Route]) -> str:
    if not routes:
        return "no route"
    return "; ".join(
        f"{'*' if r.best else ' '} via {r.via or r.route_type} ({r.protocol}) pref {r.preference} "
        f"path {' '.join(map(str, r.as_path)) or '-'} comm {','.join(r.community_strings()) or '-'}"
        + (f" ECMP x{len(r.next_hops)}" if len(r.next_hops) > 1 else "")
        for r in routes
    )


def family_of(prefix: str) -> int:
    """4 or 6: the address family of a prefix or address (which BIRD, bird or bird6, holds it)."""
    return 6 if ":" in prefix else 4


def single_best(lab: Lab, router: str, prefix: str) -> Route:
    """The router has exactly one best route for `prefix`, with a single next hop (no ECMP)."""
    routes = lab.speaker(router, family_of(prefix)).routes(prefix)
    best = [r for r in routes if r.best]
    assert len(best) == 1, f"{router} {prefix}: expected exactly one best route, has {describe(routes)}"
    assert len(best[0].next_hops) == 1, f"{router} {prefix}: ECMP split across {describe(routes)}"
    return best[0]


def next_hop_toward(lab: Lab, router: str, node: str, family: int = 4) -> str | None:
    """The address `router` uses as next hop toward `node` (the node itself on its own rack's ToR)."""
    _, n = lab.spec.node(node)
    rack = lab.spec.rack(n.rack) if n.rack else None
    if rack is not None and rack.tor == router:
        return str(lab.topo.node_ip(node, family))
    return None


def best_via_node(
    lab: Lab,
    router: str,
    prefix: str,
    node: str,
    *,
    community: str | None = None,
    without_community: str | None = None,
) -> Route:
    """`router`'s single best route for `prefix` leads to `node`, optionally (not) tagged with a community.

    On the node's own ToR the next hop must be the node; elsewhere the route must have come
    from the node's AS path side (the path ends with the node's AS and passes its rack's ToR).
    """
    best = single_best(lab, router, prefix)
    hop = next_hop_toward(lab, router, node, family_of(prefix))
    if hop is not None:
        assert best.via == hop, f"{router} {prefix}: best via {best.via}, expected {node} ({hop})"
    else:
        _, n = lab.spec.node(node)
        tor = lab.spec.rack(n.rack).tor if n.rack else None
        if tor is not None and router != tor:
            tor_as = lab.spec.router(tor).asn
            assert tor_as in best.as_path, (
                f"{router} {prefix}: best path {best.as_path} does not pass {tor} (AS {tor_as}) toward {node}"
            )
    comms = best.community_strings()
    if community is not None:
        assert community in comms, (
            f"{router} {prefix}: best route lacks community {community}: {describe([best])}"
        )
    if without_community is not None:
        assert without_community not in comms, (
            f"{router} {prefix}: best route still carries {without_community}: {describe([best])}"
        )
    return best


def no_route(lab: Lab, router: str, prefix: str) -> bool:
    """The router has no route at all for `prefix` (True, so it can be awaited with `eventually`)."""
    routes = lab.speaker(router, family_of(prefix)).routes(prefix)
    assert not routes, f"{router} {prefix}: expected no route, has {describe(routes)}"
    return True


def steady_vm_route(lab: Lab, vm: str, node: str, routers: tuple[str, ...], *, community: str) -> bool:
    """`vm` runs on `node` outside any migration's convergence time. When its address lies in a
    block of `node` (`lab.node_blocks()`), no router of `routers` has its /32 (it is aggregated
    into the block); else (the real stack's IPAM may lend an address from another node's block)
    each has one best /32 toward `node`, from its AS, without the elevated `community`. Returns
    whether the address lies in `node`'s block."""
    ip = ipaddress.IPv4Address(str(lab.topo.workload(vm).ip))
    prefix = f"{ip}/32"
    inside = any(ip in block for block in lab.node_blocks().get(node, []))
    for router in routers:
        if inside:
            no_route(lab, router, prefix)
            continue
        best = best_via_node(lab, router, prefix, node, without_community=community)
        assert best.as_path[-1:] == (lab.topo.node_asn[node],), f"{router}: {describe([best])}"
    return inside


def elevated_toward(
    lab: Lab, vm: str, source: str, target: str, *, community: str, timeout: float = 5.0, family: int = 4
) -> None:
    """`vm` runs on `target` at the elevated priority (Live, or TimeWait for the convergence
    time): `target` routes its /32 (family 6: its /128) to the VM's interface at the elevated
    metric; every ToR and spine holds one best route toward `target` tagged `community`
    (preference 200 at the target's own ToR); every node but `source` and `target` installs the
    route via its ToR at the elevated metric (the community's import rule)."""
    w = lab.topo.workload(vm)
    prefix = f"{w.ip}/32" if family == 4 else f"{w.ip6}/128"
    elevated = lab.priorities(target, family).elevated
    kernel_route(lab, target, prefix, metric=elevated, dev=lab.workload_interface(vm, target))
    _, tn = lab.spec.node(target)
    for router in (r.name for r in lab.spec.routers if r.role in ("tor", "spine")):
        best = eventually(
            lambda r=router: best_via_node(lab, r, prefix, target, community=community),
            timeout=timeout,
            what=f"{router} to prefer {target}'s tagged /32",
        )
        if tn.rack is not None and lab.spec.rack(tn.rack).tor == router:
            assert best.preference == 200, f"{router}: {describe([best])}"
    for cluster_node in (n for _, n in lab.spec.all_nodes() if n.name not in (source, target) and n.rack):
        tor = lab.spec.rack(cluster_node.rack).tor
        eventually(
            lambda n=cluster_node.name, t=tor: kernel_route(
                lab,
                n,
                prefix,
                metric=elevated,
                gateway=str((lab.topo.tor_address if family == 4 else lab.topo.tor_address6)[t].ip),
            ),
            timeout=timeout,
            what=f"{cluster_node.name} to install {vm}'s /32 at metric {elevated}",
        )


def kernel_metrics(lab: Lab, entity: str, prefix: str) -> list[KernelRoute]:
    return lab.runtime.kernel_routes(entity, prefix)


def kernel_route(
    lab: Lab, entity: str, prefix: str, *, metric: int, dev: str | None = None, gateway: str | None = None
) -> KernelRoute:
    """`entity`'s kernel has exactly one route for `prefix`, at `metric` (and via dev/gateway if given)."""
    routes = kernel_metrics(lab, entity, prefix)
    found = [(r.metric, r.dev, r.gateway) for r in routes]
    assert len(routes) == 1, f"{entity} kernel {prefix}: expected one route at metric {metric}, has {found}"
    r = routes[0]
    assert r.metric == metric, f"{entity} kernel {prefix}: metric {r.metric}, expected {metric} ({found})"
    if dev is not None:
        assert r.dev == dev, f"{entity} kernel {prefix}: dev {r.dev}, expected {dev}"
    if gateway is not None:
        assert r.gateway == gateway, f"{entity} kernel {prefix}: via {r.gateway}, expected {gateway}"
    return r


def no_kernel_route(lab: Lab, entity: str, prefix: str) -> bool:
    routes = kernel_metrics(lab, entity, prefix)
    assert not routes, f"{entity} kernel {prefix}: expected none, has {[(r.metric, r.dev) for r in routes]}"
    return True


def _owner_of(lab: Lab, ip: str) -> str | None:
    """Which lab entity has interface address `ip`."""
    topo = lab.topo
    for name, addr in (*topo.node_address.items(), *topo.tor_address.items()):
        if str(addr.ip) == ip:
            return name
    for link in topo.links + topo.host_links:
        for end in (link.a, link.b):
            if str(end.address.ip) == ip:
                return end.entity
    return None


def lookup(lab: Lab, entity: str, ip: str) -> KernelRoute | None:
    """The kernel route `entity` uses for `ip`: longest prefix, then lowest metric."""
    addr = ipaddress.ip_address(ip)
    best: tuple[int, int, KernelRoute] | None = None
    for r in lab.runtime.kernel_routes(entity):
        net = ipaddress.ip_network(r.prefix)
        if addr in net and r.route_type == "unicast":
            key = (-net.prefixlen, r.metric)
            if best is None or key < best[:2]:
                best = (*key, r)
    return best[2] if best else None


def forwarding_path(lab: Lab, start: str, ip: str, max_hops: int = 12) -> list[str]:
    """The entities a packet from `start` to `ip` crosses, following real kernel routes.

    Ends at the node whose route for `ip` points at a workload interface (the VM's host), or
    raises AssertionError naming where the packet would be dropped or loop.
    """
    path = [start]
    here = start
    for _ in range(max_hops):
        route = lookup(lab, here, ip)
        assert route is not None, f"{' -> '.join(path)}: no route for {ip} at {here} (dropped)"
        if route.gateway is None:
            assert (route.dev or "").startswith("cali"), (
                f"{' -> '.join(path)}: {here} sends {ip} out {route.dev} without a gateway"
            )
            return path
        nxt = _owner_of(lab, route.gateway)
        assert nxt is not None, f"{' -> '.join(path)}: {here} sends {ip} to {route.gateway}, outside the lab"
        assert nxt not in path, f"{' -> '.join([*path, nxt])}: forwarding loop for {ip}"
        path.append(nxt)
        here = nxt
    raise AssertionError(f"{' -> '.join(path)}: more than {max_hops} hops to {ip}")


def delivered_to(lab: Lab, start: str, ip: str, node: str) -> list[str]:
    """Traffic from `start` to `ip` ends at `node` (the VM's host)."""
    path = forwarding_path(lab, start, ip)
    assert path[-1] == node, f"traffic {start} -> {ip} ends at {path[-1]}, not {node}: {' -> '.join(path)}"
    return path


def neighbour_mac(lab: Lab, node: str, ip: str) -> str:
    """The MAC `node`'s neighbour table resolves `ip` to (a workload's entry: Felix's permanent
    one, or one learnt by ARP); AssertionError when it has none."""
    res = lab.run(node, ["ip", "-j", "neigh", "show", "to", ip])
    assert res.returncode == 0, f"{node}: ip neigh failed: {res.stderr.strip()}"
    entries = [n for n in json.loads(res.stdout or "[]") if n.get("dst") == ip and n.get("lladdr")]
    assert entries, f"{node} has no neighbour entry with a MAC for {ip}: {res.stdout.strip() or 'none'}"
    return str(entries[0]["lladdr"]).lower()


ROUTE_TYPES = frozenset({"unicast", "blackhole", "unreachable", "prohibit", "throw", "local", "broadcast"})


def routes_in(lab: Lab, entity: str) -> dict[str, dict[str, str]]:
    """`entity`'s IPv4 routes (main table) as `ip route` prints them (iproute2 or busybox: a
    guest's too), prefix -> {"type", "via", "dev", ...}: the key-value words after the prefix
    ("default" is 0.0.0.0/0)."""
    res = lab.run(entity, ["ip", "-4", "route", "show"])
    assert res.returncode == 0, f"{entity}: ip route failed: {res.stderr.strip()}"
    out: dict[str, dict[str, str]] = {}
    for line in res.stdout.splitlines():
        words = line.split()
        kind = words.pop(0) if words and words[0] in ROUTE_TYPES else "unicast"
        if not words:
            continue
        prefix = "0.0.0.0/0" if words[0] == "default" else str(ipaddress.IPv4Network(words[0]))
        out[prefix] = {"type": kind, **dict(zip(words[1::2], words[2::2], strict=False))}
    return out


def link_address(lab: Lab, entity: str, peer: str, family: int = 4) -> str:
    """`entity`'s address on its point-to-point link to `peer` (router links and host links)."""
    for link in lab.topo.links + lab.topo.host_links:
        ends = {link.a.entity: link.a, link.b.entity: link.b}
        if set(ends) == {entity, peer}:
            addr = ends[entity].address if family == 4 else ends[entity].address6
            assert addr is not None, f"the link {entity}-{peer} has no IPv{family} address"
            return str(addr.ip)
    raise AssertionError(f"no link between {entity} and {peer}")


def hop_toward(lab: Lab, router: str, node: str, family: int = 4) -> str:
    """The next hop `router` forwards to on the way to `node`: the node itself on its own ToR,
    else the neighbour on the shortest path of router links to that ToR."""
    if (hop := next_hop_toward(lab, router, node, family)) is not None:
        return hop
    _, n = lab.spec.node(node)
    assert n.rack is not None, f"{node} is in no rack"
    tor = lab.spec.rack(n.rack).tor
    first: dict[str, str | None] = {router: None}
    todo = deque([router])
    while todo:
        here = todo.popleft()
        if here == tor:
            hop_entity = first[here]
            assert hop_entity is not None
            return link_address(lab, hop_entity, router, family)
        for link in lab.topo.links:
            for a, b in ((link.a.entity, link.b.entity), (link.b.entity, link.a.entity)):
                if a == here and b not in first:
                    first[b] = first[here] or b
                    todo.append(b)
    raise AssertionError(f"no path of router links from {router} to {tor} ({node}'s ToR)")


# ---- a migration's record: what the routers held while it ran --------------------------------


def route_views(record: MigrationRecord, router: str, family: int = 4) -> list[dict[str, Any]]:
    """`router`'s views of the migrated VM's /32 (family 6: its /128) in the record (events of
    `bird:<router>`: best next hop, its communities, ECMP, paths), in time order; AssertionError
    if there are none."""
    events = record.to_json()["events"]
    views = [
        e
        for e in events
        if e["source"] == f"bird:{router}" and e["kind"] == "route" and e.get("family", 4) == family
    ]
    assert views, f"the record of {record.vm}'s migration has no IPv{family} view of {router}"
    return views


def never_ecmp(record: MigrationRecord) -> None:
    """No router split the VM's /32 across next hops at any moment of the migration."""
    split = [e for e in record.to_json()["events"] if e["kind"] == "route" and e.get("ecmp")]
    assert not split, "ECMP while migrating: " + "; ".join(
        f"{e['source']} at {e['ms']} ms via {e['best_via']}" for e in split
    )


def ended_via(
    lab: Lab,
    record: MigrationRecord,
    router: str,
    node: str,
    *,
    community: str | None = None,
    family: int = 4,
) -> dict[str, Any]:
    """By the end of the migration `router`'s best route for the VM led to `node` (next hop
    `hop_toward`), tagged with `community` if given."""
    last = route_views(record, router, family)[-1]
    hop = hop_toward(lab, router, node, family)
    assert last["best_via"] == hop, f"{router} ended via {last['best_via']}, expected {hop} toward {node}"
    if community is not None:
        assert community in last["communities"], f"{router} ended without {community}: {last}"
    return last


def target_preferred(lab: Lab, record: MigrationRecord, router: str, target: str, family: int = 4) -> None:
    """Whenever `router` held more than one route for the VM while it migrated (the target's
    and the source's, which announces its /32 until it learns the target's or its pod goes),
    its best led to `target`: it never kept traffic on the source (split brain). A ToR that
    prefers the tagged route makes the source withdraw at once; one that does not keeps both."""
    hop = hop_toward(lab, router, target, family)
    wrong = [v for v in route_views(record, router, family) if v["paths"] > 1 and v["best_via"] != hop]
    assert not wrong, f"{router} preferred another route to {target}'s ({hop}): " + "; ".join(
        f"at {v['ms']} ms best via {v['best_via']} of {v['paths']}" for v in wrong
    )


def moved_once(lab: Lab, record: MigrationRecord, router: str, source: str, target: str) -> list[str | None]:
    """`router`'s best route for the VM went from toward `source` straight to toward `target`:
    never none in between, never back (repeats of one view collapsed)."""
    hops: list[str | None] = []
    for view in route_views(record, router):
        if not hops or hops[-1] != view["best_via"]:
            hops.append(view["best_via"])
    expected = [hop_toward(lab, router, source), hop_toward(lab, router, target)]
    assert hops == expected, f"{router}'s best next hops while migrating: {hops}, expected {expected}"
    return hops
