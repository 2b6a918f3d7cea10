"""kind cluster configs (`kind/<cluster>.yaml`, from kind-configs/cluster.yaml.j2) and kind's
v1alpha4 Cluster fields as models (kind publishes no schema).

With a run directory, each kind node mounts `<run dir>/<spec node>/calico` at calico-node's
/var/run/calico, so calico-node's BIRD socket is `<run dir>/<node>/calico/bird.ctl` on the host.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field

from harness.runtime.containerlab.kube import dump_documents
from harness.runtime.containerlab.plan import KindNode, covering_network
from harness.runtime.containerlab.versions import StackVersions
from harness.spec import Cluster
from harness.topology import Topology

TEMPLATE_DIR = Path(__file__).resolve().parents[3] / "kind-configs"
CALICO_RUN = "/var/run/calico"  # calico-node's hostPath: BIRD's control socket bird.ctl is in it


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
    service_subnet6: Any = None,
) -> str:
    """A kind v1alpha4 Cluster config for a kind cluster of the lab. With `run_dir`, each node
    mounts `<run dir>/<spec node>/calico` at /var/run/calico (calico-node's BIRD socket). A
    cluster with `pools6` is dual-stack (`ipFamily: dual`, IPv4 and IPv6 pod and service
    subnets, each node's kubelet on both its addresses)."""
    text = _kind_template(topo, cluster, nodes, versions, service_subnet, service_subnet6)
    if run_dir is None:
        return text
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    doc = yaml.safe_load(text)
    for node, kn in zip(doc["nodes"], nodes, strict=True):
        node.setdefault("extraMounts", []).append(
            {"hostPath": str(calico_run_dir(run_dir, kn.spec_name)), "containerPath": CALICO_RUN}
        )
    return dump_documents([doc], header)


def _kind_template(
    topo: Topology,
    cluster: Cluster,
    nodes: list[KindNode],
    versions: StackVersions,
    service_subnet: Any,
    service_subnet6: Any = None,
) -> str:
    pods = covering_network(list(cluster.pools))  # pod_subnets() refused a cover leaving the pool ranges
    pods6 = covering_network(list(cluster.pools6)) if cluster.pools6 else None
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
            pod_subnet6=str(pods6) if pods6 else "",
            service_subnet6=str(service_subnet6) if service_subnet6 and pods6 else "",
            node_cidr_mask_size6=max(cluster.block_size6, pods6.prefixlen) if pods6 else 0,
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
    """The kubelet node-ip a kind node's kubeadm patches set, if any ('v4,v6' when dual-stack)."""
    for patch in node.kubeadmConfigPatches:
        doc = yaml.safe_load(patch) or {}
        ip = doc.get("nodeRegistration", {}).get("kubeletExtraArgs", {}).get("node-ip")
        if ip is not None:
            return str(ip)
    return None
