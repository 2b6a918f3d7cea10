"""KubeVirt objects for the real stack, and the /dev/kvm and /dev/vhost-net probes that decide on
emulation.

A lab VM becomes a `VirtualMachine` that Calico can live-migrate: pod network with `bridge`
binding (the guest uses the pod IP), the template annotation
`kubevirt.io/allow-pod-bridge-network-live-migration` (without it KubeVirt refuses to migrate a
bridge-bound VM), the Calico IPAM annotation that gives the pod the spec's IP, the spec's MAC
twice (below), a preferred (not required) node affinity so the VM starts on its spec node and
can still migrate, and
cloud-init user data (`#cloud-config`) that authorizes the lab's SSH key for the guest user
(harness.runtime.containerlab.guestssh reaches the guest with it) and starts the TCP line-echo server the
canary (harness.canary) talks to.

The MAC. KubeVirt's bridge binding gives the guest the interface's `macAddress` (else the pod
interface's MAC) and moves the pod interface onto a bridge with the bridge's MAC (kubevirt
v1.8.4 pkg/network/domainspec/generators.go, pkg/network/setup/netpod/netpod.go
bridgeBindingSpec). Calico's CNI gives the pod's interface the MAC of the pod annotation
`cni.projectcalico.org/hwAddr` (else a kernel-chosen one) and records it as the
WorkloadEndpoint's MAC, from which Felix writes a permanent neighbour entry where it knows the
MAC (calico v3.32.1 cni-plugin/pkg/dataplane/linux/dataplane_linux.go, felix/routetable
addStaticARPEntry). So the VM template carries `hwAddr` = `macAddress`: the pod's MAC is the
guest's on every pod of the VM, migration targets included (KubeVirt copies the VMI's
annotations to each virt-launcher pod: pkg/virt-controller/services/template.go
filterVMIAnnotationsForPod, v1.5.2 and v1.8.4). With the operator's Kubernetes datastore the
WorkloadEndpoint is derived from the Pod without a MAC (libcalico-go
backend/k8s/conversion/workload_endpoint_default.go), so Felix writes no permanent entry and the
node learns the guest's MAC by ARP; either way the node's entry is the guest's MAC.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import yaml

from harness.errors import LabError
from harness.runtime.containerlab.versions import GUEST_USER
from harness.topology import GUEST_PORT, WORKLOAD_GATEWAY6

API_VERSION = "kubevirt.io/v1"
NAMESPACE = "kubevirt"  # where virt-operator and the KubeVirt CR live
VM_NAMESPACE = "default"
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
BRIDGE_MIGRATION_ANNOTATION = "kubevirt.io/allow-pod-bridge-network-live-migration"
CALICO_IP_ANNOTATION = "cni.projectcalico.org/ipAddrs"
CALICO_MAC_ANNOTATION = "cni.projectcalico.org/hwAddr"
HOSTNAME_LABEL = "kubernetes.io/hostname"
VM_LABEL = "kvlab.io/vm"
GUEST_MEMORY = "128Mi"
USER_DATA_MAX = 2048  # bytes: KubeVirt's admission webhook refuses longer inline cloud-init userData
ECHO_SCRIPT = "/usr/local/bin/kvlab-echo.py"


def kvm_usable(device: str = "/dev/kvm") -> bool:
    """True when `device` opens read-write and answers KVM_GET_API_VERSION with 12."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION, 0) == KVM_API_VERSION
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


VHOST_NET = "/dev/vhost-net"
TUN = "/dev/net/tun"


