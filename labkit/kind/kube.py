"""The Kubernetes API through the official client: server-side apply of any kind (Istio's too) via the
dynamic client, rollouts, pods, logs, ephemeral containers, and Prometheus through the API server's service
proxy (no port-forward). Every request has a timeout; API errors become ``ApiError`` (the server's status and
reason kept), and a client this code cannot drive becomes a LabError that says which versions work."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError
from urllib3.exceptions import HTTPError

from labkit import state
from labkit.errors import BackendError, LabError
from labkit.kind.k8s import CLIENT_MAJORS, ApiError, api_error, check_client_version, rollout_complete

FIELD_MANAGER = "labkit"
REQUEST_TIMEOUT = 30.0
#: Prometheus from Istio's samples/addons, through the API server (the path is used as is, not %-encoded).
PROMETHEUS_QUERY = "/api/v1/namespaces/istio-system/services/prometheus:9090/proxy/api/v1/query"


class _TimedApiClient(client.ApiClient):
    """An ApiClient whose every request (discovery included) has a timeout unless the caller sets one."""

    def call_api(self, method, url, header_params=None, body=None, post_params=None, _request_timeout=None):
        timeout = _request_timeout or REQUEST_TIMEOUT
        return super().call_api(method, url, header_params, body, post_params, _request_timeout=timeout)


class Kube:
    """One cluster, reached through ``kubeconfig`` (default: KUBECONFIG or ~/.kube/config) and ``context``."""

    def __init__(self, kubeconfig: Path | None = None, context: str | None = None) -> None:
        check_client_version()
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
                f"cannot read context {context or '(current)'} from {where}: {exc}",
                "for the kind backend run lab.up(); for another cluster check `kubectl config get-contexts`",
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

    def _call(self, what: str, fn: Callable[[], Any], fix: str = "") -> Any:
        """``fn()``, with the API server's refusals as ApiError and the client's own failures as LabErrors."""
        try:
            return fn()
        except (HTTPError, OSError) as exc:
            raise BackendError(
                f"cannot reach the Kubernetes API server at {self.host} to {what}: {exc}",
                "is the cluster up? (`kind get clusters`, `docker ps`); lab.up() starts it",
            ) from exc
        except NotFoundError:
            raise  # "does not exist" is an answer the callers handle
        except (DynamicApiError, client.ApiException) as exc:
            raise api_error(what, exc, fix) from exc
        except (TypeError, AttributeError) as exc:  # a client whose API differs from 37.x's
            raise LabError(
                f"the kubernetes client {kubernetes.__version__} failed ({what}): "
                f"{type(exc).__name__}: {exc}",
                f"install the range labkit is tested with: pip install "
                f"'kubernetes>={CLIENT_MAJORS.start},<{CLIENT_MAJORS.stop}' (`make install` pins it)",
            ) from exc

    def _resource(self, api_version: str, kind: str) -> Any:
        try:
            return self._call(
                "look up kinds", lambda: self.dynamic.resources.get(api_version=api_version, kind=kind)
            )
        except ResourceNotFoundError as exc:
            fix = "if it is an Istio kind, Istio is not installed yet: run lab.up()"
            if api_version.startswith("gateway.networking.k8s.io/"):
                fix = (
                    "the Gateway API CRDs are not installed (Istio does not install them): run `labkit tools "
                    "install`, then lab.up(); `kubectl get crd gateways.gateway.networking.k8s.io` checks"
                )
            raise BackendError(f"the cluster does not know {kind} ({api_version})", fix) from exc

    def kind_named(self, name: str) -> tuple[str, str]:
        """``(apiVersion, kind)`` for a name as kubectl takes it: a kind, its plural, singular or short name,
        in any case, with its group after a dot to pick one (``gateways.gateway.networking.k8s.io``); else
        Istio's group first where a name is in several (``gateways``)."""
        wanted, _, group = name.lower().partition(".")
        found = [
            r
            for r in self._call("look up kinds", lambda: self.dynamic.resources.search())
            if "/" not in (r.name or "")  # subresources (pods/log)
            and wanted in {r.kind.lower(), r.name, r.singular_name, *(r.short_names or [])}
            and group in ("", r.group)
        ]
        if not found:
            raise LabError(
                f"the cluster knows no kind {name!r}",
                "`kubectl api-resources` lists them (an Istio kind before Istio is installed: run lab.up())",
            )
        found.sort(key=lambda r: (not (r.group or "").endswith("istio.io"), not r.preferred))
        return found[0].group_version, found[0].kind

    def wait_nodes_ready(self, timeout: float = 300) -> None:
        """Wait until every node reports Ready: ``kind create --wait`` only warns and exits 0 on timeout
        (kind pkg/cluster/internal/create/actions/waitforready/waitforready.go)."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.objects("v1", "Node")
            not_ready = [
                n["metadata"]["name"]
                for n in nodes
                if not any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (n.get("status") or {}).get("conditions") or []
                )
            ]
            if nodes and not not_ready:
                return
            if time.monotonic() > deadline:
                raise BackendError(
                    f"node(s) {', '.join(not_ready) or '(none yet)'} not Ready after {timeout:g}s",
                    "`kubectl describe nodes` (a CNI or disk-pressure problem); lab.down() then lab.up() "
                    "starts over",
                )
            time.sleep(min(2.0, max(0.1, timeout / 20)))

    # --- objects ------------------------------------------------------------------------------------------

    def apply(self, body: dict) -> str:
        """Server-side apply ``body`` (manager labkit, conflicts forced): created, configured or unchanged."""
        res = self._resource(body["apiVersion"], body["kind"])
        meta = body.get("metadata", {})
        name, namespace = meta.get("name"), (meta.get("namespace") or "default") if res.namespaced else None
        before = self.get(body["apiVersion"], body["kind"], name, namespace)
        where = f" in {namespace}" if namespace else ""
        try:
            after = self._call(
                f"the API server rejected {body['kind']}/{name}{where}",
                lambda: res.server_side_apply(
                    body=body,
                    namespace=namespace,
                    field_manager=FIELD_MANAGER,
                    force_conflicts=True,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        except NotFoundError as exc:  # the namespace does not exist (the server answers 404 for it)
            raise api_error(
                f"the API server rejected {body['kind']}/{name}{where}",
                exc,
                f"create namespace {namespace} first: put its Namespace in the same apply, or apply it "
                "before",
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
                f"cannot delete {body['kind']}/{meta.get('name')}",
                lambda: res.delete(
                    name=meta.get("name"), namespace=namespace, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        except NotFoundError:
            return "not found"
        return "deleted"

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object as a dict, or None when it does not exist."""
        res = self._resource(api_version, kind)
        try:
            obj = self._call(
                f"cannot read {kind}/{name}",
                lambda: res.get(name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT),
            )
        except NotFoundError:
            return None
        return obj.to_dict()

    def objects(
        self, api_version: str, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict]:
        """Objects of ``kind`` (in ``namespace``, matching the label ``selector``) as dicts."""
        res = self._resource(api_version, kind)
        try:
            objs = self._call(
                f"cannot list {kind} in {namespace or 'any namespace'}",
                lambda: res.get(
                    namespace=namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        except NotFoundError:
            return []  # the namespace does not exist: nothing in it
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
                    f"deployment/{name} ({namespace}) not ready after {timeout:g}s ({seen})",
                    f"look for Pending or ImagePullBackOff in `kubectl get pods -n {namespace}` and `kubectl "
                    "describe pod`",
                )
            time.sleep(0.5)

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
            f"cannot restart deployment/{name}",
            lambda: res.patch(
                name=name,
                namespace=namespace,
                body=patch,
                content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )

    def logs(self, namespace: str, pod: str, container: str, tail: int | None = None) -> str:
        """What a container wrote (its last ``tail`` lines)."""
        core = client.CoreV1Api(self.api)
        return self._call(
            f"cannot read the {container} log of pod {pod} ({namespace})",
            lambda: core.read_namespaced_pod_log(
                pod, namespace, container=container, tail_lines=tail, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    def add_ephemeral_container(self, namespace: str, pod: str, container: dict) -> None:
        """Add ``container`` to a running pod through the ``ephemeralcontainers`` subresource, with a
        strategic merge patch, as ``kubectl debug`` does (kubernetes/kubectl pkg/cmd/debug/debug.go
        ``debugByEphemeralContainer``). It shares the pod's network namespace, so its traffic goes through
        the pod's sidecar."""
        res = self._resource("v1", "Pod")
        sub = res.subresources.get("ephemeralcontainers")
        if sub is None:
            raise BackendError(
                "this cluster does not offer pods/ephemeralcontainers (Kubernetes < 1.25?)",
                "use a cluster with Kubernetes 1.25 or newer (the lab's kind node is 1.36)",
            )
        body = {"spec": {"ephemeralContainers": [container]}}
        self._call(
            f"cannot add an ephemeral container to pod {pod} ({namespace})",
            lambda: self.dynamic.patch(
                sub,
                body=body,
                name=pod,
                namespace=namespace,
                content_type="application/strategic-merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )

    def wait_ephemeral_running(self, namespace: str, pod: str, container: str, timeout: float) -> None:
        """Wait until ephemeral ``container`` of ``pod`` runs; BackendError if it cannot start or stopped."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get("v1", "Pod", pod, namespace) or {}
            for st in (obj.get("status") or {}).get("ephemeralContainerStatuses") or []:
                if st.get("name") != container:
                    continue
                state = st.get("state") or {}
                if "running" in state:
                    return
                problem = (state.get("waiting") or {}).get("reason", "")
                if "terminated" in state or problem in (
                    "ErrImagePull",
                    "ImagePullBackOff",
                    "InvalidImageName",
                ):
                    raise BackendError(
                        f"pod {pod} ({namespace}) cannot run the load container {container}: "
                        f"{problem or 'it stopped'}",
                        f"load the lab's image into the nodes "
                        f"(lab.up() does it on kind); `kubectl describe pod {pod} -n {namespace}`",
                    )
            if time.monotonic() > deadline:
                raise BackendError(
                    f"the load container {container} in pod {pod} ({namespace}) did not start within "
                    f"{timeout:g}s",
                    f"`kubectl describe pod {pod} -n {namespace}` shows why",
                )
            time.sleep(0.2)

    # --- Prometheus -----------------------------------------------------------------------------------------

    def prometheus(self, query: str) -> list[dict]:
        """Run an instant PromQL query on the addon Prometheus through the API server's service proxy."""
        method, url, headers, body, _ = self._call(
            "prepare a Prometheus query",
            lambda: self.api.param_serialize(
                "GET", PROMETHEUS_QUERY, query_params=[("query", query)], auth_settings=["BearerToken"]
            ),
        )
        response = self._call(
            "query Prometheus", lambda: self.api.call_api(method, url, header_params=headers)
        )
        data = response.read()
        if response.status != 200:
            try:  # the API server's own Status (503 "no endpoints available" while the addon starts)
                answer = json.loads(data)
            except ValueError:
                answer = {"message": data[:200].decode(errors="replace")}
            raise ApiError(
                "cannot query Prometheus (service prometheus:9090 in istio-system)",
                response.status,
                str(answer.get("reason") or getattr(response, "reason", "") or ""),
                str(answer.get("message", "")),
                "install the addons with lab.up() and wait for deployment/prometheus in istio-system",
            )
        return json.loads(data)["data"]["result"]
