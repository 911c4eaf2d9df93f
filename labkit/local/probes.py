"""Readiness probes on the local backend, rewritten to the sidecar as Istio's injector does.

On a cluster the kubelet probes a container in plain text; in an injected pod that probe lands on the
sidecar's inbound listener, which refuses it under STRICT mTLS. So Istio's injector (istio/istio
pkg/kube/inject/app_probe.go, ``convertAppProber``) rewrites httpGet, tcpSocket and grpc probes to an
httpGet on pilot-agent's status port 15020 (``/app-health/<container>/readyz``) and hands the original probe
to pilot-agent in ``ISTIO_KUBE_APP_PROBERS``; pilot-agent (pilot/cmd/pilot-agent/status/server.go,
``handleAppProbe``) then probes the app itself, past the sidecar. Exec probes are left alone. The pod
annotation ``sidecar.istio.io/rewriteAppHTTPProbers: "false"`` turns the rewrite off (the install's default
is on).

Here the lab plays both parts for a readinessProbe: an instance is ready while its probe succeeds now, the
rewritten one straight to the app (pilot-agent's), an un-rewritten one in plain text through the sidecar's
inbound listener (the kubelet's, refused by real Envoy under STRICT). A not-ready instance is left out of
every Service's endpoints, as istiod leaves out a pod its EndpointSlice marks not ready. The probe runs
whenever the lab writes config or reports status: there is no periodic prober. httpGet and tcpSocket are
honoured; grpc and exec readiness probes are ignored locally (the lab's apps speak HTTP; no container to
exec in) and named so.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from labkit import unixhttp

#: The pod annotation that turns the rewrite off (istio/api annotation ``SidecarRewriteAppHTTPProbers``).
REWRITE_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
#: The probe actions the local backend runs.
HONOURED = ("httpGet", "tcpSocket")
#: strconv.ParseBool, which ShouldRewriteAppHTTPProbers uses; anything else keeps the default (rewrite).
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
_GO_BOOLS |= {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


@dataclass(frozen=True)
class Probe:
    """One readiness probe as the kubelet reads it; ``port`` is None when the app listens on no such port."""

    action: str  # httpGet | tcpSocket
    port: int | None
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 1.0  # timeoutSeconds, 1 by default (api/core/v1 Probe)
    failures: int = 3  # failureThreshold: failures in a row before the kubelet says not ready


def action(probe: dict | None) -> str | None:
    """The kind of a probe: httpGet, tcpSocket, grpc or exec (None when there is none)."""
    if not isinstance(probe, dict):
        return None
    return next((a for a in ("httpGet", "tcpSocket", "grpc", "exec") if a in probe), None)


def honoured(container: dict) -> bool:
    """Whether the local backend runs ``container``'s readinessProbe (else it is named as ignored)."""
    return action(container.get("readinessProbe")) in HONOURED


def readiness(container: dict) -> Probe | None:
    """The first container's readinessProbe when the local backend runs it. Its port must be one the container
    declares (by number or name, as DumpAppProbers resolves names) or, with none declared, is taken as the
    app's one port; else nothing listens there and the probe fails, as on a cluster."""
    probe = container.get("readinessProbe")
    kind = action(probe)
    if kind not in HONOURED:
        return None
    assert isinstance(probe, dict) and kind is not None
    spec = probe[kind] or {}
    ports = container.get("ports") or []
    named = {p["name"]: p.get("containerPort") for p in ports if p.get("name")}
    port = spec.get("port")
    if isinstance(port, str) and not port.isdigit():
        port = named.get(port)
    port = int(port) if port is not None else None
    numbers = {p["containerPort"] for p in ports if p.get("containerPort") is not None}
    return Probe(
        action=kind,
        port=port if port is not None and (not numbers or port in numbers) else None,
        path=str(spec.get("path") or "/"),
        scheme=str(spec.get("scheme") or "HTTP").upper(),
        headers=tuple((str(h["name"]), str(h["value"])) for h in spec.get("httpHeaders") or []),
        timeout=float(probe.get("timeoutSeconds") or 1),
        failures=max(1, int(probe.get("failureThreshold") or 3)),
    )


def rewritten(annotations: dict[str, str]) -> bool:
    """Istio's ShouldRewriteAppHTTPProbers: the pod annotation when it parses as a Go bool, else on."""
    return _GO_BOOLS.get(annotations.get(REWRITE_ANNOTATION, ""), True)


def ready(probe: Probe | None, app: int | Path, kubelet_port: int | None = None) -> bool:
    """Whether an instance passes ``probe`` now (True without one), within ``failureThreshold`` attempts in a
    row: pilot-agent's probe to the app (its 127.0.0.1 port, or behind a sidecar its Unix socket), or, when
    the injector did not rewrite it, the kubelet's on ``kubelet_port`` (the sidecar's inbound listener)."""
    if probe is None:
        return True
    if probe.port is None:
        return False
    target = app if kubelet_port is None else kubelet_port
    return any(_once(target, probe) for _ in range(probe.failures))


def _once(target: int | Path, probe: Probe) -> bool:
    """One probe: a TCP connect, or the kubelet's httpGet (kubernetes pkg/probe/http/http.go: 200-399
    succeeds, TLS unverified, redirects not followed here)."""
    if probe.action == "tcpSocket":
        try:
            if isinstance(target, Path):
                with socket.socket(socket.AF_UNIX) as unix:
                    unix.settimeout(probe.timeout)
                    unix.connect(str(target))
            else:
                socket.create_connection(("127.0.0.1", target), timeout=probe.timeout).close()
        except OSError:
            return False
        return True
    conn: http.client.HTTPConnection
    if isinstance(target, Path):  # an app behind its sidecar (plain HTTP: TLS is the sidecar's business)
        conn, _ = unixhttp.connect(unixhttp.url(target), probe.timeout)
    elif probe.scheme == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", target, timeout=probe.timeout, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", target, timeout=probe.timeout)
    try:
        conn.request("GET", probe.path, headers={"User-Agent": "kube-probe/1.36", **dict(probe.headers)})
        return 200 <= conn.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
