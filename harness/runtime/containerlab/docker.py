"""The Docker engine: its client, `docker exec` into a lab's containers, removing them, and
routers as plain Docker containers on an `--internal` Docker network (no containerlab, for the
Docker tests of the ToR image and the guest SSH relay).

    with docker_lab(image, ["tor1", "tor2"], render) as lab:
        lab["tor1"].bird().protocols()

`render(name, addresses)` returns the BIRD config of one router, given every router's lab
address. Each lab gets its own network (a /27 from DOCKER_LAB_RANGE, inside the fabric range
198.18.0.0/15 but far above the rack segments labs allocate from 198.18.1.0/24 up), and its
containers and network are named `kvlab-<random>-...` and labelled with the lab name, the owner
process and the host. Everything is removed when the block exits, whether it returns, raises or
is interrupted; `reap_stale_docker()` removes what a crashed run (dead owner) left behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.birdc import BirdClient, BirdUnavailable
from harness.errors import LabError, PreflightError
from harness.names import NAME_PATTERN
from harness.procs import alive, signals_deferred
from harness.safefile import replace_file
from harness.wait import eventually

if TYPE_CHECKING:
    import docker

__all__ = [
    "DOCKER_LAB_RANGE",
    "DockerLab",
    "DockerRouter",
    "container_argv",
    "docker_client",
    "docker_exec_argv",
    "docker_lab",
    "reap_stale_docker",
    "remove_containers",
    "remove_network",
]

DOCKER_LAB_RANGE = ipaddress.IPv4Network("198.18.248.0/22")
LAB_PREFIXLEN = 27  # 32 labs side by side, up to 19 routers each (.11 to .29)
FIRST_ROUTER_HOST = 11
LABEL_LAB = "kvlab.lab"
LABEL_PID = "kvlab.owner-pid"
LABEL_START = "kvlab.owner-start"
LABEL_HOST = "kvlab.owner-host"
LABEL_DIR = "kvlab.dir"
TEMP_ROOT = Path(tempfile.gettempdir()) / "kvlab-docker"
#: What BIRD needs in a container: netlink and routes (NET_ADMIN), TCP 179 (NET_BIND_SERVICE),
#: raw sockets for protocols that use them (NET_RAW). Nothing else, no --privileged.
ROUTER_CAPS = ("NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW")

_FIX_DOCKER = "install and start it with 'sudo scripts/install-docker.sh' (or 'make system-deps')"


def docker_client(timeout: float = 120.0) -> docker.DockerClient:
    """A client for the local Docker daemon; PreflightError saying how to fix it if there is none."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise PreflightError(
            "docker", ["the Python package 'docker' (pip install -e . in the venv: 'make venv')"]
        ) from None
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except DockerException as e:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise PreflightError(
            "docker", [f"a Docker daemon answering on {host} ({e}); {_FIX_DOCKER}"]
        ) from None
    return client


def container_argv(argv: list[str]) -> list[str]:
    """`argv` for a container: this interpreter (`sys.executable`) becomes the image's python3."""
    if argv and argv[0] in (sys.executable, os.path.realpath(sys.executable)):
        return ["python3", *argv[1:]]
    return list(argv)


