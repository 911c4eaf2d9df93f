"""A stand-in Kubernetes API server on 127.0.0.1 (this machine has no cluster): a real HTTP server that
answers discovery, GET/LIST/PATCH/DELETE of objects kept in memory, pod logs, ephemeral containers (started
at once by its stand-in kubelet) and the Prometheus service proxy, and records every request as it arrived
(method, raw path, headers, body), so tests can check what the official client sent.

It refuses what the real server refuses, for what labkit calls:
- a namespaced object in a namespace that does not exist: 404 ``namespaces "x" not found``
  (kubernetes/kubernetes plugin/pkg/admission/namespace/lifecycle/admission.go);
- a body the schemas ``labkit validate`` uses reject (types, enums, required fields): 422 Invalid with the
  field path (staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/validation); unknown fields are kept
  with a ``Warning`` header, as the server's default ``fieldValidation=Warn`` does;
- an apply patch without ``fieldManager``: 422; fields owned by another applier without ``force=true``: 409
  Conflict (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go, fieldmanager);
- Istio kinds before Istio's CRDs are installed (``istioctl install`` posts /fake/install-istio here), and
  any other CRD's kinds (Gateway API's) before that CRD is applied: a CRD applied through the API is served
  (discovery, objects) once Established, a moment later, and deleting it deletes its objects
  (apiextensions-apiserver pkg/controller/establish, pkg/controller/finalizer);
- ephemeral containers with a duplicate name or with ports/resources/probes: 422
  (pkg/apis/core/validation/validation.go ``validateEphemeralContainers``);
- the Prometheus proxy before the addon's Deployment is ready: 503 ``no endpoints available for service``
  (pkg/registry/core/service/storage/rest.go ``ResourceLocation``).
Server-side apply keeps ``metadata.managedFields`` per manager. Deployments roll out over ``rollout_seconds``
(status and pod phase change with time, as the kubelet reports them), and sidecars are injected as the
namespace label says when a pod is created: as a container, or as a native sidecar (an init container with
``restartPolicy: Always``, Istio 1.31 on Kubernetes 1.36) when ``native_sidecars`` is set, with the app's
probes rewritten to pilot-agent as Istio's injector does (injector.py)."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml
from support import serving

from fakes import apiobjects, injector
from fakes.apiobjects import (
    BUILTIN_NAMESPACES,
    CORE,
    EPHEMERAL_FORBIDDEN,
    RESOURCES,
    crd_resources,
    deployment,
    node,
    object_path,
)


@dataclass
class Request:
    method: str
    path: str  # raw, as sent (percent-encoding kept)
    headers: dict[str, str]
    body: str


class ApiFailure(Exception):
    """A request the fake refuses: code, reason and message of the Status it answers."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass
