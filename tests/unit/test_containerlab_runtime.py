"""harness.runtime.containerlab.runtime: the lab instance's names, sockets and commands, `up`'s
and `down`'s side of containerlab and kind (stand-ins that log their argv), health, diagnostics,
and the canary client in the ToR image as command() runs it (skipped without Docker or the image)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from clab_fakes import (
    DATA,
    REPO,
    full_machine,
)

from harness.canary.controller import Canary
from harness.errors import LabError
from harness.kernel import kernel_routes
from harness.runtime.containerlab import diagnostics as dg
from harness.runtime.containerlab import docker as dk
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import runtime as cl
from harness.runtime.containerlab import topology_file as tf
from harness.runtime.containerlab import validate as va
from harness.runtime.containerlab.install import Installer
from harness.state import LabState

pytestmark = pytest.mark.usefixtures("run_root")  # tests/unit/conftest.py

# -- the package --------------------------------------------------------------------------------


def imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter has imported after running `code`."""
    res = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return set(res.stdout.split())


def test_the_package_imports_nothing_and_the_runtime_only_what_it_needs() -> None:
    """`import harness.runtime.containerlab` loads none of its parts; `get_runtime("containerlab")`
    loads the runtime, but neither the clients (kubernetes, docker, paramiko), nor the renderer
    and its validator (jinja2, jsonschema), which only `up` and `render` need."""
    package = imported_after("import harness.runtime.containerlab")
    assert {m for m in package if m.startswith("harness.runtime.containerlab.")} == set()
    loaded = imported_after("from harness.runtime import get_runtime\nget_runtime('containerlab')")
    assert "harness.runtime.containerlab.runtime" in loaded
    heavy = {"kubernetes", "docker", "paramiko", "jinja2", "jsonschema", "regex"}
    assert heavy & loaded == set()
    parts = {m.rpartition(".")[2] for m in loaded if m.startswith("harness.runtime.containerlab.")}
    assert not parts & {"render", "validate", "schemas", "kind", "images", "guestssh"}


# -- names, sockets, command() ----------------------------------------------------------------------


def test_names_and_bird_sockets(clab: cl.ContainerlabRuntime) -> None:
    rt = clab
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


def test_the_kind_config_mounts_calico_nodes_socket_directory(clab: cl.ContainerlabRuntime) -> None:
    """calico-node's hostPath /var/run/calico of each kind node is the directory bird_socket() names."""
    config = yaml.safe_load((clab.render_dir / "kind" / "kv.yaml").read_text())
    manifest = clab.manifest()
    assert manifest is not None
    kind_names = list(manifest["clusters"]["kv"]["nodes"].values())
    for node, kind_name in zip(config["nodes"], kind_names, strict=True):
        spec_node = clab.spec_node(kind_name)
        assert node["extraMounts"] == [
            {"hostPath": str(clab.bird_socket(spec_node).parent), "containerPath": "/var/run/calico"}
        ]
    assert (
        va.kind_errors(
            clab.render_dir / "kind" / "kv.yaml",
            yaml.safe_load((clab.render_dir / "tlab.clab.yml").read_text()),
            manifest["clusters"]["kv"],
        )
        == []
    )


def test_hosts_get_the_harness_package(clab: cl.ContainerlabRuntime) -> None:
    topo = yaml.safe_load((clab.render_dir / "tlab.clab.yml").read_text())
    binds = topo["topology"]["nodes"]["ext1"]["binds"]
    assert binds == [f"{REPO / 'harness'}:/opt/kvlab/harness:ro"]
    assert "binds" not in topo["topology"]["nodes"]["kv-control-plane"]


def test_command_argv(clab: cl.ContainerlabRuntime) -> None:
    rt = clab
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
    assert dk.container_argv([sys.executable, "-m", "x"]) == ["python3", "-m", "x"]
    assert dk.container_argv([os.path.realpath(sys.executable)]) == ["python3"]
    assert dk.container_argv(["/usr/bin/python3.99", "x"]) == ["/usr/bin/python3.99", "x"]
    assert dk.container_argv([]) == []
    assert dk.docker_exec_argv("c", ["true"], {"A": "1", "B": "2"}) == [
        "docker", "exec", "-i", "-e", "A=1", "-e", "B=2", "c", "true",
    ]  # fmt: skip


