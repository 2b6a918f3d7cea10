"""harness.runtime.containerlab: what can be checked without containerlab, kind and a registry.

Preflight with injected probes (a bare machine, a full one, partial ones) and once for real on
this machine through the CLI (exit 2, nothing created); the pure parts of `up`/`migrate`/
diagnostics (inspect parsing, names, kubeconfigs, patches, waits' judgements) on real-shaped
fixtures; command() argv including the canary's; and the canary client itself in the ToR image
with the harness bound as the rendered topology binds it (skipped without Docker or the image).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import urllib.error
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.canary.controller import Canary
from harness.errors import LabError, PreflightError
from harness.kernel import kernel_routes
from harness.labfile import load_lab
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import pins
from harness.runtime.containerlab import render as rr
from harness.runtime.containerlab.versions import DEFAULT, MATRIX
from harness.runtime.containerlab import runtime as cl
from harness.runtime import get_runtime
from harness.runtime.base import LabContext, RuntimeOptions

pytestmark = pytest.mark.usefixtures("run_root")  # tests/unit/conftest.py
REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "containerlab"
DEFAULT_LAB = REPO / "labs" / "default.yml"


# -- preflight ---------------------------------------------------------------------------------


def answering(method: str, url: str, headers: dict[str, str]) -> pins.Response:
    """Every pinned URL and image answers (tests/unit/test_pins.py simulates the registries)."""
    return (200, {}, b"")


def unreachable(method: str, url: str, headers: dict[str, str]) -> pins.Response:
    """What urllib raises without a route to the internet (this machine)."""
    raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))


def full_machine(**overrides: Any) -> cl.Probes:
    """Probes of a machine that has everything."""
    outputs = {
        ("containerlab", "version"): (0, (DATA / "containerlab-version-0.79.0.txt").read_text()),
        ("kubectl", "version", "--client", "-o", "json"): (
            0,
            json.dumps({"clientVersion": {"gitVersion": "v1.35.1", "major": "1", "minor": "35"}}),
        ),
    }
    sysctls = {
        f"{cl.INOTIFY_DIR}/max_user_watches": "524288\n",
        f"{cl.INOTIFY_DIR}/max_user_instances": "512\n",
    }
    probes = cl.Probes(
        which=lambda name: f"/usr/local/bin/{name}",
        run=lambda argv: outputs.get(tuple(argv), (127, "unexpected command")),
        importable=lambda module: True,
        docker_ping=lambda: None,
        docker_free=lambda: ("/var/lib/docker", 80 * 2**30),
        http=answering,
        read_file=lambda path: sysctls.get(path),
        euid=lambda: 1000,
        group_names=lambda: {"users", "docker"},
        kvm_usable=lambda: True,
        vhost_net_usable=lambda: True,
        tun_usable=lambda: True,
    )
    return replace(probes, **overrides)


def bare_machine() -> cl.Probes:
    return cl.Probes(
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


def preflight_missing(probes: cl.Probes, stack: str | None = None, **kw: Any) -> list[str]:
    runtime = cl.ContainerlabRuntime("t", probes=probes, options=RuntimeOptions(stack=stack), **kw)
    try:
        runtime.preflight()
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
    with pytest.raises(cl.ContainerlabPreflightError) as err:
        cl.ContainerlabRuntime("t", probes=bare_machine()).preflight()
    assert err.value.info == ["/dev/kvm is not usable here: KubeVirt will run VMs with useEmulation (slower)"]
    assert str(err.value).splitlines()[0] == "runtime 'containerlab' cannot run on this machine:"
    assert str(err.value).endswith(
        "(info) /dev/kvm is not usable here: KubeVirt will run VMs with useEmulation (slower)"
    )


def test_a_full_machine_passes(run_root: Path) -> None:
    runtime = cl.ContainerlabRuntime("t", probes=full_machine())
    runtime.preflight()
    assert runtime.preflight_info == ["containerlab 0.79.0", "/dev/kvm is usable: KubeVirt runs VMs with KVM"]
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
    assert tuple(int(x) for x in first.lstrip("v").split("."))[:2] == cl.MIN_CONTAINERLAB
    assert all(embedded[t] in kinds for t in releases[releases.index(first) :])


def test_unknown_stack_versions_are_a_preflight_item() -> None:
    missing = preflight_missing(full_machine(), stack="calico-9")
    assert len(missing) == 1
    assert "--stack calico-9 is not a stack-versions entry" in missing[0]
    assert "calico-3.32-kubevirt-1.8" in missing[0]
    assert preflight_missing(full_machine(), stack="calico-3.31-kubevirt-1.5") == []
    options = RuntimeOptions(stack="calico-3.31-kubevirt-1.5")
    assert cl.ContainerlabRuntime("t", options=options).versions.name == "calico-3.31-kubevirt-1.5"


def test_kubectl_out_of_skew_is_information_not_a_failure() -> None:
    old = (0, (DATA / "kubectl-version.json").read_text())
    runtime = cl.ContainerlabRuntime(
        "t",
        probes=full_machine(
            run=lambda argv: (
                old if argv[0] == "kubectl" else (0, (DATA / "containerlab-version-0.79.0.txt").read_text())
            )
        ),
    )
    runtime.preflight()
    assert any("kubectl v1.32 is more than one minor version" in line for line in runtime.preflight_info)


def test_nested_clusters_are_refused_before_anything_is_created(run_root: Path) -> None:
    spec = load_lab(REPO / "labs" / "nested.yml")
    from harness.topology import resolve

    topo = resolve(spec)
    assert topo.nested_vm
    runtime = cl.ContainerlabRuntime("t", probes=full_machine(), context=LabContext.of(spec))
    with pytest.raises(PreflightError) as err:
        runtime.preflight()
    assert len(err.value.missing) == 1
    assert "need VMs running Kubernetes" in err.value.missing[0]
    assert "--runtime netns" in err.value.missing[0]
    with pytest.raises(PreflightError):
        runtime.up(None)  # type: ignore[arg-type]
    assert not run_root.exists()


def test_parse_containerlab_version() -> None:
    assert cl.parse_containerlab_version((DATA / "containerlab-version.txt").read_text()) == (0, 69, 3)
    assert cl.parse_containerlab_version((DATA / "containerlab-version-old.txt").read_text()) == (0, 54, 2)
    assert cl.parse_containerlab_version("0.72.0\n") == (0, 72, 0)  # `containerlab version --short`
    assert cl.parse_containerlab_version("command not found") is None


def test_parse_kubectl_version() -> None:
    assert cl.parse_kubectl_version((DATA / "kubectl-version.json").read_text()) == (1, 32)
    assert cl.parse_kubectl_version("Client Version: v1.35.1\nKustomize Version: v5.7.1") == (1, 35)
    assert cl.parse_kubectl_version("") is None


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


# -- a rendered lab: names, sockets, command() ---------------------------------------------------


@pytest.fixture
def rendered(run_root: Path) -> cl.ContainerlabRuntime:
    """A runtime whose run dir holds the default lab rendered as `up` renders it (instance 'tlab')."""
    spec = load_lab(DEFAULT_LAB).model_copy(update={"name": "tlab"})
    runtime = cl.ContainerlabRuntime("tlab", probes=full_machine(), context=LabContext.of(spec))
    rr.render_containerlab(
        spec, runtime.render_dir, use_emulation=True, image="kvlab/tor:test", run_dir=runtime.run_dir
    )
    return runtime


def test_get_runtime_returns_the_containerlab_runtime() -> None:
    assert get_runtime("containerlab") is cl.ContainerlabRuntime
    assert get_runtime("containerlab")("x").name == "containerlab"


def test_the_lab_handle_builds_it() -> None:
    from harness.lab import Lab

    lab = Lab.from_file(DEFAULT_LAB, runtime="containerlab", name="tlab")
    assert isinstance(lab.runtime, cl.ContainerlabRuntime)
    assert lab.runtime.hosted == {}


def test_names_and_bird_sockets(rendered: cl.ContainerlabRuntime) -> None:
    rt = rendered
    run = rt.run_dir
    assert rt.container("tor1") == "clab-tlab-tor1"
    assert rt.container("ext1") == "clab-tlab-ext1"
    assert rt.container("r1-n1") == "kv-control-plane"
    assert rt.container("r2-n2") == "kv-worker3"
    assert rt.spec_node("kv-worker2") == "r2-n1"
    assert rt.bird_socket("tor1") == run / "tor1" / "bird.ctl"
    assert rt.bird_socket("r2-n1") == run / "r2-n1" / "calico" / "bird.ctl"
    assert list(rt.kind_clusters()) == ["kv"]
    with pytest.raises(LabError, match="KubeVirt VM"):
        rt.container("vm1")
    with pytest.raises(LabError, match="no container for 'nope'"):
        rt.container("nope")


def test_the_kind_config_mounts_calico_nodes_socket_directory(rendered: cl.ContainerlabRuntime) -> None:
    """calico-node's hostPath /var/run/calico of each kind node is the directory bird_socket() names."""
    config = yaml.safe_load((rendered.render_dir / "kind" / "kv.yaml").read_text())
    manifest = rendered.manifest()
    assert manifest is not None
    kind_names = list(manifest["clusters"]["kv"]["nodes"].values())
    for node, kind_name in zip(config["nodes"], kind_names, strict=True):
        spec_node = rendered.spec_node(kind_name)
        assert node["extraMounts"] == [
            {"hostPath": str(rendered.bird_socket(spec_node).parent), "containerPath": "/var/run/calico"}
        ]
    assert (
        rr.kind_errors(
            rendered.render_dir / "kind" / "kv.yaml",
            yaml.safe_load((rendered.render_dir / "tlab.clab.yml").read_text()),
            manifest["clusters"]["kv"],
        )
        == []
    )