class FakeApiServer:
    objects: dict[str, dict] = field(default_factory=dict)  # object path -> object
    requests: list[Request] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)  # "ns/pod/container" -> text
    prometheus: list[dict] = field(default_factory=list)
    url: str = ""
    istio: bool = False  # Istio's CRDs installed (istioctl install does it)
    native_sidecars: bool = False
    rollout_seconds: float = 0.0  # a test of waiting sets its own (test_kind_kube); others need not wait
    minor: str = "36"
    _ready_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for ns in BUILTIN_NAMESPACES:
            self.put(apiobjects.namespace(ns, {}))
        self.put(node("meshlab-control-plane", ready=True))

    def start(self) -> FakeApiServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server = server
        self._stop = serving.start(server)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        self._stop()

    def kubeconfig(self, path: Path, context: str = "kind-meshlab") -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": context, "cluster": {"server": self.url}}],
                    "users": [{"name": context, "user": {"token": "fake-token"}}],
                    "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
                    "current-context": context,
                }
            )
        )
        return path

    def resources(self) -> list[tuple[str, str, str, bool]]:
        """What the server serves now: a kind node's kinds, Istio's once installed, each Established CRD's."""
        now = time.monotonic()
        established = {p: o for p, o in self.objects.items() if self._ready_at.get(p, 0.0) <= now}
        return (RESOURCES if self.istio else CORE) + crd_resources(established)

    def put(self, obj: dict) -> None:
        """Store an object as the cluster would hold it (no checks: a test's setup)."""
        self.objects[object_path(obj, RESOURCES + crd_resources(self.objects))] = obj

    def read(self, path: str) -> dict | None:
        """The object as a GET would answer it now (a Deployment's status and its pods' phase follow time)."""
        obj = self.objects.get(path)
        if obj is None:
            return None
        ready = time.monotonic() >= self._ready_at.get(path, 0.0)
        if obj["kind"] == "Deployment" and not ready:
            obj = copy.deepcopy(obj)
            obj["status"].update(readyReplicas=0, availableReplicas=0)
        if obj["kind"] == "Pod" and not ready:
            obj = copy.deepcopy(obj)
            obj["status"]["phase"] = "Pending"
        if obj["kind"] == "CustomResourceDefinition":
            obj = copy.deepcopy(obj)
            condition = {"type": "Established", "status": str(ready), "reason": "InitialNamesAccepted"}
            obj["status"] = {"conditions": [condition], "acceptedNames": obj["spec"]["names"]}
        return obj

    def store(self, obj: dict, rolled_out: bool = True) -> None:
        """Store an object; a Deployment rolls out over ``rollout_seconds``, with pods injected as its
        namespace says now (so pods created before the namespace is labelled keep running without a sidecar,
        as on a cluster)."""
        self.put(obj)
        if obj["kind"] == "CustomResourceDefinition" and object_path(obj) not in self._ready_at:
            self._ready_at[object_path(obj)] = time.monotonic() + self.rollout_seconds
        if obj["kind"] != "Deployment" or not rolled_out:
            return
        meta, spec = obj["metadata"], obj["spec"]
        replicas = spec.get("replicas", 1)
        generation = meta.get("generation", 0) + 1
        meta["generation"] = generation
        obj["status"] = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
        ready_at = time.monotonic() + self.rollout_seconds
        self._ready_at[object_path(obj)] = ready_at
        ns = meta.get("namespace", "default")
        for path in [
            p for p, o in self.objects.items() if o.get("metadata", {}).get("ownerName") == meta["name"]
        ]:
            del self.objects[path]
        labels = (self.objects.get(f"/api/v1/namespaces/{ns}") or {}).get("metadata", {}).get("labels") or {}
        template = spec["template"]["spec"]
        kept = ("name", "image", "env", "ports", "readinessProbe", "livenessProbe", "startupProbe")
        containers = [
            copy.deepcopy({k: c[k] for k in kept if k in c}) for c in template.get("containers") or []
        ]
        pod_spec: dict = {"containers": containers}
        if labels.get("istio-injection") == "enabled":
            proxy = {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.30.3"}
            injector.rewrite(containers, proxy, spec["template"]["metadata"].get("annotations") or {})
            if self.native_sidecars:  # istio/istio pkg/kube/inject/inject.go: ENABLE_NATIVE_SIDECARS
                pod_spec["initContainers"] = [{"name": "istio-init"}, {**proxy, "restartPolicy": "Always"}]
            else:
                pod_spec["initContainers"] = [{"name": "istio-init"}]
                containers.append(proxy)
        for i in range(replicas):
            pod_meta = {
                "name": f"{meta['name']}-{generation}x{i}",
                "namespace": ns,
                "ownerName": meta["name"],
                "labels": dict(spec["template"]["metadata"].get("labels") or {}),
            }
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": pod_meta,
                "spec": copy.deepcopy(pod_spec),
                # the pod network's address (kind's default podSubnet 10.244.0.0/16), one per pod
                "status": {
                    "phase": "Running",
                    "podIP": f"10.244.{generation % 250}.{len(self.objects) % 250 + 2}",
                },
            }
            self.put(pod)
            self._ready_at[object_path(pod)] = ready_at

    def install_istio(self) -> None:
        """What ``istioctl install`` leaves in a cluster: the CRDs, istio-system, istiod and the gateway."""
        self.istio = True
        self.put(apiobjects.namespace("istio-system", {}))
        for name in ("istiod", "istio-ingressgateway"):
            self.store(deployment("istio-system", name, {"app": name}))

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ("PATCH", "DELETE", "POST", "PUT")]

    # --- the checks the real server makes ------------------------------------------------------------------

    def apply(self, path: str, query: dict, content_type: str, body: str) -> tuple[int, dict, list[str]]:
        """A PATCH: server-side apply (or a merge patch); the status code, the stored object, warnings."""
        old = self.objects.get(path)
        patch = yaml.safe_load(body)
        if content_type == "application/apply-patch+yaml":
            manager = query.get("fieldManager", [""])[0]
            if not manager:
                raise ApiFailure(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                                 "Required value: is required for apply patch")  # fmt: skip
            owners = [m["manager"] for m in (old or {}).get("metadata", {}).get("managedFields") or []]
            others = [m for m in owners if m != manager]
            if (
                others
                and query.get("force", [""])[0] != "true"
                and apiobjects.content(old or {}) != apiobjects.content(patch)
            ):
                raise ApiFailure(
                    409, "Conflict", f'Apply failed with 1 conflict: conflict with "{others[0]}"'
                )
            applied = patch
        else:
            if old is None:
                raise ApiFailure(404, "NotFound", f"{path} not found")
            manager = ""
            applied = apiobjects.merge(old, patch)
        ns = apiobjects.namespace_of(path)
        if ns is not None and f"/api/v1/namespaces/{ns}" not in self.objects:
            raise ApiFailure(404, "NotFound", f'namespaces "{ns}" not found')
        warnings = self.schema_check(applied)
        version = int((old or {}).get("metadata", {}).get("resourceVersion", "0"))
        same = old is not None and apiobjects.content(old) == apiobjects.content(applied)
        meta = {**(old or {}).get("metadata", {}), **applied.get("metadata", {})}
        if manager:
            fields = [m for m in meta.get("managedFields") or [] if m["manager"] != manager]
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            fields.append({"manager": manager, "operation": "Apply", "apiVersion": applied["apiVersion"],
                           "fieldsType": "FieldsV1", "time": now})  # fmt: skip
            meta["managedFields"] = fields
        applied["metadata"] = {**meta, "resourceVersion": str(version if same else version + 1)}
        if old is not None and "status" in old:
            applied.setdefault("status", old["status"])
        self.store(applied, rolled_out=not same)
        return (200 if old else 201), applied, warnings

    def schema_check(self, obj: dict) -> list[str]:
        """labkit's schema stage on ``obj``: errors refused with 422, unknown fields returned as warnings."""
        from labkit.manifests import Resource
        from labkit.validation import validate

        found = [f for f in validate([Resource(obj, "<apiserver>", 0)]) if f.stage == "schema"]
        unknown = [f for f in found if f.message.startswith("unknown field")]
        errors = [f for f in found if f not in unknown]
        if errors:
            name = obj.get("metadata", {}).get("name", "")
            details = "; ".join(f"{f.field}: Invalid value: {f.message}" for f in errors)
            raise ApiFailure(422, "Invalid", f'{obj["kind"]} "{name}" is invalid: {details}')
        return [f'299 - "{f.message} at {f.field}"' for f in unknown]

    def add_ephemeral(self, pod_path: str, body: str) -> dict:
        """A strategic merge patch of pods/ephemeralcontainers; the fake kubelet starts each one at once."""
        pod = self.objects.get(pod_path)
        if pod is None:
            raise ApiFailure(404, "NotFound", f'pods "{pod_path.rsplit("/", 1)[1]}" not found')
        spec = pod["spec"]
        have = {c["name"] for c in spec.get("containers", []) + spec.get("ephemeralContainers", [])}
        for container in (json.loads(body).get("spec") or {}).get("ephemeralContainers") or []:
            name = container.get("name", "")
            if name in have:
                raise ApiFailure(422, "Invalid", f'Pod "{pod["metadata"]["name"]}" is invalid: '
                                 f'spec.ephemeralContainers[0].name: Duplicate value: "{name}"')  # fmt: skip
            bad = [k for k in EPHEMERAL_FORBIDDEN if k in container]
            if bad:
                raise ApiFailure(422, "Invalid", f"spec.ephemeralContainers[0].{bad[0]}: Forbidden: "
                                 "cannot be set for an Ephemeral Container")  # fmt: skip
            spec.setdefault("ephemeralContainers", []).append(container)
            have.add(name)
            status = pod.setdefault("status", {}).setdefault("ephemeralContainerStatuses", [])
            status.append({"name": name, "state": {"running": {"startedAt": "2026-12-01T10:00:00Z"}}})
        return pod


