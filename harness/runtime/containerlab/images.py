"""Container images of the real-stack runtime, built locally and without a registry if need be.

`build_tor_image()` builds `images/tor/Dockerfile` (BIRD 1.6 ToR router) and returns its tag,
`kvlab/tor:<hash>`, where <hash> is the content hash of `images/tor/` (also the image label
`kvlab.image.context-sha256`): an image with that label is reused, nothing is rebuilt.

The Dockerfile starts `FROM ${BASE}` (default debian:bookworm-slim). When that image is neither
present nor pullable (no registry reachable), an equivalent base is made with debootstrap
(minbase bookworm from the machine's own apt mirror, docs stripped like the slim images),
imported as `kvlab/debian-base:bookworm`, and the same Dockerfile is built on it: its own
`apt-get` steps install the packages, with the build on the host network so they reach the
mirror the host uses. The root file system tarball is cached in
`<KVLAB_IMAGE_CACHE or /var/cache/kvlab/images>/debian-base-bookworm-<key>.tar`.

    kvlab image build tor [--base debootstrap|IMAGE] [--force]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import LabError, PreflightError
from harness.imagecache import cache_lock, cache_root, ensure_cache_dir
from harness.progress import NullProgress, Progress
from harness.runtime.containerlab.docker import docker_client

__all__ = [
    "BASE_IMAGE",
    "DEFAULT_BASE",
    "HASH_LABEL",
    "TOR_CONTEXT",
    "AptSource",
    "base_sources",
    "build_tor_image",
    "context_hash",
    "debian_mirror",
    "ensure_base_image",
    "parse_deb822_sources",
    "parse_one_line_sources",
    "read_apt_sources",
]

REPO = Path(__file__).resolve().parents[3]
TOR_CONTEXT = REPO / "images" / "tor"
TOR_REPOSITORY = "kvlab/tor"
DEFAULT_BASE = "debian:bookworm-slim"
SUITE = "bookworm"
BASE_REPOSITORY, BASE_TAG = "kvlab/debian-base", SUITE
BASE_IMAGE = f"{BASE_REPOSITORY}:{BASE_TAG}"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HASH_LABEL = "kvlab.image.context-sha256"
BASE_KEY_LABEL = "kvlab.base.key"
BASE_RECIPE = "1"  # bump when the debootstrap recipe changes in a way the key would not notice
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# dpkg leaves these out of every later install too (what the slim Debian images do).
_SLIM_DPKG_CFG = """\
# kvlab base image: no documentation (as in debian:*-slim)
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""


# -- apt sources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    """One apt source entry (a one-line `deb` line or a deb822 stanza)."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    options: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def signed_by(self) -> str | None:
        return self.options.get("signed-by")


_ONE_LINE = re.compile(
    r"^(?P<type>deb(?:-src)?)\s+(?:\[(?P<opts>[^\]]*)\]\s*)?(?P<uri>\S+)\s+(?P<suite>\S+)(?P<rest>.*)$"
)


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse `sources.list` format: `deb [opt=val ...] URI SUITE [COMPONENT...]`. Hand-written:
    python-debian reads deb822 only, and the one parser of this format (python-apt's
    aptsources) is not on PyPI; one regular expression does it."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        m = _ONE_LINE.match(line)
        if not m:
            continue
        opts: dict[str, str] = {}
        for opt in (m["opts"] or "").split():
            key, sep, value = opt.partition("=")
            if sep:
                opts[key.strip().lower()] = value.strip()
        out.append(AptSource((m["type"],), (m["uri"],), (m["suite"],), tuple(m["rest"].split()), opts))
    return out


