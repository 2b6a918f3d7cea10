"""Kubernetes API helpers for the containerlab runtime: apply manifests, read objects, wait on them.

    kube = Kube.from_kubeconfig(run_dir / "kube" / "kvlab.kubeconfig")
    kube.apply_all(load_documents(kube.fetch(versions.tigera_operator_url)), what="tigera operator")
    wait_for(lambda: tigera_available(kube.get(TIGERA_API, "TigeraStatus", "calico")), ...)

The pure parts (documents, conditions, rollout state, the restart patch, kubeconfig paths) are
plain functions with unit tests; `Kube` is the thin layer that talks to an API server through the
official Python client (imported lazily: nothing here needs it at import).

Applying: server-side apply (field manager "kvlab", conflicts forced), except create-or-replace
(what `kubectl create`/`kubectl replace` do) for CustomResourceDefinitions (Calico's install docs
create its operator manifests; the Installation CRD alone is ~1.5 MB) and for the Calico API
server's `projectcalico.org/v3` group, whose v3.32.0 answers a server-side apply of a new object
with NotFound (projectcalico/calico#12841). An existing `default` FelixConfiguration,
BGPConfiguration or IPAMConfiguration is merge-patched instead of replaced: calico-node and the
operator write fields of their own into these singletons, which a replace would wipe.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from harness.errors import LabError
from harness.progress import Progress
from harness.safefile import replace_file

FIELD_MANAGER = "kvlab"
TIGERA_API = "operator.tigera.io/v1"
CALICO_API_GROUP = "projectcalico.org"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets


# -- pure helpers ------------------------------------------------------------------------------


def kubeconfig_path(run_dir: Path, cluster: str) -> Path:
    """Where the runtime keeps a kind cluster's kubeconfig: `<run dir>/kube/<cluster>.kubeconfig`."""
    if not cluster or "/" in cluster or cluster.startswith("."):
        raise ValueError(f"not a kind cluster name: {cluster!r}")
    return run_dir / "kube" / f"{cluster}.kubeconfig"


def write_kubeconfig(path: Path, text: str) -> Path:
    """Write a kubeconfig readable by its owner only (it holds the cluster's admin credentials)."""
    if "clusters:" not in text or "server:" not in text:
        raise LabError(f"not a kubeconfig (no clusters/server): {text.strip()[:200]!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, text.encode(), 0o600)  # a new file: never through a planted symlink
    return path


def kubeconfig_server(text: str) -> str | None:
    """The API server URL of a kubeconfig's current context (first cluster if none is current)."""
    doc = yaml.safe_load(text) or {}
    clusters = {c.get("name"): c.get("cluster", {}) for c in doc.get("clusters") or []}
    contexts = {c.get("name"): c.get("context", {}) for c in doc.get("contexts") or []}
    current = contexts.get(doc.get("current-context"), {})
    cluster = clusters.get(current.get("cluster")) or next(iter(clusters.values()), {})
    return cluster.get("server")


def load_documents(text: str) -> list[dict[str, Any]]:
    """Kubernetes objects of a multi-document YAML (or JSON) manifest; `List` kinds are flattened."""
    out: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        if not isinstance(doc, dict):
            raise LabError(f"manifest document is not an object: {str(doc)[:100]!r}")
        if str(doc.get("kind", "")).endswith("List") and "items" in doc:
            out += [item for item in doc["items"] or [] if item]
        else:
            out.append(doc)
    return out


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (cloud-init scripts) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
_KEY_ORDER = ("apiVersion", "kind", "metadata", "spec")


def _ordered(doc: Any) -> Any:
    """Kubernetes documents with apiVersion, kind, metadata, spec first."""
    if isinstance(doc, dict) and "apiVersion" in doc:
        return {**{k: doc[k] for k in _KEY_ORDER if k in doc}, **doc}
    return doc


def dump_documents(docs: list[Any], header: str = "") -> str:
    """A multi-document YAML manifest (what `load_documents` reads back), after `header`."""
    body = yaml.dump_all(
        [_ordered(d) for d in docs], Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100
    )
    return header + body


def object_ref(doc: dict[str, Any]) -> str:
    """'Kind namespace/name' (or 'Kind name') for messages."""
    meta = doc.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc.get('kind', '?')} {ns}{meta.get('name', '?')}"


def api_group(api_version: str) -> str:
    """'projectcalico.org/v3' -> 'projectcalico.org'; 'v1' -> '' (the core group)."""
    return api_version.rpartition("/")[0]


