"""A stand-in Kubernetes API server on 127.0.0.1 (this machine has no cluster): a real HTTP server that
answers discovery, GET/LIST/PATCH/DELETE of objects kept in memory, pod logs and the Prometheus service
proxy, and records every request as it arrived (method, raw path, headers, body), so tests can check what
the official client sent. It implements only what labkit's kind backend calls, not the API server's
semantics beyond that (server-side apply simply stores the applied body)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

#: (group/version path, kind, plural, namespaced)
RESOURCES = [
    ("api/v1", "Namespace", "namespaces", False),
    ("api/v1", "Pod", "pods", True),
    ("api/v1", "Service", "services", True),
    ("api/v1", "ServiceAccount", "serviceaccounts", True),
    ("apis/apps/v1", "Deployment", "deployments", True),
    ("apis/networking.istio.io/v1", "VirtualService", "virtualservices", True),
    ("apis/networking.istio.io/v1", "DestinationRule", "destinationrules", True),
    ("apis/security.istio.io/v1", "PeerAuthentication", "peerauthentications", True),
]


@dataclass
class Request:
    method: str
    path: str  # raw, as sent (percent-encoding kept)
    headers: dict[str, str]
    body: str


@dataclass
class FakeApiServer:
    objects: dict[str, dict] = field(default_factory=dict)  # object path -> object
    requests: list[Request] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)  # "ns/pod/container" -> text
    prometheus: list[dict] = field(default_factory=list)
    url: str = ""

    def start(self) -> FakeApiServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

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

    def put(self, obj: dict) -> None:
        """Store an object as the cluster would hold it."""
        self.objects[object_path(obj)] = obj

    def store(self, obj: dict, rolled_out: bool = True) -> None:
        """Store an object; a Deployment is rolled out at once, with pods injected as its namespace says now
        (so pods created before the namespace is labelled keep running without a sidecar, as on a cluster)."""
        self.put(obj)
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
        ns = meta.get("namespace", "default")
        for path in [
            p for p, o in self.objects.items() if o.get("metadata", {}).get("ownerName") == meta["name"]
        ]:
            del self.objects[path]
        labels = (self.objects.get(f"/api/v1/namespaces/{ns}") or {}).get("metadata", {}).get("labels") or {}
        containers = [{"name": c["name"]} for c in spec["template"]["spec"].get("containers", [])]
        if labels.get("istio-injection") == "enabled":
            containers.append({"name": "istio-proxy"})
        for i in range(replicas):
            pod_meta = {
                "name": f"{meta['name']}-{generation}x{i}",
                "namespace": ns,
                "ownerName": meta["name"],
            }
            pod_meta["labels"] = dict(spec["template"]["metadata"].get("labels") or {})
            self.put(
                {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": {"containers": containers}}
            )

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ("PATCH", "DELETE", "POST", "PUT")]


def object_path(obj: dict) -> str:
    for prefix, kind, plural, namespaced in RESOURCES:
        if kind == obj["kind"] and prefix.endswith(obj["apiVersion"]):
            ns = f"/namespaces/{obj['metadata'].get('namespace', 'default')}" if namespaced else ""
            return f"/{prefix}{ns}/{plural}/{obj['metadata']['name']}"
    raise KeyError(obj["kind"])


def deployment(namespace: str, name: str, labels: dict[str, str], container: str = "app") -> dict:
    """A Deployment as the lab's manifests write it."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": container}]}},
        },
    }