def _unfold(value: str) -> str:
    """A multi-line deb822 value as its lines (deb822(5): a continuation line's leading space is
    not part of it, and " ." stands for an empty line)."""
    return "\n".join("" if line.strip() == "." else line.strip() for line in value.strip().splitlines())


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse `*.sources` (deb822) stanzas (python-debian's deb822 parser: comments anywhere,
    field names in any case, folded values); `Enabled: no` stanzas are left out."""
    from debian.deb822 import Deb822

    out: list[AptSource] = []
    for paragraph in Deb822.iter_paragraphs(text.splitlines(keepends=True), use_apt_pkg=False):
        st = {key.lower(): _unfold(value) for key, value in paragraph.items()}
        if st.get("enabled", "yes").strip().lower() == "no" or "uris" not in st:
            continue
        known = {"types", "uris", "suites", "components", "enabled"}
        options = {k: v for k, v in st.items() if k not in known}
        out.append(
            AptSource(
                tuple(st.get("types", "deb").split()),
                tuple(st["uris"].split()),
                tuple(st.get("suites", "").split()),
                tuple(st.get("components", "").split()),
                options,
            )
        )
    return out


def read_apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every enabled source of the machine: sources.list, sources.list.d/*.list and *.sources."""
    files = [etc_apt / "sources.list"]
    d = etc_apt / "sources.list.d"
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    out: list[AptSource] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        out += parse_deb822_sources(text) if f.suffix == ".sources" else parse_one_line_sources(text)
    return out


def _usable_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def debian_mirror(sources: Iterable[AptSource], suite: str = SUITE) -> str | None:
    """The machine's Debian mirror for `suite`: the first `deb` source serving `suite` main.

    Falls back to a source of another Debian release whose URI ends in /debian (the same mirror
    serves every release); None if there is neither.
    """
    sources = [s for s in sources if "deb" in s.types and "main" in s.components]
    for s in sources:
        if suite in s.suites:
            for uri in s.uris:
                if _usable_uri(uri):
                    return uri.rstrip("/")
    for s in sources:
        if any(re.fullmatch(r"[a-z]+", x) for x in s.suites):
            for uri in s.uris:
                if _usable_uri(uri) and uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return None


def base_sources(sources: Iterable[AptSource], suite: str = SUITE, mirror: str = DEFAULT_MIRROR) -> str:
    """deb822 `debian.sources` for the base image: the machine's entries for `suite`,
    `suite`-updates and `suite`-security (http/https only), else just the mirror."""
    wanted = (suite, f"{suite}-updates", f"{suite}-security")
    components_ok = ("main", "contrib", "non-free", "non-free-firmware")
    stanzas: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for s in sources:
        uris = [u for u in s.uris if _usable_uri(u)]
        suites = [x for x in s.suites if x in wanted]
        comps = [c for c in s.components if c in components_ok]
        if "deb" not in s.types or not uris or not suites or "main" not in comps:
            continue
        ident = (*uris, *suites)
        if ident in seen:
            continue
        seen.add(ident)
        lines = [
            "Types: deb",
            f"URIs: {' '.join(uris)}",
            f"Suites: {' '.join(suites)}",
            f"Components: {' '.join(comps)}",
        ]
        if s.signed_by == KEYRING:  # a key file the base image has too (debian-archive-keyring)
            lines.append(f"Signed-By: {KEYRING}")
        stanzas.append("\n".join(lines))
    if not stanzas:
        stanzas.append(f"Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\nSigned-By: {KEYRING}")
    return "\n\n".join(stanzas) + "\n"


# -- hashing, cache, locking -------------------------------------------------------------------


def context_hash(directory: Path = TOR_CONTEXT) -> str:
    """sha256 over the build context: every file's relative path and content, in path order."""
    h = hashlib.sha256()
    for p in sorted(x for x in directory.rglob("*") if x.is_file()):
        h.update(p.relative_to(directory).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def _run_streaming(argv: list[str], step: Any, *, what: str) -> None:
    """Run `argv`, reporting each output line as progress; LabError with the tail on failure."""
    tail: deque[str] = deque(maxlen=30)
    try:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
    except OSError as e:
        raise LabError(f"{what}: cannot run {argv[0]}: {e}") from e
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            step.advance(1, detail=line[:70])
    if proc.returncode != 0:
        raise LabError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))


# -- the debootstrap base ----------------------------------------------------------------------