def test_hosts_get_the_harness_package(rendered: cl.ContainerlabRuntime) -> None:
    topo = yaml.safe_load((rendered.render_dir / "tlab.clab.yml").read_text())
    binds = topo["topology"]["nodes"]["ext1"]["binds"]
    assert binds == [f"{REPO / 'harness'}:/opt/kvlab/harness:ro"]
    assert "binds" not in topo["topology"]["nodes"]["kv-control-plane"]


def test_command_argv(rendered: cl.ContainerlabRuntime) -> None:
    rt = rendered
    assert rt.command("tor1", ["birdc", "show", "status"]) == [
        "docker", "exec", "-i", "clab-tlab-tor1", "birdc", "show", "status",
    ]  # fmt: skip
    assert rt.command("r1-n2", ["ip", "route"]) == ["docker", "exec", "-i", "kv-worker", "ip", "route"]
    # The canary as harness.canary starts it: this interpreter becomes the image's python3, and
    # the bound package is importable.
    argv = Canary(None, "ext1", "203.0.113.10").argv()  # type: ignore[arg-type]
    assert argv[0] == sys.executable
    assert rt.command("ext1", argv) == [
        "docker", "exec", "-i", "-e", "PYTHONPATH=/opt/kvlab", "clab-tlab-ext1", "python3", *argv[1:],
    ]  # fmt: skip
    # Only hosts carry the package; a router gets no PYTHONPATH, but python3 all the same.
    assert rt.command("tor1", [sys.executable, "-c", "pass"]) == [
        "docker", "exec", "-i", "clab-tlab-tor1", "python3", "-c", "pass",
    ]  # fmt: skip


