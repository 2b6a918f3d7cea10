"""harness.runtime.containerlab.kube: kubeconfigs, documents, conditions, rollouts, waits, and how
objects are applied (retries of what is not served yet, Calico's default singletons merged)."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from clab_fakes import (
    DATA,
)

from harness.errors import LabError, WaitTimeout
from harness.progress import NullProgress
from harness.runtime.containerlab import kube as k


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


def test_a_wait_that_times_out_names_what_and_the_last_state() -> None:
    states = iter(["phase Pending", "phase Scheduling", "phase Scheduling"] + ["phase Scheduled"] * 100)
    with pytest.raises(WaitTimeout) as err:
        k.wait_until(
            NullProgress(),
            "VMI vm1 Running with IP 203.0.113.10",
            lambda: (False, next(states)),
            timeout=0.3,
            interval=0.05,
        )
    assert "waiting for VMI vm1 Running with IP 203.0.113.10; last: AssertionError: phase Scheduled" in str(
        err.value
    )
    k.wait_until(NullProgress(), "done at once", lambda: (True, "ok"), timeout=1)


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


# -- Calico's default singletons are merge-patched, not replaced ------------------------------------


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