def _prometheus_ready(fake: FakeApiServer) -> bool:
    deployment = fake.read("/apis/apps/v1/namespaces/istio-system/deployments/prometheus")
    return bool(deployment and (deployment.get("status") or {}).get("availableReplicas"))


def _handler(fake: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(
            self, code: int, data: object, content_type: str = "application/json", warnings: tuple = ()
        ) -> None:
            body = data if isinstance(data, bytes) else json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for warning in warnings:
                self.send_header("Warning", warning)
            self.end_headers()
            self.wfile.write(body)

        def _fail(self, failure: ApiFailure) -> None:
            self._reply(failure.code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                       "reason": failure.reason, "code": failure.code,
                                       "message": failure.message})  # fmt: skip

        def _record(self) -> tuple[str, dict, str]:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            fake.requests.append(Request(self.command, self.path, dict(self.headers), body))
            parts = urlsplit(self.path)
            return parts.path, parse_qs(parts.query), body

        def _not_found(self, path: str) -> None:
            self._fail(ApiFailure(404, "NotFound", f"{path} not found"))

        def do_GET(self) -> None:
            path, query, _ = self._record()
            if "/services/prometheus:9090/proxy/" in path:
                if not _prometheus_ready(fake):
                    message = 'no endpoints available for service "prometheus:9090"'
                    return self._fail(ApiFailure(503, "ServiceUnavailable", message))
                return self._reply(
                    200, {"status": "success", "data": {"resultType": "vector", "result": fake.prometheus}}
                )
            if path.endswith("/log"):
                ns, pod = path.split("/")[4], path.split("/")[6]
                key = f"{ns}/{pod}/{query.get('container', [''])[0]}"
                if key not in fake.logs and f"/api/v1/namespaces/{ns}/pods/{pod}" not in fake.objects:
                    return self._not_found(path)
                return self._reply(200, fake.logs.get(key, "").encode(), "text/plain")
            found = apiobjects.discovery(fake, path)
            if found is not None:
                return self._reply(200, found)
            obj = fake.read(path)
            if obj is not None:
                return self._reply(200, obj)
            listing = apiobjects.list_key(fake.resources(), path)
            if listing is not None:
                selector = query.get("labelSelector", [""])[0]
                wanted = dict(kv.split("=") for kv in selector.split(",") if kv)
                items = [
                    fake.read(p)
                    for p, o in list(fake.objects.items())
                    if apiobjects.matches(listing, p)
                    and wanted.items() <= (o["metadata"].get("labels") or {}).items()
                ]
                return self._reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
            return self._not_found(path)

        def do_PATCH(self) -> None:
            path, query, body = self._record()
            content_type = self.headers.get("Content-Type", "")
            try:
                if path.endswith("/ephemeralcontainers"):
                    if content_type != "application/strategic-merge-patch+json":
                        raise ApiFailure(415, "UnsupportedMediaType", f"unsupported patch {content_type}")
                    return self._reply(200, fake.add_ephemeral(path.rsplit("/", 1)[0], body))
                if apiobjects.list_key(fake.resources(), path.rsplit("/", 1)[0]) is None:
                    return self._not_found(path)
                code, applied, warnings = fake.apply(path, query, content_type, body)
            except ApiFailure as failure:
                return self._fail(failure)
            self._reply(code, applied, warnings=tuple(warnings))

        def do_POST(self) -> None:
            path, _, _ = self._record()
            if path != "/fake/install-istio":  # what `istioctl install` leaves in a cluster, for the fake
                return self._not_found(path)
            fake.install_istio()
            self._reply(201, {})

        def do_DELETE(self) -> None:
            path, _, _ = self._record()
            gone = fake.objects.pop(path, None)
            if gone is None:
                return self._not_found(path)
            if gone["kind"] == "CustomResourceDefinition":  # its objects go with it
                served = crd_resources({path: gone})
                for p in [p for p in fake.objects if any(f"/{prefix}/" in p for prefix, *_ in served)]:
                    del fake.objects[p]
            self._reply(200, {"kind": "Status", "status": "Success"})

    return Handler