def _namespace(name: str, labels: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _list_key(path: str) -> tuple[str, str | None, str] | None:
    """(group/version prefix, namespace or None, plural) for a list request."""
    for prefix, _, plural, namespaced in RESOURCES:
        if path == f"/{prefix}/{plural}":
            return prefix, None, plural
        head = f"/{prefix}/namespaces/"
        if (
            namespaced
            and path.startswith(head)
            and path.endswith(f"/{plural}")
            and path.count("/") == head.count("/") + 1
        ):
            return prefix, path[len(head) :].split("/")[0], plural
    return None


def _matches(listing: tuple[str, str | None, str], path: str) -> bool:
    prefix, ns, plural = listing
    where = f"/{prefix}/namespaces/{ns}/{plural}/" if ns else f"/{prefix}/"
    return path.startswith(where) and f"/{plural}/" in path


def _content(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _merge(old: dict, patch: dict) -> dict:
    merged = dict(old)
    for key, value in patch.items():
        merged[key] = _merge(old.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def _discovery(path: str) -> dict | None:
    if path == "/version":
        return {"major": "1", "minor": "36", "gitVersion": "v1.36.1"}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"]}
    if path == "/apis":
        groups = sorted({p.split("/")[1] for p, *_ in RESOURCES if p.startswith("apis/")})
        return {
            "kind": "APIGroupList",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"},
                }
                for g in groups
            ],
        }
    listed = [(kind, plural, ns) for p, kind, plural, ns in RESOURCES if f"/{p}" == path]
    if listed:
        return {
            "kind": "APIResourceList",
            "groupVersion": path.split("/", 2)[2],
            "resources": [
                {"name": plural, "kind": kind, "namespaced": ns, "verbs": ["get", "list", "patch", "delete"]}
                for kind, plural, ns in listed
            ]
            + [{"name": "pods/log", "kind": "Pod", "namespaced": True, "verbs": ["get"]}]
            * (path == "/api/v1"),
        }
    return None


def _handler(fake: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, code: int, data: object, content_type: str = "application/json") -> None:
            body = data if isinstance(data, bytes) else json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _record(self) -> tuple[str, dict, str]:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            fake.requests.append(Request(self.command, self.path, dict(self.headers), body))
            parts = urlsplit(self.path)
            return parts.path, parse_qs(parts.query), body

        def _not_found(self, path: str) -> None:
            self._reply(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                              "message": f"{path} not found"})  # fmt: skip

        def do_GET(self) -> None:
            path, query, _ = self._record()
            if "/services/prometheus:9090/proxy/" in path:
                return self._reply(
                    200, {"status": "success", "data": {"resultType": "vector", "result": fake.prometheus}}
                )
            if path.endswith("/log"):
                ns, pod = path.split("/")[4], path.split("/")[6]
                text = fake.logs.get(f"{ns}/{pod}/{query.get('container', [''])[0]}", "")
                return self._reply(200, text.encode(), "text/plain")
            found = _discovery(path)
            if found is not None:
                return self._reply(200, found)
            if path in fake.objects:
                return self._reply(200, fake.objects[path])
            listing = _list_key(path)
            if listing is not None:
                selector = query.get("labelSelector", [""])[0]
                wanted = dict(kv.split("=") for kv in selector.split(",") if kv)
                items = [
                    o
                    for p, o in fake.objects.items()
                    if _matches(listing, p) and wanted.items() <= (o["metadata"].get("labels") or {}).items()
                ]
                return self._reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
            return self._not_found(path)

        def do_PATCH(self) -> None:
            path, _, body = self._record()
            applied = yaml.safe_load(body)
            old = fake.objects.get(path)
            if old is not None and "kind" not in applied:  # a merge patch (rollout restart)
                applied = _merge(old, applied)
            version = int((old or {}).get("metadata", {}).get("resourceVersion", "0"))
            same = old is not None and _content(old) == _content(applied)
            meta = {**(old or {}).get("metadata", {}), **applied.get("metadata", {})}
            applied["metadata"] = {**meta, "resourceVersion": str(version if same else version + 1)}
            if old is not None and "status" in old:
                applied.setdefault("status", old["status"])
            fake.store(applied, rolled_out=not same)
            self._reply(200 if old else 201, applied)

        def do_POST(self) -> None:
            path, _, _ = self._record()
            if path != "/fake/install-istio":  # what `istioctl install` leaves in a cluster, for the fake
                return self._not_found(path)
            fake.put(_namespace("istio-system", {}))
            for name in ("istiod", "istio-ingressgateway"):
                fake.store(deployment("istio-system", name, {"app": name}))
            self._reply(201, {})

        def do_DELETE(self) -> None:
            path, _, _ = self._record()
            if fake.objects.pop(path, None) is None:
                return self._not_found(path)
            self._reply(200, {"kind": "Status", "status": "Success"})

    return Handler
