"""Probes on the local backend, rewritten to the sidecar as Istio's injector does.

On a cluster the kubelet probes a container in plain text; in an injected pod that probe lands on the
sidecar's inbound listener, which refuses it under STRICT mTLS. So Istio's injector (istio/istio
pkg/kube/inject/app_probe.go, ``convertProbe``/``convertAppProber``) rewrites httpGet, tcpSocket and grpc
readiness, liveness and startup probes to an httpGet on pilot-agent's status port 15020
(``/app-health/<container>/readyz``, ``livez``, ``startupz``: pilot/cmd/pilot-agent/status/server.go
``FormatProberURL``) and hands the original probe to pilot-agent in ``ISTIO_KUBE_APP_PROBERS``; pilot-agent
(server.go ``handleAppProbe``; ``handleAppProbeGRPC`` calls grpc.health.v1.Health/Check and answers 200 only
for SERVING) then probes the app itself, past the sidecar. Exec probes are left alone. The pod annotation
``sidecar.istio.io/rewriteAppHTTPProbers: "false"`` turns the rewrite off (the install's default is on).

Here the lab plays both parts: a rewritten probe goes straight to the app (pilot-agent's), an un-rewritten one
in plain text through the sidecar's inbound listener (the kubelet's, refused by real Envoy under STRICT). A
readinessProbe runs whenever the lab reports status or sends, and one that passes the sidecar also whenever
the lab writes config (no periodic prober); a not-ready instance is left out of every Service's endpoints, as
istiod leaves out a pod its EndpointSlice marks not ready. Liveness and startup probes run every
``periodSeconds`` in the pod's kubelet (kubelet.py). Exec probes are ignored locally (no container to exec
in) and named so.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path

from labkit import unixhttp

#: The pod annotation that turns the rewrite off (istio/api annotation ``SidecarRewriteAppHTTPProbers``).
REWRITE_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
#: The probe actions the local backend runs (every one Istio's injector rewrites).
HONOURED = ("httpGet", "tcpSocket", "grpc")
#: The container's probe fields, each with pilot-agent's URL suffix for it (FormatProberURL).
FIELDS = {"readinessProbe": "readyz", "livenessProbe": "livez", "startupProbe": "startupz"}
#: What the kubelet sends as User-Agent (kubernetes pkg/probe/http/request.go; pilot-agent passes it on).
USER_AGENT = "kube-probe/1.36"
#: strconv.ParseBool, which ShouldRewriteAppHTTPProbers uses; anything else keeps the default (rewrite).
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
_GO_BOOLS |= {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


@dataclass(frozen=True)
class Probe:
    """One probe as the kubelet reads it, with api/core/v1 Probe's defaults; ``port`` is None when the app
    listens on no such port."""

    action: str  # httpGet | tcpSocket | grpc
    port: int | None
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    service: str = ""  # grpc.service: the name asked of grpc.health.v1.Health/Check ("" = the server)
    timeout: float = 1.0  # timeoutSeconds
    failures: int = 3  # failureThreshold: failures in a row that make it fail
    period: float = 10.0  # periodSeconds
    delay: float = 0.0  # initialDelaySeconds, from the container's start

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Probe:
        return cls(**{**data, "headers": tuple(tuple(h) for h in data.get("headers") or ())})


def action(probe: dict | None) -> str | None:
    """The kind of a probe: httpGet, tcpSocket, grpc or exec (None when there is none)."""
    if not isinstance(probe, dict):
        return None
    return next((a for a in ("httpGet", "tcpSocket", "grpc", "exec") if a in probe), None)


def honoured(container: dict, field: str = "readinessProbe") -> bool:
    """Whether the local backend runs ``container``'s probe ``field`` (else it is named as ignored)."""
    return action(container.get(field)) in HONOURED


def parse(container: dict, field: str) -> Probe | None:
    """The container's probe ``field`` when the local backend runs it. Its port must be one the container
    declares (by number or name, as DumpAppProbers resolves names; grpc takes a number) or, with none
    declared, is taken as the app's one port; else nothing listens there and the probe fails, as on a
    cluster."""
    probe = container.get(field)
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
        service=str(spec.get("service") or ""),
        timeout=float(probe.get("timeoutSeconds") or 1),
        failures=max(1, int(probe.get("failureThreshold") or 3)),
        period=float(probe.get("periodSeconds") or 10),
        delay=float(probe.get("initialDelaySeconds") or 0),
    )


def readiness(container: dict) -> Probe | None:
    """The container's readinessProbe when the local backend runs it (``parse``)."""
    return parse(container, "readinessProbe")


def grpc_port(container: dict) -> int | None:
    """The port the container's gRPC probes ask (the stand-in then serves grpc.health.v1 there), if any."""
    found = [p for p in (parse(container, f) for f in FIELDS) if p is not None and p.action == "grpc"]
    return next((p.port for p in found if p.port is not None), None)


def rewritten(annotations: dict[str, str]) -> bool:
    """Istio's ShouldRewriteAppHTTPProbers: the pod annotation when it parses as a Go bool, else on."""
    return _GO_BOOLS.get(annotations.get(REWRITE_ANNOTATION, ""), True)


def ready(probe: Probe | None, where: int | Path) -> bool:
    """Whether an instance passes its readiness ``probe`` now (True without one), within
    ``failureThreshold`` attempts in a row, on ``where`` (topology.probe_target)."""
    if probe is None:
        return True
    if probe.port is None:
        return False
    return any(once(where, probe) for _ in range(probe.failures))


def once(where: int | Path, probe: Probe) -> bool:
    """One probe on ``where`` (a 127.0.0.1 port, or a Unix socket): a TCP connect, the kubelet's httpGet
    (kubernetes pkg/probe/http/http.go: 200-399 succeeds, TLS unverified, redirects not followed here) or
    its grpc health check (pkg/probe/grpc/grpc.go: SERVING succeeds, anything else fails)."""
    if probe.port is None:
        return False
    if probe.action == "tcpSocket":
        try:
            if isinstance(where, Path):
                with socket.socket(socket.AF_UNIX) as unix:
                    unix.settimeout(probe.timeout)
                    unix.connect(str(where))
            else:
                socket.create_connection(("127.0.0.1", where), timeout=probe.timeout).close()
        except OSError:
            return False
        return True
    if probe.action == "grpc":
        return _grpc(where, probe)
    conn: http.client.HTTPConnection
    if isinstance(where, Path):  # an app behind its sidecar (plain HTTP: TLS is the sidecar's business)
        conn, _ = unixhttp.connect(unixhttp.url(where), probe.timeout)
    elif probe.scheme == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", where, timeout=probe.timeout, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", where, timeout=probe.timeout)
    try:
        conn.request("GET", probe.path, headers={"User-Agent": USER_AGENT, **dict(probe.headers)})
        return 200 <= conn.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _grpc(where: int | Path, probe: Probe) -> bool:
    """grpc.health.v1.Health/Check of ``probe.service`` in plain text, within ``timeoutSeconds``: SERVING
    passes; NOT_SERVING, NOT_FOUND (a service the server does not know), no server or no answer fail."""
    # imported here: loading grpc takes a while and only gRPC probes need it
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = f"unix:{where}" if isinstance(where, Path) else f"127.0.0.1:{where}"
    options = [("grpc.primary_user_agent", USER_AGENT)]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=probe.service), timeout=probe.timeout)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING
