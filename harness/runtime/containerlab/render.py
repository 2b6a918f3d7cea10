"""Render a lab spec for the containerlab runtime: every file the real stack is built from.

    rendered = render_containerlab(load_lab("labs/default.yml"), Path("out"))
    report = validate_rendered(Path("out"))        # schemas, structure, `bird -p`

writes into `out/`:
- `<lab>.clab.yml`: the containerlab topology. BIRD routers and external hosts are `linux`
  nodes of the kvlab/tor image; each kind cluster is a `k8s-kind` node plus one `ext-container`
  node per kind node (`<cluster>-control-plane`, `<cluster>-worker`, `<cluster>-worker2`, ...)
  linked to its rack's ToR. Addresses are the topology's (the same plan the netns runtime uses),
  set with `exec`; ToR rack segments are Linux bridges (`br-rack`) as in the netns runtime.
  Routers replace their default route (ROUTER_DEFAULT_ROUTE); kind nodes filter reverse paths
  loosely (RP_FILTER_LOOSE).
- `bird/<router>.conf`: the routers' BIRD configs (harness.render.bird), bound into the
  containers at /etc/bird/bird.conf; BIRD's socket directory /run/bird is bound to
  `<run dir>/<lab>/<router>` on the host. External hosts get this `harness/` package bound
  read-only at /opt/kvlab/harness (the TCP canary runs there with PYTHONPATH=/opt/kvlab).
- `kind/<cluster>.yaml`: kind v1alpha4 cluster configs (kind-configs/cluster.yaml.j2), plus an
  extraMount per node of calico-node's /var/run/calico (a hostPath) to `<run dir>/<node>/calico`,
  so calico-node's BIRD socket is `<run dir>/<node>/calico/bird.ctl` on the host.
- `calico/<cluster>/installation.yaml` (tigera operator Installation + APIServer),
  `calico/<cluster>/bgp.yaml` (the lab's BGPFilters, BGPConfiguration and BGPPeers, node names
  mapped to kind's, as the crd.projectcalico.org/v1 objects applied before Calico runs:
  BGP_CRD_KINDS says why) and `calico/<cluster>/resources.yaml` (the lab's other Calico v3
  resources, applied through Calico's API server).
- `kubevirt/kubevirt.yaml` (the KubeVirt CR) and `kubevirt/vms.yaml` (one VirtualMachine per VM,
  its cloud-init authorizing the lab's SSH key for versions.GUEST_USER).
- `ssh/id_rsa` (mode 0600) and `ssh/id_rsa.pub`: the lab's SSH key (RSA 3072, generated here, or
  the existing one when re-rendering into the same directory; `ssh_key=` gives one instead).
  Commands reach a guest over SSH through the lab's first external host
  (harness.runtime.containerlab.guestssh); its host key goes to `<run dir>/ssh/known_hosts`.
- `manifest.json` (what was rendered, for which versions, and the name mappings) and README.md.

Nested clusters (`parent:` in the spec) are not kind clusters: they run inside KubeVirt VMs of
their parent. Their Calico resources are rendered; the clusters themselves are not (README.md
says so), while the parent's resources carry localWorkloadPeeringIPV4 for them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.calico import resources as cr
from harness.errors import InputError, LabError, SpecIssue
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import schemas
from harness.runtime.containerlab.versions import DEFAULT, GUEST_USER, StackVersions, tor_image
from harness.render.bird import check_config, render_router
from harness.spec import FABRIC_RANGE, POOL_RANGES, WORKLOAD_PEERING_IPS, Cluster, LabSpec, cluster_resources
from harness.state import lab_dir
from harness.topology import RACK_BRIDGE, Topology, resolve
from harness.yamlsrc import format_path

TEMPLATE_DIR = Path(__file__).resolve().parents[3] / "kind-configs"
MANIFEST_VERSION = 1
LAB_RANGES = (FABRIC_RANGE, *POOL_RANGES)
SERVICE_RANGE = ipaddress.IPv4Network("198.19.255.0/24")
"""Service subnet of the first kind cluster; the next clusters count down (198.19.254.0/24, ...).
Automatic link subnets are numbered from the bottom of 198.19.0.0/16, so the top stays free;
`service_subnets()` checks that nothing in the topology overlaps."""
DEFAULT_AS = 64512
POLICY_SETUP_TIMEOUT_S = 10
BIRD_CONF = "/etc/bird/bird.conf"
BIRD_RUN = "/run/bird"
CALICO_RUN = "/var/run/calico"  # calico-node's hostPath: BIRD's control socket bird.ctl is in it
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
# Kind nodes send to the API server through eth0 (kind's docker network) and get replies, and
# requests from pods of other nodes, through the fabric interface (BGP routes): strict reverse
# path filtering (rp_filter 1, a host default some distributions set, which containers inherit)
# drops those. Loose (2) per interface wins over `all` (the kernel uses the larger value).
RP_FILTER_LOOSE = 2
HOSTNAME_LABEL = "kubernetes.io/hostname"
NODE_LABEL = "kvlab.io/node"
CLUSTER_LABEL = "kvlab.io/cluster"
SSH_KEY_BITS = 3072
SSH_KEY_FILE = "ssh/id_rsa"  # in the render directory, with SSH_KEY_FILE + ".pub"
SSH_PORT = 22
KIND_EXTRAS_KEY = "k8s_kind"  # containerlab's `extras.k8s_kind` of a k8s-kind node
KIND_DEPLOY_WAIT = "0s"


class RenderError(InputError):
    """The lab cannot be rendered for containerlab (e.g. an address plan clash): bad input, exit 2."""


# -- names -----------------------------------------------------------------------------------


def kind_node_names(cluster: str, count: int) -> list[str]:
    """The container (and Kubernetes node) names kind gives a cluster's nodes, in order."""
    names = [f"{cluster}-control-plane"]
    names += [f"{cluster}-worker" + ("" if i == 1 else str(i)) for i in range(1, count)]
    return names


def container_name(lab: str, node: str) -> str:
    """containerlab's name of a topology node's container (default prefix 'clab')."""
    return f"clab-{lab}-{node}"


def mgmt_network(lab: str) -> str:
    return f"kvlab-{lab}"


def kind_clusters(spec: LabSpec) -> list[Cluster]:
    """Clusters that are kind clusters (everything but nested clusters)."""
    return [c for c in spec.clusters if c.parent is None]


@dataclass(frozen=True)
class KindNode:
    """One kind node: its kind/Kubernetes name, the spec node it plays, where it is wired."""

    kind_name: str
    spec_name: str
    cluster: str
    role: Literal["control-plane", "worker"]
    ip: ipaddress.IPv4Address
    prefixlen: int
    rack: str
    tor: str
    labels: dict[str, str] = field(default_factory=dict)


def plan_kind_nodes(topo: Topology) -> dict[str, list[KindNode]]:
    """Kind nodes of each kind cluster, in spec order (the first node is the control plane)."""
    spec = topo.spec
    out: dict[str, list[KindNode]] = {}
    problems = []
    for cluster in kind_clusters(spec):
        nodes = []
        for i, (node, kind_name) in enumerate(
            zip(cluster.nodes, kind_node_names(cluster.name, len(cluster.nodes)), strict=True)
        ):
            if node.rack is None or node.name not in topo.node_address:
                problems.append(
                    f"node '{node.name}' of cluster '{cluster.name}' has no rack: the containerlab runtime "
                    "wires every kind node to its rack's ToR"
                )
                continue
            addr = topo.node_address[node.name]
            labels = {NODE_LABEL: node.name, "rack": node.rack}
            labels.update({k: v for k, v in node.labels.items() if not _restricted_label(k)})
            nodes.append(
                KindNode(
                    kind_name=kind_name,
                    spec_name=node.name,
                    cluster=cluster.name,
                    role="control-plane" if i == 0 else "worker",
                    ip=addr.ip,
                    prefixlen=addr.network.prefixlen,
                    rack=node.rack,
                    tor=spec.rack(node.rack).tor,
                    labels=labels,
                )
            )
        out[cluster.name] = nodes
    if problems:
        raise RenderError("; ".join(problems))
    return out


def _restricted_label(key: str) -> bool:
    """kubelet refuses --node-labels in the kubernetes.io / k8s.io namespaces."""
    prefix = key.split("/", 1)[0] if "/" in key else ""
    return prefix.endswith(("kubernetes.io", "k8s.io"))


# -- address plan ----------------------------------------------------------------------------


def topology_networks(topo: Topology) -> list[tuple[str, ipaddress.IPv4Network]]:
    """Every subnet the topology uses, named: rack segments, router and host links, pools."""
    nets = [(f"rack {name}", net) for name, net in topo.rack_subnet.items()]
    for link in topo.links:
        nets.append((f"link {link.a.entity}-{link.b.entity}", link.subnet))
    for link in topo.host_links:
        nets.append((f"host link {link.a.entity}-{link.b.entity}", link.subnet))
    for cluster in topo.spec.clusters:
        nets += [(f"pool of cluster {cluster.name}", pool) for pool in cluster.pools]
    return nets


