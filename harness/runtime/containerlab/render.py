"""Render a lab spec for the containerlab runtime: every file the real stack is built from (pure:
files out, nothing created beyond them).

    rendered = render_containerlab(load_lab("labs/default.yml"), Path("out"))
    report = validate_rendered(Path("out"))        # harness.runtime.containerlab.validate

writes into `out/`:
- `<lab>.clab.yml`: the containerlab topology (topology_file), `bird/<router>.conf`: the
  routers' BIRD configs, bound into the containers at /etc/bird/bird.conf; BIRD's socket
  directory /run/bird is bound to `<run dir>/<lab>/<router>` on the host;
- `kind/<cluster>.yaml`: kind cluster configs (kind), mounting calico-node's /var/run/calico at
  `<run dir>/<node>/calico`, so calico-node's BIRD socket is `<run dir>/<node>/calico/bird.ctl`;
- `calico/<cluster>/installation.yaml`, `bgp.yaml`, `ipreservation.yaml` and `resources.yaml`
  (calico_docs);
- `kubevirt/kubevirt.yaml` (the KubeVirt CR) and `kubevirt/vms.yaml` (one VirtualMachine per VM,
  its cloud-init authorizing the lab's SSH key for versions.GUEST_USER; kubevirt);
- `ssh/id_rsa` (mode 0600) and `ssh/id_rsa.pub`: the lab's SSH key (sshkey);
- `manifest.json` (what was rendered, for which versions, and the name mappings) and README.md.

Nested clusters (`parent:` in the spec) are not kind clusters: each nested node is a BGP speaker
inside its KubeVirt VM of the parent (harness.runtime.containerlab.nested): BIRD configured by
kvlab's confd emulation of the nested cluster's resources (`nested/<node>.conf`), delivered by
the VM's cloud-init user data in a Secret (`kubevirt/nested-secrets.yaml`), the VM booting
kvlab's guest image (`kvlab/guest:<key>`) by KubeVirt's kernel boot. The parent's resources
carry localWorkloadPeeringIPV4, the localWorkloadSelector peers and their filters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.calico import resources as cr
from harness.render.bird import render_node
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import nested as nst
from harness.runtime.containerlab.calico_docs import (
    CALICO_CRD_API,
    apiserver,
    calico_documents,
    crd_objects,
    drop_pre_3_32_fields,
    installation,
    ip_reservation,
)
from harness.runtime.containerlab.kind import calico_run_dir, kind_config
from harness.runtime.containerlab.kube import dump_documents
from harness.runtime.containerlab.plan import CLUSTER_LABEL, container_name, mgmt_network, plan_lab
from harness.runtime.containerlab.sshkey import SSH_PORT, known_hosts_path, lab_ssh_key
from harness.runtime.containerlab.topology_file import (
    HARNESS_DIR,
    HARNESS_MOUNT,
    HARNESS_PYTHONPATH,
    clab_topology,
    router_config,
)
from harness.runtime.containerlab.versions import DEFAULT, GUEST_USER, StackVersions, tor_image
from harness.safefile import check_under, write_under
from harness.spec import LabSpec, cluster_resources
from harness.state import lab_dir
from harness.topology import Topology, resolve

MANIFEST_VERSION = 1


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


def render_containerlab(
    spec: LabSpec,
    out: Path,
    *,
    versions: StackVersions = DEFAULT,
    use_emulation: bool | None = None,
    image: str | None = None,
    run_dir: Path | None = None,
    ssh_key: Path | None = None,
    guest_image: str | None = None,
) -> Rendered:
    """Write every file the containerlab runtime needs for `spec` into `out`.

    `use_emulation` None probes /dev/kvm and /dev/vhost-net here (kubevirt.needs_emulation); the
    runtime passes its own probes' answer. `image` is the ToR/host image (default:
    versions.tor_image()); `run_dir` the host directory of the BIRD sockets and the lab's
    known_hosts (default `<KVLAB_RUN_DIR or /run/kvlab>/<lab>`); `ssh_key` a private key file the
    VMs authorize instead of the lab's own (`lab_ssh_key`); `guest_image` the container image
    nested nodes' VMs boot (default nested.DEFAULT_GUEST_IMAGE; the runtime builds and names it).
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
    # the directories it writes into, before the SSH key is made: nothing half-written
    check_under(out, [f"{d}/-" for d in ("ssh", "bird", "calico", "kind", "kubevirt")])
    key_private, key_public, public_line, key_files = lab_ssh_key(out, spec.name, ssh_key)
    files: dict[str, str] = {}
    topo_file = f"{spec.name}.clab.yml"
    files[topo_file] = dump_documents(
        [clab_topology(topo, kind_nodes, versions, image=image, run_dir=run_dir)],
        f"# containerlab topology of kvlab lab '{spec.name}' (rendered; see manifest.json)\n",
    )
    for router in spec.routers:
        files[f"bird/{router.name}.conf"] = router_config(topo, router.name)
        if spec.dual_stack:
            files[f"bird/{router.name}.bird6.conf"] = router_config(topo, router.name, family=6)

    clusters_manifest: dict[str, Any] = {}
    ippools: dict[str, list[str]] = {}
    notes: list[str] = []
    for cluster in spec.clusters:
        items = resources.get(cluster.name, [])
        base = f"calico/{cluster.name}"
        nested = cluster.parent is not None
        docs = calico_documents(cluster, items, {} if nested else names, operator_pools=not nested)
        vm_cidrs = [f"{w.ip}/32" for w in topo.workloads if w.cluster == cluster.name]
        vm_cidrs += [f"{w.ip6}/128" for w in topo.workloads if w.cluster == cluster.name and w.ip6]
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
        if cluster.pools6:
            entry["pools6"] = [str(p) for p in cluster.pools6]
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
                files[f"{base}/bgp.yaml"] = dump_documents(
                    early,
                    f"# BGP configuration, peers and filters of cluster '{cluster.name}' as the "
                    f"{CALICO_CRD_API} objects Calico\n# stores, applied right after the operator's CRDs "
                    "(before calico-node first starts): nodes peer with\n# their ToRs from the start, so "
                    "pods in every rack reach the API server (calico_docs.BGP_CRD_KINDS).\n" + warning,
                )
                entry["bgp"] = f"{base}/bgp.yaml"
            inst = installation(topo, cluster, items)
            ippools[cluster.name] = [p["name"] for p in inst["spec"]["calicoNetwork"]["ipPools"]]
            files[f"{base}/installation.yaml"] = dump_documents(
                [inst, apiserver()],
                f"# tigera operator resources of cluster '{cluster.name}' (Calico {versions.calico}).\n",
            )
            files[f"kind/{cluster.name}.yaml"] = kind_config(
                topo,
                cluster,
                kind_nodes[cluster.name],
                versions,
                services[cluster.name],
                run_dir,
                plan.service_subnets6.get(cluster.name),
            )
            if vm_cidrs:
                files[f"{base}/ipreservation.yaml"] = dump_documents(
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
                **(
                    {
                        "pod_subnet6": str(plan.pod_subnets6[cluster.name]),
                        "service_subnet6": str(plan.service_subnets6[cluster.name]),
                    }
                    if cluster.name in plan.pod_subnets6
                    else {}
                ),
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
        files[f"{base}/resources.yaml"] = dump_documents(docs, header + warning)
        clusters_manifest[cluster.name] = entry

    guest_image = guest_image or nst.DEFAULT_GUEST_IMAGE
    vms, vm_manifest, vm_notes = _vms(topo, names, versions, public_line, guest_image)
    notes = vm_notes + notes
    secrets, nested_sockets = [], {}
    for w in topo.workloads:
        hosted = spec.nested_node_in(w.vm)
        if hosted is None or w.vm not in vm_manifest:
            continue
        cluster, node = hosted
        conf = render_node(topo, node.name, resources.get(cluster.name, []), None)
        files[f"nested/{node.name}.conf"] = conf
        pod = str(topo.nested_pod[node.name])
        secrets.append(nst.nested_secret(w.vm, nst.nested_user_data(node.name, conf, pod), kv.VM_NAMESPACE))
        vm_manifest[w.vm]["nested"] = {
            "node": node.name,
            "cluster": cluster.name,
            "pod_ip": pod,
            "bird_config": f"nested/{node.name}.conf",
            "user_data_secret": nst.secret_name(w.vm),
            "birdctl_port": nst.BIRDCTL_PORT,
        }
        nested_sockets[node.name] = str(run_dir / node.name / "bird.ctl")
    if secrets:
        files["kubevirt/nested-secrets.yaml"] = dump_documents(
            secrets,
            "# cloud-init user data of the VMs that run nested nodes (applied before the VMs): each\n"
            "# writes its node's BIRD config (kvlab's confd emulation of the nested cluster) and pod\n"
            "# address.\n",
        )
    if not versions.live_migration:
        notes.append(
            f"Calico {versions.calico} predates KubeVirt live-migration support (v3.32.0): it lacks the "
            "BGPFilter match fields and operations and Felix's route priorities the lab's resources may use"
        )
    files["kubevirt/kubevirt.yaml"] = dump_documents(
        [kv.kubevirt_cr(emulate)],
        f"# KubeVirt {versions.kubevirt} CR: useEmulation {str(emulate).lower()} "
        f"({'from the /dev/kvm and /dev/vhost-net probes' if use_emulation is None else 'as requested'}).\n",
    )
    files["kubevirt/vms.yaml"] = (
        dump_documents(vms, f"# VirtualMachines of lab '{spec.name}'.\n")
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
        **(
            {  # dual stack: each router's bird6, and calico-node's bird6 (its socket bird6.ctl)
                "bird6_sockets": {r.name: str(run_dir / r.name / "bird6.ctl") for r in spec.routers},
                "calico6_sockets": {sn: str(calico_run_dir(run_dir, sn) / "bird6.ctl") for sn in names},
            }
            if spec.dual_stack
            else {}
        ),
        "nested_sockets": nested_sockets,
        "guest_image": guest_image if nested_sockets else None,
        "nested_secrets": "kubevirt/nested-secrets.yaml" if secrets else None,
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
    check_under(out, files)  # all or nothing: no output directory left half-written
    for rel, text in files.items():
        write_under(out, rel, text)
    return Rendered(out=out, lab=spec.name, versions=versions, files=manifest["files"], manifest=manifest)


def _vms(
    topo: Topology, names: dict[str, str], versions: StackVersions, public_key: str, guest_image: str
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    docs, manifest, notes = [], {}, []
    for w in topo.workloads:
        vm = topo.spec.vm(w.vm)
        kind_node = names.get(w.node)
        if kind_node is None:
            notes.append(f"VM '{w.vm}' is on node '{w.node}', which is not a kind node: not rendered")
            continue
        nested = topo.spec.nested_node_in(w.vm)
        obj = kv.virtual_machine(
            w.vm,
            str(w.ip),
            kind_node,
            versions.guest_container_disk,
            labels={CLUSTER_LABEL: w.cluster, **vm.labels},
            mac=w.mac,
            ssh_authorized_keys=[public_key],
            ip6=str(w.ip6) if w.ip6 else None,
            kernel_boot=nst.kernel_boot(guest_image, w.vm, str(w.ip)) if nested else None,
            user_data_secret=nst.secret_name(w.vm) if nested else None,
        )
        docs.append(obj)
        manifest[w.vm] = {
            "cluster": w.cluster,
            "node": w.node,
            "kind_node": kind_node,
            "ip": str(w.ip),
            **({"ip6": str(w.ip6)} if w.ip6 else {}),
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
            "clusters: each nested node is a BGP speaker in its VM, BIRD configured by kvlab's confd "
            "emulation of the nested cluster's resources (`calico/<nested>/resources.yaml`, rendered "
            "into `nested/<node>.conf`), not a Kubernetes. Its VM boots kvlab's guest image "
            "(`kvlab image build guest-container`, loaded into the kind nodes with `kind load "
            "docker-image`) and gets the config by cloud-init (`kubevirt/nested-secrets.yaml`, "
            "applied before `kubevirt/vms.yaml`). The parent's resources carry "
            "localWorkloadPeeringIPV4, the localWorkloadSelector BGPPeers and their filters.",
        ]
    return "\n".join(lines) + "\n"
