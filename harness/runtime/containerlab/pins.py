"""Every URL the real stack's pinned versions make it fetch, and whether each one answers.

    python -m harness.runtime.containerlab.pins list  [STACK] [--tools]   # what, and its URL or image
    python -m harness.runtime.containerlab.pins check [STACK] [--tools]   # exit 2 naming each silent pin

A pin answers when
- a URL (release manifest, binary, checksum file) returns 200 or 206 to a GET of its first byte,
  redirects followed;
- an image's manifest is served by its registry: `HEAD /v2/<repository>/manifests/<tag or digest>`
  (the OCI distribution API), with the anonymous bearer token the registry's 401 challenge names
  (Docker Hub and quay.io both ask for one), for `repository:<repository>:pull` when the
  challenge names no scope (quay.io's may not: quay/quay auth/registry_jwt_auth.py
  get_auth_headers adds one only when it knows the repository).

`kvlab up --runtime containerlab` runs the check in its preflight (the manifests and images of the
stack: a 404 there would kill the deploy halfway); the nightly workflow runs it with `--tools`
(containerlab, kind and kubectl downloads too) as its first step, before it installs anything.

Standard library only: the workflow runs it with the system Python before the venv exists.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from harness.runtime.containerlab.versions import CONTAINERLAB, MATRIX, StackVersions, get_versions

DOCKER_HUB = "registry-1.docker.io"
TIMEOUT = 10.0
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)

Response = tuple[int, dict[str, str], bytes]
"""(HTTP status, headers with lower-case names, the start of the body)."""
Http = Callable[[str, str, dict[str, str]], Response]
"""(method, URL, request headers) -> Response; raises OSError when no answer comes."""


# -- image references --------------------------------------------------------------------------


def _split_registry(image: str) -> tuple[str | None, str]:
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, image


def image_registry(image: str) -> str:
    """The registry host an image reference pulls from ('kindest/node:v1' -> registry-1.docker.io)."""
    host, _ = _split_registry(image)
    if host is None or host in ("docker.io", "index.docker.io"):
        return DOCKER_HUB
    return host.split(":")[0]


def image_repository(image: str) -> str:
    """The repository of an image reference, without registry, tag or digest
    ('quay.io/kubevirt/virt-operator:v1.8.4' -> 'kubevirt/virt-operator')."""
    _, name = _split_registry(image.split("@", 1)[0])
    head, _, tail = name.rpartition("/")
    return f"{head}/{tail.split(':', 1)[0]}" if head else tail.split(":", 1)[0]


def image_reference(image: str) -> str:
    """The digest of an image reference if it has one, else its tag ('latest' when none)."""
    if "@" in image:
        return image.split("@", 1)[1]
    _, name = _split_registry(image)
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def manifest_url(image: str) -> str:
    """Where the registry serves the image's manifest (Docker Hub's one-name images are library/)."""
    repo = image_repository(image)
    host = image_registry(image)
    if host == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    return f"https://{host}/v2/{repo}/manifests/{image_reference(image)}"


# -- the pins ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """One pinned thing the stack fetches: an HTTPS URL, or an image (`image=True`)."""

    what: str
    ref: str
    image: bool = False

    @property
    def url(self) -> str:
        return manifest_url(self.ref) if self.image else self.ref


def tool_urls(versions: StackVersions, containerlab: str = CONTAINERLAB) -> list[Pin]:
    """The downloads the nightly workflow installs the tools from (and their checksum files)."""
    clab = f"https://github.com/srl-labs/containerlab/releases/download/v{containerlab}"
    kind = f"https://github.com/kubernetes-sigs/kind/releases/download/{versions.kind}/kind-linux-amd64"
    kubectl = f"https://dl.k8s.io/release/{versions.kubernetes}/bin/linux/amd64/kubectl"
    return [
        Pin(f"containerlab {containerlab} package", f"{clab}/containerlab_{containerlab}_linux_amd64.deb"),
        Pin(f"containerlab {containerlab} checksums", f"{clab}/checksums.txt"),
        Pin(f"kind {versions.kind} binary", kind),
        Pin(f"kind {versions.kind} checksum", f"{kind}.sha256sum"),
        Pin(f"kubectl {versions.kubernetes} binary", kubectl),
        Pin(f"kubectl {versions.kubernetes} checksum", f"{kubectl}.sha256"),
    ]


def stack_pins(versions: StackVersions, *, tools: bool = False) -> list[Pin]:
    """What `kvlab up` fetches for a matrix entry: the manifests it applies and one image of each
    part (kind node, guest disk, operator, Calico, KubeVirt); with `tools`, the tool downloads."""
    pins = [
        Pin(f"Calico {versions.calico} operator CRDs", versions.operator_crds_url),
        Pin(f"Calico {versions.calico} tigera-operator manifest", versions.tigera_operator_url),
        Pin(f"KubeVirt {versions.kubevirt} operator manifest", versions.kubevirt_operator_url),
        Pin(f"kind node image (Kubernetes {versions.kubernetes})", versions.kind_node_image, image=True),
        Pin(f"guest disk (KubeVirt {versions.kubevirt})", versions.guest_container_disk, image=True),
        *(Pin(f"{what} image", ref, image=True) for what, ref in versions.images.items()),
    ]
    return [*pins, *tool_urls(versions)] if tools else pins


# -- asking ------------------------------------------------------------------------------------


def urllib_http(method: str, url: str, headers: dict[str, str], timeout: float = TIMEOUT) -> Response:
    """One HTTPS request through urllib (redirects followed); an HTTP error status is an answer."""
    if urllib.parse.urlsplit(url).scheme != "https":
        raise ValueError(f"not an https URL: {url}")
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # https only (checked above)
            body = resp.read(65536) if method != "HEAD" else b""
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, body
    except urllib.error.HTTPError as e:
        with e:
            return e.code, {k.lower(): v for k, v in (e.headers or {}).items()}, e.read(65536)


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def bearer_challenge(header: str | None) -> dict[str, str] | None:
    """`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="..."` ->
    {"realm": ..., "service": ..., "scope": ...}; None for anything else."""
    if not header or not header.strip().lower().startswith("bearer "):
        return None
    params = dict(_CHALLENGE_PARAM.findall(header.strip()[len("bearer ") :]))
    return params if params.get("realm") else None


def _token(http: Http, challenge: dict[str, str], repository: str) -> str | None:
    """An anonymous token from the challenge's realm, for its scope, else for pulling `repository`."""
    realm = challenge["realm"]
    if urllib.parse.urlsplit(realm).scheme != "https":
        return None
    params = {k: v for k, v in challenge.items() if k in ("service", "scope")}
    params.setdefault("scope", f"repository:{repository}:pull")
    query = urllib.parse.urlencode(params)
    status, _, body = http("GET", f"{realm}?{query}" if query else realm, {})
    if status != 200:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    return str(token) if token else None