def conditions(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(((obj or {}).get("status") or {}).get("conditions") or [])


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions(obj) if c.get("type") == type_), None)


def condition_true(obj: dict[str, Any] | None, type_: str) -> bool:
    c = condition(obj, type_)
    return c is not None and str(c.get("status")) == "True"


def describe_conditions(obj: dict[str, Any] | None) -> str:
    """'Available=False (Reason: message); Degraded=True (...)' or why there is nothing to show."""
    if obj is None:
        return "the object does not exist (yet)"
    conds = conditions(obj)
    if not conds:
        phase = ((obj.get("status") or {}).get("phase")) or None
        return f"phase {phase}, no conditions yet" if phase else "no status conditions yet"
    parts = []
    for c in conds:
        detail = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
        parts.append(f"{c.get('type')}={c.get('status')}" + (f" ({detail})" if detail else ""))
    return "; ".join(parts)


def node_ready(node: dict[str, Any]) -> bool:
    return condition_true(node, "Ready")


def nodes_state(nodes: Iterable[dict[str, Any]], expected: Iterable[str]) -> tuple[bool, str]:
    """(every expected node registered and Ready, what is not) for a list of Node objects."""
    by_name = {n["metadata"]["name"]: n for n in nodes}
    missing = [n for n in expected if n not in by_name]
    not_ready = [
        f"{name} ({describe_conditions(by_name[name])})"
        for name in expected
        if name in by_name and not node_ready(by_name[name])
    ]
    problems = ([f"not registered: {', '.join(missing)}"] if missing else []) + (
        [f"not Ready: {'; '.join(not_ready)}"] if not_ready else []
    )
    return not problems, "; ".join(problems) or "all Ready"


def restart_patch(when: _dt.datetime | None = None) -> dict[str, Any]:
    """The patch `kubectl rollout restart` sends: a new pod-template annotation, so the
    Deployment rolls its pods (here: calico-typha, to see CRDs that appeared after it started)."""
    when = when or _dt.datetime.now(_dt.UTC)
    stamp = when.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


def rollout_state(deploy: dict[str, Any] | None) -> tuple[bool, str]:
    """(rollout complete, what it is at) as `kubectl rollout status` judges a Deployment."""
    if deploy is None:
        return False, "the Deployment does not exist"
    meta, spec, status = deploy.get("metadata") or {}, deploy.get("spec") or {}, deploy.get("status") or {}
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    gen, seen = int(meta.get("generation") or 0), int(status.get("observedGeneration") or 0)
    text = (
        f"generation {gen} (observed {seen}), {updated}/{want} updated, {available} available, {total} total"
    )
    if seen < gen:
        return False, text
    return (updated >= want and total == updated and available >= want), text


def vmi_addresses(vmi: dict[str, Any]) -> set[str]:
    """Every IP a VMI's status reports on its interfaces."""
    out: set[str] = set()
    for iface in (vmi.get("status") or {}).get("interfaces") or []:
        if iface.get("ipAddress"):
            out.add(iface["ipAddress"])
        out.update(iface.get("ipAddresses") or [])
    return out


def vmi_state(vmi: dict[str, Any] | None, ip: str, pod_ips: Iterable[str] = ()) -> tuple[bool, str]:
    """(VMI Running with `ip`, what it is at). The IP counts when the VMI's interfaces or its
    virt-launcher pod (`pod_ips`; Calico gives the pod the IP, the bridge hands it to the guest) have it."""
    if vmi is None:
        return False, "no VirtualMachineInstance yet"
    status = vmi.get("status") or {}
    phase = status.get("phase") or "no phase"
    node = status.get("nodeName") or "no node"
    seen = vmi_addresses(vmi) | set(pod_ips)
    text = f"phase {phase} on {node}, addresses {sorted(seen) or 'none'}"
    if phase != "Running":
        reason = describe_conditions(vmi)
        return False, f"{text}; {reason}"
    return ip in seen, text


PERMANENT_STATUS = (400, 401, 403, 422)
"""API answers that retrying does not change: invalid objects, missing rights."""


def permanent(e: BaseException) -> bool:
    """An API error that retrying will not fix (an invalid object, no permission)."""
    return getattr(e, "status", None) in PERMANENT_STATUS


