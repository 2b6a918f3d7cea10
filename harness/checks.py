"""Assertions about routing that scenario tests (ours and users') are built from.

Each check looks at real state (birdc, kernel) and raises AssertionError with what it found,
else returns something truthy, so `eventually(lambda: check(...), ...)` waits for it. They work
for any runtime through `Lab`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from harness.birdc import Route
from harness.kernel import KernelRoute

if TYPE_CHECKING:
    from harness.lab import Lab


def describe(routes: list[Route]) -> str:
    if not routes:
        return "no route"
    return "; ".join(
        f"{'*' if r.best else ' '} via {r.via or r.route_type} ({r.protocol}) pref {r.preference} "
        f"path {' '.join(map(str, r.as_path)) or '-'} comm {','.join(r.community_strings()) or '-'}"
        + (f" ECMP x{len(r.next_hops)}" if len(r.next_hops) > 1 else "")
        for r in routes
    )


def single_best(lab: Lab, router: str, prefix: str) -> Route:
    """The router has exactly one best route for `prefix`, with a single next hop (no ECMP)."""
    routes = lab.speaker(router).routes(prefix)
    best = [r for r in routes if r.best]
    assert len(best) == 1, f"{router} {prefix}: expected exactly one best route, has {describe(routes)}"
    assert len(best[0].next_hops) == 1, f"{router} {prefix}: ECMP split across {describe(routes)}"
    return best[0]


def next_hop_toward(lab: Lab, router: str, node: str) -> str | None:
    """The address `router` uses as next hop toward `node` (the node itself on its own rack's ToR)."""
    _, n = lab.spec.node(node)
    rack = lab.spec.rack(n.rack) if n.rack else None
    if rack is not None and rack.tor == router:
        return str(lab.topo.node_address[node].ip)
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
    hop = next_hop_toward(lab, router, node)
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
    routes = lab.speaker(router).routes(prefix)
    assert not routes, f"{router} {prefix}: expected no route, has {describe(routes)}"
    return True


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
    import ipaddress

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
