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

Every pin was checked against the upstream repositories (snapshots of 2026-08-21/22):
- Calico tags v3.31.7, v3.32.0 and v3.32.1 exist (projectcalico/calico; no v3.32.2 yet). The
  operator each one installs is the `quay.io/tigera/operator:<tag>` of its
  manifests/tigera-operator.yaml (and charts/tigera-operator/values.yaml `tigeraOperator.version`):
  v3.32.1 -> v1.42.3, v3.32.0 -> v1.42.0, v3.31.7 -> v1.40.15 (tags of tigera/operator, whose
  config/calico_versions.yml at those tags names the same Calico release).
- KubeVirt tags v1.5.2 and v1.8.4 exist (kubevirt/kubevirt); every release pushes
  quay.io/kubevirt/alpine-with-test-tooling-container-disk:<tag> (hack/bazel-push-images.sh).
- kind v0.31.0's default node image is kindest/node:v1.35.0@sha256:452d707d...
  (kubernetes-sigs/kind v0.31.0, pkg/apis/config/defaults/image.go).
- containerlab v0.79.0 exists and embeds kind v0.31.0 (srl-labs/containerlab go.mod); its
  release ships `containerlab_<version>_linux_amd64.deb` and `checksums.txt` (.goreleaser.yml).
`harness.runtime.containerlab.pins` lists every URL these pins make the stack fetch, and checks that each
answers (the preflight, and the nightly workflow's first step).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

# The ToR / external-host image, built from images/tor/Dockerfile by harness.runtime.containerlab.images
# (Debian + BIRD 1.6 + iproute2 + python3; CMD runs BIRD in the foreground, config
# /etc/bird/bird.conf, socket /run/bird/bird.ctl). Its tag is the build context's hash.
TOR_IMAGE_REPO = "kvlab/tor"
# The containerlab release the nightly installs (.github/workflows/nightly.yml's
# CONTAINERLAB_VERSION must equal it; tests/unit/test_workflows.py checks).
CONTAINERLAB = "0.79.0"


def tor_image() -> str:
    """`kvlab/tor:<hash of images/tor/>[:12]`, the tag `build_tor_image()` gives the image."""
    from harness.runtime.containerlab.images import TOR_CONTEXT, context_hash

    if not TOR_CONTEXT.is_dir():
        return f"{TOR_IMAGE_REPO}:latest"
    return f"{TOR_IMAGE_REPO}:{context_hash(TOR_CONTEXT)[:12]}"


# Guest disk for the VMs: KubeVirt's small alpine container disk that boots with cloud-init
# NoCloud (the plain alpine-container-disk-demo is a live ISO without cloud-init). KubeVirt
# publishes it with every release tag.
GUEST_CONTAINER_DISK_REPO = "quay.io/kubevirt/alpine-with-test-tooling-container-disk"
# The user harness.runtime.containerlab.guestssh logs in as. Assumptions about that image (KubeVirt's own
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
    calico: str  # release tag, e.g. "v3.32.1"
    kubevirt: str  # release tag, e.g. "v1.8.4"
    kind_node_image: str  # kindest/node:<k8s>@sha256:<digest>
    kind: str  # the kind release that built kind_node_image (use this kind binary)
    live_migration: bool = True  # the Calico release has KubeVirt live-migration support

    @property
    def kubernetes(self) -> str:
        """'kindest/node:v1.35.0@sha256:...' -> 'v1.35.0'."""
        return self.kind_node_image.split(":", 1)[1].split("@", 1)[0]

    @property
    def tigera_operator(self) -> str:
        """The operator tag the Calico release's manifests/tigera-operator.yaml installs."""
        return TIGERA_OPERATOR[self.calico]

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

    @property
    def images(self) -> dict[str, str]:
        """Images the stack pulls besides the kind node image and the guest disk, one per
        project: the operator and Calico's node (the tigera operator pulls Calico's images from
        quay.io: tigera/operator pkg/components/images.go `CalicoRegistry`), KubeVirt's operator
        and the launcher every VM pod (and every migration target) runs."""
        return {
            "tigera operator": f"quay.io/tigera/operator:{self.tigera_operator}",
            "calico-node": f"quay.io/calico/node:{self.calico}",
            "virt-operator": f"quay.io/kubevirt/virt-operator:{self.kubevirt}",
            "virt-launcher": f"quay.io/kubevirt/virt-launcher:{self.kubevirt}",
        }

    def to_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "kubernetes": self.kubernetes,
            "tigera_operator": self.tigera_operator,
            "operator_crds_url": self.operator_crds_url,
            "tigera_operator_url": self.tigera_operator_url,
            "kubevirt_operator_url": self.kubevirt_operator_url,
            "guest_container_disk": self.guest_container_disk,
            "images": self.images,
        }


KIND_V0_31_K8S_1_35 = (
    "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f"
)
# containerlab 0.79 creates the clusters with its built-in kind library (v0.31.0), so every
# entry uses an image of the kind v0.31.0 release. The v1.32 digest below is the one kind
# v0.31.0's release notes list for v1.32.11, as copied in several public projects; the release
# page itself was not at hand when it was pinned (kind's repository holds only its default image's
# digest), so `harness.runtime.containerlab.pins` asks Docker Hub for that digest before anything is deployed.
KIND_V0_31_K8S_1_32 = (
    "kindest/node:v1.32.11@sha256:5fc52d52a7b9574015299724bd68f183702956aa4a2116ae75a63cb574b35af8"
)

# The tigera operator each pinned Calico release installs: `image: quay.io/tigera/operator:<tag>` in
# projectcalico/calico <calico tag>:manifests/tigera-operator.yaml (v3.32.1 at 0ca9d1b9, v3.31.7 at
# 94bd1d5b); tigera/operator's config/calico_versions.yml at each operator tag names that release.
TIGERA_OPERATOR = {"v3.32.1": "v1.42.3", "v3.32.0": "v1.42.0", "v3.31.7": "v1.40.15"}

MATRIX: dict[str, StackVersions] = {
    s.name: s
    for s in (
        StackVersions("calico-3.32-kubevirt-1.8", "v3.32.1", "v1.8.4", KIND_V0_31_K8S_1_35, "v0.31.0"),
        StackVersions("calico-3.32.0-kubevirt-1.8", "v3.32.0", "v1.8.4", KIND_V0_31_K8S_1_35, "v0.31.0"),
        StackVersions("calico-3.32-kubevirt-1.5", "v3.32.1", "v1.5.2", KIND_V0_31_K8S_1_32, "v0.31.0"),
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


def minor_version(version: str) -> tuple[int, int] | None:
    """'v1.8.4' (or '1.35') -> (1, 8); None for what is not a version ('main')."""
    m = re.match(r"v?(\d+)\.(\d+)", version)
    return (int(m[1]), int(m[2])) if m else None


def get_versions(name: str | None) -> StackVersions:
    """A matrix entry by name (None: DEFAULT). Raises KeyError naming the known entries."""
    if name is None:
        return DEFAULT
    try:
        return MATRIX[name]
    except KeyError:
        raise KeyError(f"unknown stack versions '{name}' (known: {', '.join(MATRIX)})") from None