def _unmount_below(path: Path) -> None:
    """Unmount anything a failed debootstrap left mounted inside `path` (deepest first)."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1].replace("\\040", " ") for line in fh]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _rm(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def _slim(rootfs: Path, sources_text: str) -> None:
    """Trim the debootstrap tree like a slim image and point apt at the machine's mirror."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*"):
        for p in rootfs.glob(pattern):
            if p.is_file():
                p.unlink()
    for d in ("usr/share/man", "usr/share/info", "usr/share/locale"):
        for p in (rootfs / d).glob("*"):
            if p.name != "locale.alias":
                _rm(p)
    for doc in (rootfs / "usr/share/doc").glob("*"):
        if doc.is_dir() and not doc.is_symlink():
            for p in doc.iterdir():
                if p.name != "copyright":
                    _rm(p)
    (rootfs / "etc/dpkg/dpkg.cfg.d/kvlab-slim").write_text(_SLIM_DPKG_CFG)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(sources_text)
    for f in ("etc/resolv.conf", "etc/hostname"):  # the host's; Docker provides its own
        (rootfs / f).unlink(missing_ok=True)


def _debootstrap_tarball(mirror: str, sources_text: str, tarball: Path, progress: Progress) -> None:
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    missing = []
    if debootstrap is None:
        missing.append("debootstrap (Debian package 'debootstrap'): run 'sudo scripts/install-docker.sh'")
    if os.geteuid() != 0:
        missing.append("root: debootstrap builds the base image as root (run with sudo)")
    if missing:
        raise PreflightError(
            "docker",
            [
                f"no {DEFAULT_BASE} image and no registry to pull it from; "
                "building a base with debootstrap needs:",
                *missing,
            ],
        )
    assert debootstrap is not None
    work = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=tarball.parent))
    rootfs = work / "rootfs"
    try:
        with progress.step(f"debootstrap {SUITE} minbase from {mirror}", total=None) as step:
            _run_streaming(
                [debootstrap, "--variant=minbase", SUITE, str(rootfs), mirror],
                step,
                what=f"debootstrap {SUITE} from {mirror}",
            )
        _slim(rootfs, sources_text)
        partial = work / "rootfs.tar"
        with progress.step("pack the base file system", total=None) as step:
            _run_streaming(
                ["tar", "-C", str(rootfs), "--numeric-owner", "--exclude=./dev/*", "-cf", str(partial), "."],
                step,
                what="tar of the debootstrap tree",
            )
        partial.replace(tarball)
    finally:
        _unmount_below(work)
        shutil.rmtree(work, ignore_errors=True)


def ensure_base_image(
    client: Any = None, progress: Progress | None = None, cache_dir: Path | None = None
) -> str:
    """`kvlab/debian-base:bookworm`, imported from a cached (else fresh) debootstrap tarball."""
    from docker.errors import APIError, ImageNotFound

    client = client or docker_client()
    progress = progress or NullProgress()
    sources = read_apt_sources()
    mirror = debian_mirror(sources) or DEFAULT_MIRROR
    sources_text = base_sources(sources, SUITE, mirror)
    key = hashlib.sha256(json.dumps([BASE_RECIPE, SUITE, mirror, sources_text]).encode()).hexdigest()[:16]
    try:
        if client.images.get(BASE_IMAGE).labels.get(BASE_KEY_LABEL) == key:
            return BASE_IMAGE
    except ImageNotFound:
        pass
    root = ensure_cache_dir(cache_dir or cache_root())
    tarball = root / f"debian-base-{SUITE}-{key}.tar"
    if not tarball.is_file():
        _debootstrap_tarball(mirror, sources_text, tarball, progress)
    with progress.step(f"docker import {BASE_IMAGE}", total=None), open(tarball, "rb") as fh:
        try:
            client.api.import_image(
                src=fh,
                repository=BASE_REPOSITORY,
                tag=BASE_TAG,
                changes=[f"LABEL {BASE_KEY_LABEL}={key}", 'CMD ["bash"]'],
            )
        except APIError as e:
            raise LabError(f"docker import of {tarball} failed: {e}") from e
    return BASE_IMAGE