def test_container_argv_translates_only_this_interpreter() -> None:
    assert cl.container_argv([sys.executable, "-m", "x"]) == ["python3", "-m", "x"]
    assert cl.container_argv([os.path.realpath(sys.executable)]) == ["python3"]
    assert cl.container_argv(["/usr/bin/python3.99", "x"]) == ["/usr/bin/python3.99", "x"]
    assert cl.container_argv([]) == []
    assert cl.docker_exec_argv("c", ["true"], {"A": "1", "B": "2"}) == [
        "docker", "exec", "-i", "-e", "A=1", "-e", "B=2", "c", "true",
    ]  # fmt: skip


def test_without_a_lab_there_is_no_container_and_not_healthy(run_root: Path) -> None:
    rt = cl.ContainerlabRuntime("gone")
    with pytest.raises(LabError, match="is it up on the containerlab runtime"):
        rt.command("tor1", ["true"])
    assert rt.bird_socket("tor1") == run_root / "gone" / "tor1" / "bird.ctl"
    assert rt.healthy() is False
    assert rt.kind_clusters() == {}


def test_healthy_needs_the_state_file(rendered: cl.ContainerlabRuntime) -> None:
    assert rendered.healthy() is False  # rendered, but never brought up: no state.json


def test_down_of_a_lab_that_is_not_there(run_root: Path) -> None:
    rt = cl.ContainerlabRuntime(f"absent-{secrets.token_hex(2)}")
    rt.down()  # no manifest, no tools needed, nothing labelled with the lab
    assert not (run_root / rt.lab).exists()