def device_opens(device: str) -> bool:
    """True when `device` exists and opens read-write. Opening loads the kernel module behind it,
    as KubeVirt's device plugin does before it offers the device to pods (only when the node
    exists: v1.8.4 pkg/virt-handler/device-manager/generic_device.go)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def vhost_net_usable() -> bool:
    return device_opens(VHOST_NET)


def tun_usable() -> bool:
    """KubeVirt's launcher pod requests a tun device for any pod network interface, emulation or
    not (v1.8.4 pkg/virt-controller/services/renderresources.go getRequiredResources)."""
    return device_opens(TUN)


def needs_emulation(kvm: bool, vhost_net: bool) -> bool:
    """useEmulation for the KubeVirt CR. Without it KubeVirt's launcher pods request a KVM device
    and, for a virtio interface (the lab's), a vhost-net device (getRequiredResources,
    pkg/network/vmispec/devices.go RequiresVirtioNetDevice); virt-handler offers neither when the
    host lacks it, so the VM would stay Pending."""
    return not (kvm and vhost_net)


def kubevirt_cr(use_emulation: bool) -> dict[str, Any]:
    """The `KubeVirt` CR virt-operator deploys from; software emulation when KVM is unusable."""
    return {
        "apiVersion": API_VERSION,
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": NAMESPACE},
        "spec": {
            "imagePullPolicy": "IfNotPresent",
            "configuration": {"developerConfiguration": {"useEmulation": use_emulation}},
        },
    }


# An echo server: python3 if the guest has it, else busybox nc (one `cat` per connection). Both
# echo bytes as they arrive, so the canary's lines and a one-shot probe without a newline
# (harness.tcpcheck) both come back.
_PY_ECHO = (
    "import socketserver\n"
    "class Echo(socketserver.BaseRequestHandler):\n"
    "    def handle(self):\n"
    "        while data := self.request.recv(65536):\n"
    "            self.request.sendall(data)\n"
    "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
    "socketserver.ThreadingTCPServer.daemon_threads = True\n"
    "socketserver.ThreadingTCPServer(('0.0.0.0', {port}), Echo).serve_forever()\n"
)


class _CloudConfigDumper(yaml.SafeDumper):
    """Multi-line strings (the echo server's source) as literal blocks, so the file reads well."""


_CloudConfigDumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    ),
)


def guest_user_data(
    port: int = GUEST_PORT, ssh_authorized_keys: Sequence[str] = (), ip6: str | None = None
) -> str:
    """cloud-init user data (`#cloud-config`): the lab's SSH public keys authorized for the guest
    user (versions.GUEST_USER), and the canary's TCP line-echo server started on `port`.

    The keys go to the image's default user and, with `disable_root: false`, unprefixed to root
    (cloud-init otherwise prefixes root's keys with a command that refuses the login). The echo
    server is python3 when the guest has it, else busybox nc (one `cat` per connection).
    With `ip6` (dual stack) the guest also configures its IPv6 address: KubeVirt's bridge binding
    hands the guest its IPv4 address over DHCP only, so cloud-init adds the pod's IPv6 address
    (a /128) and the default route via the host side's link-local fe80::ecee:eeff:feee:eeee
    (Calico's, from the MAC ee:ee:ee:ee:ee:ee) to the guest's first NIC.
    """
    start = (
        f"if command -v python3 >/dev/null 2>&1; then nohup python3 {ECHO_SCRIPT} >/dev/null 2>&1 & "
        f"else nohup sh -c 'while true; do nc -lk -p {port} -e cat; sleep 0.2; done' >/dev/null 2>&1 & fi"
    )
    doc: dict[str, Any] = {}
    if ssh_authorized_keys:
        doc["disable_root"] = GUEST_USER != "root"
        doc["ssh_authorized_keys"] = [k.strip() for k in ssh_authorized_keys]
    doc["write_files"] = [
        {"path": ECHO_SCRIPT, "permissions": "0755", "content": _PY_ECHO.replace("{port}", str(port))}
    ]
    doc["runcmd"] = [start]  # a string: cloud-init runs it with sh
    if ip6 is not None:
        addr = ipaddress.IPv6Address(ip6)  # ValueError for anything else: it lands in a shell command
        nic = "$(ls /sys/class/net | grep -v '^lo$' | head -n 1)"
        doc["runcmd"].insert(
            0,
            f'nic={nic}; ip -6 addr add {addr}/128 dev "$nic"; '
            f'ip -6 route add default via {WORKLOAD_GATEWAY6} dev "$nic"',
        )
    header = (
        "#cloud-config\n"
        f"# kvlab: SSH key of the lab for {GUEST_USER} (commands reach the guest over SSH through an\n"
        f"# external host), and a TCP line-echo server on port {port} for the canary (harness.canary).\n"
    )
    return header + yaml.dump(
        doc, Dumper=_CloudConfigDumper, sort_keys=False, default_flow_style=False, width=4096
    )