# -- the ToR image -----------------------------------------------------------------------------


def _present_or_pulled(client: Any, image: str, progress: Progress) -> bool:
    """True if `image` is local or could be pulled now (False when no registry answers)."""
    from docker.errors import DockerException, ImageNotFound

    try:
        client.images.get(image)
        return True
    except ImageNotFound:
        pass
    repo, _, tag = image.partition(":")
    try:
        with progress.step(f"docker pull {image}", total=None) as step:
            for chunk in client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if "error" in chunk:
                    return False
                step.advance(0, detail=str(chunk.get("status", ""))[:70])
        client.images.get(image)
        return True
    except DockerException:
        return False


def _proxy_args() -> dict[str, str]:
    names = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
    return {n: os.environ[n] for n in names if os.environ.get(n)}


def _build(client: Any, context: Path, base: str, digest: str, tag: str, progress: Progress) -> None:
    from docker.errors import APIError

    tail: deque[str] = deque(maxlen=30)
    with progress.step(f"docker build {context.name} on {base}", total=None) as step:
        try:
            stream = client.api.build(
                path=str(context),
                tag=tag,
                buildargs={"BASE": base, **_proxy_args()},
                labels={HASH_LABEL: digest, "kvlab.image": context.name},
                network_mode="host",  # RUN apt-get reaches the mirror exactly as the host does
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    raise LabError(
                        f"docker build of {context} failed: {chunk['error'].strip()}\n" + "\n".join(tail)
                    )
                for line in str(chunk.get("stream", "")).splitlines():
                    if line.strip():
                        tail.append(line)
                        step.advance(1 if line.startswith("Step ") else 0, detail=line.strip()[:70])
        except APIError as e:
            raise LabError(f"docker build of {context} failed: {e}") from e


def _prune_stale(client: Any, name: str, keep: str) -> None:
    """Untag earlier builds of image `name` (other context hashes) that no container uses."""
    from docker.errors import APIError

    for image in client.images.list(filters={"label": f"kvlab.image={name}"}):
        if image.labels.get(HASH_LABEL) != keep:
            for tag in image.tags:
                with contextlib.suppress(APIError):  # in use by a container: keep it
                    client.images.remove(tag)


def build_tor_image(
    progress: Progress | None = None,
    *,
    base: str | None = None,
    force: bool = False,
    client: Any = None,
    cache_dir: Path | None = None,
) -> str:
    """Build (or find) the ToR image and return its tag `kvlab/tor:<context hash[:12]>`.

    `base`: None tries debian:bookworm-slim (local or pulled) and falls back to the debootstrap
    base; "debootstrap" forces that base; anything else is used as the FROM image. `force`
    rebuilds even when an image with the same context hash exists. Also tags kvlab/tor:latest
    and untags earlier builds (other hashes) no container uses.
    """
    progress = progress or NullProgress()
    client = client or docker_client()
    digest = context_hash(TOR_CONTEXT)
    tag = f"{TOR_REPOSITORY}:{digest[:12]}"
    # One image build at a time per machine (parallel test runs wait for the first).
    with cache_lock(cache_dir or cache_root(), ".docker-images.lock"):
        found = [] if force else client.images.list(filters={"label": f"{HASH_LABEL}={digest}"})
        if found:
            image = found[0]
            if tag not in image.tags:
                image.tag(TOR_REPOSITORY, digest[:12])
        else:
            if base is None:
                base = DEFAULT_BASE if _present_or_pulled(client, DEFAULT_BASE, progress) else "debootstrap"
            if base == "debootstrap":
                base = ensure_base_image(client, progress, cache_dir)
            _build(client, TOR_CONTEXT, base, digest, tag, progress)
            image = client.images.get(tag)
        image.tag(TOR_REPOSITORY, "latest")
        _prune_stale(client, TOR_CONTEXT.name, digest)
    return tag
