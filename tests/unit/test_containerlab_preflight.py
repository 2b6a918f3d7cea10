"""harness.runtime.containerlab.preflight: what the containerlab runtime needs of a machine.

With injected probes (a bare machine, a full one, partial ones), and once for real on this machine
through the CLI (exit 2, nothing created)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from clab_fakes import (
    DATA,
    DEFAULT_LAB,
    REPO,
    full_machine,
)

from harness.errors import PreflightError
from harness.labfile import load_lab
from harness.runtime.base import LabContext, RuntimeOptions
from harness.runtime.containerlab import pins
from harness.runtime.containerlab import preflight as pf
from harness.runtime.containerlab import runtime as cl
from harness.runtime.containerlab.versions import DEFAULT, MATRIX

pytestmark = pytest.mark.usefixtures("run_root")  # tests/unit/conftest.py


def unreachable(method: str, url: str, headers: dict[str, str]) -> pins.Response:
    """What urllib raises without a route to the internet (this machine)."""
    raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))


def bare_machine() -> pf.Probes:
    return pf.Probes(
        which=lambda name: None,
        run=lambda argv: (127, "not found"),
        importable=lambda module: False,
        docker_ping=lambda: "Error while fetching server API version: connection refused",
        docker_free=lambda: None,
        http=unreachable,
        read_file=lambda path: {"max_user_watches": "8192", "max_user_instances": "128"}[
            path.rsplit("/", 1)[1]
        ],
        euid=lambda: 1000,
        group_names=lambda: {"users"},
        kvm_usable=lambda: False,
        vhost_net_usable=lambda: False,
        tun_usable=lambda: False,
    )


def preflight_missing(probes: pf.Probes, stack: str | None = None, **kw: Any) -> list[str]:
    clab = cl.ContainerlabRuntime("t", probes=probes, options=RuntimeOptions(stack=stack), **kw)
    try:
        clab.preflight()
    except PreflightError as e:
        return [f"<runtime {e.runtime}>"] if e.runtime != "containerlab" else e.missing
    return []


def test_a_bare_machine_lists_everything_once(run_root: Path) -> None:
    missing = preflight_missing(bare_machine())
    text = "\n".join(missing)
    stack_pins = pins.stack_pins(DEFAULT)
    expected_words = [
        "Docker daemon",
        "containerlab >= 0.73",
        "kind (not found",
        "kubectl (not found",
        "'docker'",
        "'kubernetes'",
        "'paramiko'",
        *(f"{pin.ref}: no answer (gaierror" for pin in stack_pins),
        "max_user_watches >= 524288 (now 8192",
        "max_user_instances >= 512 (now 128",
        "'docker' group",
        "/dev/net/tun (KubeVirt's launcher pods need a tun device",
    ]
    assert len(missing) == len(expected_words), text
    for word, item in zip(expected_words, missing, strict=True):
        assert word in item, (word, item)
    # Each item says how to get it.
    assert "get.containerlab.dev" in text
    assert f"kind.sigs.k8s.io/dl/{DEFAULT.kind}/" in text
    assert "sudo sysctl -w fs.inotify.max_user_watches=524288" in text
    assert "make venv" in text
    assert "allow HTTPS to quay.io" in text
    assert "sudo modprobe tun" in text
    assert not run_root.exists()  # preflight creates nothing


def test_the_error_shows_the_emulation_note() -> None:
    with pytest.raises(pf.ContainerlabPreflightError) as err:
        cl.ContainerlabRuntime("t", probes=bare_machine()).preflight()
    assert err.value.info == ["/dev/kvm is not usable here: KubeVirt will run VMs with useEmulation (slower)"]
    assert str(err.value).splitlines()[0] == "runtime 'containerlab' cannot run on this machine:"
    assert str(err.value).endswith(
        "(info) /dev/kvm is not usable here: KubeVirt will run VMs with useEmulation (slower)"
    )


def test_a_full_machine_passes(run_root: Path) -> None:
    clab = cl.ContainerlabRuntime("t", probes=full_machine())
    clab.preflight()
    assert clab.preflight_info == ["containerlab 0.79.0", "/dev/kvm is usable: KubeVirt runs VMs with KVM"]
    assert not run_root.exists()
    assert preflight_missing(full_machine(euid=lambda: 0, group_names=lambda: set())) == []  # root


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"which": lambda n: None if n == "kind" else f"/usr/bin/{n}"}, ["kind (not found"]),
        (
            {"http": lambda m, url, h: (404, {}, b"") if "calico/node" in url else (200, {}, b"")},
            [f"quay.io/calico/node:{DEFAULT.calico}: no answer (HTTP 404: no such tag or digest)"],
        ),
        (
            {"docker_free": lambda: ("/var/lib/docker", 12 * 2**30)},
            ["20 GiB free for Docker in /var/lib/docker (now 12.0 GiB"],
        ),
        (
            {
                "read_file": lambda path: "511" if path.endswith("instances") else "524288",
                "importable": lambda m: m != "paramiko",
            },
            ["'paramiko'", "max_user_instances >= 512 (now 511"],
        ),
        ({"docker_ping": lambda: "permission denied"}, ["Docker daemon answering on"]),
        (
            {"run": lambda argv: (0, (DATA / "containerlab-version.txt").read_text())},
            ["containerlab >= 0.73 (found 0.69.3): upgrade"],
        ),
        (
            {"run": lambda argv: (0, "    version: 0.72.0\n")},  # the last one embedding kind v0.27.0
            ["containerlab >= 0.73 (found 0.72.0): upgrade"],
        ),
        ({"run": lambda argv: (1, "segfault")}, ["'containerlab version' did not report a version (exit 1"]),
        ({"read_file": lambda path: None}, ["max_user_watches >= 524288 (unreadable", "max_user_instances"]),
    ],
)
def test_a_partial_machine_lists_exactly_what_it_lacks(
    overrides: dict[str, Any], expected: list[str]
) -> None:
    missing = preflight_missing(full_machine(**overrides))
    assert len(missing) == len(expected), missing
    for word, item in zip(expected, missing, strict=True):
        assert word in item


def test_the_preflight_asks_for_every_pin_of_the_selected_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for stack in MATRIX.values():
        asked: list[str] = []

        def http(method: str, url: str, headers: dict[str, str], asked: list[str] = asked) -> pins.Response:
            asked.append(url)
            return 200, {}, b""

        assert preflight_missing(full_machine(http=http), stack=stack.name) == []
        assert sorted(asked) == sorted(p.url for p in pins.stack_pins(stack))


def test_the_containerlab_floor_is_the_first_release_embedding_the_stacks_kind() -> None:
    """containerlab creates the kind clusters with the kind library it embeds (go.mod, read
    upstream: tests/data/containerlab/upstream-pins.json)."""
    facts = json.loads((DATA / "upstream-pins.json").read_text())["containerlab"]["embedded_kind"]
    embedded = {tag: kind for tag, kind in facts.items() if tag.startswith("v")}
    kinds = {v.kind for v in MATRIX.values()}
    releases = sorted(embedded, key=lambda t: tuple(int(x) for x in t.lstrip("v").split(".")))
    first = next(t for t in releases if embedded[t] in kinds)
    assert tuple(int(x) for x in first.lstrip("v").split("."))[:2] == pf.MIN_CONTAINERLAB
    assert all(embedded[t] in kinds for t in releases[releases.index(first) :])


def test_unknown_stack_versions_are_a_preflight_item() -> None:
    missing = preflight_missing(full_machine(), stack="calico-9")
    assert len(missing) == 1
    assert "--stack calico-9 is not a stack-versions entry" in missing[0]
    assert "calico-3.32-kubevirt-1.8" in missing[0]
    assert preflight_missing(full_machine(), stack="calico-3.31-kubevirt-1.5") == []


def test_kubectl_out_of_skew_is_information_not_a_failure() -> None:
    old = (0, (DATA / "kubectl-version.json").read_text())
    clab = cl.ContainerlabRuntime(
        "t",
        probes=full_machine(
            run=lambda argv: (
                old if argv[0] == "kubectl" else (0, (DATA / "containerlab-version-0.79.0.txt").read_text())
            )
        ),
    )
    clab.preflight()
    assert any("kubectl v1.32 is more than one minor version" in line for line in clab.preflight_info)


def test_nested_clusters_are_no_longer_refused(run_root: Path) -> None:
    """A nested lab's preflight is the default lab's: on a machine with the stack it passes, and
    nothing is created by it."""
    spec = load_lab(REPO / "labs" / "nested.yml")
    from harness.topology import resolve

    assert resolve(spec).nested_vm
    clab = cl.ContainerlabRuntime("t", probes=full_machine(), context=LabContext.of(spec))
    clab.preflight()
    assert not run_root.exists()


def test_a_nested_lab_missing_the_stack_names_what_is_missing_like_the_default_lab(run_root: Path) -> None:
    def missing(path: Path) -> list[str]:
        spec = load_lab(path)
        probes = full_machine(which=lambda name: None)
        with pytest.raises(PreflightError) as err:
            cl.ContainerlabRuntime("t", probes=probes, context=LabContext.of(spec)).preflight()
        return err.value.missing

    assert missing(REPO / "labs" / "nested.yml") == missing(REPO / "labs" / "default.yml")
    assert not run_root.exists()


def test_parse_containerlab_version() -> None:
    assert pf.parse_containerlab_version((DATA / "containerlab-version.txt").read_text()) == (0, 69, 3)
    assert pf.parse_containerlab_version((DATA / "containerlab-version-old.txt").read_text()) == (0, 54, 2)
    assert pf.parse_containerlab_version("0.72.0\n") == (0, 72, 0)  # `containerlab version --short`
    assert pf.parse_containerlab_version("command not found") is None


def test_parse_kubectl_version() -> None:
    assert pf.parse_kubectl_version((DATA / "kubectl-version.json").read_text()) == (1, 32)
    assert pf.parse_kubectl_version("Client Version: v1.35.1\nKustomize Version: v5.7.1") == (1, 35)
    assert pf.parse_kubectl_version("") is None


def test_cli_on_this_machine_exits_2_and_creates_nothing() -> None:
    """`kvlab up --runtime containerlab` for real: the whole list, exit 2, no run dir, lock,
    containers or network."""
    if shutil.which("containerlab") and shutil.which("kind"):
        pytest.skip("this machine has containerlab and kind: the preflight may pass and build a lab")
    name = f"clabpf-{secrets.token_hex(3)}"
    env = {k_: v for k_, v in os.environ.items() if k_ != "KVLAB_RUN_DIR"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "up",
            str(DEFAULT_LAB),
            "--runtime",
            "containerlab",
            "--name",
            name,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert res.returncode == 2, res.stderr
    assert "runtime 'containerlab' cannot run on this machine" in res.stderr
    assert "containerlab >= 0.73" in res.stderr
    assert "kind (not found" in res.stderr
    if shutil.which("kubectl") is None:
        assert "kubectl (not found" in res.stderr
    assert "useEmulation" in res.stderr or "KVM" in res.stderr  # the /dev/kvm note
    root = Path("/run/kvlab")
    assert not (root / name).exists()
    assert not (root / f".{name}.lock").exists()
    docker = shutil.which("docker")
    if docker:
        for what in (
            ["ps", "-aq", "--filter", f"label=containerlab={name}"],
            ["network", "ls", "-q", "--filter", f"name=kvlab-{name}"],
        ):
            out = subprocess.run([docker, *what], capture_output=True, text=True, timeout=30, check=False)
            assert out.stdout.strip() == "", (what, out.stdout)