def _manifest_repository(url: str) -> str:
    """The repository a manifest URL names ('https://quay.io/v2/calico/node/manifests/v3' ->
    'calico/node'; Docker Hub's one-name images are library/ there)."""
    path = urllib.parse.urlsplit(url).path
    return path.removeprefix("/v2/").rsplit("/manifests/", 1)[0]


def why_not(pin: Pin, http: Http) -> str | None:
    """None when the pin answers, else what happened instead."""
    try:
        if not pin.image:
            status, _, _ = http("GET", pin.url, {"Range": "bytes=0-0"})
            return None if status in (200, 206) else f"HTTP {status}"
        headers = {"Accept": MANIFEST_TYPES}
        status, answer, _ = http("HEAD", pin.url, headers)
        challenge = bearer_challenge(answer.get("www-authenticate")) if status == 401 else None
        if challenge is not None:
            token = _token(http, challenge, _manifest_repository(pin.url))
            if token is None:
                return f"HTTP 401, and no anonymous token from {challenge['realm']}"
            status, _, _ = http("HEAD", pin.url, {**headers, "Authorization": f"Bearer {token}"})
        if status == 200:
            return None
        return f"HTTP {status}" + (": no such tag or digest" if status == 404 else "")
    except (OSError, ValueError) as e:
        cause = e.reason if isinstance(e, urllib.error.URLError) else e
        return f"{type(cause).__name__}: {cause}"


def check(pins: list[Pin], http: Http = urllib_http) -> list[tuple[Pin, str]]:
    """(pin, why) for every pin that does not answer, asked in parallel, in `pins` order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, max(1, len(pins)))) as pool:
        answers = list(pool.map(lambda p: why_not(p, http), pins))
    return [(pin, why) for pin, why in zip(pins, answers, strict=True) if why is not None]


def describe(pin: Pin, why: str) -> str:
    """One line for a pin that does not answer, saying what to do about it."""
    host = urllib.parse.urlsplit(pin.url).hostname
    return (
        f"{pin.what} {pin.ref}: no answer ({why}); if that version was never published, fix the pin "
        f"in harness/runtime/containerlab/versions.py, else allow HTTPS to {host} (HTTPS_PROXY for "
        "this shell and the Docker daemon)"
    )


def main(argv: list[str] | None = None, http: Http = urllib_http) -> int:
    p = argparse.ArgumentParser(
        prog="python -m harness.runtime.containerlab.pins", description=__doc__.split("\n")[0]
    )
    p.add_argument("command", choices=("list", "check"))
    p.add_argument("stack", nargs="?", default=None, help=f"a matrix entry ({', '.join(MATRIX)})")
    p.add_argument("--tools", action="store_true", help="the containerlab, kind and kubectl downloads too")
    args = p.parse_args(argv)
    try:
        versions = get_versions(args.stack)
    except KeyError as e:
        print(f"pins: {e.args[0]}", file=sys.stderr)
        return 2
    pins = stack_pins(versions, tools=args.tools)
    if args.command == "list":
        for pin in pins:
            print(f"{pin.what}\t{pin.ref}")
        return 0
    failed = check(pins, http)
    for pin, why in failed:
        print(f"pins: {describe(pin, why)}", file=sys.stderr)
    if not failed:
        print(f"pins: all {len(pins)} pins of {versions.name} answer")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
