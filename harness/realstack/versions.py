"""Pinned versions of the real stack: which Calico, KubeVirt and kind node image go together.

The nightly workflow pins these; change them here (one place) and the workflow's matrix
follows. Facts behind the choices:
- Calico v3.32.0 (30 Apr 2026) is the first release with KubeVirt live-migration support
  (Felix's Base/Target/Live/TimeWait state machine, VM IP persistence, the BGPFilter fields
  peerType/communities/asPathPrefix/priority and operations). v3.31.x predates it: it serves as
  a baseline in which the elevated-priority steps are expected to be missing.
- KubeVirt pins Kubernetes versions (KubeVirt 1.8: Kubernetes 1.33-1.35; 1.5: 1.30-1.32), so
  each entry names a kindest/node image of a supported Kubernetes, digest-pinned as the kind
  release notes list it (an image is only supported with the kind release that built it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# The ToR / external-host image, built from images/tor/Dockerfile by harness.realstack.images
# (Debian + BIRD 1.6 + iproute2 + python3; CMD runs BIRD in the foreground, config
# /etc/bird/bird.conf, socket /run/bird/bird.ctl). Its tag is the build context's hash.
TOR_IMAGE_REPO = "kvlab/tor"


def tor_image() -> str:
    """`kvlab/tor:<hash of images/tor/>[:12]`, the tag `build_tor_image()` gives the image."""
    from harness.realstack.images import TOR_CONTEXT, context_hash

    if not TOR_CONTEXT.is_dir():
        return f"{TOR_IMAGE_REPO}:latest"
    return f"{TOR_IMAGE_REPO}:{context_hash(TOR_CONTEXT)[:12]}"


# Guest disk for the VMs: KubeVirt's small alpine container disk that boots with cloud-init
# NoCloud (the plain alpine-container-disk-demo is a live ISO without cloud-init). KubeVirt
# publishes it with every release tag.
GUEST_CONTAINER_DISK_REPO = "quay.io/kubevirt/alpine-with-test-tooling-container-disk"
# The user harness.realstack.guestssh logs in as. Assumptions about that image (KubeVirt's own
# tests log in on its console as root; kubevirtci builds it from Alpine with cloud-init and
# OpenSSH, sshd enabled at boot): sshd keeps OpenSSH's default `PermitRootLogin
# prohibit-password`, so root may log in with a key, and root's account is not locked. The
# rendered cloud-config sets `disable_root: false` so cloud-init authorizes the lab key for root
# as is. root, because lab commands in a guest (ip neigh, ip route) need it.
GUEST_USER = "root"


@dataclass(frozen=True)
class StackVersions:
    """One cell of the matrix."""

    name: str
    calico: str  # release tag, e.g. "v3.32.2"
    kubevirt: str  # release tag, e.g. "v1.8.4"
    kind_node_image: str  # kindest/node:<k8s>@sha256:<digest>
    kind: str  # the kind release that built kind_node_image (use this kind binary)
    live_migration: bool = True  # the Calico release has KubeVirt live-migration support

    @property
    def kubernetes(self) -> str:
        """'kindest/node:v1.35.0@sha256:...' -> 'v1.35.0'."""
        return self.kind_node_image.split(":", 1)[1].split("@", 1)[0]

    @property
    def operator_crds_url(self) -> str:
        return f"https://raw.githubusercontent.com/projectcalico/calico/{self.calico}/manifests/operator-crds.yaml"

    @property
    def tigera_operator_url(self) -> str:
        return f"https://raw.githubusercontent.com/projectcalico/calico/{self.calico}/manifests/tigera-operator.yaml"

    @property
    def kubevirt_operator_url(self) -> str:
        return (
            f"https://github.com/kubevirt/kubevirt/releases/download/{self.kubevirt}/kubevirt-operator.yaml"
        )

    @property
    def guest_container_disk(self) -> str:
        return f"{GUEST_CONTAINER_DISK_REPO}:{self.kubevirt}"

    def to_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "kubernetes": self.kubernetes,
            "operator_crds_url": self.operator_crds_url,
            "tigera_operator_url": self.tigera_operator_url,
            "kubevirt_operator_url": self.kubevirt_operator_url,
            "guest_container_disk": self.guest_container_disk,
        }


KIND_V0_31_K8S_1_35 = (
    "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f"
)
# containerlab 0.79 creates the clusters with its built-in kind library (v0.31.0), so every
# entry uses an image of the kind v0.31.0 release. The v1.32 digest below is the one kind
# v0.31.0's release notes list for v1.32.11, as copied in several public projects; the release
# page itself was not at hand when it was pinned.
KIND_V0_31_K8S_1_32 = (
    "kindest/node:v1.32.11@sha256:5fc52d52a7b9574015299724bd68f183702956aa4a2116ae75a63cb574b35af8"
)

MATRIX: dict[str, StackVersions] = {
    s.name: s
    for s in (
        StackVersions("calico-3.32-kubevirt-1.8", "v3.32.2", "v1.8.4", KIND_V0_31_K8S_1_35, "v0.31.0"),
        StackVersions("calico-3.32.0-kubevirt-1.8", "v3.32.0", "v1.8.4", KIND_V0_31_K8S_1_35, "v0.31.0"),
        StackVersions("calico-3.32-kubevirt-1.5", "v3.32.2", "v1.5.2", KIND_V0_31_K8S_1_32, "v0.31.0"),
        StackVersions(
            "calico-3.31-kubevirt-1.5",
            "v3.31.7",
            "v1.5.2",
            KIND_V0_31_K8S_1_32,
            "v0.31.0",
            live_migration=False,
        ),
    )
}
DEFAULT = MATRIX["calico-3.32-kubevirt-1.8"]


def get_versions(name: str | None) -> StackVersions:
    """A matrix entry by name (None: DEFAULT). Raises KeyError naming the known entries."""
    if name is None:
        return DEFAULT
    try:
        return MATRIX[name]
    except KeyError:
        raise KeyError(f"unknown stack versions '{name}' (known: {', '.join(MATRIX)})") from None
