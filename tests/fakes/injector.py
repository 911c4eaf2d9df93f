"""The fake API server's sidecar injector: the probe rewrite Istio's webhook makes when it injects a pod
(istio/istio pkg/kube/inject/app_probe.go), written apart from labkit's own (labkit/local/probes.py) so a test
against it checks labkit, not itself.

httpGet, tcpSocket and grpc probes become an httpGet on pilot-agent's status port 15020 at
``/app-health/<container>/readyz`` (livez, startupz), an https scheme becomes http (``convertAppProber``); the
originals, named ports resolved to numbers, go to the proxy's ``ISTIO_KUBE_APP_PROBERS`` env as JSON
(``DumpAppProbers``); exec probes are left alone; ``sidecar.istio.io/rewriteAppHTTPProbers`` parsed as a Go
bool turns it off (``ShouldRewriteAppHTTPProbers``, on by default)."""

from __future__ import annotations

import copy
import json

STATUS_PORT = 15020
_FIELDS = {"readinessProbe": "readyz", "livenessProbe": "livez", "startupProbe": "startupz"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def rewrite(containers: list[dict], proxy: dict, annotations: dict) -> None:
    """Rewrite the app containers' probes in place and hand the originals to ``proxy``'s env."""
    if annotations.get("sidecar.istio.io/rewriteAppHTTPProbers") in _FALSE:
        return
    originals = {}
    for c in containers:
        named = {p["name"]: p["containerPort"] for p in c.get("ports") or [] if p.get("name")}
        for field, suffix in _FIELDS.items():
            probe = c.get(field)
            kind = next((k for k in ("httpGet", "tcpSocket", "grpc") if k in (probe or {})), None)
            if probe is None or kind is None:
                continue
            url = f"/app-health/{c['name']}/{suffix}"
            action = copy.deepcopy(probe[kind])
            if kind != "grpc" and isinstance(action.get("port"), str):
                action["port"] = named[action["port"]]
            originals[url] = {kind: action, **{k: probe[k] for k in ("timeoutSeconds",) if k in probe}}
            new = {k: v for k, v in probe.items() if k not in ("httpGet", "tcpSocket", "grpc")}
            get = {**(probe[kind] if kind == "httpGet" else {}), "path": url, "port": STATUS_PORT}
            if get.get("scheme") == "HTTPS":  # Kubelet -> HTTP -> pilot-agent -> HTTPS -> app
                get["scheme"] = "HTTP"
            c[field] = {**new, "httpGet": get}
    if originals:
        proxy.setdefault("env", []).append({"name": "ISTIO_KUBE_APP_PROBERS", "value": json.dumps(originals)})
