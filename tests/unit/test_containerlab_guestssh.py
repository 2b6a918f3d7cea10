"""harness.runtime.containerlab.guestssh and the guest SSH wiring: the relay (run locally against local TCP
servers), GuestShell against an in-process paramiko SSH server reached through that relay, the
per-lab key and cloud-config the render writes, and how the containerlab runtime routes
run()/popen() for VMs and containers (a manifest on disk; no Docker, no cluster)."""

from __future__ import annotations

import contextlib
import json
import shlex
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml
from labfiles import lab_data, write_lab_data

from harness.errors import LabError
from harness.labfile import load_lab
from harness.runtime.containerlab import guestssh as gs
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import plan as pl
from harness.runtime.containerlab import render as rr
from harness.runtime.containerlab import runtime as cl
from harness.runtime.containerlab import sshkey as sk
from harness.runtime.containerlab import validate as va
from harness.runtime.containerlab.versions import GUEST_USER

REPO = Path(__file__).resolve().parents[2]
DEFAULT_LAB = REPO / "labs" / "default.yml"
USER = "kvlab"


# -- the relay -----------------------------------------------------------------------------------


def test_relay_argv_is_docker_exec_of_python_with_the_relay() -> None:
    argv = gs.relay_argv("clab-lab-ext1", "203.0.113.10", 22, 7.5)
    assert argv[:7] == ["docker", "exec", "-i", "clab-lab-ext1", "python3", "-c", gs.RELAY_CODE]
    assert argv[7:] == ["203.0.113.10", "22", "7.5"]
    compile(gs.RELAY_CODE, "<relay>", "exec")  # valid Python (the image's python3 runs it)
    assert shlex.split(shlex.join(argv)) == argv  # what paramiko.ProxyCommand does with it
    assert len(gs.RELAY_CODE.splitlines()) < 40  # small enough to read