def test_without_a_lab_there_is_no_container_and_not_healthy(run_root: Path) -> None:
    rt = cl.ContainerlabRuntime("gone")
    with pytest.raises(LabError, match="is it up on the containerlab runtime"):
        rt.command("tor1", ["true"])
    assert rt.bird_socket("tor1") == run_root / "gone" / "tor1" / "bird.ctl"
    assert rt.healthy() is False
    assert rt.kind_clusters() == {}


class _Docker:
    """A Docker client whose containers have the given status (default: running)."""

    def __init__(self, status: dict[str, str]):
        self.status = status
        self.containers = self

    def get(self, name: str) -> Any:
        return SimpleNamespace(name=name, status=self.status.get(name, "running"))

    def list(self, all: bool, filters: dict[str, str]) -> list[Any]:
        return [self.get(name) for name in self.status if filters == {"label": "containerlab=tlab"}]


class _Api:
    def __init__(self, answers: bool):
        self.answers = answers

    def reachable(self) -> bool:
        return self.answers


def test_healthy_is_every_container_running_and_every_api_answering(clab: cl.ContainerlabRuntime) -> None:
    assert clab.healthy() is False  # rendered, but never brought up: no state.json
    LabState(lab="tlab", spec_path="x", spec_digest="x", runtime="containerlab", session_id="s").save(
        clab.run_dir
    )
    clab._docker_client = _Docker({})
    clab._kubes["kv"] = _Api(True)  # type: ignore[assignment]
    assert clab.healthy() is True
    clab._docker_client = _Docker({"clab-tlab-tor2": "exited"})  # a container of the lab stopped
    assert clab.healthy() is False
    clab._docker_client = _Docker({"kv-worker3": "restarting"})  # a kind node
    assert clab.healthy() is False
    clab._docker_client = _Docker({"clab-tlab-stray": "exited"})  # labelled with the lab, not in the manifest
    assert clab.healthy() is False
    clab._docker_client = _Docker({})
    clab._kubes["kv"] = _Api(False)  # the cluster's API does not answer
    assert clab.healthy() is False


def test_down_of_a_lab_that_is_not_there(run_root: Path) -> None:
    rt = cl.ContainerlabRuntime(f"absent-{secrets.token_hex(2)}")
    rt.down()  # no manifest, no tools needed, nothing labelled with the lab
    assert not (run_root / rt.lab).exists()


# -- diagnostics ------------------------------------------------------------------------------------


def test_diagnostics_without_a_lab_say_so(run_root: Path, tmp_path: Path) -> None:
    errors = cl.ContainerlabRuntime("gone").diagnostics(tmp_path / "diag")
    assert errors == [f"no manifest in {run_root / 'gone' / 'rendered'}: nothing rendered for lab 'gone'"]


def test_parse_inspect_v064_keyed_by_lab() -> None:
    containers = dg.parse_inspect((DATA / "clab-inspect-v0.64.json").read_text())
    assert [c["name"] for c in containers] == ["clab-default-ext1", "clab-default-tor1", "kv-control-plane"]
    assert {c["lab_name"] for c in containers} == {"default"}
    assert containers[2]["kind"] == "ext-container"


def test_parse_inspect_v063_containers_list() -> None:
    containers = dg.parse_inspect((DATA / "clab-inspect-v0.63.json").read_text())
    assert [(c["name"], c["state"]) for c in containers] == [
        ("clab-default-tor1", "running"),
        ("clab-default-spine1", "exited"),
    ]