def transient_errors() -> tuple[type[BaseException], ...]:
    """What an API call raises while a server (or an aggregated API, or a CRD) is still coming up."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import urllib3.exceptions
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError
    except ImportError:  # pragma: no cover - the kubernetes client is a dependency
        return tuple(errors)
    errors += [ApiException, DynamicApiError, ResourceNotFoundError, urllib3.exceptions.HTTPError]
    return tuple(errors)


def wait_until(
    progress: Progress,
    what: str,
    check: Callable[[], tuple[bool, str]],
    *,
    timeout: float,
    interval: float = 2.0,
) -> None:
    """Wait (deadline `timeout`) until `check` says done, as a progress step showing the state it
    reports; API errors of a server still coming up are retried; the timeout names `what` and the
    last observed state."""
    from harness.wait import eventually

    with progress.step(what, total=None) as step:

        def attempt() -> bool:
            done, state = check()
            step.advance(0, detail=state[:90])
            if not done:
                raise AssertionError(state)
            return True

        eventually(attempt, timeout=timeout, interval=interval, what=what, transient=transient_errors())


# -- the API -----------------------------------------------------------------------------------


MERGED_SINGLETONS = frozenset({"FelixConfiguration", "BGPConfiguration", "IPAMConfiguration"})


def merges_into_existing(doc: dict[str, Any]) -> bool:
    """An existing object of this document is merge-patched rather than replaced: Calico's
    cluster-wide `default` Felix/BGP/IPAM configurations (projectcalico.org/v3), which
    calico-node and the operator also write."""
    return (
        doc.get("apiVersion") == f"{CALICO_API_GROUP}/v3"
        and doc.get("kind") in MERGED_SINGLETONS
        and (doc.get("metadata") or {}).get("name") == "default"
    )


def merge_patch_body(doc: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) of a document: its spec and its labels and annotations;
    fields it does not name stay as they are on the server."""
    meta = doc.get("metadata") or {}
    body: dict[str, Any] = {"spec": json.loads(json.dumps(doc.get("spec") or {}))}
    extra = {key: meta[key] for key in ("labels", "annotations") if meta.get(key)}
    if extra:
        body["metadata"] = json.loads(json.dumps(extra))
    return body


