"""The lab's Calico resources as documents for a real cluster (tigera operator install).

- `calico/<cluster>/installation.yaml`: the operator's Installation (BGP without overlay, the
  lab's pools, node addresses autodetected on the rack segments) and APIServer;
- `calico/<cluster>/bgp.yaml`: the BGPFilters, BGPConfiguration and BGPPeers, node names mapped
  to kind's, as the crd.projectcalico.org/v1 objects applied before Calico runs (BGP_CRD_KINDS
  says why), and `ipreservation.yaml`, the IPReservation of the VM addresses;
- `calico/<cluster>/resources.yaml`: the other Calico v3 resources, applied through Calico's API
  server; for a Calico before v3.32.0 without the fields it lacks (`drop_pre_3_32_fields`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from harness.calico import resources as cr
from harness.runtime.containerlab import schemas
from harness.runtime.containerlab.kubevirt import HOSTNAME_LABEL
from harness.spec import Cluster
from harness.topology import Topology, six

DEFAULT_AS = 64512
POLICY_SETUP_TIMEOUT_S = 10


_ENCAPSULATION = {
    ("Always", None): "IPIP",
    ("CrossSubnet", None): "IPIPCrossSubnet",
    (None, "Always"): "VXLAN",
    (None, "CrossSubnet"): "VXLANCrossSubnet",
}


def _pool_name(pool: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return "kvlab-" + str(pool).replace(".", "-").replace(":", "-").replace("/", "-").strip("-")


def installation_pools(cluster: Cluster, resources: list[Any]) -> list[dict[str, Any]]:
    """Installation `calicoNetwork.ipPools`: the cluster's IPPool resources (else its pools),
    in the operator's terms. The operator owns these pools; resources.yaml leaves them out."""
    out = []
    declared = {
        ipaddress.ip_network(r.spec.cidr, strict=False): r for r in resources if isinstance(r, cr.IPPool)
    }
    pools = [(p, cluster.block_size) for p in cluster.pools]
    pools += [(p, cluster.block_size6) for p in cluster.pools6]
    for pool, block_size in pools:
        res = declared.get(pool)
        entry: dict[str, Any] = {
            "name": res.metadata.name if res else _pool_name(pool),
            "cidr": str(pool),
            "blockSize": (res.spec.blockSize if res and res.spec.blockSize else block_size),
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
    network: dict[str, Any] = {
        "bgp": "Enabled",
        "ipPools": installation_pools(cluster, resources),
        "nodeAddressAutodetectionV4": {"cidrs": cidrs},
    }
    if cluster.pools6:  # dual stack: each node's IPv6 address is the twin on its rack segment
        cidrs6 = [str(six(ipaddress.IPv4Interface(topo.rack_subnet[r])).network) for r in racks]
        network["nodeAddressAutodetectionV6"] = {"cidrs": cidrs6}
    network["linuxPolicySetupTimeoutSeconds"] = POLICY_SETUP_TIMEOUT_S
    return {
        "apiVersion": "operator.tigera.io/v1",
        "kind": "Installation",
        "metadata": {"name": "default"},
        "spec": {"calicoNetwork": network},
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


# Fields Calico v3.32.0 introduced (KubeVirt live-migration support and more): an older Calico's
# v3 API rejects them, so they are left out of the resources rendered for it. Per kind: spec paths
# (`*` is every element of a list). From the JSON tags of api/pkg/apis/projectcalico/v3/*.go,
# v3.31.7 (94bd1d5b) against v3.32.0 (tests/data/containerlab/calico-v3-fields-new-in-3.32.0.json
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
