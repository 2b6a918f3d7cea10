"""Two ToR containers from images/tor establish eBGP under plain Docker and swap their prefixes.

Skipped (with the reason) when not root or no Docker daemon answers, except under CI, where a
missing daemon is a failure: `.ci/run` -> `make test` -> `scripts/install-docker.sh` starts one.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from harness.birdc import Route
from harness.errors import LabError
from harness.render.bird import check_config
from harness.runtime.containerlab.docker import (
    LABEL_LAB,
    DockerLab,
    docker_client,
    docker_lab,
    reap_stale_docker,
)
from harness.runtime.containerlab.images import build_tor_image
from harness.wait import eventually

ASN = {"tor1": 65001, "tor2": 65002}
PREFIX = {"tor1": "198.51.100.0/26", "tor2": "198.51.100.64/26"}


pytestmark = [
    pytest.mark.slow,
    pytest.mark.needs_docker,
    # No lab: the ToR image under plain Docker, a building block checked with the netns suite.
    pytest.mark.netns_only("not a lab test: it checks the ToR image under plain Docker ('make test')"),
]


def tor_config(name: str, addresses: Mapping[str, ipaddress.IPv4Address]) -> str:
    """BIRD 1.6: one eBGP session to the other ToR, exporting only this ToR's static prefix.

    Parse-checked with `bird -p` before the container gets it.
    """
    (peer,) = (p for p in ASN if p != name)
    text = f"""\
router id {addresses[name]};
log stderr all;
protocol device {{ scan time 10; }}
protocol static originate {{ route {PREFIX[name]} blackhole; }}
protocol bgp uplink {{
  local {addresses[name]} as {ASN[name]};
  neighbor {addresses[peer]} as {ASN[peer]};
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  import all;
  export where proto = "originate";
}}
"""
    check_config(text)
    return text


@pytest.fixture(scope="module")
def tor_image() -> str:
    return build_tor_image()


def _established(lab: DockerLab, name: str) -> bool:
    with lab[name].bird() as bird:
        proto = bird.protocol("uplink")
    assert proto.established(), f"{name}: BGP {proto.bgp_state or proto.info} ({proto.last_error})"
    return True


def _learned(lab: DockerLab, name: str, prefix: str) -> Route:
    with lab[name].bird() as bird:
        routes = [r for r in bird.routes(prefix) if r.protocol == "uplink"]
    assert routes, f"{name} has no BGP route for {prefix} yet"
    return routes[0]


def test_two_tors_peer_over_docker(tor_image: str) -> None:
    client = docker_client()
    started = time.monotonic()
    with docker_lab(tor_image, list(ASN), tor_config) as lab:
        run_root = lab["tor1"].run_dir.parent.parent
        assert lab.subnet.subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))
        assert client.networks.get(lab.network).attrs["Internal"] is True
        # the host's bridge holds no lab address: the root namespace has no route into the lab
        root_routes = subprocess.run(
            ["ip", "-j", "route", "show", "table", "all"], capture_output=True, text=True, check=True
        ).stdout
        assert not [
            r
            for r in json.loads(root_routes)
            if r["dst"] != "default" and ipaddress.ip_network(r["dst"], strict=False).overlaps(lab.subnet)
        ]
        for name in ASN:
            eventually(lambda n=name: _established(lab, n), timeout=60, what=f"BGP Established on {name}")
        for name, peer in (("tor1", "tor2"), ("tor2", "tor1")):
            route = eventually(
                lambda n=name, p=peer: _learned(lab, n, PREFIX[p]),
                timeout=60,
                what=f"{name} learns {PREFIX[peer]}",
            )
            assert route.best
            assert route.as_path == (ASN[peer],)
            assert route.via == str(lab[peer].address)
            with lab[name].bird() as bird:  # and nothing else came over the session
                assert [r.prefix for r in bird.routes(protocol="uplink")] == [PREFIX[peer]]
        for name in ASN:
            eventually(lambda n=name: lab.health(n) == "healthy", timeout=30, what=f"{name} healthy")
        print(f"two ToRs up, peered and healthy in {time.monotonic() - started:.1f}s")
    label = {"label": f"{LABEL_LAB}={lab.name}"}
    assert client.containers.list(all=True, filters=label) == []
    assert client.networks.list(filters=label) == []
    assert not Path(run_root).exists()


_CHILD = """
import sys
from harness.runtime.containerlab.docker import docker_lab
with docker_lab(sys.argv[1], ["tor1"], lambda n, a: "router id %s;\\nprotocol device {}\\n" % a[n]) as lab:
    print(lab.name, lab["tor1"].run_dir, flush=True)
    sys.stdin.readline()  # held open until the parent signals us
"""


@pytest.fixture
def child_lab(tor_image: str) -> Iterator[Callable[[], tuple[subprocess.Popen[str], str, Path]]]:
    """Start a one-router lab in a child process; returns (process, lab name, run dir)."""
    procs: list[subprocess.Popen[str]] = []

    def start() -> tuple[subprocess.Popen[str], str, Path]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, tor_image],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        procs.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            pytest.fail(f"the child lab did not start: {proc.communicate(timeout=30)[1]}")
        name, run_dir = line.split()
        return proc, name, Path(run_dir)

    yield start
    for proc in procs:  # a failed test must not leave a child (or its lab) behind
        proc.kill()
        proc.communicate(timeout=30)
    reap_stale_docker()


def _leftovers(name: str) -> list[str]:
    client = docker_client()
    label = {"label": f"{LABEL_LAB}={name}"}
    return [c.name for c in client.containers.list(all=True, filters=label)] + [
        n.name for n in client.networks.list(filters=label)
    ]


def test_ctrl_c_removes_the_lab(child_lab: Callable[[], tuple[subprocess.Popen[str], str, Path]]) -> None:
    proc, name, run_dir = child_lab()
    assert _leftovers(name)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err  # raised after the teardown, which held it back
    assert _leftovers(name) == []
    assert not run_dir.exists()


def test_reap_removes_what_a_killed_run_left(
    child_lab: Callable[[], tuple[subprocess.Popen[str], str, Path]],
) -> None:
    proc, name, run_dir = child_lab()
    proc.kill()  # no teardown at all
    proc.communicate(timeout=30)
    assert len(_leftovers(name)) == 2  # its container and its network
    assert name in reap_stale_docker()
    assert _leftovers(name) == []
    assert not run_dir.exists()


def test_a_router_that_exits_fails_the_lab_with_its_log_and_leaves_nothing(tor_image: str) -> None:
    def broken(name: str, addresses: Mapping[str, ipaddress.IPv4Address]) -> str:
        return "router id 1.2.3.4;\nprotocol nonsense {}\n"  # BIRD refuses it and exits

    refused = r"exited with code 1:\n.*syntax error"
    with pytest.raises(LabError, match=refused) as failed, docker_lab(tor_image, ["tor1"], broken):
        pytest.fail("the lab came up with a broken config")
    m = re.search(r"\((kvlab-[0-9a-f]+)-tor1\)", str(failed.value))
    assert m, str(failed.value)
    assert _leftovers(m.group(1)) == []