def docker_exec_argv(container: str, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """`docker exec -i [-e K=V ...] <container> argv` (-i: stdin reaches the command, e.g. the
    canary's `stop` line, and its end reaches it as EOF)."""
    flags = [x for key, value in (env or {}).items() for x in ("-e", f"{key}={value}")]
    return ["docker", "exec", "-i", *flags, container, *container_argv(argv)]


def remove_containers(client: Any, label: str) -> None:
    """Remove every container labelled `label` ('key=value'), running or not, with its anonymous
    volumes; one already gone (or going) is no error."""
    from docker.errors import APIError, NotFound

    for c in client.containers.list(all=True, filters={"label": label}):
        with contextlib.suppress(NotFound, APIError):
            c.remove(force=True, v=True)


def remove_network(client: Any, name: str) -> None:
    """Remove the Docker network called exactly `name`, if there is one."""
    from docker.errors import APIError, NotFound

    for net in client.networks.list(names=[name]):
        if net.name == name:
            with contextlib.suppress(NotFound, APIError):
                net.remove()


@dataclass(frozen=True)
class DockerRouter:
    """One BIRD container: its lab address and the host directory bound at /run/bird."""

    name: str
    container: str
    address: ipaddress.IPv4Address
    run_dir: Path
    config_path: Path

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "bird.ctl"

    def bird(self, timeout: float = 5.0) -> BirdClient:
        """A BirdClient on the container's control socket (bind-mounted on the host)."""
        return BirdClient(self.socket_path, timeout=timeout)


@dataclass
class DockerLab:
    """A running lab: its network, subnet and routers by name."""

    name: str
    network: str
    subnet: ipaddress.IPv4Network
    routers: dict[str, DockerRouter]
    client: Any = field(repr=False)

    def __getitem__(self, name: str) -> DockerRouter:
        return self.routers[name]

    def logs(self, name: str) -> str:
        """The container's output (BIRD logs to stderr when configured `log stderr all`)."""
        raw = self.client.containers.get(self.routers[name].container).logs(stdout=True, stderr=True)
        return raw.decode("utf-8", errors="replace")

    def health(self, name: str) -> str:
        """Docker's health status of the router (starting, healthy, unhealthy)."""
        attrs = self.client.api.inspect_container(self.routers[name].container)
        return str(attrs["State"].get("Health", {}).get("Status", "none"))


def _start_time(pid: int) -> str:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_labels(lab: str, run_dir: Path) -> dict[str, str]:
    pid = os.getpid()
    return {
        LABEL_LAB: lab,
        LABEL_PID: str(pid),
        LABEL_START: _start_time(pid),
        LABEL_HOST: socket.gethostname(),
        LABEL_DIR: str(run_dir),
    }


def _owner_gone(labels: Mapping[str, str]) -> bool:
    """True when the labelled owner process (on this host) no longer runs."""
    if labels.get(LABEL_HOST) != socket.gethostname():
        return False  # another machine's lab on a shared daemon: not ours to judge
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return True
    return not alive(pid) or _start_time(pid) != labels.get(LABEL_START, "")


def _remove_dir(path: str | None) -> None:
    if path and Path(path).resolve().is_relative_to(TEMP_ROOT.resolve()):
        shutil.rmtree(path, ignore_errors=True)


def _remove_lab(client: Any, lab: str, run_dir: str | None) -> None:
    """Remove the containers, network and temporary directory of one lab (idempotent)."""
    from docker.errors import NotFound

    remove_containers(client, f"{LABEL_LAB}={lab}")
    for network in client.networks.list(filters={"label": f"{LABEL_LAB}={lab}"}):
        with contextlib.suppress(NotFound):
            network.remove()
    _remove_dir(run_dir)


def reap_stale_docker(client: Any = None) -> list[str]:
    """Remove kvlab-labelled containers and networks whose owner process is dead; return lab names.

    Returns [] without complaint when no Docker daemon answers (nothing can be left over then).
    """
    if client is None:
        try:
            client = docker_client(timeout=30)
        except PreflightError:
            return []
    labs: dict[str, str | None] = {}
    for c in client.containers.list(all=True, filters={"label": LABEL_LAB}):
        if _owner_gone(c.labels):
            labs[c.labels[LABEL_LAB]] = c.labels.get(LABEL_DIR)
    for n in client.networks.list(filters={"label": LABEL_LAB}):
        if _owner_gone(n.attrs.get("Labels") or {}):
            labs.setdefault(n.attrs["Labels"][LABEL_LAB], n.attrs["Labels"].get(LABEL_DIR))
    for lab, run_dir in labs.items():
        _remove_lab(client, lab, run_dir)
    return sorted(labs)


def _create_network(client: Any, lab: str, labels: dict[str, str], tries: int = 8) -> tuple[Any, Any]:
    """An internal bridge network on a free /27 of DOCKER_LAB_RANGE (retried when taken).

    `inhibit_ipv4` keeps the gateway address off the host's bridge: the root namespace gets no
    address and no route into the lab (the network is L2 between the containers only)."""
    from docker.errors import APIError
    from docker.types import IPAMConfig, IPAMPool

    slots = list(DOCKER_LAB_RANGE.subnets(new_prefix=LAB_PREFIXLEN))
    last: Exception | None = None
    for subnet in random.sample(slots, min(tries, len(slots))):
        ipam = IPAMConfig(
            pool_configs=[IPAMPool(subnet=str(subnet), gateway=str(subnet.network_address + 1))]
        )
        try:
            net = client.networks.create(
                lab,
                driver="bridge",
                internal=True,
                ipam=ipam,
                labels=labels,
                options={"com.docker.network.bridge.inhibit_ipv4": "true"},
            )
        except APIError as e:
            if "overlap" not in str(e).lower():
                raise LabError(f"cannot create Docker network {lab}: {e}") from e
            last = e
            continue
        return net, subnet
    raise LabError(f"no free /{LAB_PREFIXLEN} in {DOCKER_LAB_RANGE} for a Docker lab network: {last}")


def _wait_ready(lab: DockerLab, timeout: float) -> None:
    """Every container runs and its BIRD answers on the bind-mounted control socket."""

    def ready() -> bool:
        for r in lab.routers.values():
            state = lab.client.api.inspect_container(r.container)["State"]
            if not state.get("Running"):
                raise LabError(
                    f"router {r.name} ({r.container}) exited with code {state.get('ExitCode')}:\n"
                    + lab.logs(r.name).strip()[-2000:]
                )
            with r.bird(timeout=2.0) as bird:
                bird.command("show status")
        return True

    eventually(
        ready,
        timeout=timeout,
        interval=0.1,
        what="BIRD in every router container",
        transient=(BirdUnavailable,),
    )


@contextlib.contextmanager
def docker_lab(
    image: str,
    routers: Sequence[str],
    render: Callable[[str, Mapping[str, ipaddress.IPv4Address]], str],
    *,
    ready_timeout: float = 30.0,
    client: Any = None,
) -> Iterator[DockerLab]:
    """Run `routers` from `image` on a fresh internal network; remove everything on exit.

    Router i (0-based) gets host address .11+i of the lab's /27 (.1 is Docker's gateway).
    """
    if not routers or len(set(routers)) != len(routers):
        raise ValueError(f"router names must be unique and non-empty: {list(routers)!r}")
    bad = [r for r in routers if not re.fullmatch(NAME_PATTERN, r)]
    if bad:  # each becomes a directory under the run root and part of a container name
        raise ValueError(f"router names must match {NAME_PATTERN}: {bad!r}")
    if FIRST_ROUTER_HOST + len(routers) > 2 ** (32 - LAB_PREFIXLEN) - 2:
        raise ValueError(
            f"at most {2 ** (32 - LAB_PREFIXLEN) - 2 - FIRST_ROUTER_HOST} routers per Docker lab"
        )
    client = client or docker_client()
    reap_stale_docker(client)
    name = f"kvlab-{secrets.token_hex(4)}"
    run_root: Path | None = None
    try:
        TEMP_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
        run_root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=TEMP_ROOT))
        labels = _owner_labels(name, run_root)
        network, subnet = _create_network(client, name, labels)
        addresses = {r: subnet.network_address + FIRST_ROUTER_HOST + i for i, r in enumerate(routers)}
        lab = DockerLab(name=name, network=network.name, subnet=subnet, routers={}, client=client)
        for r in routers:
            lab.routers[r] = _run_router(client, image, lab, r, addresses, render, run_root, labels)
        _wait_ready(lab, ready_timeout)
        yield lab
    finally:
        with signals_deferred():
            _remove_lab(client, name, str(run_root) if run_root else None)


