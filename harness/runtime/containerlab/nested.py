"""Nested clusters on the real stack: the VMs that run a nested cluster's node.

A nested node is a BGP speaker inside its VM, BIRD configured by kvlab's confd emulation of the
nested cluster's Calico resources (as on the netns runtime), not a Kubernetes: what the lab
proves is the parent's side (real calico-node provisioning `localWorkloadPeeringIPV4`, its
`Local_Workload_<ip>` peers and filters), which only sees a BGP speaker at the VM's address.

Such a VM boots kvlab's guest image (harness.runtime.netns.guestimage: a Debian kernel and a
busybox initramfs with Debian's BIRD) through KubeVirt's kernel boot, from a container image
holding the kernel and initrd (`build_guest_image`: `kvlab/guest:<image key>`, built from
scratch by Docker, no registry; `kind load docker-image` puts it on the kind nodes). Its
cloud-init (NoCloud) user data, in a Secret (a node's BIRD config is longer than KubeVirt's
2048-byte inline limit), writes the node's BIRD config and pod address; the guest's /init reads
the cloud-init disk, starts BIRD, and serves BIRD's control protocol on TCP port BIRDCTL_PORT
of the VM's address. Pure functions here, except `build_guest_image`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from harness.errors import LabError
from harness.imagecache import cache_lock, cache_root
from harness.progress import NullProgress, Progress
from harness.runtime.netns.guestimage import (
    BIRDCTL_PORT,
    NESTED_MARKER,
    ensure_image,
    kernel_cmdline,
    nested_user_data,
)

__all__ = [
    "BIRDCTL_PORT",
    "DEFAULT_GUEST_IMAGE",
    "GUEST_REPOSITORY",
    "INITRD_PATH",
    "KERNEL_PATH",
    "NESTED_MARKER",
    "build_guest_image",
    "kernel_boot",
    "kind_load_argv",
    "nested_secret",
    "nested_user_data",
    "secret_name",
]

GUEST_REPOSITORY = "kvlab/guest"
DEFAULT_GUEST_IMAGE = f"{GUEST_REPOSITORY}:nested"  # what a render names when no image was built
KERNEL_PATH = "/boot/vmlinuz"
INITRD_PATH = "/boot/initrd.gz"
IMAGE_KEY_LABEL = "kvlab.guest.key"
SECRET_KEY = "userdata"  # the key KubeVirt reads a userDataSecretRef's user data from
SECRET_API = "v1"


def secret_name(vm: str) -> str:
    return f"{vm}-nested-node"


def nested_secret(vm: str, user_data: str, namespace: str) -> dict[str, Any]:
    """The Secret holding a nested node VM's cloud-init user data."""
    return {
        "apiVersion": SECRET_API,
        "kind": "Secret",
        "metadata": {"name": secret_name(vm), "namespace": namespace, "labels": {"kvlab.io/vm": vm}},
        "type": "Opaque",
        "stringData": {SECRET_KEY: user_data},
    }


def kernel_boot(image: str, vm: str, ip: str) -> dict[str, Any]:
    """KubeVirt's `firmware.kernelBoot` booting kvlab's guest image from container `image`, with
    the guest's parameters on the kernel command line (as QEMU's -append on netns)."""
    return {
        "kernelArgs": kernel_cmdline(ip, name=vm),
        "container": {
            "image": image,
            "kernelPath": KERNEL_PATH,
            "initrdPath": INITRD_PATH,
            "imagePullPolicy": "IfNotPresent",
        },
    }


def kind_load_argv(image: str, cluster: str) -> list[str]:
    """Put a local image on every node of kind cluster `cluster` (no registry)."""
    return ["kind", "load", "docker-image", image, "--name", cluster]


def build_guest_image(progress: Progress | None = None, *, client: Any = None) -> str:
    """The guest image (built or cached, bzImage) as a container image for KubeVirt's kernel
    boot: `kvlab/guest:<image key>`, FROM scratch with the kernel and initrd under /boot. An
    image with that key's label is reused."""
    from docker.errors import APIError

    from harness.runtime.containerlab.docker import docker_client

    progress = progress or NullProgress()
    client = client or docker_client()
    image = ensure_image(progress)
    tag = f"{GUEST_REPOSITORY}:{image.key}"
    with cache_lock(cache_root(), ".docker-images.lock"):
        if client.images.list(filters={"label": f"{IMAGE_KEY_LABEL}={image.key}"}):
            return tag
        with (
            tempfile.TemporaryDirectory(prefix="kvlab-guest-") as tmp,
            progress.step("docker build guest image", total=None),
        ):
            context = Path(tmp)
            (context / "vmlinuz").write_bytes(image.kernel.read_bytes())
            (context / "initrd.gz").write_bytes(image.initrd.read_bytes())
            (context / "Dockerfile").write_text(
                f"FROM scratch\nCOPY vmlinuz {KERNEL_PATH}\nCOPY initrd.gz {INITRD_PATH}\n"
            )
            try:
                client.images.build(
                    path=str(context),
                    tag=tag,
                    labels={IMAGE_KEY_LABEL: image.key, "kvlab.image": "guest"},
                    rm=True,
                    pull=False,
                )
            except APIError as e:
                raise LabError(f"docker build of the guest image {tag} failed: {e}") from e
    return tag