class Kube:
    """One cluster's API through the official client (dynamic client for every kind)."""

    def __init__(self, api_client: Any, *, name: str = "cluster"):
        self.api = api_client
        self.name = name
        self._dyn: Any = None

    @classmethod
    def from_kubeconfig(cls, path: Path, *, name: str | None = None) -> Kube:
        from kubernetes import config

        try:
            api = config.new_client_from_config(config_file=str(path), persist_config=False)
        except Exception as e:
            raise LabError(f"cannot load kubeconfig {path}: {e}") from e
        return cls(api, name=name or path.stem)

    # -- discovery and plumbing --------------------------------------------------------------
    @property
    def dyn(self) -> Any:
        if self._dyn is None:
            from kubernetes.dynamic import DynamicClient

            self._dyn = DynamicClient(self.api)
        return self._dyn

    def refresh(self) -> None:
        """Forget the discovered API groups (after CRDs or an aggregated API appeared)."""
        if self._dyn is not None:
            self._dyn.resources.invalidate_cache()

    def resource(self, api_version: str, kind: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self.dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            self.refresh()
            return self.dyn.resources.get(api_version=api_version, kind=kind)

    def reachable(self, timeout: float = 5.0) -> bool:
        """The API server answers /version."""
        from kubernetes import client

        try:
            client.VersionApi(self.api).get_code(_request_timeout=timeout)
        except Exception:
            return False
        return True

    @staticmethod
    def _plain(obj: Any) -> dict[str, Any]:
        return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)

    # -- reading -------------------------------------------------------------------------------
    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        res = self.resource(api_version, kind)
        try:
            return self._plain(res.get(name=name, namespace=namespace if res.namespaced else None))
        except NotFoundError:
            return None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        res = self.resource(api_version, kind)
        got = res.get(namespace=namespace, label_selector=label_selector, field_selector=field_selector)
        return [self._plain(item) for item in self._plain(got).get("items") or []]

    # -- writing -------------------------------------------------------------------------------
    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply one object (create-or-replace for CRDs and projectcalico.org, see module doc)."""
        res = self.resource(doc["apiVersion"], doc["kind"])
        meta = doc.get("metadata") or {}
        namespace = (meta.get("namespace") or "default") if res.namespaced else None
        if doc["kind"] == "CustomResourceDefinition" or api_group(doc["apiVersion"]) == CALICO_API_GROUP:
            return self._create_or_replace(res, doc, namespace)
        return self._plain(
            res.server_side_apply(
                body=doc, namespace=namespace, field_manager=FIELD_MANAGER, force_conflicts=True
            )
        )

    def _create_or_replace(self, res: Any, doc: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        from kubernetes.dynamic.exceptions import ConflictError

        try:
            return self._plain(res.create(body=doc, namespace=namespace))
        except ConflictError:
            if merges_into_existing(doc):
                return self._plain(
                    res.patch(
                        body=merge_patch_body(doc),
                        name=doc["metadata"]["name"],
                        namespace=namespace,
                        content_type="application/merge-patch+json",
                    )
                )
            current = self._plain(res.get(name=doc["metadata"]["name"], namespace=namespace))
            body = json.loads(json.dumps(doc))
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self._plain(res.replace(body=body, namespace=namespace))

    def apply_all(self, docs: list[dict[str, Any]], *, what: str, timeout: float = 300.0) -> None:
        """Apply every document, retrying those whose kind or namespace is not served yet (a CRD
        or namespace earlier in the same manifest) until `timeout`; names what was left over."""
        from harness.wait import eventually

        pending = list(docs)

        def attempt() -> bool:
            failed, last = [], ""
            for doc in pending:
                try:
                    self.apply(doc)
                except transient_errors() as e:
                    if permanent(e):
                        raise LabError(
                            f"{what}: cluster {self.name} refused {object_ref(doc)}: {short_error(e)}"
                        ) from None
                    failed.append(doc)
                    last = f"{object_ref(doc)}: {type(e).__name__}: {short_error(e)}"
            pending[:] = failed
            if failed:
                self.refresh()
                raise AssertionError(f"{len(failed)} object(s) not applied yet, e.g. {last}")
            return True

        eventually(attempt, timeout=timeout, interval=2.0, what=f"{what} applied to cluster {self.name}")

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        res = self.resource(doc["apiVersion"], doc["kind"])
        ns = (doc.get("metadata") or {}).get("namespace") if res.namespaced else None
        return self._plain(res.create(body=doc, namespace=ns))

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete an object; False when it was not there."""
        from kubernetes.dynamic.exceptions import NotFoundError

        res = self.resource(api_version, kind)
        try:
            res.delete(name=name, namespace=namespace if res.namespaced else None)
        except NotFoundError:
            return False
        return True

    def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        body: dict[str, Any],
        namespace: str | None = None,
        content_type: str = "application/merge-patch+json",
    ) -> dict[str, Any]:
        res = self.resource(api_version, kind)
        return self._plain(
            res.patch(
                body=body,
                name=name,
                namespace=namespace if res.namespaced else None,
                content_type=content_type,
            )
        )

    # -- pods ------------------------------------------------------------------------------------
    def exec(self, namespace: str, pod: str, argv: list[str], container: str | None = None) -> str:
        """Run `argv` in a pod's container and return its output (stdout and stderr)."""
        from kubernetes import client
        from kubernetes.stream import stream

        core = client.CoreV1Api(self.api)
        kwargs: dict[str, Any] = {"container": container} if container else {}
        return str(
            stream(
                core.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                command=argv,
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
                _request_timeout=60,
                **kwargs,
            )
        )

    def logs(self, namespace: str, pod: str, container: str | None = None, tail_lines: int = 5000) -> str:
        from kubernetes import client

        kwargs: dict[str, Any] = {"container": container} if container else {}
        return str(
            client.CoreV1Api(self.api).read_namespaced_pod_log(
                pod, namespace, tail_lines=tail_lines, _request_timeout=60, **kwargs
            )
        )

    @staticmethod
    def fetch(url: str, timeout: float = 60.0) -> str:
        """A manifest over HTTPS (GitHub release downloads redirect; urllib follows)."""
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # https URLs from versions.py
                return resp.read().decode()
        except OSError as e:
            raise LabError(f"cannot download {url}: {e}") from e


def short_error(e: BaseException, limit: int = 300) -> str:
    """An API error in one line: the server's Status message if there is one."""
    body = getattr(e, "body", None) or getattr(e, "summary", None)
    text = body() if callable(body) else body
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if isinstance(text, str):
        with contextlib.suppress(ValueError, AttributeError):
            text = json.loads(text).get("message", text)
    text = str(text or e).replace("\n", " ")
    return text[:limit]
