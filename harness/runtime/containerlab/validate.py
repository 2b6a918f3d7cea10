"""Checking a rendered directory (`render_containerlab`'s output, read back from disk).

    report = validate_rendered(Path("out"))        # schemas, structure, `bird -p`

Against the upstream schemas (harness.runtime.containerlab.schemas: containerlab, Calico's CRDs,
the tigera Installation, KubeVirt's swagger) where they are present, and always the structure
the runtime relies on: link endpoints, addresses inside the lab ranges, kind node IPs equal to
the topology's, BGP resources before Calico runs, the lab's SSH key, the VMs' live-migration
annotations and cloud-init; every BIRD config through `bird -p`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.errors import LabError, SpecIssue
from harness.render.bird import check_config
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import nested as nst
from harness.runtime.containerlab import schemas
from harness.runtime.containerlab.calico_docs import (
    BGP_CRD_KINDS,
    CALICO_CRD_API,
    IP_RESERVATION_API,
    PRE_3_32_DROPPED,
)
from harness.runtime.containerlab.kind import KindCluster, kind_node_ip
from harness.runtime.containerlab.plan import LAB_RANGES, in_lab_ranges
from harness.runtime.containerlab.topology_file import (
    KIND_EXTRAS_KEY,
    ROUTER_DEFAULT_ROUTE,
    loose_rp_filter,
)
from harness.yamlsrc import format_path


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
                pools = [*entry["pools"], *entry.get("pools6", [])]
                issues += ip_reservation_errors(doc, pools, str(out / rel), (i,))
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

    if manifest.get("nested_secrets"):
        rel = manifest["nested_secrets"]
        check(
            rel,
            "nested nodes' cloud-init Secrets, shape only (no core v1 Secret schema is shared)",
            nested_errors(out, manifest),
        )

    report.warnings.extend(n for n in manifest.get("notes", []) if n.startswith("WARNING:"))
    if bird:
        for rel in sorted(f for f in manifest["files"] if f.startswith(("bird/", "nested/"))):
            try:
                check_config((out / rel).read_text(), "bird6" if rel.endswith(".bird6.conf") else "bird")
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


def _required_since_3_32(docs: list[dict[str, Any]], issue: SpecIssue) -> bool:
    """A schema issue that only says a field Calico 3.32.0 introduced is missing: the shared CRDs
    are 3.32's (IPAMConfiguration requires `autoAllocateBlocks` there), a 3.31 render leaves it out."""
    m = re.fullmatch(r"\[(\d+)\]\.spec", issue.path)
    missing = re.fullmatch(r"'(\w+)' is a required property", issue.message)
    if not m or not missing or int(m[1]) >= len(docs):
        return False
    kind = docs[int(m[1])].get("kind", "")
    return f"spec.{missing[1]}" in PRE_3_32_DROPPED.get(kind, [])


