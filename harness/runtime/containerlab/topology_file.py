"""The containerlab topology of a lab (`<lab>.clab.yml`) and its routers' BIRD configs.

BIRD routers and external hosts are `linux` nodes of the kvlab/tor image; each kind cluster is a
`k8s-kind` node plus one `ext-container` node per kind node, linked to its rack's ToR. Addresses
are the topology's (the plan the netns runtime uses), set with `exec`; ToR rack segments are Linux
bridges (`br-rack`) as on the netns runtime. Routers replace their default route
(ROUTER_DEFAULT_ROUTE); kind nodes filter reverse paths loosely (RP_FILTER_LOOSE). External hosts
get this `harness/` package bound read-only at /opt/kvlab/harness (the TCP canary runs there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.render.bird import render_router
from harness.runtime.containerlab.host import BIRD_RUN
from harness.runtime.containerlab.plan import LAB_RANGES, KindNode, kind_clusters, mgmt_network
from harness.runtime.containerlab.versions import StackVersions
from harness.spec import DOC6_RANGE, FABRIC6_RESERVED, FABRIC_RANGE
from harness.topology import RACK_BRIDGE, Topology

BIRD_CONF = "/etc/bird/bird.conf"
BIRD6_CONF = "/etc/bird/bird6.conf"
# Dual stack: the image runs BIRD (IPv4) as its command; bird6 is started beside it by an exec
# command (it daemonizes), its socket next to BIRD's in the bound run directory.
BIRD6_START = f"bird6 -c {BIRD6_CONF} -s {BIRD_RUN}/bird6.ctl"
ROUTER_SYSCTLS6 = {"net.ipv6.conf.all.forwarding": 1, "net.ipv6.conf.default.forwarding": 1}
HARNESS_DIR = Path(__file__).resolve().parents[2]  # the harness package, bound into the external hosts
HARNESS_PYTHONPATH = "/opt/kvlab"
HARNESS_MOUNT = f"{HARNESS_PYTHONPATH}/harness"
ROUTER_SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
}
# A router's default route: docker's into containerlab's management network would carry lab
# traffic that has no route out through the host; replaced, such traffic is answered "network
# unreachable" as on the netns runtime, where routers have no default route at all. BIRD on the
# routers never imports kernel routes (bird-configs/router.conf.j2 `import none`), so it stays
# out of BGP.
ROUTER_DEFAULT_ROUTE = "ip route replace unreachable default"
ROUTER_DEFAULT_ROUTE6 = "ip -6 route replace unreachable default"
# Kind nodes send to the API server through eth0 (kind's docker network) and get replies, and
# requests from pods of other nodes, through the fabric interface (BGP routes): strict reverse
# path filtering (rp_filter 1, a host default some distributions set, which containers inherit)
# drops those. Loose (2) per interface wins over `all` (the kernel uses the larger value).
RP_FILTER_LOOSE = 2
KIND_EXTRAS_KEY = "k8s_kind"  # containerlab's `extras.k8s_kind` of a k8s-kind node
KIND_DEPLOY_WAIT = "0s"


@dataclass
class _Ports:
    """eth1, eth2, ... handed out per containerlab node in wiring order."""

    used: dict[str, int] = field(default_factory=dict)

    def next(self, node: str) -> str:
        self.used[node] = self.used.get(node, 0) + 1
        return f"eth{self.used[node]}"


def _up(dev: str) -> str:
    return f"ip link set {dev} up"


def _addr(addr: Any, dev: str) -> str:
    return f"ip addr add {addr} dev {dev}"


def loose_rp_filter(dev: str) -> str:
    """The exec command that makes reverse path filtering loose on `dev` (no sysctl binary needed)."""
    return f'bash -c "echo {RP_FILTER_LOOSE} > /proc/sys/net/ipv4/conf/{dev}/rp_filter"'


def clab_topology(
    topo: Topology,
    kind_nodes: dict[str, list[KindNode]],
    versions: StackVersions,
    *,
    image: str,
    run_dir: Path,
) -> dict[str, Any]:
    """The containerlab topology (a dict ready for YAML)."""
    spec = topo.spec
    ports = _Ports()
    nodes: dict[str, dict[str, Any]] = {}
    links: list[dict[str, Any]] = []
    execs: dict[str, list[str]] = {}

    dual = topo.dual_stack
    for router in spec.routers:
        binds = [f"bird/{router.name}.conf:{BIRD_CONF}:ro", f"{run_dir / router.name}:{BIRD_RUN}"]
        if dual:
            binds.insert(1, f"bird/{router.name}.bird6.conf:{BIRD6_CONF}:ro")
        nodes[router.name] = {
            "kind": "linux",
            "image": image,
            "group": router.role,
            "binds": binds,
            "sysctls": {**ROUTER_SYSCTLS, **(ROUTER_SYSCTLS6 if dual else {})},
            "labels": {"kvlab.io/lab": spec.name, "kvlab.io/role": router.role},
        }
        execs[router.name] = []
        if router.name in topo.tor_address:
            execs[router.name] += [f"ip link add {RACK_BRIDGE} type bridge", _up(RACK_BRIDGE)]
    for host in spec.hosts:
        nodes[host.name] = {
            "kind": "linux",
            "image": image,
            "group": "host",
            "cmd": "sleep infinity",  # the image runs BIRD by default; a host has none
            "binds": [f"{HARNESS_DIR}:{HARNESS_MOUNT}:ro"],  # python3 -m harness.canary runs here
            "healthcheck": {"test": ["CMD", "true"], "interval": 5},
            "labels": {"kvlab.io/lab": spec.name, "kvlab.io/role": "host"},
        }
        execs[host.name] = []

    for cluster in kind_clusters(spec):
        nodes[cluster.name] = {
            "kind": "k8s-kind",
            "image": versions.kind_node_image,
            "startup-config": f"kind/{cluster.name}.yaml",
            # containerlab's kind waits for the control plane Ready (15 min by default), which
            # cannot happen before Calico is installed; the runtime waits for the nodes itself.
            "extras": {KIND_EXTRAS_KEY: {"deploy": {"wait": KIND_DEPLOY_WAIT}}},
        }
        for kn in kind_nodes[cluster.name]:
            nodes[kn.kind_name] = {
                "kind": "ext-container",
                "stages": {"create": {"wait-for": [{"node": cluster.name, "stage": "create"}]}},
            }
            execs[kn.kind_name] = []

    # Rack segments: each kind node's eth1 on a port of its ToR's rack bridge.
    by_spec = {kn.spec_name: kn for nodes_ in kind_nodes.values() for kn in nodes_}
    for port in topo.rack_ports:
        kn = by_spec.get(port.node)
        if kn is None:
            continue
        tor_if, node_if = ports.next(port.tor), ports.next(kn.kind_name)
        links.append({"endpoints": [f"{port.tor}:{tor_if}", f"{kn.kind_name}:{node_if}"]})
        execs[port.tor] += [f"ip link set {tor_if} master {RACK_BRIDGE}", _up(tor_if)]
        execs[kn.kind_name] += [_addr(port.node_address, node_if), _up(node_if)]
        if port.node_address6 is not None:
            execs[kn.kind_name].append(_addr(port.node_address6, node_if))
        execs[kn.kind_name] += [loose_rp_filter("eth0"), loose_rp_filter(node_if)]
        # eth0 is kind's docker network: route the lab fabric via the rack's ToR (as the netns
        # runtime's default route does), so host-network pods (Typha) reach the other racks
        # before BGP is up.
        tor_ip = topo.tor_address[port.tor].ip
        execs[kn.kind_name].append(f"ip route add {FABRIC_RANGE} via {tor_ip} dev {node_if}")
        if port.tor in topo.tor_address6:
            tor_ip6 = topo.tor_address6[port.tor].ip
            execs[kn.kind_name].append(f"ip -6 route add {FABRIC6_RESERVED} via {tor_ip6} dev {node_if}")
    for tor, addr in topo.tor_address.items():
        execs[tor].append(_addr(addr, RACK_BRIDGE))
        if tor in topo.tor_address6:
            execs[tor].append(_addr(topo.tor_address6[tor], RACK_BRIDGE))

    # Router-router links, then host links (a host routes the lab ranges via its router).
    for link in topo.links + topo.host_links:
        a_if, b_if = ports.next(link.a.entity), ports.next(link.b.entity)
        links.append({"endpoints": [f"{link.a.entity}:{a_if}", f"{link.b.entity}:{b_if}"]})
        for end, dev in ((link.a, a_if), (link.b, b_if)):
            execs[end.entity] += [_addr(end.address, dev), _up(dev)]
            if end.address6 is not None:
                execs[end.entity].append(_addr(end.address6, dev))
    for link in topo.host_links:
        execs[link.b.entity] += [f"ip route add {net} via {link.a.address.ip}" for net in LAB_RANGES]
        if link.a.address6 is not None:
            execs[link.b.entity].append(f"ip -6 route add {DOC6_RANGE} via {link.a.address6.ip}")
    for router in spec.routers:
        execs[router.name].append(ROUTER_DEFAULT_ROUTE)
        if dual:
            execs[router.name] += [ROUTER_DEFAULT_ROUTE6, BIRD6_START]

    for name, commands in execs.items():
        if commands:
            nodes[name]["exec"] = commands
    topology: dict[str, Any] = {"nodes": nodes}
    if links:
        topology["links"] = links
    return {
        "name": spec.name,
        "mgmt": {"network": mgmt_network(spec.name), "ipv4-subnet": "auto"},
        "topology": topology,
    }


def router_config(topo: Topology, router: str, family: int = 4) -> str:
    """A router's BIRD (family 6: bird6) config for a container: as for netns, but not
    announcing the management network (eth0, containerlab's docker network) into BGP."""
    text = render_router(topo, router, family=family)
    return re.sub(
        r'(protocol direct \{\s*\n\s*interface )"\*";',
        r'\1"-eth0", "*";   # eth0 is the containerlab management network',
        text,
        count=1,
    )
