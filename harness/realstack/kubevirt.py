"""KubeVirt objects for the real stack, and the /dev/kvm probe that decides on emulation.

A lab VM becomes a `VirtualMachine` that Calico can live-migrate: pod network with `bridge`
binding (the guest uses the pod IP), the template annotation
`kubevirt.io/allow-pod-bridge-network-live-migration` (without it KubeVirt refuses to migrate a
bridge-bound VM), the Calico IPAM annotation that gives the pod the spec's IP, a preferred
(not required) node affinity so the VM starts on its spec node and can still migrate, and
cloud-init user data (`#cloud-config`) that authorizes the lab's SSH key for the guest user
(harness.realstack.guestssh reaches the guest with it) and starts the TCP line-echo server the
canary (harness.canary) talks to.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Sequence
from typing import Any

import yaml

from harness.canary import DEFAULT_PORT
from harness.realstack.versions import GUEST_USER

API_VERSION = "kubevirt.io/v1"
NAMESPACE = "kubevirt"  # where virt-operator and the KubeVirt CR live
VM_NAMESPACE = "default"
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
BRIDGE_MIGRATION_ANNOTATION = "kubevirt.io/allow-pod-bridge-network-live-migration"
CALICO_IP_ANNOTATION = "cni.projectcalico.org/ipAddrs"
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


# A line-echo server: python3 if the guest has it, else busybox nc (one `cat` per connection).
_PY_ECHO = (
    "import socketserver\n"
    "class Echo(socketserver.StreamRequestHandler):\n"
    "    def handle(self):\n"
    "        for line in self.rfile:\n"
    "            self.wfile.write(line)\n"
    "            self.wfile.flush()\n"
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


def guest_user_data(port: int = DEFAULT_PORT, ssh_authorized_keys: Sequence[str] = ()) -> str:
    """cloud-init user data (`#cloud-config`): the lab's SSH public keys authorized for the guest
    user (versions.GUEST_USER), and the canary's TCP line-echo server started on `port`.

    The keys go to the image's default user and, with `disable_root: false`, unprefixed to root
    (cloud-init otherwise prefixes root's keys with a command that refuses the login). The echo
    server is python3 when the guest has it, else busybox nc (one `cat` per connection).
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
    port: int = DEFAULT_PORT,
    namespace: str = VM_NAMESPACE,
    ssh_authorized_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """A `VirtualMachine` Calico can live-migrate, starting on Kubernetes node `kind_node`;
    its cloud-init authorizes `ssh_authorized_keys` (OpenSSH public key lines) for GUEST_USER."""
    vm_labels = {VM_LABEL: name, **(labels or {})}
    user_data = guest_user_data(port, ssh_authorized_keys)
    interface: dict[str, Any] = {"name": "default", "bridge": {}}
    if mac is not None:
        interface["macAddress"] = mac
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(vm_labels)},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {
                    "labels": dict(vm_labels),
                    "annotations": {
                        BRIDGE_MIGRATION_ANNOTATION: "",
                        CALICO_IP_ANNOTATION: json.dumps([ip]),
                    },
                },
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
                        "devices": {
                            "disks": [
                                {"name": "containerdisk", "disk": {"bus": "virtio"}},
                                {"name": "cloudinitdisk", "disk": {"bus": "virtio"}},
                            ],
                            "interfaces": [interface],
                        },
                        "memory": {"guest": GUEST_MEMORY},
                        "resources": {"requests": {"memory": GUEST_MEMORY}},
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "terminationGracePeriodSeconds": 0,
                    "volumes": [
                        {"name": "containerdisk", "containerDisk": {"image": image}},
                        {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": user_data}},
                    ],
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