def ip_reservation_errors(
    doc: dict[str, Any], pools: list[str], file: str, prefix: tuple = ()
) -> list[SpecIssue]:
    """An IPReservation's shape (no CRD schema for it in the shared schemas, so this is a
    minimal check): apiVersion, kind, metadata.name, spec.reservedCIDRs a non-empty list of
    CIDRs inside the cluster's `pools` (and `pools6`)."""
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
    dual = bool(entry.get("pools6"))
    families = [4, 6] if dual else [4]
    if dual and net.ipFamily != "dual":
        issues.append(SpecIssue(file, "networking.ipFamily", "a dual-stack cluster (pools6) needs 'dual'"))
    for field_, value in (("podSubnet", net.podSubnet), ("serviceSubnet", net.serviceSubnet)):
        parts = (value or "").split(",")
        versions = [_version(p) for p in parts]
        if value is None or not all(in_lab_ranges(p) for p in parts if _version(p)):
            issues.append(SpecIssue(file, f"networking.{field_}", f"{value} is not inside the lab ranges"))
        elif versions != families:
            want = "an IPv4 and an IPv6 subnet, in that order" if dual else "one IPv4 subnet"
            issues.append(SpecIssue(file, f"networking.{field_}", f"{value}: the cluster needs {want}"))
    if net.podSubnet is not None and all(in_lab_ranges(p) for p in net.podSubnet.split(",") if _version(p)):
        for pods_text, key in zip(net.podSubnet.split(","), ("pools", "pools6"), strict=False):
            if not _version(pods_text):
                continue
            pods = ipaddress.ip_network(pods_text, strict=False)
            outside = [
                p
                for p in entry.get(key, [])
                if ipaddress.ip_network(p).version != pods.version
                or not ipaddress.ip_network(p).subnet_of(pods)  # type: ignore[arg-type]
            ]
            if outside:
                issues.append(
                    SpecIssue(
                        file,
                        "networking.podSubnet",
                        f"pools {', '.join(outside)} are outside {pods_text}: the tigera operator refuses "
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
        ips = []
        for command in node.get("exec", []):
            addrs = _exec_addresses(command)
            if command.startswith("ip addr add") and addrs:
                ips.append(addrs[0].split("/")[0])
        if ips:
            out[name] = ",".join(ips)  # kubelet's node-ip: the IPv4 address, then (dual stack) the IPv6 one
    return out


def _version(text: str) -> int | None:
    """4 or 6 for an IP network's text, None for anything else."""
    try:
        return ipaddress.ip_network(text, strict=False).version
    except ValueError:
        return None


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


def nested_vm_errors(
    file: str, i: int, tmpl: dict[str, Any], vm: dict[str, Any], guest_image: str | None
) -> list[SpecIssue]:
    """A nested node's VM boots kvlab's guest image by kernel boot, with its address on the kernel
    command line, and takes its cloud-init from the node's Secret (no container disk)."""
    issues = []
    spec = tmpl.get("spec", {})
    where = (i, "spec", "template", "spec", "domain", "firmware", "kernelBoot")
    boot = (spec.get("domain", {}).get("firmware") or {}).get("kernelBoot") or {}
    container = boot.get("container") or {}
    if not guest_image or container.get("image") != guest_image:
        issues.append(
            SpecIssue(file, format_path((*where, "container", "image")), f"must be {guest_image!r}")
        )
    for key, want in (("kernelPath", nst.KERNEL_PATH), ("initrdPath", nst.INITRD_PATH)):
        if container.get(key) != want:
            issues.append(SpecIssue(file, format_path((*where, "container", key)), f"must be {want}"))
    if f"kvlab.ip={vm['ip']} " not in f"{boot.get('kernelArgs', '')} ":
        issues.append(SpecIssue(file, format_path((*where, "kernelArgs")), f"no kvlab.ip={vm['ip']}"))
    volumes = spec.get("volumes", []) or []
    refs = [(v.get("cloudInitNoCloud") or {}).get("secretRef", {}).get("name") for v in volumes]
    if refs != [vm["nested"]["user_data_secret"]]:
        issues.append(
            SpecIssue(
                file,
                format_path((i, "spec", "template", "spec", "volumes")),
                f"must be one cloud-init volume from Secret {vm['nested']['user_data_secret']!r}, got {refs}",
            )
        )
    return issues


def nested_errors(out: Path, manifest: dict[str, Any]) -> list[SpecIssue]:
    """Each nested node's Secret carries cloud-init user data (the guest's marker, its node) that
    writes exactly its rendered BIRD config and a pod address inside its nested cluster's pools."""
    nested = {vm: e["nested"] for vm, e in manifest["vms"].items() if "nested" in e}
    rel = manifest.get("nested_secrets")
    if not nested:
        return []
    if not rel:
        return [SpecIssue(str(out / "manifest.json"), "nested_secrets", "nested VMs but no Secrets file")]
    file = str(out / rel)
    secrets = {d["metadata"]["name"]: (i, d) for i, d in enumerate(_load_docs(out / rel))}
    issues = []
    for vm, n in nested.items():
        if n["user_data_secret"] not in secrets:
            issues.append(SpecIssue(file, "", f"no Secret {n['user_data_secret']!r} for VM {vm}"))
            continue
        i, doc = secrets[n["user_data_secret"]]
        where = format_path((i, "stringData", nst.SECRET_KEY))
        if doc.get("apiVersion") != "v1" or doc.get("kind") != "Secret":
            issues.append(SpecIssue(file, format_path((i,)), "must be a v1 Secret"))
        if (doc.get("metadata") or {}).get("namespace") != kv.VM_NAMESPACE:
            where_ns = format_path((i, "metadata", "namespace"))
            issues.append(SpecIssue(file, where_ns, f"must be {kv.VM_NAMESPACE}"))
        text = (doc.get("stringData") or {}).get(nst.SECRET_KEY)
        conf = (out / n["bird_config"]).read_text()
        if text != nst.nested_user_data(n["node"], conf, n["pod_ip"]):
            issues.append(
                SpecIssue(file, where, f"is not the user data writing {n['bird_config']}, {n['pod_ip']}")
            )
        pools = [ipaddress.IPv4Network(p) for p in manifest["clusters"][n["cluster"]]["pools"]]
        if not any(ipaddress.IPv4Address(n["pod_ip"]) in p for p in pools):
            outside = f"pod {n['pod_ip']} is outside cluster {n['cluster']}'s pools"
            issues.append(SpecIssue(file, where, outside))
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
        want_ips = [vm["ip"], *([vm["ip6"]] if vm.get("ip6") else [])]
        if ann.get(kv.CALICO_IP_ANNOTATION) != json.dumps(want_ips):
            issues.append(
                SpecIssue(file, format_path(base), f"{kv.CALICO_IP_ANNOTATION} is not {json.dumps(want_ips)}")
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
        if "nested" in vm:
            issues += nested_vm_errors(file, i, tmpl, vm, manifest.get("guest_image"))
            continue
        where: tuple[Any, ...] = (i, "spec", "template", "spec", "volumes")
        text = None
        for j, volume in enumerate(volumes):
            if "cloudInitNoCloud" in volume:
                where += (j, "cloudInitNoCloud", "userData")
                text = (volume["cloudInitNoCloud"] or {}).get("userData")
                break
        issues += user_data_errors(file, format_path(where), text, public_key)
    return issues