def test_the_relay_proxy_is_a_paramiko_proxy_command(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []

    class FakePopen:
        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            started.append(argv)
            self.stdin = self.stdout = self.stderr = None
            self.returncode = None

    monkeypatch.setattr(paramiko.proxy.subprocess, "Popen", FakePopen)
    proxy = gs.RelayProxy("clab-lab-ext1", "203.0.113.10")
    assert isinstance(proxy, paramiko.ProxyCommand)
    assert started == [gs.relay_argv("clab-lab-ext1", "203.0.113.10", 22, gs.CONNECT_TIMEOUT)]


@pytest.fixture
def local_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay runs here (this interpreter) instead of in a container."""
    monkeypatch.setattr(
        gs,
        "relay_argv",
        lambda container, host, port=22, timeout=gs.CONNECT_TIMEOUT: [
            sys.executable,
            "-c",
            gs.RELAY_CODE,
            host,
            str(port),
            f"{timeout:g}",
        ],
    )


@contextlib.contextmanager
def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A localhost TCP server calling `handle` per connection in a thread; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()


def _echo(conn: socket.socket) -> None:
    with conn, contextlib.suppress(OSError):
        while data := conn.recv(4096):
            conn.sendall(data)


def test_the_relay_carries_bytes_both_ways_and_ends_with_its_stdin() -> None:
    payload = b"ping\x00\xff" * 1000
    with tcp_server(_echo) as port:
        proc = subprocess.Popen(
            [sys.executable, "-c", gs.RELAY_CODE, "127.0.0.1", str(port), "5"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(payload)
        proc.stdin.flush()
        echoed = b""
        while len(echoed) < len(payload):
            chunk = proc.stdout.read1(65536)
            assert chunk, "the relay ended before the echo came back"
            echoed += chunk
        assert echoed == payload
        proc.stdin.close()  # the client side closes: the relay ends
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
        assert proc.stderr is not None
        assert proc.stderr.read() == b""
        proc.stderr.close()


def test_the_relay_says_why_it_cannot_connect() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed on exit: nothing listens there any more
    res = subprocess.run(
        [sys.executable, "-c", gs.RELAY_CODE, "127.0.0.1", str(port), "5"],
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert res.returncode == 2
    assert f"relay: cannot connect to 127.0.0.1:{port}" in res.stderr.decode()


def test_relay_proxy_recv_timeout_eof_and_close(local_relay: None) -> None:
    release = threading.Event()

    def hello_then_close(conn: socket.socket) -> None:
        with conn:
            release.wait(10)
            conn.sendall(b"hello")

    with tcp_server(hello_then_close) as port:
        proxy = gs.RelayProxy("unused", "127.0.0.1", port, 5)
        try:
            proxy.settimeout(0.3)
            with pytest.raises(TimeoutError):
                proxy.recv(5)  # nothing yet
            release.set()
            proxy.settimeout(5)
            assert proxy.recv(100) == b"hello"  # what came before the server closed
            assert proxy.recv(100) == b""  # then EOF, like a socket
        finally:
            proxy.close()
        assert proxy.process.returncode == 0
        proxy.close()  # idempotent


# -- GuestShell against a paramiko SSH server ---------------------------------------------------------


class _Server(paramiko.ServerInterface):
    """Public key auth for USER with one key; exec runs the command here (shlex-split)."""

    def __init__(self, allowed: paramiko.PKey, commands: list[str]) -> None:
        self.allowed = allowed
        self.commands = commands

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == USER and key.get_base64() == self.allowed.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return (
            paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        )

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode()
        self.commands.append(text)
        threading.Thread(target=self._exec, args=(channel, text), daemon=True).start()
        return True

    @staticmethod
    def _exec(channel: paramiko.Channel, command: str) -> None:
        with contextlib.suppress(Exception):  # the client may have given up (timeout test)
            res = subprocess.run(shlex.split(command), capture_output=True, timeout=20, check=False)
            channel.sendall(res.stdout)
            channel.sendall_stderr(res.stderr)
            channel.send_exit_status(res.returncode)
            # No close from here: this thread may finish before paramiko has sent its reply to
            # the exec request, and a close ahead of that reply fails the client's exec_command
            # ("Channel closed."). The client closes the channel once it has the exit status.


@pytest.fixture(scope="module")
def keys() -> dict[str, paramiko.RSAKey]:
    return {name: paramiko.RSAKey.generate(2048) for name in ("host", "client", "other")}


@pytest.fixture
def ssh_server(keys: dict[str, paramiko.RSAKey]) -> Iterator[tuple[int, list[str]]]:
    """A localhost SSH server with host key keys['host'] authorizing keys['client']."""
    commands: list[str] = []
    transports: list[paramiko.Transport] = []

    def handle(conn: socket.socket) -> None:
        t = paramiko.Transport(conn)
        transports.append(t)
        t.add_server_key(keys["host"])
        with contextlib.suppress(Exception):
            t.start_server(server=_Server(keys["client"], commands))

    with tcp_server(handle) as port:
        yield port, commands
    for t in transports:
        t.close()


def _key_file(tmp_path: Path, key: paramiko.RSAKey, name: str = "id_rsa") -> Path:
    path = tmp_path / name
    key.write_private_key_file(str(path))
    return path


def _shell(tmp_path: Path, port: int, key_file: Path, **kwargs: Any) -> gs.GuestShell:
    return gs.GuestShell(
        "vm1",
        "127.0.0.1",
        via="ext1",
        container="clab-t-ext1",
        user=USER,
        key_file=key_file,
        known_hosts=tmp_path / "run" / "ssh" / "known_hosts",
        port=port,
        connect_timeout=10,
        **kwargs,
    )


def test_guest_shell_runs_commands_and_records_the_host_key(
    local_relay: None,
    ssh_server: tuple[int, list[str]],
    keys: dict[str, paramiko.RSAKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    port, commands = ssh_server
    key_file = _key_file(tmp_path, keys["client"])
    with _shell(tmp_path, port, key_file) as shell:
        res = shell.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
        assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
        assert res.args == ["sh", "-c", "echo out; echo err >&2; exit 3"]
        res = shell.run(["printf", "%s|", "a b", "c'd", "$HOME"], timeout=10)
        assert res.stdout == "a b|c'd|$HOME|"  # quoted for the remote shell: nothing expands
    assert commands[1] == shlex.join(["printf", "%s|", "a b", "c'd", "$HOME"])
    known = paramiko.HostKeys(str(tmp_path / "run" / "ssh" / "known_hosts"))
    recorded = known.lookup(f"[127.0.0.1]:{port}")
    assert recorded is not None
    assert recorded["ssh-rsa"].get_base64() == keys["host"].get_base64()
    assert not (tmp_path / "home" / ".ssh").exists()  # never the user's ~/.ssh
    with _shell(tmp_path, port, key_file) as shell:  # known now: no prompt, same key
        assert shell.run(["true"], timeout=10).returncode == 0


def test_a_command_past_its_timeout_raises_timeout_expired(
    local_relay: None, ssh_server: tuple[int, list[str]], keys: dict[str, paramiko.RSAKey], tmp_path: Path
) -> None:
    port, _ = ssh_server
    with _shell(tmp_path, port, _key_file(tmp_path, keys["client"])) as shell:
        with pytest.raises(subprocess.TimeoutExpired):
            shell.run(["sleep", "5"], timeout=0.3)
        assert shell.run(["echo", "still usable"], timeout=10).stdout == "still usable\n"


def test_a_changed_host_key_is_refused_naming_the_known_hosts(
    local_relay: None, ssh_server: tuple[int, list[str]], keys: dict[str, paramiko.RSAKey], tmp_path: Path
) -> None:
    port, _ = ssh_server
    known_hosts = tmp_path / "run" / "ssh" / "known_hosts"
    known_hosts.parent.mkdir(parents=True)
    hk = paramiko.HostKeys()
    hk.add(f"[127.0.0.1]:{port}", "ssh-rsa", keys["other"])
    hk.save(str(known_hosts))
    shell = _shell(tmp_path, port, _key_file(tmp_path, keys["client"]))
    with pytest.raises(LabError, match=r"ssh to vm1 \(127\.0\.0\.1\) through ext1: its host key changed"):
        shell.open()
    assert shell.proxy is not None
    assert shell.proxy.process.poll() is not None  # the relay has ended


def test_an_unauthorized_key_is_a_clear_error(
    local_relay: None, ssh_server: tuple[int, list[str]], keys: dict[str, paramiko.RSAKey], tmp_path: Path
) -> None:
    port, _ = ssh_server
    with (
        pytest.raises(LabError, match=r"^ssh to vm1 \(127\.0\.0\.1\) through ext1: Authentication"),
        _shell(tmp_path, port, _key_file(tmp_path, keys["other"])),
    ):
        pytest.fail("logged in with a key the guest does not authorize")


def test_no_listener_is_a_clear_error_with_the_relays_reason(
    local_relay: None, keys: dict[str, paramiko.RSAKey], tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with (
        pytest.raises(LabError, match=r"through ext1: .*relay: cannot connect to 127\.0\.0\.1"),
        _shell(tmp_path, port, _key_file(tmp_path, keys["client"])),
    ):
        pytest.fail("connected to nothing")


def test_a_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"through ext1: cannot load the lab's key .*nope"):
        _shell(tmp_path, 22, tmp_path / "nope").open()


def test_run_needs_an_open_session(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="not open"):
        _shell(tmp_path, 22, tmp_path / "k").run(["true"])


# -- the render: key, cloud-config, manifest ------------------------------------------------------


@pytest.fixture
def rendered(tmp_path: Path) -> rr.Rendered:
    spec = load_lab(DEFAULT_LAB)
    return rr.render_containerlab(spec, tmp_path / "out", use_emulation=True, run_dir=tmp_path / "run")


def _user_data(r: rr.Rendered, vm: str) -> str:
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all((r.out / "kubevirt/vms.yaml").read_text())}
    volumes = {v["name"]: v for v in docs[vm]["spec"]["template"]["spec"]["volumes"]}
    return str(volumes["cloudinitdisk"]["cloudInitNoCloud"]["userData"])


def test_the_render_writes_a_private_key_only_its_owner_reads(rendered: rr.Rendered) -> None:
    key = rendered.out / "ssh" / "id_rsa"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    loaded = paramiko.RSAKey.from_private_key_file(str(key))
    assert loaded.get_bits() == sk.SSH_KEY_BITS
    public = (rendered.out / "ssh" / "id_rsa.pub").read_text().split()
    assert public[:2] == ["ssh-rsa", loaded.get_base64()]
    assert public[2] == "kvlab-default"
    assert {"ssh/id_rsa", "ssh/id_rsa.pub"} <= set(rendered.manifest["files"])


def test_the_cloud_config_authorizes_the_lab_key(rendered: rr.Rendered) -> None:
    public = (rendered.out / "ssh" / "id_rsa.pub").read_text().strip()
    text = _user_data(rendered, "vm1")
    assert text.startswith("#cloud-config\n")
    assert len(text.encode()) <= kv.USER_DATA_MAX
    doc = yaml.safe_load(text)
    assert doc["ssh_authorized_keys"] == [public]
    assert doc["disable_root"] is (GUEST_USER != "root")
    assert doc["write_files"][0]["path"] == kv.ECHO_SCRIPT
    assert "7007" in doc["write_files"][0]["content"]
    compile(doc["write_files"][0]["content"], "kvlab-echo.py", "exec")
    assert kv.ECHO_SCRIPT in doc["runcmd"][0]


def test_the_manifest_records_key_user_known_hosts_and_relay_host(
    rendered: rr.Rendered, tmp_path: Path
) -> None:
    m = json.loads((rendered.out / "manifest.json").read_text())
    assert m["guest_ssh"] == {
        "user": GUEST_USER,
        "port": 22,
        "private_key": "ssh/id_rsa",
        "public_key": "ssh/id_rsa.pub",
        "known_hosts": str(tmp_path / "run" / "ssh" / "known_hosts"),
        "via": "ext1",
    }
    assert sk.private_key_path(rendered.out, m) == rendered.out / "ssh" / "id_rsa"


def test_validation_checks_key_and_cloud_config(rendered: rr.Rendered) -> None:
    report = va.validate_rendered(rendered.out, bird=False)
    assert report.issues == []
    assert any("the lab's SSH key" in c for c in report.checked)
    (rendered.out / "ssh" / "id_rsa").chmod(0o644)
    vms = rendered.out / "kubevirt" / "vms.yaml"
    vms.write_text(vms.read_text().replace("ssh-rsa ", "ssh-rsa AAAAchanged", 1))
    messages = [i.message for i in va.validate_rendered(rendered.out, bird=False).issues]
    assert any("must be 0600" in m for m in messages)
    assert "ssh_authorized_keys lacks the lab's public key" in messages


def test_user_data_errors() -> None:
    assert [i.message for i in va.user_data_errors("f", "p", None, None)] == ["no cloud-init userData"]
    assert (
        "does not start with '#cloud-config'" in va.user_data_errors("f", "p", "#!/bin/sh\n", None)[0].message
    )
    big = "#cloud-config\nruncmd: [" + ", ".join(["x"] * 1200) + "]\n"
    assert "KubeVirt refuses" in va.user_data_errors("f", "p", big, None)[0].message
    assert "not valid YAML" in va.user_data_errors("f", "p", "#cloud-config\n: [\n", None)[0].message


def test_re_rendering_keeps_the_key_and_a_given_key_is_used_in_place(
    rendered: rr.Rendered, tmp_path: Path
) -> None:
    before = (rendered.out / "ssh" / "id_rsa.pub").read_text()
    spec = load_lab(DEFAULT_LAB)
    again = rr.render_containerlab(spec, rendered.out, use_emulation=True, run_dir=tmp_path / "run")
    assert (again.out / "ssh" / "id_rsa.pub").read_text() == before
    given = _key_file(tmp_path, paramiko.RSAKey.generate(2048), "mine")
    r = rr.render_containerlab(
        spec, tmp_path / "out2", use_emulation=True, run_dir=tmp_path / "run", ssh_key=given
    )
    assert r.manifest["guest_ssh"]["private_key"] == str(given.resolve())
    assert r.manifest["guest_ssh"]["public_key"] == "ssh/mine.pub"
    assert not (r.out / "ssh" / "id_rsa").exists()
    public = (r.out / "ssh" / "mine.pub").read_text().strip()
    assert yaml.safe_load(_user_data(r, "vm1"))["ssh_authorized_keys"] == [public]
    assert va.validate_rendered(r.out, bird=False).issues == []
    (tmp_path / "junk").write_text("not a key")
    with pytest.raises(pl.RenderError, match="cannot use it"):
        rr.render_containerlab(spec, tmp_path / "out3", use_emulation=True, ssh_key=tmp_path / "junk")


def test_the_relay_host_is_the_first_host_of_the_spec(tmp_path: Path) -> None:
    data = lab_data("default")
    data["hosts"] = [{"name": "ext2", "router": "tor2"}, *data["hosts"]]
    path = write_lab_data(data, tmp_path / "two-hosts.yml")
    r = rr.render_containerlab(load_lab(path), tmp_path / "out", use_emulation=True, run_dir=tmp_path / "run")
    assert r.manifest["guest_ssh"]["via"] == "ext2"


# -- the runtime: run()/popen() for VMs and containers ---------------------------------------------


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> cl.ContainerlabRuntime:
    """A containerlab runtime whose render dir holds a hand-written manifest (lab 'tlab')."""
    monkeypatch.setenv("KVLAB_RUN_DIR", str(tmp_path / "run"))
    rt = cl.ContainerlabRuntime("tlab")
    rt.render_dir.mkdir(parents=True)
    manifest = {
        "lab": "tlab",
        "containers": {"tor1": "clab-tlab-tor1", "ext1": "clab-tlab-ext1", "r1-n1": "kv-control-plane"},
        "harness_mount": {"pythonpath": "/opt/kvlab", "entities": ["ext1"]},
        "vms": {"vm1": {"ip": "203.0.113.10", "cluster": "kv", "node": "r1-n1"}},
        "guest_ssh": {
            "user": "root",
            "port": 22,
            "private_key": "ssh/id_rsa",
            "public_key": "ssh/id_rsa.pub",
            "known_hosts": str(rt.run_dir / "ssh" / "known_hosts"),
            "via": "ext1",
        },
    }
    (rt.render_dir / "manifest.json").write_text(json.dumps(manifest))
    return rt


def _write_manifest(rt: cl.ContainerlabRuntime, **changes: Any) -> None:
    path = rt.render_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key)
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest))
    rt._manifest_cache = None


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[gs.GuestShell]:
    """GuestShell that records itself instead of connecting, and echoes argv as its result."""
    shells: list[gs.GuestShell] = []
    monkeypatch.setattr(gs.GuestShell, "open", lambda self: shells.append(self))
    monkeypatch.setattr(
        gs.GuestShell,
        "run",
        lambda self, argv, timeout=30.0: subprocess.CompletedProcess(argv, 0, f"{timeout}", ""),
    )
    return shells


def test_run_on_a_vm_goes_through_ssh_from_the_first_external_host(
    runtime: cl.ContainerlabRuntime, opened: list[gs.GuestShell]
) -> None:
    res = runtime.run("vm1", ["ip", "neigh", "flush", "all"], timeout=12.5)
    assert (res.args, res.returncode, res.stdout) == (["ip", "neigh", "flush", "all"], 0, "12.5")
    (shell,) = opened
    assert (shell.vm, shell.ip, shell.port, shell.user) == ("vm1", "203.0.113.10", 22, "root")
    assert (shell.via, shell.container) == ("ext1", "clab-tlab-ext1")
    assert shell.key_file == runtime.render_dir / "ssh" / "id_rsa"
    assert shell.known_hosts == runtime.run_dir / "ssh" / "known_hosts"
    assert shell.client is None  # closed (nothing was opened)
    assert shell.proxy is None


def test_run_on_a_container_stays_docker_exec(
    runtime: cl.ContainerlabRuntime, opened: list[gs.GuestShell], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        assert kwargs["stdin"] == subprocess.DEVNULL
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(cl.subprocess, "run", fake_run)
    runtime.run("tor1", ["birdc", "show", "status"])
    runtime.run("r1-n1", ["ip", "route"])
    assert calls == [
        ["docker", "exec", "-i", "clab-tlab-tor1", "birdc", "show", "status"],
        ["docker", "exec", "-i", "kv-control-plane", "ip", "route"],
    ]
    assert opened == []


def test_popen_on_a_vm_is_refused_and_on_a_container_is_docker_exec(
    runtime: cl.ContainerlabRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(LabError, match=r"'vm1' is a KubeVirt VM .*cloud-init"):
        runtime.popen("vm1", ["sleep", "1"])
    started: list[tuple[list[str], dict[str, Any]]] = []
    monkeypatch.setattr(cl.subprocess, "Popen", lambda argv, **kw: started.append((argv, kw)))
    runtime.popen("ext1", ["true"])
    assert started[0][0] == ["docker", "exec", "-i", "-e", "PYTHONPATH=/opt/kvlab", "clab-tlab-ext1", "true"]
    assert started[0][1]["stdin"] == subprocess.DEVNULL


def test_a_lab_without_ssh_or_external_host_says_so(
    runtime: cl.ContainerlabRuntime, opened: list[gs.GuestShell]
) -> None:
    manifest = json.loads((runtime.render_dir / "manifest.json").read_text())
    _write_manifest(runtime, guest_ssh={**manifest["guest_ssh"], "via": None})
    with pytest.raises(LabError, match=r"ssh to vm1 \(203\.0\.113\.10\): lab 'tlab' has no external host"):
        runtime.run("vm1", ["true"])
    _write_manifest(runtime, guest_ssh=None)
    with pytest.raises(LabError, match="rendered without an SSH key"):
        runtime.run("vm1", ["true"])
    assert opened == []


def test_guest_shell_from_a_real_render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVLAB_RUN_DIR", str(tmp_path / "run"))
    rt = cl.ContainerlabRuntime("tlab")
    spec = load_lab(DEFAULT_LAB).model_copy(update={"name": "tlab"})
    rr.render_containerlab(
        spec, rt.render_dir, use_emulation=True, image="kvlab/tor:test", run_dir=rt.run_dir
    )
    shell = rt.guest_shell("vm1")
    assert (shell.container, shell.ip, shell.user) == ("clab-tlab-ext1", "203.0.113.10", GUEST_USER)
    assert shell.key_file.is_file()
    assert shell.known_hosts == rt.run_dir / "ssh" / "known_hosts"