def test_migrate_refuses_unknown_vms_and_nodes(rendered: cl.ContainerlabRuntime) -> None:
    with pytest.raises(LabError, match="no VM 'vm9'"):
        rendered.migrate("vm9", "r2-n1")
    with pytest.raises(LabError, match="no node 'x1' in cluster 'kv'"):
        rendered.migrate("vm1", "x1")
    with pytest.raises(TypeError, match="bogus"):
        rendered.migrate("vm1", "r2-n1", bogus=1)


def test_added_node_selector_by_kubevirt_version() -> None:
    assert cl.added_node_selector_supported("v1.8.4")
    assert cl.added_node_selector_supported("v1.6.0")
    assert not cl.added_node_selector_supported("v1.5.2")
    assert not cl.added_node_selector_supported("main")


# -- containerlab inspect ------------------------------------------------------------------------


def test_parse_inspect_v064_keyed_by_lab() -> None:
    containers = cl.parse_inspect((DATA / "clab-inspect-v0.64.json").read_text())
    assert [c["name"] for c in containers] == ["clab-default-ext1", "clab-default-tor1", "kv-control-plane"]
    assert {c["lab_name"] for c in containers} == {"default"}
    assert containers[2]["kind"] == "ext-container"


def test_parse_inspect_v063_containers_list() -> None:
    containers = cl.parse_inspect((DATA / "clab-inspect-v0.63.json").read_text())
    assert [(c["name"], c["state"]) for c in containers] == [
        ("clab-default-tor1", "running"),
        ("clab-default-spine1", "exited"),
    ]


def test_parse_inspect_edge_cases() -> None:
    assert cl.parse_inspect("") == []
    assert cl.parse_inspect("{}") == []
    assert cl.parse_inspect('[{"name": "a"}]') == [{"name": "a"}]
    two = {"a": [{"name": "clab-a-x"}], "b": [{"name": "clab-b-y"}]}
    assert [c["lab_name"] for c in cl.parse_inspect(json.dumps(two))] == ["a", "b"]
    with pytest.raises(ValueError, match="unexpected containerlab inspect output"):
        cl.parse_inspect('{"a": "oops"}')
    with pytest.raises(ValueError, match="unexpected containerlab inspect output"):
        cl.parse_inspect('"text"')


# -- kube helpers --------------------------------------------------------------------------------


def test_kubeconfig_paths(tmp_path: Path) -> None:
    assert k.kubeconfig_path(tmp_path, "kv") == tmp_path / "kube" / "kv.kubeconfig"
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(ValueError, match="not a kind cluster name"):
            k.kubeconfig_path(tmp_path, bad)
    text = (DATA / "kind-kubeconfig.yaml").read_text()
    path = k.write_kubeconfig(k.kubeconfig_path(tmp_path, "kv"), text)
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # admin credentials
    assert k.kubeconfig_server(text) == "https://127.0.0.1:40771"
    with pytest.raises(LabError, match="not a kubeconfig"):
        k.write_kubeconfig(tmp_path / "x", 'ERROR: no nodes found for cluster "kv"\n')


def test_the_typha_restart_patch() -> None:
    when = dt.datetime(2026, 6, 2, 5, 14, 7, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert k.restart_patch(when) == {
        "spec": {
            "template": {
                "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-06-02T03:14:07Z"}}
            }
        }
    }
    stamp = k.restart_patch()["spec"]["template"]["metadata"]["annotations"][k.RESTARTED_AT]
    assert stamp.endswith("Z")