def _run_router(
    client: Any,
    image: str,
    lab: DockerLab,
    router: str,
    addresses: Mapping[str, ipaddress.IPv4Address],
    render: Callable[[str, Mapping[str, ipaddress.IPv4Address]], str],
    run_root: Path,
    labels: dict[str, str],
) -> DockerRouter:
    base = run_root / router
    run_dir = base / "run"
    run_dir.mkdir(parents=True)
    config_path = base / "bird.conf"
    replace_file(config_path, render(router, addresses).encode())  # never through a planted symlink
    container = f"{lab.name}-{router}"
    endpoint = client.api.create_endpoint_config(ipv4_address=str(addresses[router]))
    client.api.create_container(
        image,
        name=container,
        hostname=router,
        labels=labels,
        host_config=client.api.create_host_config(
            binds={
                str(config_path): {"bind": "/etc/bird/bird.conf", "mode": "ro"},
                str(run_dir): {"bind": "/run/bird", "mode": "rw"},
            },
            cap_drop=["ALL"],
            cap_add=list(ROUTER_CAPS),
            network_mode=lab.network,
        ),
        networking_config=client.api.create_networking_config({lab.network: endpoint}),
    )
    client.api.start(container)
    return DockerRouter(router, container, addresses[router], run_dir, config_path)
