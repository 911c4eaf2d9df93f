"""The Kubernetes API through the official client: server-side apply of any kind (Istio's too) via the
dynamic client, kubectl's rollout-complete rule, sidecar checks, pod logs, and Prometheus through the API
server's service proxy (no port-forward). Every request has a timeout; API errors become LabErrors that name
the object."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError
from urllib3.exceptions import HTTPError

from labkit import state
from labkit.errors import BackendError, LabError

FIELD_MANAGER = "labkit"
REQUEST_TIMEOUT = 30.0
#: Prometheus from Istio's samples/addons, through the API server (the path is used as is, not %-encoded).
PROMETHEUS_QUERY = "/api/v1/namespaces/istio-system/services/prometheus:9090/proxy/api/v1/query"
SIDECAR = "istio-proxy"


class _TimedApiClient(client.ApiClient):
    """An ApiClient whose every request (discovery included) has a timeout unless the caller sets one."""

    def call_api(self, method, url, header_params=None, body=None, post_params=None, _request_timeout=None):
        timeout = _request_timeout or REQUEST_TIMEOUT
        return super().call_api(method, url, header_params, body, post_params, _request_timeout=timeout)


def rollout_complete(deployment: dict) -> bool:
    """kubectl's ``rollout status`` rule: the new ReplicaSet has every replica available, no old pod left.

    Raises BackendError when the Deployment exceeded its progress deadline (kubectl reports a failure).
    """
    meta, spec, status = (
        deployment.get("metadata", {}),
        deployment.get("spec", {}),
        deployment.get("status") or {},
    )
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return False
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            name = f"deployment/{meta.get('name')} ({meta.get('namespace')})"
            raise BackendError(
                f"{name} exceeded its progress deadline: {cond.get('message', '')}; look at its pods with "
                f"`kubectl get pods -n {meta.get('namespace')}` and `kubectl describe pod ...`"
            )
    replicas = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    return (
        updated >= replicas
        and status.get("replicas", 0) <= updated
        and status.get("availableReplicas", 0) >= updated
    )


def has_sidecar(pod: dict) -> bool:
    """Whether the pod runs Istio's proxy (a container, or a native-sidecar init container)."""
    spec = pod.get("spec", {})
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    return any(c.get("name") == SIDECAR for c in containers)