def test_parse_inspect_edge_cases() -> None:
    assert dg.parse_inspect("") == []
    assert dg.parse_inspect("{}") == []
    assert dg.parse_inspect('[{"name": "a"}]') == [{"name": "a"}]
    two = {"a": [{"name": "clab-a-x"}], "b": [{"name": "clab-b-y"}]}
    assert [c["lab_name"] for c in dg.parse_inspect(json.dumps(two))] == ["a", "b"]
    with pytest.raises(ValueError, match="unexpected containerlab inspect output"):
        dg.parse_inspect('{"a": "oops"}')
    with pytest.raises(ValueError, match="unexpected containerlab inspect output"):
        dg.parse_inspect('"text"')


# -- namespaces by path, and the canary in the ToR image --------------------------------------------


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
    bind = f"{tf.HARNESS_DIR}:{tf.HARNESS_MOUNT}:ro"
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
            dk.docker_exec_argv(name, argv, {"PYTHONPATH": tf.HARNESS_PYTHONPATH}),
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


# -- the tools' side of up/down, with stand-in containerlab and kind --------------------------------


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
    clab: cl.ContainerlabRuntime, fake_tools: Path
) -> None:
    """A lab that failed before deploying (e.g. its cluster name was taken) must not destroy the
    same-named cluster of another lab."""
    assert clab.deployed() is None
    clab.down()
    assert not fake_tools.exists()  # neither containerlab nor kind was called
    assert not clab.run_dir.exists()


def test_deploy_then_down(clab: cl.ContainerlabRuntime, fake_tools: Path) -> None:
    rt = clab
    Installer(rt).check_clusters_free()
    Installer(rt).deploy()
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
    clab: cl.ContainerlabRuntime, fake_tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_KIND_CLUSTERS", "kind\nkv")
    with pytest.raises(LabError, match=r"kind cluster\(s\) kv already exist.*kind delete cluster --name kv"):
        Installer(clab).check_clusters_free()


def test_a_failed_deploy_names_the_tool_its_output_and_the_log(
    clab: cl.ContainerlabRuntime, fake_tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLAB_FAIL", "1")
    with pytest.raises(LabError) as err:
        Installer(clab).deploy()
    text = str(err.value)
    assert text.startswith(f"containerlab deploy -t {clab.render_dir / 'tlab.clab.yml'} failed (exit 1;")
    assert str(clab.run_dir / "containerlab-deploy.log") in text
    assert "ERRO failed to create node kv" in text
    assert clab.deployed() is not None  # down() will clean up whatever deploy left


def test_a_nested_nodes_bird_socket_is_its_relay_and_its_image_is_never_pulled(run_root: Path) -> None:
    """The probes reach a nested node's BIRD through the socket its relay serves; the launcher
    pre-pull leaves the kind-loaded guest image alone (it is in no registry)."""
    from harness.labfile import load_lab
    from harness.runtime.base import LabContext
    from harness.runtime.containerlab.install import _is
    from harness.runtime.containerlab.render import render_containerlab
    from harness.runtime.containerlab.versions import DEFAULT

    spec = load_lab(REPO / "labs" / "nested.yml").model_copy(update={"name": "tnest"})
    context = LabContext.of(spec)
    runtime = cl.ContainerlabRuntime("tnest", probes=full_machine(), versions=DEFAULT, context=context)
    render_containerlab(
        spec, runtime.render_dir, use_emulation=True, image="kvlab/tor:test", run_dir=runtime.run_dir,
        guest_image="kvlab/guest:6.1.0-57-amd64-0123456789abcdef",
    )  # fmt: skip
    assert runtime.bird_socket("red-n1") == runtime.run_dir / "red-n1" / "bird.ctl"
    assert runtime.bird_socket("blue-n1") == runtime.run_dir / "blue-n1" / "bird.ctl"
    assert runtime.bird_socket("tor1") == runtime.run_dir / "tor1" / "bird.ctl"
    loaded = runtime.manifest()["guest_image"]
    assert loaded == "kvlab/guest:6.1.0-57-amd64-0123456789abcdef"
    assert _is("docker.io/kvlab/guest@sha256:" + "0" * 64, loaded)
    assert not _is("quay.io/kubevirt/virt-launcher:v1.8.4", loaded)