def virtual_machine(
    name: str,
    ip: str,
    kind_node: str,
    image: str,
    *,
    labels: dict[str, str] | None = None,
    mac: str | None = None,
    port: int = GUEST_PORT,
    namespace: str = VM_NAMESPACE,
    ssh_authorized_keys: Sequence[str] = (),
    ip6: str | None = None,
    kernel_boot: dict[str, Any] | None = None,
    user_data_secret: str | None = None,
) -> dict[str, Any]:
    """A `VirtualMachine` Calico can live-migrate, starting on Kubernetes node `kind_node`
    (dual stack: with `ip6` too, Calico's ipAddrs annotation asks for both addresses);
    its cloud-init authorizes `ssh_authorized_keys` (OpenSSH public key lines) for GUEST_USER.
    A `mac` is the guest's and, through the hwAddr annotation, every pod's (module doc). The guest
    gets a virtio RNG device.

    A nested node's VM (harness.runtime.containerlab.nested) boots `kernel_boot` (KubeVirt's
    `firmware.kernelBoot`: kvlab's guest image) instead of the container disk `image`, and takes
    its cloud-init user data from Secret `user_data_secret`."""
    vm_labels = {VM_LABEL: name, **(labels or {})}
    user_data = guest_user_data(port, ssh_authorized_keys, ip6)
    disks: list[dict[str, Any]] = [
        {"name": "containerdisk", "disk": {"bus": "virtio"}},
        {"name": "cloudinitdisk", "disk": {"bus": "virtio"}},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "containerdisk", "containerDisk": {"image": image}},
        {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": user_data}},
    ]
    if kernel_boot is not None:
        disks, volumes = disks[1:], volumes[1:]
    if user_data_secret is not None:
        volumes[-1] = {"name": "cloudinitdisk", "cloudInitNoCloud": {"secretRef": {"name": user_data_secret}}}
    interface: dict[str, Any] = {"name": "default", "bridge": {}}
    addresses = [ip] + ([str(ipaddress.IPv6Address(ip6))] if ip6 is not None else [])
    annotations = {BRIDGE_MIGRATION_ANNOTATION: "", CALICO_IP_ANNOTATION: json.dumps(addresses)}
    if mac is not None:
        interface["macAddress"] = mac
        annotations[CALICO_MAC_ANNOTATION] = mac
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(vm_labels)},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": dict(vm_labels), "annotations": annotations},
                "spec": {
                    "affinity": {
                        "nodeAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "preference": {
                                        "matchExpressions": [
                                            {"key": HOSTNAME_LABEL, "operator": "In", "values": [kind_node]}
                                        ]
                                    },
                                }
                            ]
                        }
                    },
                    "domain": {
                        **({"firmware": {"kernelBoot": kernel_boot}} if kernel_boot is not None else {}),
                        "devices": {
                            "disks": disks,
                            "interfaces": [interface],
                            # virtio-rng: the guest's entropy (sshd keys, TLS) does not wait on a
                            # quiet emulated machine; KubeVirt's own Alpine VMs have one
                            # (v1.8.4 tests/libvmifact/factory.go NewAlpine: libvmi.WithRng()).
                            "rng": {},
                        },
                        "memory": {"guest": GUEST_MEMORY},
                        "resources": {"requests": {"memory": GUEST_MEMORY}},
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "terminationGracePeriodSeconds": 0,
                    "volumes": volumes,
                },
            },
        },
    }


def migration_object(
    vm: str, name: str, *, target_node: str | None = None, namespace: str = VM_NAMESPACE
) -> dict[str, Any]:
    """A `VirtualMachineInstanceMigration` of VM `vm` (its VMI has the VM's name).

    `target_node` (a Kubernetes node name) adds `spec.addedNodeSelector` so the scheduler must
    place the target pod there; that field is not served by every KubeVirt release, so pass it
    only when the installed KubeVirt has it. Without it the scheduler picks the target.
    """
    spec: dict[str, Any] = {"vmiName": vm}
    if target_node is not None:
        spec["addedNodeSelector"] = {HOSTNAME_LABEL: target_node}
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": name, "namespace": namespace, "labels": {VM_LABEL: vm}},
        "spec": spec,
    }


# -- reading a running VM (pure: the API server's JSON in, answers out) --------------------------

LAUNCHER_LABEL = "kubevirt.io"  # = "virt-launcher" on every launcher pod (template.go podLabels)
VMI_NAME_LABEL = "vm.kubevirt.io/name"  # the VMI's name, on every launcher pod (podLabels)
_IMAGE_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")


def launcher_selector(vm: str) -> str:
    """Label selector of the virt-launcher pods of VMI `vm` (its pod, and a migration target's)."""
    return f"{LAUNCHER_LABEL}=virt-launcher,{VMI_NAME_LABEL}={vm}"