class Kube:
    """One cluster, reached through ``kubeconfig`` (default: KUBECONFIG or ~/.kube/config) and ``context``."""

    def __init__(self, kubeconfig: Path | None = None, context: str | None = None) -> None:
        self.kubeconfig, self.context = kubeconfig, context
        configuration = client.Configuration()
        try:
            config.load_kube_config(
                # KUBECONFIG read now, not when the client was imported (a notebook may set it later)
                config_file=str(
                    kubeconfig or os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser()
                ),
                context=context,
                client_configuration=configuration,
            )
        except (config.ConfigException, OSError) as exc:
            where = kubeconfig or "KUBECONFIG / ~/.kube/config"
            raise BackendError(
                f"cannot read context {context or '(current)'} from {where}: {exc}; "
                "for the kind backend run lab.up(); for another cluster check `kubectl config get-contexts`"
            ) from exc
        self.api = _TimedApiClient(configuration)
        self.host = configuration.host
        self._dynamic: DynamicClient | None = None

    @property
    def dynamic(self) -> DynamicClient:
        if self._dynamic is None:
            cache = state.discovery_cache(self.host)
            cache.parent.mkdir(parents=True, exist_ok=True)
            self._dynamic = self._call(
                "discover the API", lambda: DynamicClient(self.api, cache_file=str(cache))
            )
        return self._dynamic

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except (HTTPError, OSError) as exc:
            raise BackendError(
                f"cannot reach the Kubernetes API server at {self.host} to {what}: {exc}; is the cluster up? "
                "(`kind get clusters`, `docker ps`); lab.up() starts it"
            ) from exc

    def _resource(self, api_version: str, kind: str) -> Any:
        try:
            return self._call(
                "look up kinds", lambda: self.dynamic.resources.get(api_version=api_version, kind=kind)
            )
        except ResourceNotFoundError as exc:
            raise BackendError(
                f"the cluster does not know {kind} ({api_version}); if it is an Istio kind, Istio is not "
                "installed yet: run lab.up()"
            ) from exc

    # --- objects ------------------------------------------------------------------------------------------

    def apply(self, body: dict) -> str:
        """Server-side apply ``body`` (manager labkit, conflicts forced): created, configured or unchanged."""
        res = self._resource(body["apiVersion"], body["kind"])
        meta = body.get("metadata", {})
        name, namespace = meta.get("name"), (meta.get("namespace") or "default") if res.namespaced else None
        before = self.get(body["apiVersion"], body["kind"], name, namespace)
        try:
            after = self._call(
                f"apply {body['kind']}/{name}",
                lambda: res.server_side_apply(
                    body=body,
                    namespace=namespace,
                    field_manager=FIELD_MANAGER,
                    force_conflicts=True,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        except DynamicApiError as exc:
            raise LabError(
                f"the API server rejected {body['kind']}/{name}{f' in {namespace}' if namespace else ''}: "
                f"{_reason(exc)}; fix the manifest and apply it again"
            ) from exc
        if before is None:
            return "created"
        version = after.metadata.resourceVersion if after is not None else None
        return "unchanged" if version == before["metadata"].get("resourceVersion") else "configured"

    def delete(self, body: dict) -> str:
        """Delete the object ``body`` names; returns deleted or not found."""
        res = self._resource(body["apiVersion"], body["kind"])
        meta = body.get("metadata", {})
        namespace = (meta.get("namespace") or "default") if res.namespaced else None
        try:
            self._call(
                f"delete {body['kind']}/{meta.get('name')}",
                lambda: res.delete(
                    name=meta.get("name"), namespace=namespace, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        except NotFoundError:
            return "not found"
        except DynamicApiError as exc:
            raise LabError(f"cannot delete {body['kind']}/{meta.get('name')}: {_reason(exc)}") from exc
        return "deleted"

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object as a dict, or None when it does not exist."""
        res = self._resource(api_version, kind)
        try:
            obj = self._call(
                f"read {kind}/{name}",
                lambda: res.get(name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT),
            )
        except NotFoundError:
            return None
        except DynamicApiError as exc:
            raise LabError(f"cannot read {kind}/{name}: {_reason(exc)}") from exc
        return obj.to_dict()

    def objects(
        self, api_version: str, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict]:
        """Objects of ``kind`` (in ``namespace``, matching the label ``selector``) as dicts."""
        res = self._resource(api_version, kind)
        try:
            objs = self._call(
                f"list {kind}",
                lambda: res.get(
                    namespace=namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        except DynamicApiError as exc:
            raise LabError(f"cannot list {kind} in {namespace}: {_reason(exc)}") from exc
        return objs.to_dict().get("items") or []

    # --- workloads ------------------------------------------------------------------------------------------

    def wait_rollout(self, namespace: str, name: str, timeout: float = 300) -> None:
        """Wait until deployment ``name`` is fully rolled out (kubectl's rule); BackendError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            deployment = self.get("apps/v1", "Deployment", name, namespace)
            if deployment is not None and rollout_complete(deployment):
                return
            if time.monotonic() > deadline:
                st = (deployment or {}).get("status") or {}
                seen = (
                    f"{st.get('availableReplicas', 0)}/{st.get('replicas', 0)} available"
                    if deployment
                    else "absent"
                )
                raise BackendError(
                    f"deployment/{name} ({namespace}) not ready after {timeout:g}s ({seen}); look for Pending"
                    f" or ImagePullBackOff in `kubectl get pods -n {namespace}` and `kubectl describe pod`"
                )
            time.sleep(2)

    def pods(self, namespace: str, selector: dict[str, str]) -> list[dict]:
        """Running or pending pods matching the labels ``selector``."""
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = self.objects("v1", "Pod", namespace, labels)
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def restart(self, namespace: str, name: str) -> None:
        """``kubectl rollout restart``: a new pod-template annotation makes the Deployment replace pods."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {
            "spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}
        }
        res = self._resource("apps/v1", "Deployment")
        self._call(
            f"restart deployment/{name}",
            lambda: res.patch(
                name=name,
                namespace=namespace,
                body=patch,
                content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )

    def logs(self, namespace: str, pod: str, container: str, tail: int) -> str:
        """The last ``tail`` lines a container wrote."""
        core = client.CoreV1Api(self.api)
        try:
            return self._call(
                f"read logs of {pod}",
                lambda: core.read_namespaced_pod_log(
                    pod, namespace, container=container, tail_lines=tail, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        except client.ApiException as exc:
            raise LabError(
                f"cannot read the {container} log of pod {pod} ({namespace}): {exc.reason}"
            ) from exc

    # --- Prometheus -----------------------------------------------------------------------------------------

    def prometheus(self, query: str) -> list[dict]:
        """Run an instant PromQL query on the addon Prometheus through the API server's service proxy."""
        method, url, headers, body, _ = self.api.param_serialize(
            "GET", PROMETHEUS_QUERY, query_params=[("query", query)], auth_settings=["BearerToken"]
        )
        response = self._call(
            "query Prometheus", lambda: self.api.call_api(method, url, header_params=headers)
        )
        data = response.read()
        if response.status != 200:
            raise BackendError(
                f"Prometheus (service prometheus:9090 in istio-system) answered {response.status}: "
                f"{data[:200]!r}; install the addons with lab.up() and wait for deployment/prometheus"
            )
        return json.loads(data)["data"]["result"]


def _reason(exc: DynamicApiError) -> str:
    try:
        return json.loads(exc.body or "")["message"]
    except (TypeError, ValueError, KeyError):
        return f"{exc.status} {exc.reason}"
