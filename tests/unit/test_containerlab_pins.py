"""harness.runtime.containerlab.pins and the pins in harness.runtime.containerlab.versions.

The pins are checked against facts read from the upstream repositories (tags, the operator each
Calico release installs, where images come from: tests/data/containerlab/upstream-pins.json, with
the commits they were read at). The check that each pinned URL answers runs against a simulated
HTTP layer that behaves like the real services: a URL answering a ranged GET, a registry that
challenges for an anonymous bearer token (Docker Hub's and quay.io's OCI distribution API) and
answers 404 for a tag that was never pushed.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from harness.runtime.containerlab import pins
from harness.runtime.containerlab.versions import (
    CONTAINERLAB,
    DEFAULT,
    KIND_V0_31_K8S_1_35,
    MATRIX,
    TIGERA_OPERATOR,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "containerlab"
UPSTREAM = json.loads((DATA / "upstream-pins.json").read_text())


# -- the pins against upstream ------------------------------------------------------------------


@pytest.mark.parametrize("stack", list(MATRIX))
def test_every_pinned_version_is_an_upstream_tag(stack: str) -> None:
    v = MATRIX[stack]
    assert v.calico in UPSTREAM["calico"]["tags"], f"Calico {v.calico} is not tagged upstream"
    assert v.calico not in UPSTREAM["calico"]["not_tagged"]
    assert v.tigera_operator == UPSTREAM["calico"]["tigera_operator"][v.calico]
    assert v.tigera_operator in UPSTREAM["tigera_operator"]["tags"]
    assert UPSTREAM["tigera_operator"]["calico_release"][v.tigera_operator] == v.calico
    assert v.kubevirt in UPSTREAM["kubevirt"]["tags"]
    assert v.kind in UPSTREAM["kind"]["tags"]
    assert v.kind == "v0.31.0"  # every node image is one of kind v0.31.0's
    embedded = UPSTREAM["containerlab"]["embedded_kind"]
    assert embedded[f"v{CONTAINERLAB}"] == v.kind, "the pinned containerlab embeds another kind"


def test_no_pin_names_a_calico_release_that_was_not_tagged() -> None:
    assert "v3.32.2" not in {v.calico for v in MATRIX.values()}
    assert set(TIGERA_OPERATOR) == {v.calico for v in MATRIX.values()}


def test_the_kubernetes_1_35_image_is_kind_v0_31s_default() -> None:
    assert UPSTREAM["kind"]["default_node_image"]["v0.31.0"] == KIND_V0_31_K8S_1_35
    assert DEFAULT.kind_node_image == KIND_V0_31_K8S_1_35


def test_containerlab_pin_is_tagged() -> None:
    assert f"v{CONTAINERLAB}" in UPSTREAM["containerlab"]["tags"]


@pytest.mark.parametrize("stack", list(MATRIX))
def test_images_come_from_where_upstream_publishes_them(stack: str) -> None:
    v = MATRIX[stack]
    registry = UPSTREAM["tigera_operator"]["calico_registry"]
    operator_registry = registry.get(v.tigera_operator) or registry["v1.42.3"]
    assert v.images["calico-node"] == f"{operator_registry}calico/node:{v.calico}"
    assert v.images["tigera operator"] == f"quay.io/tigera/operator:{v.tigera_operator}"
    pushed = UPSTREAM["kubevirt"]["pushed_images"]
    for name in ("virt-operator", "virt-launcher"):
        assert name in pushed["images"]
        assert v.images[name] == f"{pushed['registry']}/{name}:{v.kubevirt}"
    disk = f"{pushed['registry']}/alpine-with-test-tooling-container-disk:{v.kubevirt}"
    assert v.guest_container_disk == disk
    assert "docker.io/calico" not in json.dumps(v.to_json())


# -- image references --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "registry", "repository", "reference"),
    [
        (DEFAULT.kind_node_image, "registry-1.docker.io", "kindest/node", DEFAULT.kind_node_image[-71:]),
        ("quay.io/kubevirt/virt-operator:v1.8.4", "quay.io", "kubevirt/virt-operator", "v1.8.4"),
        ("docker.io/calico/node:v3.31.7", "registry-1.docker.io", "calico/node", "v3.31.7"),
        ("busybox", "registry-1.docker.io", "busybox", "latest"),
        ("localhost:5000/kvlab/tor:abc", "localhost", "kvlab/tor", "abc"),
        ("ghcr.io/org/img@sha256:0123", "ghcr.io", "org/img", "sha256:0123"),
    ],
)
def test_image_references(image: str, registry: str, repository: str, reference: str) -> None:
    assert pins.image_registry(image) == registry
    assert pins.image_repository(image) == repository
    assert pins.image_reference(image) == reference


def test_manifest_urls() -> None:
    assert pins.manifest_url("busybox") == "https://registry-1.docker.io/v2/library/busybox/manifests/latest"
    assert (
        pins.manifest_url("quay.io/calico/node:v3.32.1") == "https://quay.io/v2/calico/node/manifests/v3.32.1"
    )
    digest = DEFAULT.kind_node_image.split("@")[1]
    assert pins.manifest_url(DEFAULT.kind_node_image) == (
        f"https://registry-1.docker.io/v2/kindest/node/manifests/{digest}"
    )


def test_the_pins_of_a_stack() -> None:
    stack = pins.stack_pins(DEFAULT)
    refs = [p.ref for p in stack]
    assert refs[:3] == [DEFAULT.operator_crds_url, DEFAULT.tigera_operator_url, DEFAULT.kubevirt_operator_url]
    assert {p.ref for p in stack if p.image} == {
        DEFAULT.kind_node_image,
        DEFAULT.guest_container_disk,
        *DEFAULT.images.values(),
    }
    tools = pins.stack_pins(DEFAULT, tools=True)[len(stack) :]
    assert [p.ref.rsplit("/", 1)[-1] for p in tools] == [
        f"containerlab_{CONTAINERLAB}_linux_amd64.deb",
        "checksums.txt",
        "kind-linux-amd64",
        "kind-linux-amd64.sha256sum",
        "kubectl",
        "kubectl.sha256",
    ]
    assert all(p.url.startswith("https://") for p in tools + stack)
    assert all(v.calico in p.ref for v in [DEFAULT] for p in stack[:2])


# -- a simulated HTTP layer --------------------------------------------------------------------


class FakeInternet:
    """Answers like the services the pins point at. `published` are the URLs and images that
    exist; registries ask for an anonymous token first (401 + `WWW-Authenticate: Bearer ...`)."""

    REALMS = {
        "registry-1.docker.io": ("https://auth.docker.io/token", "registry.docker.io"),
        "quay.io": ("https://quay.io/v2/auth", "quay.io"),
    }

    def __init__(self, published: set[str], *, unreachable: set[str] = frozenset(), tokens: bool = True):
        self.published = published
        self.unreachable = unreachable
        self.tokens = tokens
        self.asked: list[tuple[str, str, dict[str, str]]] = []

    def __call__(self, method: str, url: str, headers: dict[str, str]) -> pins.Response:
        self.asked.append((method, url, dict(headers)))
        parts = urllib.parse.urlsplit(url)
        if parts.hostname in self.unreachable:
            raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
        for host, (realm, service) in self.REALMS.items():
            if url.startswith(realm):
                query = urllib.parse.parse_qs(parts.query)
                assert query["service"] == [service]
                assert query["scope"][0].endswith(":pull")
                if not self.tokens:
                    return 503, {}, b""
                return 200, {"content-type": "application/json"}, json.dumps({"token": f"t-{host}"}).encode()
        if "/v2/" in parts.path and "/manifests/" in parts.path:
            assert method == "HEAD"
            assert "application/vnd.oci.image.index.v1+json" in headers["Accept"]
            realm, service = self.REALMS[parts.hostname or ""]
            if headers.get("Authorization") != f"Bearer t-{parts.hostname}":
                repo = parts.path.split("/v2/", 1)[1].split("/manifests/", 1)[0]
                challenge = f'Bearer realm="{realm}",service="{service}",scope="repository:{repo}:pull"'
                return 401, {"www-authenticate": challenge}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'
            if url in self.published:
                return 200, {}, b""
            return 404, {}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'
        assert method == "GET"
        assert headers == {"Range": "bytes=0-0"}
        return (206, {"content-range": "bytes 0-0/1234"}, b"x") if url in self.published else (404, {}, b"")


def published(versions: Any = DEFAULT, *, tools: bool = True) -> set[str]:
    return {p.url for p in pins.stack_pins(versions, tools=tools)}


def test_every_pin_answers_when_it_is_published() -> None:
    net = FakeInternet(published())
    assert pins.check(pins.stack_pins(DEFAULT, tools=True), net) == []
    images = [a for a in net.asked if a[0] == "HEAD"]
    # each image: the challenge, then the manifest with the anonymous token
    assert len(images) == 2 * len([p for p in pins.stack_pins(DEFAULT) if p.image])


def test_a_tag_that_was_never_pushed_is_named() -> None:
    missing = pins.Pin("calico-node image", "quay.io/calico/node:v3.32.2", image=True)
    crds = pins.Pin("operator CRDs", DEFAULT.operator_crds_url.replace("v3.32.1", "v3.32.2"))
    failed = pins.check([crds, missing], FakeInternet(published()))
    assert [(p.ref, why) for p, why in failed] == [
        (crds.ref, "HTTP 404"),
        (missing.ref, "HTTP 404: no such tag or digest"),
    ]
    line = pins.describe(*failed[1])
    assert "quay.io/calico/node:v3.32.2" in line
    assert "harness/runtime/containerlab/versions.py" in line
    assert "allow HTTPS to quay.io" in line


def test_an_unreachable_host_and_a_registry_without_tokens() -> None:
    net = FakeInternet(published(), unreachable={"raw.githubusercontent.com"}, tokens=False)
    failed = dict((p.what, why) for p, why in pins.check(pins.stack_pins(DEFAULT), net))
    unreachable = "gaierror: [Errno -2] Name or service not known"
    assert failed[f"Calico {DEFAULT.calico} operator CRDs"] == unreachable
    assert failed["calico-node image"] == "HTTP 401, and no anonymous token from https://quay.io/v2/auth"
    assert f"KubeVirt {DEFAULT.kubevirt} operator manifest" not in failed  # github.com answers


def test_bearer_challenges() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull"'
    )
    assert pins.bearer_challenge(header) == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:x:pull",
    }
    assert pins.bearer_challenge('Basic realm="x"') is None
    assert pins.bearer_challenge("Bearer service=x") is None
    assert pins.bearer_challenge(None) is None


def test_a_token_realm_that_is_not_https_is_not_followed() -> None:
    image = pins.Pin("img", "quay.io/x/y:1", image=True)

    def http(method: str, url: str, headers: dict[str, str]) -> pins.Response:
        assert url.startswith("https://quay.io/v2/")  # never the http realm
        return 401, {"www-authenticate": 'Bearer realm="http://evil.example/token"'}, b""

    assert pins.why_not(image, http) == "HTTP 401, and no anonymous token from http://evil.example/token"


def test_urllib_http_refuses_anything_but_https() -> None:
    with pytest.raises(ValueError, match="not an https URL"):
        pins.urllib_http("GET", "http://example.invalid/x", {})
    with pytest.raises(ValueError, match="not an https URL"):
        pins.urllib_http("GET", "file:///etc/passwd", {})


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert pins.main(["check", DEFAULT.name, "--tools"], http=FakeInternet(published())) == 0
    assert "all 15 pins" in capsys.readouterr().out
    rc = pins.main(["check", "calico-3.31-kubevirt-1.5"], http=FakeInternet(published(DEFAULT)))
    err = capsys.readouterr().err
    assert rc == 2
    for word in ("v3.31.7", "v1.40.15", "HTTP 404"):
        assert word in err
    assert pins.main(["list"]) == 0
    out = capsys.readouterr().out
    assert DEFAULT.tigera_operator_url in out
    assert DEFAULT.kind_node_image in out
    assert pins.main(["check", "calico-2"]) == 2
    assert "unknown stack versions" in capsys.readouterr().err


def test_the_cli_on_this_machine_exits_2_naming_each_pin(capsys: pytest.CaptureFixture[str]) -> None:
    """Through urllib for real: here (no route to the registries) every pin is named; where the
    internet is reachable every pin answers."""
    rc = pins.main(["check", DEFAULT.name])
    err = capsys.readouterr().err
    assert rc in (0, 2)
    if rc == 0:
        return
    for pin in pins.stack_pins(DEFAULT):
        assert pin.ref in err


# -- quay.io's challenge without a scope (review 1, M2) ----------------------------------------------

QUAY = json.loads((DATA / "quay-401-challenges.json").read_text())


class QuayWithoutScope:
    """quay.io as quay/quay answers when it does not name the repository in its 401 challenge:
    the token endpoint grants exactly the scopes asked for (none without `scope`), and a manifest
    is served only with a token granting pull on its repository."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, method: str, url: str, headers: dict[str, str]) -> pins.Response:
        self.asked.append(url)
        parts = urllib.parse.urlsplit(url)
        if parts.path == "/v2/auth":
            scopes = urllib.parse.parse_qs(parts.query).get("scope", [])
            return 200, {}, json.dumps({"token": "grants:" + ",".join(scopes)}).encode()
        repo = parts.path.removeprefix("/v2/").rsplit("/manifests/", 1)[0]
        if headers.get("Authorization") == f"Bearer grants:repository:{repo}:pull":
            return 200, {}, b""
        return 401, {"www-authenticate": QUAY["without_scope"]}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'


def test_a_challenge_without_scope_gets_a_token_for_the_images_repository() -> None:
    assert "scope" not in (pins.bearer_challenge(QUAY["without_scope"]) or {})
    quay = QuayWithoutScope()
    image = pins.Pin("calico-node image", f"quay.io/calico/node:{DEFAULT.calico}", image=True)
    assert pins.why_not(image, quay) is None
    (token_url,) = [u for u in quay.asked if "/v2/auth" in u]
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(token_url).query) == {
        "service": ["quay.io"],
        "scope": ["repository:calico/node:pull"],
    }


def test_a_challenge_with_a_scope_is_asked_for_that_scope() -> None:
    challenge = pins.bearer_challenge(QUAY["with_scope"])
    assert challenge is not None
    asked: list[str] = []

    def http(method: str, url: str, headers: dict[str, str]) -> pins.Response:
        asked.append(url)
        return 200, {}, b'{"token": "t"}'

    assert pins._token(http, challenge, "other/repo") == "t"
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(asked[0]).query)["scope"] == [
        "repository:calico/node:pull"
    ]