def test_rollout_state() -> None:
    rolling = json.loads((DATA / "deployment-typha-rolling.json").read_text())
    done, text = k.rollout_state(rolling)
    assert not done
    assert text == "generation 3 (observed 3), 1/2 updated, 2 available, 3 total"
    rolling["status"].update(updatedReplicas=2, replicas=2, availableReplicas=2)
    assert k.rollout_state(rolling)[0]
    rolling["metadata"]["generation"] = 4  # the controller has not seen the patch yet
    assert not k.rollout_state(rolling)[0]
    assert k.rollout_state(None) == (False, "the Deployment does not exist")


def test_conditions_and_their_description() -> None:
    progressing = json.loads((DATA / "tigerastatus-calico-progressing.json").read_text())
    available = json.loads((DATA / "tigerastatus-calico-available.json").read_text())
    assert not k.condition_true(progressing, "Available")
    assert k.condition_true(available, "Available")
    text = k.describe_conditions(progressing)
    assert text.startswith("Available=False (Unknown); Progressing=True (ResourceNotReady: DaemonSet")
    assert "awaiting 3 nodes" in text
    assert k.describe_conditions(None) == "the object does not exist (yet)"
    assert k.describe_conditions({"status": {"phase": "Deploying"}}) == "phase Deploying, no conditions yet"
    assert cl.ContainerlabRuntime._available(available) == (True, k.describe_conditions(available))


def test_nodes_state() -> None:
    def node(name: str, ready: str) -> dict[str, Any]:
        bad = ready != "True"
        condition = {
            "type": "Ready",
            "status": ready,
            "reason": "KubeletNotReady" if bad else "KubeletReady",
            "message": "container runtime network not ready: NetworkReady=false" if bad else "",
        }
        return {"metadata": {"name": name}, "status": {"conditions": [condition]}}

    nodes = [node("kv-control-plane", "True"), node("kv-worker", "False")]
    done, text = k.nodes_state(nodes, ["kv-control-plane", "kv-worker", "kv-worker2"])
    assert not done
    assert text.startswith("not registered: kv-worker2; not Ready: kv-worker (Ready=False (KubeletNotReady")
    assert k.nodes_state([node("a", "True")], ["a"]) == (True, "all Ready")


def test_vmi_state() -> None:
    vmi = json.loads((DATA / "vmi-after-success.json").read_text())
    assert k.vmi_state(vmi, "203.0.113.10") == (
        True,
        "phase Running on kv-worker2, addresses ['203.0.113.10']",
    )
    del vmi["status"]["interfaces"]
    assert not k.vmi_state(vmi, "203.0.113.10")[0]
    assert k.vmi_state(vmi, "203.0.113.10", ["203.0.113.10"])[0]  # the launcher pod's IP counts
    vmi["status"]["phase"] = "Scheduling"
    done, text = k.vmi_state(vmi, "203.0.113.10", ["203.0.113.10"])
    assert not done
    assert text.startswith("phase Scheduling on kv-worker2")
    assert k.vmi_state(None, "1.2.3.4") == (False, "no VirtualMachineInstance yet")


def test_load_documents() -> None:
    text = """
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
# only a comment
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: a}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: c, namespace: a}}
"""
    docs = k.load_documents(text)
    assert [k.object_ref(d) for d in docs] == ["Namespace a", "ConfigMap a/b", "ConfigMap a/c"]
    with pytest.raises(LabError, match="not an object"):
        k.load_documents("- 1\n- 2\n")


def test_rendered_manifests_load_as_documents(rendered: cl.ContainerlabRuntime) -> None:
    kinds = [d["kind"] for d in rendered._docs("calico/kv/installation.yaml")]
    assert kinds == ["Installation", "APIServer"]
    vms = rendered._cluster_vms("kv")
    assert [d["metadata"]["name"] for d in vms] == ["vm1"]
    assert k.api_group("projectcalico.org/v3") == k.CALICO_API_GROUP
    assert k.api_group("v1") == ""


def test_diagnostics_without_a_lab_say_so(run_root: Path, tmp_path: Path) -> None:
    errors = cl.ContainerlabRuntime("gone").diagnostics(tmp_path / "diag")
    assert errors == [f"no manifest in {run_root / 'gone' / 'realstack'}: nothing rendered for lab 'gone'"]


