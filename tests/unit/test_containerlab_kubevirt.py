"""harness.runtime.containerlab.kubevirt: the guest's MAC on every pod (migration targets too),
the images a launcher pod runs, the guest's echo server, its RNG, and KubeVirt never waiting for
a device the host lacks (useEmulation from the /dev/kvm and /dev/vhost-net probes)."""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from clab_fakes import (
    DEFAULT_LAB,
    VM_MAC,
    load,
)

from harness.labfile import load_lab
from harness.runtime.containerlab import kube as k
from harness.runtime.containerlab import kubevirt as kv
from harness.runtime.containerlab import render as rr
from harness.runtime.containerlab import runtime as cl
from harness.runtime.containerlab import schemas


def test_kubevirt_copies_the_mac_to_the_migration_target_pod() -> None:
    """The pods of a migrated VM as KubeVirt renders them: the VMI's annotations on each."""
    pods = load("virt-launcher-pods-after-migration.json")["items"]
    vmi = load("vmi-after-success.json")
    assert kv.guest_mac(vmi) == VM_MAC
    assert kv.pod_mac_problems(vmi, pods) == []
    target = copy.deepcopy(pods[1])
    del target["metadata"]["annotations"][kv.CALICO_MAC_ANNOTATION]
    (problem,) = kv.pod_mac_problems(vmi, [pods[0], target])
    assert problem.startswith("virt-launcher pod virt-launcher-vm1-tq7fd on kv-worker2 has")
    assert f"the guest's MAC is {VM_MAC}" in problem
    finished = copy.deepcopy(target)
    finished["status"]["phase"] = "Succeeded"
    assert kv.pod_mac_problems(vmi, [finished]) == []  # a finished source pod no longer counts


def test_the_guest_mac_falls_back_to_the_spec() -> None:
    vmi = load("vmi-after-success.json")
    del vmi["status"]["interfaces"]
    assert kv.guest_mac(vmi) == VM_MAC
    assert kv.guest_mac(None) is None


def test_an_image_reference_that_is_not_one_is_not_pulled() -> None:
    pod = load("virt-launcher-pods-after-migration.json")["items"][1]
    pod["status"]["containerStatuses"] = []
    pod["status"]["initContainerStatuses"] = []
    pod["spec"]["containers"][1]["image"] = "--help"
    assert kv.launcher_images(pod) == [
        "quay.io/kubevirt/virt-launcher:v1.8.4",
        pod["spec"]["initContainers"][1]["image"],
    ]


def test_the_guests_echo_server_answers_lines_and_one_shot_probes() -> None:
    """The python3 echo server the cloud-config writes, run here: it echoes bytes as they come
    (harness.tcpcheck's probe sends no newline), and the canary's lines."""
    cloud = yaml.safe_load(kv.guest_user_data(0))
    source = cloud["write_files"][0]["content"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", source.replace("'0.0.0.0', 0", f"'127.0.0.1', {port}")])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the echo server did not start"
                threading.Event().wait(0.05)
        with conn:
            conn.sendall(b"kvlab")
            assert conn.recv(100) == b"kvlab"
            conn.sendall(b"1 1700000000.0\n2 1700000000.1\n")
            got = b""
            while got.count(b"\n") < 2:
                got += conn.recv(100)
            assert got == b"1 1700000000.0\n2 1700000000.1\n"
    finally:
        server.kill()
        server.wait(timeout=10)


LAUNCHER = load("kubevirt-launcher-devices.json")  # what KubeVirt's launcher pods request


@pytest.mark.parametrize(("kvm", "vhost_net"), [(True, True), (True, False), (False, True), (False, False)])
def test_kubevirt_never_waits_for_a_device_the_host_lacks(
    kvm: bool, vhost_net: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without useEmulation KubeVirt's launcher pod requests kvm and, for a virtio interface (the
    lab's has no model), vhost-net; virt-handler offers neither when its device node is missing."""
    monkeypatch.setattr(kv, "kvm_usable", lambda device="/dev/kvm": kvm)
    monkeypatch.setattr(kv, "vhost_net_usable", lambda: vhost_net)
    host = {"/dev/kvm": kvm, "/dev/vhost-net": vhost_net, "/dev/net/tun": True}
    r = rr.render_containerlab(load_lab(DEFAULT_LAB), tmp_path)  # probes here, as `kvlab render` does
    (cr,) = k.load_documents((tmp_path / "kubevirt/kubevirt.yaml").read_text())
    emulate = cr["spec"]["configuration"]["developerConfiguration"]["useEmulation"]
    (vm,) = k.load_documents((tmp_path / "kubevirt/vms.yaml").read_text())
    assert "model" not in vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]  # virtio
    requested = LAUNCHER["launcher_device_requests"][f"useEmulation={str(emulate).lower()}"]
    assert all(host[LAUNCHER["device_paths"][d]] for d in requested), (emulate, requested)
    assert emulate is not (kvm and vhost_net)  # KVM without emulation wherever the host has both
    assert (r.manifest["kvm_usable"], r.manifest["vhost_net_usable"]) == (kvm, vhost_net)


def test_the_guest_has_a_virtio_rng_as_kubevirts_own_alpine_vms(clab: cl.ContainerlabRuntime) -> None:
    (vm,) = k.load_documents((clab.render_dir / "kubevirt" / "vms.yaml").read_text())
    assert vm["spec"]["template"]["spec"]["domain"]["devices"]["rng"] == {}
    if schemas.schemas_available():
        devices = schemas.kubevirt_schema("v1.Devices")
        assert devices["definitions"]["v1.Devices"]["properties"]["rng"]["$ref"] == "#/definitions/v1.Rng"
        assert schemas.kubevirt_errors(vm) == []