def service_subnets(topo: Topology) -> dict[str, ipaddress.IPv4Network]:
    """A Kubernetes service subnet per kind cluster, inside the fabric range and clashing with
    nothing in the topology. Raises RenderError naming the clash."""
    out = {}
    used = topology_networks(topo)
    base = int(SERVICE_RANGE.network_address)
    for i, cluster in enumerate(kind_clusters(topo.spec)):
        net = ipaddress.IPv4Network((base - i * SERVICE_RANGE.num_addresses, SERVICE_RANGE.prefixlen))
        for what, other in used:
            if net.overlaps(other):
                raise RenderError(
                    f"service subnet {net} of cluster '{cluster.name}' overlaps {what} ({other}); "
                    f"move that subnet out of {net}"
                )
        out[cluster.name] = net
    return out


def covering_network(nets: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The smallest network that contains every one of `nets` (at least one)."""
    cover = nets[0]
    while not all(n.subnet_of(cover) for n in nets):
        cover = cover.supernet()
    return cover


def pod_subnets(spec: LabSpec) -> dict[str, ipaddress.IPv4Network]:
    """kind's `podSubnet` per kind cluster: the smallest network covering all of its pools.

    kubeadm takes one IPv4 pod CIDR, and the tigera operator refuses Installation pools that lie
    outside it (operator v1.42.3 pkg/controller/ippool/defaults.go mergePlatformPodCIDRs: "IPPool
    ... is not within the platform's configured pod network CIDR(s)"). The cover must stay inside
    one lab pool range; RenderError naming the cluster's `pools` field otherwise."""
    out = {}
    for ci, cluster in enumerate(spec.clusters):
        if cluster.parent is not None:
            continue
        cover = covering_network(list(cluster.pools))
        if not any(cover.subnet_of(r) for r in POOL_RANGES):
            raise RenderError(
                f"clusters[{ci}].pools: the pools of cluster '{cluster.name}' "
                f"({', '.join(map(str, cluster.pools))}) need one kubeadm pod subnet covering them all, "
                f"and the smallest one, {cover}, leaves the lab pool ranges "
                f"({', '.join(map(str, POOL_RANGES))}); the tigera operator refuses pools outside it. "
                "Put the cluster's pools inside one pool range"
            )
        out[cluster.name] = cover
    return out


def in_lab_ranges(value: str) -> bool:
    """True when an address or prefix lies inside the lab's ranges (or is a workload peering IP)."""
    net = ipaddress.ip_network(value, strict=False)
    if net.version != 4:
        return False
    if net.num_addresses == 1 and net.network_address in WORKLOAD_PEERING_IPS:
        return True
    return any(net.subnet_of(r) for r in LAB_RANGES)  # type: ignore[arg-type]


# -- containerlab topology -------------------------------------------------------------------


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

    for router in spec.routers:
        nodes[router.name] = {
            "kind": "linux",
            "image": image,
            "group": router.role,
            "binds": [f"bird/{router.name}.conf:{BIRD_CONF}:ro", f"{run_dir / router.name}:{BIRD_RUN}"],
            "sysctls": dict(ROUTER_SYSCTLS),
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
        execs[kn.kind_name] += [loose_rp_filter("eth0"), loose_rp_filter(node_if)]
        # eth0 is kind's docker network: route the lab fabric via the rack's ToR (as the netns
        # runtime's default route does), so host-network pods (Typha) reach the other racks
        # before BGP is up.
        tor_ip = topo.tor_address[port.tor].ip
        execs[kn.kind_name].append(f"ip route add {FABRIC_RANGE} via {tor_ip} dev {node_if}")
    for tor, addr in topo.tor_address.items():
        execs[tor].append(_addr(addr, RACK_BRIDGE))

    # Router-router links, then host links (a host routes the lab ranges via its router).
    for link in topo.links + topo.host_links:
        a_if, b_if = ports.next(link.a.entity), ports.next(link.b.entity)
        links.append({"endpoints": [f"{link.a.entity}:{a_if}", f"{link.b.entity}:{b_if}"]})
        for end, dev in ((link.a, a_if), (link.b, b_if)):
            execs[end.entity] += [_addr(end.address, dev), _up(dev)]
    for link in topo.host_links:
        execs[link.b.entity] += [f"ip route add {net} via {link.a.address.ip}" for net in LAB_RANGES]
    for router in spec.routers:
        execs[router.name].append(ROUTER_DEFAULT_ROUTE)

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


def router_config(topo: Topology, router: str) -> str:
    """A router's BIRD config for a container: as for netns, but not announcing the management
    network (eth0, containerlab's docker network) into BGP."""
    text = render_router(topo, router)
    return re.sub(
        r'(protocol direct \{\s*\n\s*interface )"\*";',
        r'\1"-eth0", "*";   # eth0 is the containerlab management network',
        text,
        count=1,
    )


# -- kind ------------------------------------------------------------------------------------


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


def calico_run_dir(run_dir: Path, node: str) -> Path:
    """Host directory bound at calico-node's /var/run/calico in the kind node of spec node `node`."""
    return run_dir / node / "calico"


def kind_config(
    topo: Topology,
    cluster: Cluster,
    nodes: list[KindNode],
    versions: StackVersions,
    service_subnet: Any,
    run_dir: Path | None = None,
) -> str:
    """A kind v1alpha4 Cluster config for a kind cluster of the lab. With `run_dir`, each node
    mounts `<run dir>/<spec node>/calico` at /var/run/calico (calico-node's BIRD socket)."""
    text = _kind_template(topo, cluster, nodes, versions, service_subnet)
    if run_dir is None:
        return text
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    doc = yaml.safe_load(text)
    for node, kn in zip(doc["nodes"], nodes, strict=True):
        node.setdefault("extraMounts", []).append(
            {"hostPath": str(calico_run_dir(run_dir, kn.spec_name)), "containerPath": CALICO_RUN}
        )
    return _dump_yaml([doc], header)


def _kind_template(
    topo: Topology, cluster: Cluster, nodes: list[KindNode], versions: StackVersions, service_subnet: Any
) -> str:
    pods = covering_network(list(cluster.pools))  # pod_subnets() refused a cover leaving the pool ranges
    return (
        _env()
        .get_template("cluster.yaml.j2")
        .render(
            lab=topo.spec.name,
            cluster=cluster,
            nodes=nodes,
            image=versions.kind_node_image,
            pod_subnet=str(pods),
            service_subnet=str(service_subnet),
            node_cidr_mask_size=max(cluster.block_size, pods.prefixlen),
        )
    )


class _Kind(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class KindNetworking(_Kind):
    """kind `networking` (the fields kind v1alpha4 has)."""

    ipFamily: Literal["ipv4", "ipv6", "dual"] | None = None
    apiServerAddress: str | None = None
    apiServerPort: int | None = None
    podSubnet: str | None = None
    serviceSubnet: str | None = None
    disableDefaultCNI: bool | None = None
    kubeProxyMode: Literal["iptables", "nftables", "ipvs", "none"] | None = None
    dnsSearch: list[str] | None = None


class KindClusterNode(_Kind):
    role: Literal["control-plane", "worker"]
    image: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    extraMounts: list[dict[str, Any]] = Field(default_factory=list)
    extraPortMappings: list[dict[str, Any]] = Field(default_factory=list)
    kubeadmConfigPatches: list[str] = Field(default_factory=list)
    kubeadmConfigPatchesJSON6902: list[dict[str, Any]] = Field(default_factory=list)


class KindCluster(_Kind):
    """A kind `kind.x-k8s.io/v1alpha4` Cluster (kind publishes no schema; these are its fields)."""

    kind: Literal["Cluster"]
    apiVersion: Literal["kind.x-k8s.io/v1alpha4"]
    name: str | None = None
    nodes: list[KindClusterNode] = Field(min_length=1)
    networking: KindNetworking = Field(default_factory=KindNetworking)
    featureGates: dict[str, bool] = Field(default_factory=dict)
    runtimeConfig: dict[str, str] = Field(default_factory=dict)
    kubeadmConfigPatches: list[str] = Field(default_factory=list)
    kubeadmConfigPatchesJSON6902: list[dict[str, Any]] = Field(default_factory=list)
    containerdConfigPatches: list[str] = Field(default_factory=list)
    containerdConfigPatchesJSON6902: list[str] = Field(default_factory=list)


def kind_node_ip(node: KindClusterNode) -> str | None:
    """The kubelet node-ip a kind node's kubeadm patches set, if any."""
    for patch in node.kubeadmConfigPatches:
        doc = yaml.safe_load(patch) or {}
        ip = doc.get("nodeRegistration", {}).get("kubeletExtraArgs", {}).get("node-ip")
        if ip is not None:
            return str(ip)
    return None


# -- Calico ----------------------------------------------------------------------------------

_ENCAPSULATION = {
    ("Always", None): "IPIP",
    ("CrossSubnet", None): "IPIPCrossSubnet",
    (None, "Always"): "VXLAN",
    (None, "CrossSubnet"): "VXLANCrossSubnet",
}


def _pool_name(pool: ipaddress.IPv4Network) -> str:
    return "kvlab-" + str(pool).replace(".", "-").replace("/", "-")


def installation_pools(cluster: Cluster, resources: list[Any]) -> list[dict[str, Any]]:
    """Installation `calicoNetwork.ipPools`: the cluster's IPPool resources (else its pools),
    in the operator's terms. The operator owns these pools; resources.yaml leaves them out."""
    out = []
    declared = {
        ipaddress.ip_network(r.spec.cidr, strict=False): r for r in resources if isinstance(r, cr.IPPool)
    }
    for pool in cluster.pools:
        res = declared.get(pool)
        entry: dict[str, Any] = {
            "name": res.metadata.name if res else _pool_name(pool),
            "cidr": str(pool),
            "blockSize": (res.spec.blockSize if res and res.spec.blockSize else cluster.block_size),
            "encapsulation": "None",
            "natOutgoing": "Disabled",
        }
        if res is not None:
            ipip = res.spec.ipipMode if res.spec.ipipMode not in (None, "Never") else None
            vxlan = res.spec.vxlanMode if res.spec.vxlanMode not in (None, "Never") else None
            entry["encapsulation"] = _ENCAPSULATION.get((ipip, vxlan), "None")
            if res.spec.natOutgoing:
                entry["natOutgoing"] = "Enabled"
            for key in ("nodeSelector", "disableBGPExport", "allowedUses", "assignmentMode"):
                value = getattr(res.spec, key)
                if value is not None:
                    entry[key] = value
        out.append(entry)
    return out


def installation(topo: Topology, cluster: Cluster, resources: list[Any]) -> dict[str, Any]:
    """The tigera operator `Installation`: BGP without overlay, the lab's pools, node addresses
    autodetected on the rack segments (not the kind docker network)."""
    racks = sorted({n.rack for n in cluster.nodes if n.rack is not None})
    cidrs = [str(topo.rack_subnet[r]) for r in racks]
    return {
        "apiVersion": "operator.tigera.io/v1",
        "kind": "Installation",
        "metadata": {"name": "default"},
        "spec": {
            "calicoNetwork": {
                "bgp": "Enabled",
                "ipPools": installation_pools(cluster, resources),
                "nodeAddressAutodetectionV4": {"cidrs": cidrs},
                "linuxPolicySetupTimeoutSeconds": POLICY_SETUP_TIMEOUT_S,
            },
        },
    }


def apiserver() -> dict[str, Any]:
    """The operator's `APIServer`, so `kubectl apply` can create projectcalico.org/v3 resources."""
    return {
        "apiVersion": "operator.tigera.io/v1",
        "kind": "APIServer",
        "metadata": {"name": "default"},
        "spec": {},
    }


def _map_selector(text: str | None, names: dict[str, str]) -> str | None:
    """Rewrite quoted spec node names in selectors on kubernetes.io/hostname to kind's names."""
    if text is None or HOSTNAME_LABEL not in text:
        return text
    return re.sub(
        r"""(['"])([a-z0-9-]+)\1""",
        lambda m: m.group(1) + names.get(m.group(2), m.group(2)) + m.group(1),
        text,
    )


def calico_document(res: Any) -> dict[str, Any]:
    """A typed Calico resource as a plain document. Unset and empty fields are left out: the
    CRDs reject some empty lists the models default to (BGPFilter rule `operations: []`)."""
    return res.model_dump(mode="json", exclude_none=True, exclude_defaults=True, by_alias=True)


def calico_documents(
    cluster: Cluster, resources: list[Any], names: dict[str, str], *, operator_pools: bool = True
) -> list[dict[str, Any]]:
    """The cluster's Calico v3 resources for a real cluster: the BGPConfiguration 'default'
    carries the cluster's AS, BGPPeer node names are mapped spec -> kind (`names`), and with
    `operator_pools` IPPools are left out (the Installation declares them)."""
    docs = []
    has_default = False
    for res in resources:
        if operator_pools and isinstance(res, cr.IPPool):
            continue
        doc = calico_document(res)
        if isinstance(res, cr.BGPConfiguration) and res.metadata.name == "default":
            has_default = True
            doc["spec"].setdefault("asNumber", cluster.asn)
        if isinstance(res, cr.BGPPeer):
            s = doc["spec"]
            if "node" in s:
                s["node"] = names.get(s["node"], s["node"])
            for key in ("nodeSelector", "peerSelector"):
                if key in s:
                    s[key] = _map_selector(s[key], names)
        docs.append(doc)
    if not has_default and cluster.asn != DEFAULT_AS:
        docs.insert(
            0,
            {
                "apiVersion": cr.API_VERSION,
                "kind": "BGPConfiguration",
                "metadata": {"name": "default"},
                "spec": {"asNumber": cluster.asn},
            },
        )
    return docs


IP_RESERVATION_NAME = "kvlab-vms"
# What must be in place before Calico runs is written as the CRD objects Calico stores: the
# operator's install (manifests/operator-crds.yaml of every pinned Calico) serves Calico's
# resources as crd.projectcalico.org/v1 CRDs, which Calico's Kubernetes datastore reads as
# projectcalico.org/v3 with the same spec (calico v3.32.1 libcalico-go/lib/backend/k8s/resources:
# bgppeer.go and its siblings decode into the v3 types; resources.go
# ConvertK8sResourceToCalicoResource takes the metadata as is when there is no
# projectcalico.org/metadata annotation). The v3 API (Calico's API server) only exists once
# Calico runs.
CALICO_CRD_API = schemas.CALICO_CRD_API
IP_RESERVATION_API = CALICO_CRD_API  # by then Calico's own pods may hold a VM's address
BGP_CRD_KINDS = ("BGPFilter", "BGPConfiguration", "BGPPeer")
"""Written as crd.projectcalico.org/v1 objects right after the operator's CRDs, in this order (a
filter before the peers naming it). Why before Calico runs: until a BGPConfiguration exists,
calico-node runs the node-to-node mesh (and at its first start creates an empty `default`, mesh
on: calico v3.32.1 node/pkg/lifecycle/startup/startup.go ensureDefaultBGPConfigExists), and
with no BGPPeer the ToRs, whose neighbours are passive, learn no pod block. A reply to a pod in
another rack then follows the node's fabric route to its ToR and is dropped there. Pods reach
the API server through its ClusterIP, DNATed to the control plane's kind address and not SNATed
(natOutgoing Disabled), so calico-kube-controllers and calico-apiserver pods outside the control
plane's rack never become Ready, and TigeraStatus 'calico' and 'apiserver' never Available: the
v3 step would never come. FelixConfiguration and IPAMConfiguration stay in resources.yaml,
applied through the v3 API once Calico runs: the operator patches the `default`
FelixConfiguration itself (tigera/operator v1.42.3 core_controller.go PatchFelixConfiguration),
the v1 form of IPAMConfiguration is another kind (IPAMConfig, libcalico-go
ipam_config_v1.go), and neither is needed for pods to reach the API server."""


def crd_objects(docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the BGP_CRD_KINDS documents as crd.projectcalico.org/v1 objects in apply order, the rest
    unchanged). Only the apiVersion differs: the CRDs' spec is the v3 spec."""
    early = [
        {**d, "apiVersion": CALICO_CRD_API} for kind in BGP_CRD_KINDS for d in docs if d.get("kind") == kind
    ]
    return early, [d for d in docs if d.get("kind") not in BGP_CRD_KINDS]


def ip_reservation(cidrs: list[str]) -> dict[str, Any]:
    """A Calico `IPReservation` of the cluster's VM addresses (/32 each), as the CRD Calico stores
    it in: IPAM never hands them out automatically (autoAssign skips reserved addresses, libcalico-go
    lib/ipam), while a VM's ipAddrs annotation still gets its address (AssignIP ignores
    reservations). Applied right after the operator's CRDs, before any pod gets an address."""
    return {
        "apiVersion": IP_RESERVATION_API,
        "kind": "IPReservation",
        "metadata": {"name": IP_RESERVATION_NAME},
        "spec": {"reservedCIDRs": cidrs},
    }


def ip_reservation_errors(
    doc: dict[str, Any], pools: list[str], file: str, prefix: tuple = ()
) -> list[SpecIssue]:
    """An IPReservation's shape (no CRD schema for it in the shared schemas, so this is a
    minimal check): apiVersion, kind, metadata.name, spec.reservedCIDRs a non-empty list of
    IPv4 CIDRs inside the cluster's `pools`."""
    issues = []
    for key, want in (("apiVersion", IP_RESERVATION_API), ("kind", "IPReservation")):
        if doc.get(key) != want:
            issues.append(SpecIssue(file, format_path((*prefix, key)), f"must be {want!r}"))
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name):
        issues.append(
            SpecIssue(file, format_path((*prefix, "metadata", "name")), "not a valid resource name")
        )
    spec = doc.get("spec")
    extra = set(spec) - {"reservedCIDRs"} if isinstance(spec, dict) else set()
    if extra:
        issues.append(SpecIssue(file, format_path((*prefix, "spec")), f"unknown fields {sorted(extra)}"))
    cidrs = spec.get("reservedCIDRs") if isinstance(spec, dict) else None
    where = (*prefix, "spec", "reservedCIDRs")
    if not isinstance(cidrs, list) or not cidrs:
        return [*issues, SpecIssue(file, format_path(where), "must be a non-empty list of CIDRs")]
    nets = [ipaddress.ip_network(p) for p in pools]
    for i, value in enumerate(cidrs):
        try:
            net = ipaddress.ip_network(str(value), strict=True)
        except ValueError:
            issues.append(SpecIssue(file, format_path((*where, i)), f"{value!r} is not a CIDR"))
            continue
        if not any(net.version == p.version and net.subnet_of(p) for p in nets):  # type: ignore[arg-type]
            issues.append(
                SpecIssue(
                    file,
                    format_path((*where, i)),
                    f"{value} is outside the cluster's pools ({', '.join(pools)})",
                )
            )
    return issues


# Fields Calico v3.32.0 introduced (KubeVirt live-migration support and more): an older Calico's
# v3 API rejects them, so they are left out of the resources rendered for it. Per kind: spec paths
# (`*` is every element of a list). From the JSON tags of api/pkg/apis/projectcalico/v3/*.go,
# v3.31.7 (94bd1d5b) against v3.32.0 (tests/data/realstack/calico-v3-fields-new-in-3.32.0.json
# keeps the comparison; a unit test holds this table to it). What a 3.31 cell then cannot test:
# route priorities (the `calico_3_32` and `migration` tests skip there), BGPPeer keepaliveTime
# (the nested lab, not run on 3.31), IPAMConfiguration autoAllocateBlocks (the default, true).
BGPFILTER_RULE_LISTS = ("exportV4", "importV4", "exportV6", "importV6")
BGPFILTER_MATCHES_SINCE_3_32 = ("peerType", "priority", "communities", "asPathPrefix")
"""BGPFilter rule match fields new in v3.32.0. A rule that loses one matches more than it says (a
rule left with no match at all is a bare `accept;`/`reject;` in front of Calico's own filter:
v3.31.7 confd/pkg/resource/template/template_funcs.go filterStatement), so such a rule is left
out whole; a rule losing only its `operations` keeps its match and action."""
PRE_3_32_DROPPED = {
    "BGPConfiguration": [
        f"spec.{f}" for f in ("ipv4NormalRoutePriority", "ipv6NormalRoutePriority", "programClusterRoutes")
    ],
    "BGPPeer": ["spec.keepaliveTime"],
    "BGPFilter": [
        f"spec.{rules}.*.{f}"
        for rules in BGPFILTER_RULE_LISTS
        for f in (*BGPFILTER_MATCHES_SINCE_3_32, "operations")
    ],
    "FelixConfiguration": [
        f"spec.{f}"
        for f in (
            "ipv4NormalRoutePriority",
            "ipv4ElevatedRoutePriority",
            "ipv6NormalRoutePriority",
            "ipv6ElevatedRoutePriority",
            "liveMigrationRouteConvergenceTime",
            "nodeSelector",
            "bpfMaglevMaxEndpointsPerService",
            "bpfMaglevMaxServices",
            "istioAmbientMode",
            "istioDSCPMark",
            "prometheusMetricsCAFile",
            "prometheusMetricsCertFile",
            "prometheusMetricsClientAuth",
            "prometheusMetricsKeyFile",
        )
    ],
    "IPAMConfiguration": ["spec.kubeVirtVMAddressPersistence", "spec.autoAllocateBlocks"],
}


def _required_since_3_32(docs: list[dict[str, Any]], issue: SpecIssue) -> bool:
    """A schema issue that only says a field Calico 3.32.0 introduced is missing: the shared CRDs
    are 3.32's (IPAMConfiguration requires `autoAllocateBlocks` there), a 3.31 render leaves it out."""
    m = re.fullmatch(r"\[(\d+)\]\.spec", issue.path)
    missing = re.fullmatch(r"'(\w+)' is a required property", issue.message)
    if not m or not missing or int(m[1]) >= len(docs):
        return False
    kind = docs[int(m[1])].get("kind", "")
    return f"spec.{missing[1]}" in PRE_3_32_DROPPED.get(kind, [])


def _drop_pre_3_32_rules(docs: list[dict[str, Any]]) -> list[str]:
    """Leave out (in place) every BGPFilter rule that matches on a field new in v3.32.0 and the
    operations of the others, then every BGPFilter with no rule left and the BGPPeers' references
    to it; what was left out, as lines."""
    dropped = []
    emptied = set()
    for doc in docs:
        if doc.get("kind") != "BGPFilter":
            continue
        name = (doc.get("metadata") or {}).get("name")
        spec = doc.get("spec") or {}
        had_rules = any(spec.get(key) for key in BGPFILTER_RULE_LISTS)
        for key in BGPFILTER_RULE_LISTS:
            kept = []
            for i, rule in enumerate(spec.get(key) or []):
                lost = [f for f in BGPFILTER_MATCHES_SINCE_3_32 if f in rule]
                if lost:
                    dropped.append(
                        f"BGPFilter/{name} spec.{key}[{i}] (the whole rule: it matches on "
                        f"{', '.join(lost)}, which Calico before v3.32.0 lacks)"
                    )
                    continue
                if "operations" in rule:  # reported with the rule's index in the lab's filter
                    del rule["operations"]
                    dropped.append(f"BGPFilter/{name} spec.{key}[{i}].operations")
                kept.append(rule)
            if kept:
                spec[key] = kept
            else:
                spec.pop(key, None)
        if had_rules and not any(spec.get(key) for key in BGPFILTER_RULE_LISTS):
            emptied.add(name)
            dropped.append(f"BGPFilter/{name} (no rule left)")
    docs[:] = [d for d in docs if not (d.get("kind") == "BGPFilter" and d["metadata"]["name"] in emptied)]
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc.get("kind") != "BGPPeer" or not set(spec.get("filters") or []) & emptied:
            continue
        gone = [f for f in spec["filters"] if f in emptied]
        spec["filters"] = [f for f in spec["filters"] if f not in emptied]
        if not spec["filters"]:
            del spec["filters"]
        dropped.append(f"BGPPeer/{doc['metadata']['name']} spec.filters: {', '.join(gone)}")
    return dropped


def drop_pre_3_32_fields(docs: list[dict[str, Any]]) -> list[str]:
    """Remove PRE_3_32_DROPPED fields from `docs` in place (BGPFilter rules matching on one go
    whole, see BGPFILTER_MATCHES_SINCE_3_32); return what was dropped, as '<Kind>/<name> <path>'
    lines."""
    dropped = _drop_pre_3_32_rules(docs)

    def walk(obj: Any, parts: list[str], at: list[str], label: str) -> None:
        head, rest = parts[0], parts[1:]
        if head == "*":
            for i, item in enumerate(obj if isinstance(obj, list) else []):
                walk(item, rest, [*at[:-1], f"{at[-1]}[{i}]"], label)
            return
        if not isinstance(obj, dict) or head not in obj:
            return
        if rest:
            walk(obj[head], rest, [*at, head], label)
        else:
            del obj[head]
            dropped.append(f"{label} {'.'.join([*at, head])}")

    for doc in docs:
        label = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        for path in PRE_3_32_DROPPED.get(doc.get("kind", ""), []):
            walk(doc, path.split("."), [], label)
    return dropped


# -- the lab's SSH key -----------------------------------------------------------------------


def known_hosts_path(run_dir: Path) -> Path:
    """The lab-local known_hosts the guests' host keys are recorded in (never ~/.ssh)."""
    return run_dir / "ssh" / "known_hosts"


def _public_line(key: Any, comment: str) -> str:
    return f"{key.get_name()} {key.get_base64()} {comment}"


def lab_ssh_key(out: Path, lab: str, given: Path | None = None) -> tuple[str, str, str, list[str]]:
    """The lab's SSH key pair: `given` (a private key file, used where it is), else `out`/ssh/id_rsa
    when it already holds a key, else a new RSA key written there (0600). Writes the public half
    into `out`/ssh/. Returns (private key as recorded: relative to `out` or absolute, public key
    file relative to `out`, the OpenSSH public key line, the rendered file names it wrote)."""
    import paramiko

    ssh_dir = out / "ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    comment = f"kvlab-{lab}"
    if given is not None:
        path = Path(given).resolve()
        try:
            key = paramiko.PKey.from_path(path)
        except Exception as e:  # missing, encrypted, not a key, or a type paramiko does not know
            raise RenderError(
                f"SSH key {path}: cannot use it ({type(e).__name__}: {e}); give an unencrypted "
                "private key (RSA, ECDSA or Ed25519)"
            ) from None
        private, public = str(path), f"ssh/{path.name}.pub"
        written = [public]
    else:
        path = out / SSH_KEY_FILE
        key = None
        if path.exists():
            try:
                key = paramiko.RSAKey.from_private_key_file(str(path))
            except (OSError, paramiko.SSHException, ValueError):
                key = None  # unreadable: replaced below
        if key is None:
            key = paramiko.RSAKey.generate(SSH_KEY_BITS)
            path.unlink(missing_ok=True)
            key.write_private_key_file(str(path))
        os.chmod(path, 0o600)
        private, public = SSH_KEY_FILE, SSH_KEY_FILE + ".pub"
        written = [private, public]
    line = _public_line(key, comment)
    (out / public).write_text(line + "\n")
    return private, public, line, written


def private_key_path(render_dir: Path, manifest: dict[str, Any]) -> Path:
    """The lab's SSH private key from a manifest's `guest_ssh` (relative paths are the render dir's)."""
    return render_dir / manifest["guest_ssh"]["private_key"]  # an absolute path stays absolute


# -- writing ---------------------------------------------------------------------------------


@dataclass
class Rendered:
    """What `render_containerlab` wrote (paths relative to `out`) and the name mappings."""

    out: Path
    lab: str
    versions: StackVersions
    files: list[str]
    manifest: dict[str, Any]

    @property
    def topology_file(self) -> Path:
        return self.out / self.manifest["topology_file"]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (cloud-init scripts) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
_KEY_ORDER = ("apiVersion", "kind", "metadata", "spec")


def _ordered(doc: Any) -> Any:
    """Kubernetes documents with apiVersion, kind, metadata, spec first."""
    if isinstance(doc, dict) and "apiVersion" in doc:
        return {**{k: doc[k] for k in _KEY_ORDER if k in doc}, **doc}
    return doc


def _dump_yaml(docs: list[Any], header: str = "") -> str:
    body = yaml.dump_all(
        [_ordered(d) for d in docs], Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100
    )
    return header + body


def render_containerlab(
    spec: LabSpec,
    out: Path,
    *,
    versions: StackVersions = DEFAULT,
    use_emulation: bool | None = None,
    image: str | None = None,
    run_dir: Path | None = None,
    ssh_key: Path | None = None,
) -> Rendered:
    """Write every file the containerlab runtime needs for `spec` into `out`.

    `use_emulation` None probes /dev/kvm and /dev/vhost-net here (kubevirt.needs_emulation); the
    runtime passes its own probes' answer. `image` is the ToR/host image (default:
    versions.tor_image()); `run_dir` the host directory of the BIRD sockets and the lab's
    known_hosts (default `<KVLAB_RUN_DIR or /run/kvlab>/<lab>`); `ssh_key` a private key file the
    VMs authorize instead of the lab's own (`lab_ssh_key`).
    Raises RenderError (bad input, plan_lab) before writing anything when the lab cannot be
    expressed on containerlab.
    """
    topo = resolve(spec)
    plan = plan_lab(topo)
    kind_nodes, services = plan.kind_nodes, plan.service_subnets
    resources = cluster_resources(spec)
    kvm = kv.kvm_usable() if use_emulation is None else None
    vhost_net = kv.vhost_net_usable() if use_emulation is None else None
    emulate = kv.needs_emulation(bool(kvm), bool(vhost_net)) if use_emulation is None else use_emulation
    image = image or tor_image()
    run_dir = run_dir or lab_dir(spec.name)
    names = {kn.spec_name: kn.kind_name for nodes in kind_nodes.values() for kn in nodes}

    out.mkdir(parents=True, exist_ok=True)
    key_private, key_public, public_line, key_files = lab_ssh_key(out, spec.name, ssh_key)
    files: dict[str, str] = {}
    topo_file = f"{spec.name}.clab.yml"
    files[topo_file] = _dump_yaml(
        [clab_topology(topo, kind_nodes, versions, image=image, run_dir=run_dir)],
        f"# containerlab topology of kvlab lab '{spec.name}' (rendered; see manifest.json)\n",
    )
    for router in spec.routers:
        files[f"bird/{router.name}.conf"] = router_config(topo, router.name)

    clusters_manifest: dict[str, Any] = {}
    ippools: dict[str, list[str]] = {}
    notes: list[str] = []
    for cluster in spec.clusters:
        items = resources.get(cluster.name, [])
        base = f"calico/{cluster.name}"
        nested = cluster.parent is not None
        docs = calico_documents(cluster, items, {} if nested else names, operator_pools=not nested)
        vm_cidrs = [f"{w.ip}/32" for w in topo.workloads if w.cluster == cluster.name]
        dropped = [] if versions.live_migration else drop_pre_3_32_fields(docs)
        if dropped:
            notes.append(
                f"WARNING: Calico {versions.calico} predates v3.32.0: what its CRDs lack was left out "
                f"of the resources of cluster '{cluster.name}' ({base}/): {'; '.join(dropped)}"
            )
        warning = (
            f"# WARNING: Calico {versions.calico} predates v3.32.0; left out: {'; '.join(dropped)}\n"
            if dropped
            else ""
        )
        omitted = [r.metadata.name for r in items if isinstance(r, cr.IPPool)]
        entry: dict[str, Any] = {"asn": cluster.asn, "pools": [str(p) for p in cluster.pools]}
        if not nested:
            owned = f": {', '.join(omitted)}" if omitted else ""
            early, docs = crd_objects(docs)
            header = (
                f"# Calico v3 resources of cluster '{cluster.name}' (kubectl apply -f, through Calico's "
                "API server once Calico runs).\n# BGP configuration, peers and filters are in bgp.yaml "
                f"(applied before Calico runs); IP pools are in installation.yaml (the operator owns "
                f"them){owned}.\n"
            )
            if early:
                files[f"{base}/bgp.yaml"] = _dump_yaml(
                    early,
                    f"# BGP configuration, peers and filters of cluster '{cluster.name}' as the "
                    f"{CALICO_CRD_API} objects Calico\n# stores, applied right after the operator's CRDs "
                    "(before calico-node first starts): nodes peer with\n# their ToRs from the start, so "
                    "pods in every rack reach the API server (render.BGP_CRD_KINDS).\n" + warning,
                )
                entry["bgp"] = f"{base}/bgp.yaml"
            inst = installation(topo, cluster, items)
            ippools[cluster.name] = [p["name"] for p in inst["spec"]["calicoNetwork"]["ipPools"]]
            files[f"{base}/installation.yaml"] = _dump_yaml(
                [inst, apiserver()],
                f"# tigera operator resources of cluster '{cluster.name}' (Calico {versions.calico}).\n",
            )
            files[f"kind/{cluster.name}.yaml"] = kind_config(
                topo, cluster, kind_nodes[cluster.name], versions, services[cluster.name], run_dir
            )
            if vm_cidrs:
                files[f"{base}/ipreservation.yaml"] = _dump_yaml(
                    [ip_reservation(vm_cidrs)],
                    f"# VM addresses of cluster '{cluster.name}', reserved before Calico runs (applied\n"
                    "# right after the operator's CRDs, as the CRD object Calico reads).\n",
                )
                entry["ip_reservation"] = f"{base}/ipreservation.yaml"
            entry.update(
                kind_config=f"kind/{cluster.name}.yaml",
                installation=f"{base}/installation.yaml",
                resources=f"{base}/resources.yaml",
                pod_subnet=str(plan.pod_subnets[cluster.name]),
                service_subnet=str(services[cluster.name]),
                ippools_in_installation=ippools[cluster.name],
                nodes={kn.spec_name: kn.kind_name for kn in kind_nodes[cluster.name]},
            )
        else:
            header = (
                f"# Calico v3 resources of nested cluster '{cluster.name}' (parent '{cluster.parent}'). "
                "It runs inside KubeVirt VMs of its parent, not as a kind cluster; apply these inside it.\n"
            )
            entry.update(
                parent=cluster.parent,
                nested=True,
                resources=f"{base}/resources.yaml",
                runs_in_vms={n.name: n.vm for n in cluster.nodes if n.vm is not None},
            )
        files[f"{base}/resources.yaml"] = _dump_yaml(docs, header + warning)
        clusters_manifest[cluster.name] = entry

    vms, vm_manifest, vm_notes = _vms(topo, names, versions, public_line)
    notes = vm_notes + notes
    if not versions.live_migration:
        notes.append(
            f"Calico {versions.calico} predates KubeVirt live-migration support (v3.32.0): it lacks the "
            "BGPFilter match fields and operations and Felix's route priorities the lab's resources may use"
        )
    files["kubevirt/kubevirt.yaml"] = _dump_yaml(
        [kv.kubevirt_cr(emulate)],
        f"# KubeVirt {versions.kubevirt} CR: useEmulation {str(emulate).lower()} "
        f"({'from the /dev/kvm and /dev/vhost-net probes' if use_emulation is None else 'as requested'}).\n",
    )
    files["kubevirt/vms.yaml"] = (
        _dump_yaml(vms, f"# VirtualMachines of lab '{spec.name}'.\n")
        if vms
        else (f"# lab '{spec.name}' has no VMs\n")
    )
    files["README.md"] = _readme(spec, versions, topo_file)

    manifest = {
        "kvlab_render": MANIFEST_VERSION,
        "lab": spec.name,
        "runtime": "containerlab",
        "spec": spec.source,
        "versions": versions.to_json(),
        "tor_image": image,
        "use_emulation": emulate,
        "kvm_usable": kvm,
        "vhost_net_usable": vhost_net,
        "topology_file": topo_file,
        "mgmt_network": mgmt_network(spec.name),
        "files": sorted([*files, *key_files, "manifest.json"]),
        "kind_nodes": {kn: sn for sn, kn in names.items()},
        "containers": {
            **{r.name: container_name(spec.name, r.name) for r in spec.routers},
            **{h.name: container_name(spec.name, h.name) for h in spec.hosts},
            **{sn: kn for sn, kn in names.items()},
        },
        "bird_sockets": {r.name: str(run_dir / r.name / "bird.ctl") for r in spec.routers},
        "calico_sockets": {sn: str(calico_run_dir(run_dir, sn) / "bird.ctl") for sn in names},
        "harness_mount": {
            "host_path": str(HARNESS_DIR),
            "container_path": HARNESS_MOUNT,
            "pythonpath": HARNESS_PYTHONPATH,
            "entities": [h.name for h in spec.hosts],
        },
        "guest_ssh": {
            "user": GUEST_USER,
            "port": SSH_PORT,
            "private_key": key_private,
            "public_key": key_public,
            "known_hosts": str(known_hosts_path(run_dir)),
            "via": spec.hosts[0].name if spec.hosts else None,
        },
        "clusters": clusters_manifest,
        "vms": vm_manifest,
        "notes": notes,
    }
    files["manifest.json"] = json.dumps(manifest, indent=2) + "\n"
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Rendered(out=out, lab=spec.name, versions=versions, files=manifest["files"], manifest=manifest)


@dataclass(frozen=True)
class Plan:
    """How a lab maps onto containerlab and kind, checked before anything is written."""

    kind_nodes: dict[str, list[KindNode]]
    service_subnets: dict[str, ipaddress.IPv4Network]
    pod_subnets: dict[str, ipaddress.IPv4Network]


def plan_lab(topo: Topology) -> Plan:
    """Every check that needs no file: kind nodes wired to racks, service and pod subnets, unique
    containerlab names. RenderError (bad input) on the first problem; nothing is created."""
    kind_nodes = plan_kind_nodes(topo)
    plan = Plan(kind_nodes, service_subnets(topo), pod_subnets(topo.spec))
    _check_names(topo.spec, kind_nodes)
    return plan


def _check_names(spec: LabSpec, kind_nodes: dict[str, list[KindNode]]) -> None:
    """containerlab node names must be unique: routers, hosts, kind clusters, kind nodes."""
    seen: dict[str, str] = {}
    entries = [(r.name, f"router {r.name}") for r in spec.routers]
    entries += [(h.name, f"host {h.name}") for h in spec.hosts]
    for c in kind_clusters(spec):
        entries.append((c.name, f"kind cluster {c.name}"))
        entries += [(kn.kind_name, f"kind node of {kn.spec_name}") for kn in kind_nodes[c.name]]
    for name, what in entries:
        if name in seen:
            raise RenderError(f"containerlab node name '{name}' is both the {seen[name]} and the {what}")
        seen[name] = what


def _vms(
    topo: Topology, names: dict[str, str], versions: StackVersions, public_key: str
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    docs, manifest, notes = [], {}, []
    for w in topo.workloads:
        vm = topo.spec.vm(w.vm)
        kind_node = names.get(w.node)
        if kind_node is None:
            notes.append(f"VM '{w.vm}' is on node '{w.node}', which is not a kind node: not rendered")
            continue
        obj = kv.virtual_machine(
            w.vm,
            str(w.ip),
            kind_node,
            versions.guest_container_disk,
            labels={CLUSTER_LABEL: w.cluster, **vm.labels},
            mac=w.mac,
            ssh_authorized_keys=[public_key],
        )
        docs.append(obj)
        nested = topo.spec.nested_node_in(w.vm)
        manifest[w.vm] = {
            "cluster": w.cluster,
            "node": w.node,
            "kind_node": kind_node,
            "ip": str(w.ip),
            "labels": dict(vm.labels),
            **({"runs_nested_node": nested[1].name, "nested_cluster": nested[0].name} if nested else {}),
        }
    return docs, manifest, notes


def _readme(spec: LabSpec, versions: StackVersions, topo_file: str) -> str:
    nested = [c for c in spec.clusters if c.parent is not None]
    lines = [
        f"# kvlab lab '{spec.name}' rendered for containerlab",
        "",
        f"Calico {versions.calico}, KubeVirt {versions.kubevirt}, {versions.kind_node_image}.",
        "",
        f"- `{topo_file}`: containerlab topology (BIRD routers, hosts, kind clusters and their nodes)",
        "- `bird/`: BIRD configs of the routers, bound at /etc/bird/bird.conf",
        "- `kind/`: kind cluster configs (the k8s-kind nodes' startup-config)",
        "- `calico/<cluster>/installation.yaml`: tigera operator Installation and APIServer; install "
        f"the operator first: {versions.operator_crds_url} and {versions.tigera_operator_url}",
        f"- `calico/<cluster>/bgp.yaml`: the lab's BGP configuration, peers and filters ({CALICO_CRD_API}), "
        "applied right after the operator's CRDs, before calico-node starts",
        "- `calico/<cluster>/resources.yaml`: the lab's other Calico v3 resources",
        f"- `kubevirt/`: KubeVirt CR (after {versions.kubevirt_operator_url}) and the lab's VirtualMachines",
        "- `manifest.json`: versions, files and name mappings (kind node -> spec node, router -> container)",
        f"- `ssh/`: the lab's SSH key, authorized for {GUEST_USER} in every VM (cloud-init); commands reach "
        "a guest over SSH relayed by the lab's first external host",
    ]
    if nested:
        names = ", ".join(f"'{c.name}' (in VMs of '{c.parent}')" for c in nested)
        lines += [
            "",
            f"Nested clusters {names} run inside KubeVirt VMs of their parent cluster, not as kind "
            "clusters: only their Calico resources are rendered (`calico/<nested>/resources.yaml`). "
            "The parent's resources carry localWorkloadPeeringIPV4 for their BGP sessions.",
        ]
    return "\n".join(lines) + "\n"


# -- validation ------------------------------------------------------------------------------


@dataclass
class ValidationReport:
    """What `validate_rendered` checked, what it could not check and why, and every issue."""

    checked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    issues: list[SpecIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. fields left out for an older Calico

    @property
    def ok(self) -> bool:
        return not self.issues


def _load_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def validate_rendered(out: Path, *, bird: bool = True) -> ValidationReport:
    """Check every file `render_containerlab` wrote into `out` (read back from disk).

    Schema checks run when the shared schemas are present (else they are listed in `skipped`);
    structural checks (link endpoints, addresses inside the lab ranges, kind node IPs equal to
    the topology's) always run; BIRD configs are parsed with `bird -p` unless `bird` is False
    or BIRD is not installed.
    """
    report = ValidationReport()
    manifest = json.loads((out / "manifest.json").read_text())
    have_schemas = schemas.schemas_available()
    if not have_schemas:
        report.skipped.append(f"schema checks: no schemas in {schemas.schema_dir()} (set KVLAB_SHARED)")

    def check(rel: str, what: str, issues: list[SpecIssue]) -> None:
        report.checked.append(f"{rel}: {what}")
        report.issues.extend(issues)

    topo_rel = manifest["topology_file"]
    topo_doc = _load_docs(out / topo_rel)[0]
    if have_schemas:
        check(
            topo_rel,
            "containerlab schema (extras.k8s_kind checked separately)",
            clab_schema_errors(topo_doc, str(out / topo_rel)),
        )
    check(topo_rel, "k8s-kind extras.k8s_kind", kind_extras_errors(topo_doc, str(out / topo_rel)))
    check(topo_rel, "links and addresses", clab_structure_errors(topo_doc, str(out / topo_rel)))
    check(
        topo_rel,
        "routers' default routes, kind nodes' rp_filter",
        routing_errors(topo_doc, str(out / topo_rel), list(manifest["bird_sockets"])),
    )

    live_migration = manifest["versions"].get("live_migration", True)
    for entry in manifest["clusters"].values():
        res_rel = entry["resources"]
        docs = _load_docs(out / res_rel)
        if have_schemas:
            check(res_rel, "Calico v3 CRDs", _calico_schema_issues(out / res_rel, docs, live_migration))
        if not entry.get("nested"):
            bgp_rel = entry.get("bgp")
            bgp_docs = _load_docs(out / bgp_rel) if bgp_rel else []
            check(
                bgp_rel or res_rel,
                "BGP resources as crd.projectcalico.org/v1 objects, none left for the v3 step",
                bgp_errors(bgp_docs, docs, str(out / (bgp_rel or "bgp.yaml")), str(out / res_rel)),
            )
            if have_schemas and bgp_rel:
                check(
                    bgp_rel,
                    "Calico crd.projectcalico.org/v1 CRDs",
                    _calico_schema_issues(out / bgp_rel, bgp_docs, live_migration),
                )
        if entry.get("ip_reservation"):
            rel = entry["ip_reservation"]
            issues = []
            for i, doc in enumerate(_load_docs(out / rel)):
                issues += ip_reservation_errors(doc, entry["pools"], str(out / rel), (i,))
            check(
                rel,
                "IPReservation shape only (not checked against a CRD: none of IPReservation is shared)",
                issues,
            )
        if entry.get("nested"):
            continue
        inst_rel = entry["installation"]
        inst_docs = _load_docs(out / inst_rel)
        if have_schemas:
            check(
                inst_rel, "Installation CRD", schemas.installation_errors(inst_docs[0], str(out / inst_rel))
            )
        kind_rel = entry["kind_config"]
        check(kind_rel, "kind v1alpha4 fields and node IPs", kind_errors(out / kind_rel, topo_doc, entry))

    if have_schemas:
        for rel in ("kubevirt/kubevirt.yaml", "kubevirt/vms.yaml"):
            issues = []
            for i, doc in enumerate(_load_docs(out / rel)):
                issues += schemas.kubevirt_errors(doc, str(out / rel), (i,))
            check(rel, "KubeVirt swagger definitions", issues)
    public_key = None
    if "guest_ssh" in manifest:
        check("ssh/", "the lab's SSH key", ssh_key_errors(out, manifest["guest_ssh"]))
        with contextlib.suppress(OSError):
            public_key = (out / manifest["guest_ssh"]["public_key"]).read_text().strip()
    check(
        "kubevirt/vms.yaml",
        "live-migration annotations and cloud-init",
        vm_errors(out / "kubevirt/vms.yaml", manifest, public_key=public_key),
    )

    report.warnings.extend(n for n in manifest.get("notes", []) if n.startswith("WARNING:"))
    if bird:
        for rel in sorted(f for f in manifest["files"] if f.startswith("bird/")):
            try:
                check_config((out / rel).read_text())
            except LabError as e:
                if "not installed" in str(e):
                    report.skipped.append(f"{rel}: bird -p ({e})")
                    continue
                check(rel, "bird -p", [SpecIssue(str(out / rel), "", str(e))])
            else:
                report.checked.append(f"{rel}: bird -p")
    return report


def _calico_schema_issues(path: Path, docs: list[dict[str, Any]], live_migration: bool) -> list[SpecIssue]:
    """Each Calico document of a file against its CRD (a 3.31 render may lack what 3.32 requires)."""
    issues = []
    for i, doc in enumerate(docs):
        issues += schemas.calico_errors(doc, str(path), (i,))
    return issues if live_migration else [i for i in issues if not _required_since_3_32(docs, i)]


def bgp_errors(
    bgp_docs: list[dict[str, Any]], v3_docs: list[dict[str, Any]], bgp_file: str, v3_file: str
) -> list[SpecIssue]:
    """A kind cluster's BGP resources are crd.projectcalico.org/v1 objects in BGP_CRD_KINDS order
    in bgp.yaml, and resources.yaml (applied once Calico's API server is up, which needs them)
    holds none of them."""
    issues = []
    last = 0
    for i, doc in enumerate(bgp_docs):
        kind = doc.get("kind")
        if doc.get("apiVersion") != CALICO_CRD_API:
            issues.append(SpecIssue(bgp_file, format_path((i, "apiVersion")), f"must be {CALICO_CRD_API!r}"))
        if kind not in BGP_CRD_KINDS:
            issues.append(
                SpecIssue(
                    bgp_file, format_path((i, "kind")), f"{kind!r} is not one of {', '.join(BGP_CRD_KINDS)}"
                )
            )
            continue
        if BGP_CRD_KINDS.index(kind) < last:
            issues.append(
                SpecIssue(
                    bgp_file,
                    format_path((i, "kind")),
                    f"a {kind} after a {BGP_CRD_KINDS[last]}: the order is {', '.join(BGP_CRD_KINDS)}",
                )
            )
        last = max(last, BGP_CRD_KINDS.index(kind))
    for i, doc in enumerate(v3_docs):
        if doc.get("kind") in BGP_CRD_KINDS:
            issues.append(
                SpecIssue(
                    v3_file,
                    format_path((i, "kind")),
                    f"a {doc['kind']} here is applied only once Calico's API server is Available, which "
                    "needs the nodes peering with their ToRs: it belongs in bgp.yaml",
                )
            )
    return issues


def _without_kind_extras(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of a topology without the k8s-kind nodes' `extras.k8s_kind`.

    containerlab 0.79 reads `extras.k8s_kind.deploy.wait` (its K8sKindExtras), but the upstream
    clab.schema.json's `extras` has additionalProperties false and no `k8s_kind`: exactly that
    key is exempted from the schema check (an emptied `extras` is dropped) and checked by
    `kind_extras_errors` instead. Everything else still meets the schema."""
    doc = json.loads(json.dumps(doc))
    for node in (doc.get("topology", {}).get("nodes", {}) or {}).values():
        extras = (node or {}).get("extras")
        if isinstance(extras, dict) and KIND_EXTRAS_KEY in extras:
            del extras[KIND_EXTRAS_KEY]
            if not extras:
                del node["extras"]
    return doc


def clab_schema_errors(doc: dict[str, Any], file: str) -> list[SpecIssue]:
    """clab.schema.json errors of a topology, `extras.k8s_kind` exempted (see
    `_without_kind_extras`; `kind_extras_errors` checks it)."""
    return schemas.clab_errors(_without_kind_extras(doc), file)


_GO_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+|0")


def kind_extras_errors(doc: dict[str, Any], file: str) -> list[SpecIssue]:
    """`extras.k8s_kind` (exempted from the schema check): only on k8s-kind nodes, a mapping
    with only `deploy`, which has only `wait`, a Go duration string ("0s", "5m")."""
    issues = []
    for name, node in (doc.get("topology", {}).get("nodes", {}) or {}).items():
        extras = (node or {}).get("extras")
        if not isinstance(extras, dict) or KIND_EXTRAS_KEY not in extras:
            continue
        base = ("topology", "nodes", name, "extras", KIND_EXTRAS_KEY)
        value = extras[KIND_EXTRAS_KEY]
        if node.get("kind") != "k8s-kind":
            issues.append(SpecIssue(file, format_path(base), "only k8s-kind nodes take extras.k8s_kind"))
        if not isinstance(value, dict) or set(value) - {"deploy"}:
            issues.append(SpecIssue(file, format_path(base), "must be a mapping with only 'deploy'"))
            continue
        deploy = value.get("deploy")
        if deploy is None:
            continue
        if not isinstance(deploy, dict) or set(deploy) - {"wait"}:
            issues.append(
                SpecIssue(file, format_path((*base, "deploy")), "must be a mapping with only 'wait'")
            )
            continue
        wait = deploy.get("wait")
        if wait is not None and not (isinstance(wait, str) and _GO_DURATION.fullmatch(wait)):
            issues.append(
                SpecIssue(
                    file, format_path((*base, "deploy", "wait")), f"{wait!r} is not a duration like '0s'"
                )
            )
    return issues


def _exec_addresses(command: str) -> list[str]:
    """Addresses and prefixes an `ip addr add` / `ip route add` command configures."""
    argv = shlex.split(command)
    if argv[:3] == ["ip", "addr", "add"]:
        return [argv[3]]
    if argv[:3] == ["ip", "route", "add"]:
        out = [argv[3]]
        if "via" in argv:
            out.append(argv[argv.index("via") + 1])
        return out
    return []


def clab_structure_errors(doc: dict[str, Any], file: str) -> list[SpecIssue]:
    """Links join defined nodes on distinct interfaces; every configured address is in the lab
    ranges (198.18.0.0/15, 203.0.113.0/24, 198.51.100.0/24, 169.254.0.179)."""
    issues = []
    nodes = doc.get("topology", {}).get("nodes", {}) or {}
    used: dict[str, str] = {}
    for li, link in enumerate(doc.get("topology", {}).get("links", []) or []):
        for ei, end in enumerate(link.get("endpoints", [])):
            path = format_path(("topology", "links", li, "endpoints", ei))
            node, _, iface = str(end).partition(":")
            if node not in nodes:
                issues.append(SpecIssue(file, path, f"link endpoint '{end}': no node '{node}'"))
            if end in used:
                issues.append(SpecIssue(file, path, f"interface '{end}' is already used at {used[end]}"))
            used[end] = path
            if not re.fullmatch(r"eth[1-9][0-9]*", iface):
                issues.append(
                    SpecIssue(file, path, f"interface '{iface}' must be eth1, eth2, ... (eth0 is mgmt)")
                )
    for name, node in nodes.items():
        for ci, command in enumerate((node or {}).get("exec", [])):
            path = format_path(("topology", "nodes", name, "exec", ci))
            for value in _exec_addresses(command):
                try:
                    ok = in_lab_ranges(value)
                except ValueError:
                    issues.append(SpecIssue(file, path, f"'{value}' is not an IPv4 address or prefix"))
                    continue
                if not ok:
                    issues.append(
                        SpecIssue(
                            file,
                            path,
                            f"{value} is outside the lab ranges ({', '.join(map(str, LAB_RANGES))})",
                        )
                    )
    return issues


def routing_errors(doc: dict[str, Any], file: str, routers: list[str]) -> list[SpecIssue]:
    """Every router replaces its default route (ROUTER_DEFAULT_ROUTE: lab traffic never leaves
    the lab); every kind node filters reverse paths loosely on eth0 and on each interface its
    exec addresses (RP_FILTER_LOOSE)."""
    issues = []
    nodes = doc.get("topology", {}).get("nodes", {}) or {}
    for name in routers:
        if ROUTER_DEFAULT_ROUTE not in (nodes.get(name) or {}).get("exec", []):
            issues.append(
                SpecIssue(
                    file,
                    format_path(("topology", "nodes", name, "exec")),
                    f"no '{ROUTER_DEFAULT_ROUTE}': lab traffic without a route would leave the lab "
                    "through the management network",
                )
            )
    for name, node in nodes.items():
        if (node or {}).get("kind") != "ext-container":
            continue
        execs = node.get("exec", [])
        devs = ["eth0", *(shlex.split(c)[-1] for c in execs if c.startswith("ip addr add"))]
        strict = [d for d in devs if loose_rp_filter(d) not in execs]
        if strict:
            issues.append(
                SpecIssue(
                    file,
                    format_path(("topology", "nodes", name, "exec")),
                    f"reverse path filtering is not made loose on {', '.join(strict)}: with a strict "
                    "host default, replies from the API server arriving on the fabric are dropped",
                )
            )
    return issues


def kind_errors(path: Path, topo_doc: dict[str, Any], entry: dict[str, Any]) -> list[SpecIssue]:
    """A kind config: kind's v1alpha4 fields only, one control plane, each node's node-ip equal
    to the address containerlab gives its eth1."""
    file = str(path)
    try:
        config = KindCluster.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as e:
        return [SpecIssue(file, format_path(tuple(err["loc"])), err["msg"]) for err in e.errors()]
    issues = []
    if [n.role for n in config.nodes].count("control-plane") != 1:
        issues.append(SpecIssue(file, "nodes", "a kvlab kind cluster has exactly one control-plane node"))
    kind_names = list(entry["nodes"].values())
    if len(config.nodes) != len(kind_names):
        issues.append(
            SpecIssue(file, "nodes", f"{len(config.nodes)} nodes, the lab's cluster has {len(kind_names)}")
        )
    wired = _exec_node_ips(topo_doc)
    for i, (node, kind_name) in enumerate(zip(config.nodes, kind_names, strict=False)):
        ip = kind_node_ip(node)
        want = wired.get(kind_name)
        if ip is None:
            issues.append(
                SpecIssue(file, format_path(("nodes", i, "kubeadmConfigPatches")), "no kubelet node-ip")
            )
        elif ip != want:
            issues.append(
                SpecIssue(
                    file,
                    format_path(("nodes", i, "kubeadmConfigPatches")),
                    f"node-ip {ip} of {kind_name} is not the address containerlab gives it ({want})",
                )
            )
    net = config.networking
    for field_, value in (("podSubnet", net.podSubnet), ("serviceSubnet", net.serviceSubnet)):
        if value is None or not in_lab_ranges(value):
            issues.append(SpecIssue(file, f"networking.{field_}", f"{value} is not inside the lab ranges"))
    if net.podSubnet is not None and in_lab_ranges(net.podSubnet):
        pods = ipaddress.IPv4Network(net.podSubnet, strict=False)
        outside = [p for p in entry.get("pools", []) if not ipaddress.IPv4Network(p).subnet_of(pods)]
        if outside:
            issues.append(
                SpecIssue(
                    file,
                    "networking.podSubnet",
                    f"pools {', '.join(outside)} are outside {net.podSubnet}: the tigera operator refuses "
                    "Installation pools outside kubeadm's pod subnet",
                )
            )
    if net.disableDefaultCNI is not True:
        issues.append(SpecIssue(file, "networking.disableDefaultCNI", "must be true (Calico is the CNI)"))
    return issues


def _exec_node_ips(topo_doc: dict[str, Any]) -> dict[str, str]:
    """ext-container node -> the address its exec puts on its fabric interface."""
    out = {}
    for name, node in (topo_doc.get("topology", {}).get("nodes", {}) or {}).items():
        if (node or {}).get("kind") != "ext-container":
            continue
        for command in node.get("exec", []):
            addrs = _exec_addresses(command)
            if command.startswith("ip addr add") and addrs:
                out[name] = addrs[0].split("/")[0]
    return out


def ssh_key_errors(out: Path, entry: dict[str, Any]) -> list[SpecIssue]:
    """The manifest's `guest_ssh`: the private key exists (mode 0600 when rendered here), the
    public key file holds one OpenSSH key line, and the guest user is set."""
    issues = []
    private = out / entry["private_key"]
    if not private.is_file():
        issues.append(SpecIssue(str(private), "", "the lab's SSH private key is missing"))
    elif not Path(entry["private_key"]).is_absolute() and private.stat().st_mode & 0o077:
        mode = oct(private.stat().st_mode & 0o777)
        issues.append(SpecIssue(str(private), "", f"mode {mode}: an SSH private key must be 0600"))
    public = out / entry["public_key"]
    try:
        fields = public.read_text().split()
    except OSError:
        fields = []
    if len(fields) < 2 or not fields[0].startswith(("ssh-", "ecdsa-")):
        issues.append(SpecIssue(str(public), "", "not an OpenSSH public key line"))
    if not entry.get("user"):
        issues.append(SpecIssue(str(out / "manifest.json"), "guest_ssh.user", "no guest user"))
    return issues


def user_data_errors(file: str, path: str, text: Any, public_key: str | None) -> list[SpecIssue]:
    """A VM's cloud-init userData: `#cloud-config` YAML within KubeVirt's size limit, authorizing
    the lab's public key (when given)."""
    if not isinstance(text, str):
        return [SpecIssue(file, path, "no cloud-init userData")]
    issues = []
    size = len(text.encode())
    if size > kv.USER_DATA_MAX:
        issues.append(
            SpecIssue(file, path, f"{size} bytes: KubeVirt refuses inline userData over {kv.USER_DATA_MAX}")
        )
    if not text.startswith("#cloud-config\n"):
        return [*issues, SpecIssue(file, path, "does not start with '#cloud-config'")]
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [*issues, SpecIssue(file, path, f"not valid YAML: {e}")]
    if not isinstance(doc, dict):
        return [*issues, SpecIssue(file, path, "the cloud-config is not a mapping")]
    if public_key is not None and public_key not in (doc.get("ssh_authorized_keys") or []):
        issues.append(SpecIssue(file, path, "ssh_authorized_keys lacks the lab's public key"))
    return issues


def vm_errors(path: Path, manifest: dict[str, Any], *, public_key: str | None = None) -> list[SpecIssue]:
    """Every lab VM is there, bridge-bound, annotated for bridge live migration, for its IP and
    with its guest MAC as the pods' (cni.projectcalico.org/hwAddr), with cloud-config user data
    authorizing the lab's SSH `public_key` (when given)."""
    file = str(path)
    docs = {d["metadata"]["name"]: (i, d) for i, d in enumerate(_load_docs(path))}
    issues = []
    for name, vm in manifest["vms"].items():
        if name not in docs:
            issues.append(SpecIssue(file, "", f"VM '{name}' is missing"))
            continue
        i, doc = docs[name]
        tmpl = doc.get("spec", {}).get("template", {})
        ann = tmpl.get("metadata", {}).get("annotations", {})
        base = (i, "spec", "template", "metadata", "annotations")
        if ann.get(kv.BRIDGE_MIGRATION_ANNOTATION) != "":
            issues.append(
                SpecIssue(file, format_path(base), f"no {kv.BRIDGE_MIGRATION_ANNOTATION} annotation")
            )
        if ann.get(kv.CALICO_IP_ANNOTATION) != json.dumps([vm["ip"]]):
            issues.append(
                SpecIssue(file, format_path(base), f'{kv.CALICO_IP_ANNOTATION} is not ["{vm["ip"]}"]')
            )
        ifaces = tmpl.get("spec", {}).get("domain", {}).get("devices", {}).get("interfaces", [])
        if not ifaces or "bridge" not in ifaces[0]:
            issues.append(
                SpecIssue(
                    file,
                    format_path((i, "spec", "template", "spec", "domain", "devices", "interfaces")),
                    "the pod network interface must use bridge binding",
                )
            )
        elif ann.get(kv.CALICO_MAC_ANNOTATION) != ifaces[0].get("macAddress"):
            issues.append(
                SpecIssue(
                    file,
                    format_path(base),
                    f"{kv.CALICO_MAC_ANNOTATION} {ann.get(kv.CALICO_MAC_ANNOTATION)!r} is not the guest's "
                    f"macAddress {ifaces[0].get('macAddress')!r}: the pods' MAC would not be the guest's",
                )
            )
        volumes = tmpl.get("spec", {}).get("volumes", []) or []
        where: tuple[Any, ...] = (i, "spec", "template", "spec", "volumes")
        text = None
        for j, volume in enumerate(volumes):
            if "cloudInitNoCloud" in volume:
                where += (j, "cloudInitNoCloud", "userData")
                text = (volume["cloudInitNoCloud"] or {}).get("userData")
                break
        issues += user_data_errors(file, format_path(where), text, public_key)
    return issues