# -- namespaces by path, and the canary in the ToR image -------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="entering a network namespace needs CAP_SYS_ADMIN")
def test_kernel_routes_of_a_namespace_path() -> None:
    here = kernel_routes(None, table=None)
    assert kernel_routes("/proc/self/ns/net", table=None) == here
    with pytest.raises(LookupError, match="does not exist"):
        kernel_routes("/proc/999999999/ns/net")


def _tor_image() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    res = subprocess.run(
        [docker, "image", "inspect", "kvlab/tor:latest"], capture_output=True, timeout=30, check=False
    )
    return "kvlab/tor:latest" if res.returncode == 0 else None


@pytest.mark.skipif(_tor_image() is None, reason="needs Docker and the kvlab/tor image ('make images')")
def test_the_canary_client_runs_in_the_tor_image_as_command_runs_it() -> None:
    """The host bind and PYTHONPATH the render and command() set up: python3 (stdlib only, no
    tenacity) runs harness.canary's client against an echo server in the same container."""
    name = f"kvlab-canary-test-{secrets.token_hex(3)}"
    bind = f"{rr.HARNESS_DIR}:{rr.HARNESS_MOUNT}:ro"
    server = (
        "import socketserver\n"
        "class E(socketserver.StreamRequestHandler):\n"
        "    def handle(self):\n"
        "        for line in self.rfile:\n"
        "            self.wfile.write(line); self.wfile.flush()\n"
        "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
        "socketserver.ThreadingTCPServer(('127.0.0.1', 7007), E).serve_forever()\n"
    )
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "--network", "none", "--label", "kvlab.test=canary",
         "-v", bind, "kvlab/tor:latest", "python3", "-c", server],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:
        argv = Canary(None, "ext1", "127.0.0.1", rate=50.0, duration_max=1.0).argv()  # type: ignore[arg-type]
        argv = [a for a in argv if a != "--control-stdin"]
        res = subprocess.run(
            cl.docker_exec_argv(name, argv, {"PYTHONPATH": rr.HARNESS_PYTHONPATH}),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        report = json.loads(res.stdout.splitlines()[-1])["report"]
        assert report["sent"] > 10
        assert report["lost"] == 0
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)