def guest_mac(vmi: dict[str, Any] | None) -> str | None:
    """The guest's MAC on the pod network: the VMI status's interface `default` (what the domain
    runs with), else the spec's macAddress; lower case."""
    for iface in ((vmi or {}).get("status") or {}).get("interfaces") or []:
        if iface.get("name") == "default" and iface.get("mac"):
            return str(iface["mac"]).lower()
    devices = (((vmi or {}).get("spec") or {}).get("domain") or {}).get("devices") or {}
    for iface in devices.get("interfaces") or []:
        if iface.get("name") == "default" and iface.get("macAddress"):
            return str(iface["macAddress"]).lower()
    return None


def placement_problem(vmi: dict[str, Any] | None, kind_node: str, spec_node: str) -> str | None:
    """Why the VMI does not run on `kind_node` (spec node `spec_node`), or None when it does."""
    name = ((vmi or {}).get("metadata") or {}).get("name", "?")
    node = ((vmi or {}).get("status") or {}).get("nodeName")
    if node == kind_node:
        return None
    return (
        f"VMI {name} runs on {node or 'no node'}, not on its spec node {spec_node} ({kind_node}): the "
        "VM's node affinity is only preferred (a required one would pin every migration target), and "
        f"the scheduler chose otherwise; see the events of its virt-launcher pod ({VMI_NAME_LABEL}={name})"
    )


def vm_placed(kube: Any, vm: str, kind_node: str, spec_node: str) -> tuple[bool, str]:
    """(VMI `vm` runs on `kind_node`, what it is at), asked of the cluster (a harness Kube)."""
    vmi = kube.get(API_VERSION, "VirtualMachineInstance", vm, VM_NAMESPACE)
    problem = placement_problem(vmi, kind_node, spec_node)
    return problem is None, problem or f"VMI {vm} on {kind_node}"


def check_vm(kube: Any, vm: str, kind_node: str, spec_node: str) -> None:
    """The VMI runs on `kind_node`, and each of its launcher pods has the guest's MAC
    (cni.projectcalico.org/hwAddr); LabError saying which and why otherwise."""
    vmi = kube.get(API_VERSION, "VirtualMachineInstance", vm, VM_NAMESPACE)
    problems = []
    placement = placement_problem(vmi, kind_node, spec_node)
    if placement is not None:
        problems.append(placement)
    pods = kube.list("v1", "Pod", VM_NAMESPACE, label_selector=launcher_selector(vm))
    problems += pod_mac_problems(vmi, pods)
    if problems:
        raise LabError(f"VM {vm}: " + "; ".join(problems))


def pod_mac_problems(vmi: dict[str, Any] | None, pods: list[dict[str, Any]]) -> list[str]:
    """Launcher pods of the VMI (not finished) whose `cni.projectcalico.org/hwAddr` is not the
    guest's MAC: Calico gives such a pod's interface (and its WorkloadEndpoint) another MAC than
    the guest answers with (module doc)."""
    mac = guest_mac(vmi)
    problems = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        have = ((meta.get("annotations") or {}).get(CALICO_MAC_ANNOTATION) or "").lower() or None
        if mac is not None and have != mac:
            node = (pod.get("spec") or {}).get("nodeName") or "no node"
            problems.append(
                f"virt-launcher pod {meta.get('name')} on {node} has {CALICO_MAC_ANNOTATION} {have} but "
                f"the guest's MAC is {mac}: the pod's interface gets another MAC than the guest's "
                "(the VM template's annotation did not reach the pod)"
            )
    return problems


def launcher_images(pod: dict[str, Any]) -> list[str]:
    """The images a launcher pod runs (launcher, container disk), as a migration target asks for
    them: the digest its container status reports where there is one (KubeVirt renders the target
    pod's container disk by the source's image digest: pkg/container-disk/container-disk.go
    ExtractImageIDsFromSourcePod), else the spec's reference. Anything that is not a plain image
    reference is left out."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    digests = {}
    for s in [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]:
        image_id = str(s.get("imageID") or "").split("://", 1)[-1]
        if "@sha256:" in image_id:
            digests[s.get("name")] = image_id
    images = []
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        image = digests.get(c.get("name")) or c.get("image")
        if isinstance(image, str) and _IMAGE_REF.fullmatch(image) and image not in images:
            images.append(image)
    return images