# -- the tools' side of up/down, with stand-in containerlab and kind -----------------------------


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`containerlab` and `kind` stand-ins on PATH that log their argv; returns the log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "tools.log"
    kubeconfig = DATA / "kind-kubeconfig.yaml"
    scripts = {
        "containerlab": f"""#!/bin/sh
echo "containerlab $*" >> {log}
if [ "$1" = deploy ]; then echo "INFO Creating lab directory"; echo "INFO Creating container: tor1"; \
  if [ -n "$FAKE_CLAB_FAIL" ]; then echo "ERRO failed to create node kv" >&2; exit 1; fi; fi
""",
        "kind": f"""#!/bin/sh
echo "kind $*" >> {log}
case "$1 $2" in
  "get clusters") echo "${{FAKE_KIND_CLUSTERS:-other}}" ;;
  "get kubeconfig") cat {kubeconfig} ;;
esac
""",
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_down_leaves_kind_clusters_it_did_not_deploy_alone(
    rendered: cl.ContainerlabRuntime, fake_tools: Path
) -> None:
    """A lab that failed before deploying (e.g. its cluster name was taken) must not destroy the
    same-named cluster of another lab."""
    assert rendered.deployed() is None
    rendered.down()
    assert not fake_tools.exists()  # neither containerlab nor kind was called
    assert not rendered.run_dir.exists()


def test_deploy_then_down(rendered: cl.ContainerlabRuntime, fake_tools: Path) -> None:
    rt = rendered
    rt._check_clusters_free()
    rt._deploy()
    topo_file = rt.render_dir / "tlab.clab.yml"
    assert rt.deployed() == {"topology_file": str(topo_file), "kind_clusters": ["kv"]}
    kubeconfig = k.kubeconfig_path(rt.run_dir, "kv")
    assert kubeconfig.read_text() == (DATA / "kind-kubeconfig.yaml").read_text()
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert "Creating container: tor1" in (rt.run_dir / "containerlab-deploy.log").read_text()
    rt.down()
    assert fake_tools.read_text().splitlines() == [
        "kind get clusters",
        f"containerlab deploy -t {topo_file} --reconfigure",
        "kind get kubeconfig --name kv",
        f"containerlab destroy -t {topo_file} --cleanup",
        "kind delete cluster --name kv",
    ]
    assert not rt.run_dir.exists()


def test_a_taken_cluster_name_is_refused(
    rendered: cl.ContainerlabRuntime, fake_tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_KIND_CLUSTERS", "kind\nkv")
    with pytest.raises(LabError, match=r"kind cluster\(s\) kv already exist.*kind delete cluster --name kv"):
        rendered._check_clusters_free()


def test_a_failed_deploy_names_the_tool_its_output_and_the_log(
    rendered: cl.ContainerlabRuntime, fake_tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLAB_FAIL", "1")
    with pytest.raises(LabError) as err:
        rendered._deploy()
    text = str(err.value)
    assert text.startswith(f"containerlab deploy -t {rendered.render_dir / 'tlab.clab.yml'} failed (exit 1;")
    assert str(rendered.run_dir / "containerlab-deploy.log") in text
    assert "ERRO failed to create node kv" in text
    assert rendered.deployed() is not None  # down() will clean up whatever deploy left


def test_a_wait_that_times_out_names_what_and_the_last_state(rendered: cl.ContainerlabRuntime) -> None:
    from harness.errors import WaitTimeout

    states = iter(["phase Pending", "phase Scheduling", "phase Scheduling"] + ["phase Scheduled"] * 100)
    with pytest.raises(WaitTimeout) as err:
        rendered._wait(
            "VMI vm1 Running with IP 203.0.113.10", lambda: (False, next(states)), timeout=0.3, interval=0.05
        )
    assert "waiting for VMI vm1 Running with IP 203.0.113.10; last: AssertionError: phase Scheduled" in str(
        err.value
    )
    rendered._wait("done at once", lambda: (True, "ok"), timeout=1)


class _FakeKube(k.Kube):
    """Kube whose apply() answers from a script: per object name, the errors before success."""

    def __init__(self, script: dict[str, list[BaseException]]):
        super().__init__(api_client=None, name="kv")
        self.script = script
        self.applied: list[str] = []
        self.refreshes = 0

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        errors = self.script.get(doc["metadata"]["name"], [])
        if errors:
            raise errors.pop(0)
        self.applied.append(doc["metadata"]["name"])
        return doc

    def refresh(self) -> None:
        self.refreshes += 1


def _doc(name: str, kind: str = "ConfigMap") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "x"}}


def test_apply_all_retries_what_is_not_served_yet() -> None:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    kube = _FakeKube({"cr": [ResourceNotFoundError("No matches found for {'kind': 'KubeVirt'}")], "cm": [
        ApiException(status=503, reason="Service Unavailable")
    ]})  # fmt: skip
    kube.apply_all([_doc("ns", "Namespace"), _doc("cr", "KubeVirt"), _doc("cm")], what="test", timeout=20)
    assert kube.applied == ["ns", "cr", "cm"]
    assert kube.refreshes == 1  # discovery refreshed between the rounds


def test_apply_all_stops_at_an_object_the_server_refuses() -> None:
    from kubernetes.client.exceptions import ApiException

    invalid = ApiException(status=422, reason="Unprocessable Entity")
    invalid.body = json.dumps(
        {"kind": "Status", "message": 'BGPPeer.projectcalico.org "p" is invalid: spec.asNumber'}
    )
    kube = _FakeKube({"p": [invalid]})
    with pytest.raises(
        LabError,
        match=r'Calico resources: cluster kv refused ConfigMap x/p: BGPPeer.projectcalico.org "p" is invalid',
    ):
        kube.apply_all([_doc("p")], what="Calico resources", timeout=20)


# -- migration tests on a stack without live migration -------------------------------------------


class _Config:
    def __init__(self, runtime: str, stack: str | None = None) -> None:
        self.options = {"--runtime": runtime, "--stack": stack}

    def getoption(self, name: str) -> Any:
        return self.options[name]


class _Item:
    def __init__(self, *marks: str) -> None:
        self.marks = set(marks)
        self.added: list[Any] = []

    def get_closest_marker(self, name: str) -> Any:
        return name if name in self.marks else None

    def add_marker(self, mark: Any) -> None:
        self.added.append(mark)


@pytest.mark.parametrize("stack", list(MATRIX))
def test_migration_tests_skip_on_a_stack_without_live_migration(
    stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness import pytest_plugin

    migrating, other = _Item("migration"), _Item()
    pytest_plugin.pytest_collection_modifyitems(_Config("containerlab", stack), [migrating, other])  # type: ignore[arg-type]
    assert other.added == []
    if MATRIX[stack].live_migration:
        assert migrating.added == []
    else:
        (mark,) = migrating.added
        assert mark.name == "skip"
        assert mark.kwargs["reason"].startswith(
            f"stack {stack} predates KubeVirt live-migration support (Calico < 3.32"
        )
    netns = _Item("migration")
    pytest_plugin.pytest_collection_modifyitems(_Config("netns"), [netns])  # type: ignore[arg-type]
    assert netns.added == []  # the netns runtime has no stack


# -- Calico's default singletons are merge-patched, not replaced ---------------------------------


class _FakeResource:
    """A dynamic-client resource with one existing object per name."""

    namespaced = False

    def __init__(self, existing: dict[str, dict[str, Any]]):
        self.existing = existing
        self.calls: list[tuple[str, Any]] = []

    def create(self, body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        from kubernetes.dynamic.exceptions import ConflictError

        self.calls.append(("create", body))
        if body["metadata"]["name"] in self.existing:
            raise ConflictError(
                type("E", (), {"status": 409, "reason": "Conflict", "body": "", "headers": {}})()
            )
        return body

    def get(self, name: str, namespace: str | None) -> dict[str, Any]:
        return self.existing[name]

    def replace(self, body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        self.calls.append(("replace", body))
        return body

    def patch(
        self, body: dict[str, Any], name: str, namespace: str | None, content_type: str
    ) -> dict[str, Any]:
        self.calls.append((f"patch {name} {content_type}", body))
        return body


class _ResKube(k.Kube):
    def __init__(self, res: _FakeResource):
        super().__init__(api_client=None, name="kv")
        self.res = res

    def resource(self, api_version: str, kind: str) -> Any:
        return self.res


def _calico(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name}, "spec": spec}


def test_merges_into_existing_only_calicos_default_singletons() -> None:
    for kind in ("FelixConfiguration", "BGPConfiguration", "IPAMConfiguration"):
        assert k.merges_into_existing(_calico(kind, "default", {}))
        assert not k.merges_into_existing(_calico(kind, "node.kv-worker", {}))
    assert not k.merges_into_existing(_calico("BGPPeer", "default", {}))
    assert not k.merges_into_existing(
        {**_calico("FelixConfiguration", "default", {}), "apiVersion": "crd.projectcalico.org/v1"}
    )


def test_an_existing_default_felix_configuration_is_merge_patched() -> None:
    existing = _calico("FelixConfiguration", "default", {"bpfEnabled": False, "logSeverityScreen": "Info"})
    existing["metadata"]["resourceVersion"] = "7"
    res = _FakeResource({"default": existing})
    doc = _calico("FelixConfiguration", "default", {"ipv4ElevatedRoutePriority": 512})
    doc["metadata"]["labels"] = {"kvlab.io/lab": "default"}
    _ResKube(res).apply(doc)
    assert [c for c, _ in res.calls] == ["create", "patch default application/merge-patch+json"]
    assert res.calls[1][1] == {
        "spec": {"ipv4ElevatedRoutePriority": 512},
        "metadata": {"labels": {"kvlab.io/lab": "default"}},
    }


def test_other_existing_calico_objects_are_replaced() -> None:
    existing = _calico("BGPPeer", "tor", {"peerIP": "198.18.1.1"})
    existing["metadata"]["resourceVersion"] = "9"
    res = _FakeResource({"tor": existing})
    _ResKube(res).apply(_calico("BGPPeer", "tor", {"peerIP": "198.18.1.1", "asNumber": 65001}))
    assert [c for c, _ in res.calls] == ["create", "replace"]
    assert res.calls[1][1]["metadata"]["resourceVersion"] == "9"
    new = _FakeResource({})
    _ResKube(new).apply(_calico("IPAMConfiguration", "default", {"strictAffinity": False}))
    assert [c for c, _ in new.calls] == ["create"]  # nothing there yet: created as it is
