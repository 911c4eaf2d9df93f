"""currency-converter: the lab's sample service, one process per pod (kind) or per workload (local backend).

It serves any Service name: beside the currency API, the small httpbin-like set people test routing with
(`/` says who answered, `/headers`, `/status/{code}`, `/delay/{seconds}`). Every answer carries the version
that produced it (body and `x-version` header), so a client can measure a canary split from responses alone;
REPORT_VERSION=false hides it, as a user's own image would, and the lab then measures from telemetry.
FAIL_RATE and DELAY_MS make /convert misbehave on purpose for the resilience lessons; MODE=rates turns it into
the stand-in external API `fx-rates` for the egress lesson; MODE=echo into a stand-in for any other image, as
Istio's echo test app answers (pkg/test/echo in istio/istio): every path 200 with who answered and what it
received. CALLS makes each request call other services and report the chain (callgraph.py). TCP_PORT opens a
TCP echo port beside the HTTP one, as Istio's tcp-echo sample (samples/tcp-echo/src/main.go): each line a
connection sends comes back as "<prefix> <line>", the prefix being TCP_PREFIX or the version (TCP_SOCKET: on
that Unix socket instead, behind a sidecar). GRPC_HEALTH_PORT serves the gRPC health protocol
(grpc.health.v1.Health, what a Kubernetes grpc probe asks) on that port (GRPC_HEALTH_SOCKET: on that Unix
socket, as the local backend sets it for a Deployment's gRPC probe): GRPC_HEALTH (SERVING or NOT_SERVING) is
what it answers for the server ("") and each name of GRPC_SERVICES (comma-separated); other names answer
NOT_FOUND, as grpc's own health service does.

Identity, as a pod learns it from the kubelet: MESHLAB_POD (the local backend's stand-in for a downward-API
volume: JSON {"name", "namespace", "labels", "serviceAccount"}), or the downward-API env POD_NAME,
POD_NAMESPACE and POD_VERSION (fieldRef metadata.labels['version']) on kind. VERSION, when set, wins over the
label. Other settings: PORT (8080), HOST (0.0.0.0), SOCKET (a Unix socket path to listen on instead of HOST
and PORT: the local backend's app behind a sidecar, reachable only through it), FAIL_RATE (0..1, share of
/convert, or in echo mode of the echo answers, answered 500), DELAY_MS (added to every /convert), MODE
(converter | rates | echo), CALLS and the rest of callgraph.py; TLS_CERT, TLS_KEY (and TLS_CLIENT_CA) serve
HTTPS (tls_from_env).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import random
import re
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import callgraph  # beside this file: `python app.py` puts its folder on sys.path
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

#: Units of each currency per 1 EUR. Fixed, so a converted amount is the same on every version and every run.
RATES: dict[str, float] = {"EUR": 1.0, "NOK": 11.70, "USD": 1.08, "GBP": 0.85, "SEK": 11.45, "DKK": 7.46}

#: The app's clients for CALLS: a pool of connections to its sidecar (per outbound socket) for all requests.
SESSION = web.AppKey("session", callgraph.Sessions)
#: MODE: the currency API, the fx-rates stand-in, or the stand-in for any other image (echo).
MODES = ("converter", "rates", "echo")

#: What GRPC_HEALTH may say (grpc.health.v1 HealthCheckResponse.ServingStatus).
GRPC_HEALTH = ("SERVING", "NOT_SERVING")

#: The longest /delay/{seconds} answers; above it a 400 (a lesson's timeout is seconds, not minutes).
MAX_DELAY_SECONDS = 30

#: A Deployment's pod is named <deployment>-<pod-template-hash>-<suffix>: the hash is SafeEncodeString'd
#: (up to 10 characters, kubernetes pkg/controller/controller_utils.go ComputeHash), the suffix 5 of the same
#: alphabet (apiserver pkg/storage/names/generate.go). Istio's workload name strips both the same way.
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
DEPLOYMENT_POD = re.compile(rf"^(?P<workload>.+)-{_SAFE}{{1,10}}-{_SAFE}{{5}}$")
#: The local backend names its pods <deployment>-<index> (labkit/local/topology.py, Instance.name).
LOCAL_POD = re.compile(r"^(?P<workload>.+)-\d+$")


@dataclass(frozen=True)
class Identity:
    """Who answers: what `/` reports, and the version every answer carries."""

    namespace: str
    workload: str
    version: str | None  # None: nothing says it, so no answer claims one (the lab measures from telemetry)
    pod: str
    service_account: str


def identity_from_env(env: dict[str, str]) -> Identity:
    """The pod's identity as the kubelet gives it (MESHLAB_POD locally, downward-API env on kind)."""
    raw = env.get("MESHLAB_POD")
    try:
        pod = json.loads(raw) if raw else {}
    except ValueError:
        pod = None
    if not isinstance(pod, dict):
        sys.exit(f"currency-converter: MESHLAB_POD={raw!r} is not a JSON object; the lab sets it, leave it")
    labels = pod.get("labels") or {}
    name = env.get("POD_NAME") or pod.get("name") or socket.gethostname()
    match = DEPLOYMENT_POD.match(name) or (LOCAL_POD.match(name) if pod else None)
    return Identity(
        namespace=env.get("POD_NAMESPACE") or pod.get("namespace") or "unknown",
        workload=match["workload"] if match else name,
        version=env.get("VERSION") or labels.get("version") or env.get("POD_VERSION"),
        pod=name,
        service_account=pod.get("serviceAccount") or "unknown",
    )


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    identity: Identity
    report_version: bool
    fail_rate: float
    delay_ms: float
    mode: str
    calls: callgraph.CallPlan | None = None
    tls: tuple[str, str, str] | None = None  # (certificate, key, client CA or "") files: serve HTTPS
    socket: str | None = None  # SOCKET: listen on this Unix socket instead of host:port
    tcp_port: int | None = None  # TCP_PORT: the TCP echo port (None: none)
    tcp_socket: str | None = None  # TCP_SOCKET: the TCP echo on this Unix socket instead
    tcp_prefix: str = ""  # what every echoed line starts with
    grpc_port: int | None = None  # GRPC_HEALTH_PORT: grpc.health.v1 on this port (None: none)
    grpc_socket: str | None = None  # GRPC_HEALTH_SOCKET: on this Unix socket instead
    grpc_health: str = "SERVING"  # GRPC_HEALTH: what it answers
    grpc_services: tuple[str, ...] = ()  # GRPC_SERVICES: the names it knows besides the server's ""

    @property
    def version(self) -> str | None:
        """The version every answer carries; None (unknown, or REPORT_VERSION=false): no answer claims one."""
        return self.identity.version if self.report_version else None


def settings_from_env(env: dict[str, str]) -> Settings:
    """Read the settings, exiting with a message naming the variable when one is invalid."""

    def number(name: str, default: str, low: float, high: float) -> float:
        raw = env.get(name, default)
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not low <= value <= high:
            sys.exit(f"currency-converter: {name}={raw!r} is invalid; set a number from {low:g} to {high:g}")
        return value

    mode = env.get("MODE", "converter")
    if mode not in MODES:
        sys.exit(f"currency-converter: MODE={mode!r} is invalid; set MODE to one of {', '.join(MODES)}")
    report = env.get("REPORT_VERSION", "true").lower()
    if report not in ("true", "false"):
        sys.exit(f"currency-converter: REPORT_VERSION={report!r} is invalid; set it to 'true' or 'false'")
    identity = identity_from_env(env)
    health = env.get("GRPC_HEALTH", "SERVING")
    if health not in GRPC_HEALTH:
        sys.exit(f"currency-converter: GRPC_HEALTH={health!r} is invalid; set it to SERVING or NOT_SERVING")
    return Settings(
        host=env.get("HOST", "0.0.0.0"),
        port=int(number("PORT", "8080", 0, 65535)),
        identity=identity,
        report_version=report == "true",
        fail_rate=number("FAIL_RATE", "0", 0, 1),
        delay_ms=number("DELAY_MS", "0", 0, 600_000),
        mode=mode,
        calls=callgraph.plan_from_env(env),
        tls=tls_from_env(env),
        socket=env.get("SOCKET") or None,
        tcp_port=int(number("TCP_PORT", "0", 1, 65535)) if env.get("TCP_PORT") else None,
        tcp_socket=env.get("TCP_SOCKET") or None,
        tcp_prefix=env.get("TCP_PREFIX") or identity.version or "hello",
        grpc_port=int(number("GRPC_HEALTH_PORT", "0", 1, 65535)) if env.get("GRPC_HEALTH_PORT") else None,
        grpc_socket=env.get("GRPC_HEALTH_SOCKET") or None,
        grpc_health=health,
        grpc_services=tuple(n.strip() for n in env.get("GRPC_SERVICES", "").split(",") if n.strip()),
    )


def tls_from_env(env: Mapping[str, str]) -> tuple[str, str, str] | None:
    """TLS_CERT and TLS_KEY (PEM files; relative paths from this folder, so the image and the local backend
    find the same files) make the app serve HTTPS, as the egress lesson's external stand-in does;
    TLS_CLIENT_CA also requires a client certificate signed by that CA (mutual TLS)."""
    if not env.get("TLS_CERT"):
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    files = [
        os.path.join(here, env.get(k, "")) if env.get(k) else ""
        for k in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA")
    ]
    for name, path in zip(("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA"), files, strict=True):
        if (path or name != "TLS_CLIENT_CA") and not os.path.isfile(path):
            sys.exit(f"currency-converter: {name}={env.get(name)!r} is not a file; set it to a PEM file")
    return files[0], files[1], files[2]


def ssl_context(tls: tuple[str, str, str] | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls[0], tls[1])
    if tls[2]:
        context.load_verify_locations(tls[2])
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def joined(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers as a flat JSON object: repeated ones joined with ", ", as HTTP allows."""
    seen: dict[str, str] = {}
    for name, value in headers.items():
        seen[name] = f"{seen[name]}, {value}" if name in seen else value
    return seen


def bad_request(parameter: str, problem: str) -> web.Response:
    return web.json_response(
        {"error": f"parameter '{parameter}' {problem}", "parameter": parameter}, status=400
    )


def make_app(settings: Settings) -> web.Application:
    """The aiohttp application: the currency API (or /rates), /healthz and the httpbin-like routing set."""
    me = settings.identity
    shown = settings.version
    version = {"version": shown} if shown else {}
    who = {**version, "instance": me.pod}  # the lesson's currency answers, unchanged since the first lesson
    identity = {"namespace": me.namespace, "workload": me.workload, **version, "pod": me.pod}
    currencies = ", ".join(RATES)

    async def convert(request: web.Request) -> web.Response:
        query = request.query
        for name in ("from", "to"):
            if not query.get(name):
                return bad_request(name, f"is missing; add the query parameter {name}=<one of {currencies}>")
            if query[name].upper() not in RATES:
                return bad_request(name, f"has unknown currency {query[name]!r}; use one of {currencies}")
        raw_amount = query.get("amount")
        if not raw_amount:
            return bad_request("amount", "is missing; add the query parameter amount=<a number, e.g. 100>")
        try:
            amount = float(raw_amount)
        except ValueError:
            amount = math.nan
        if not (math.isfinite(amount) and amount >= 0):
            return bad_request("amount", f"is {raw_amount!r}; use a number of 0 or more, e.g. 100")

        if settings.delay_ms:
            await asyncio.sleep(settings.delay_ms / 1000)
        if random.random() < settings.fail_rate:
            error = f"injected failure (FAIL_RATE={settings.fail_rate:g})"
            return web.json_response({"error": error, **who}, status=500)

        source, target = query["from"].upper(), query["to"].upper()
        rate = RATES[target] / RATES[source]
        body = {"from": source, "to": target, "amount": amount, "rate": round(rate, 6)}
        return web.json_response({**body, "result": round(amount * rate, 2), **who})

    async def rates(request: web.Request) -> web.Response:
        return web.json_response({"base": "EUR", "rates": RATES, **who})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **who})

    async def answer(request: web.Request, body: dict) -> web.Response:
        """Who answered and, with CALLS, each call's report: a failed call degrades it or makes it a 5xx."""
        plan, status = settings.calls, 200
        if plan is not None:
            reports, failed = await callgraph.call_all(plan, request.app[SESSION], dict(request.headers))
            body = {**body, "calls": reports}
            if failed and plan.failure_status is not None:
                status = plan.failure_status
                body["error"] = f"a call failed (ON_CALL_FAILURE={status})"
            elif failed:
                body["degraded"] = True
        return web.json_response(body, status=status)

    async def whoami(request: web.Request) -> web.Response:
        return await answer(request, identity)

    async def echo(request: web.Request) -> web.Response:
        if random.random() < settings.fail_rate:  # before any call: a failing hop calls nothing
            error = f"injected failure (FAIL_RATE={settings.fail_rate:g})"
            return web.json_response({"error": error, **identity}, status=500)
        # What Istio's echo app reports of a request (its Host, URL, Method, Proto and RequestHeader fields).
        version = request.version
        received = {
            "host": request.host,
            "method": request.method,
            "path": request.path_qs,
            "proto": f"HTTP/{version.major}.{version.minor}",
            "headers": joined(request.headers),
        }
        return await answer(request, {**identity, **received})

    async def headers(request: web.Request) -> web.Response:
        return web.json_response({"headers": joined(request.headers), **who, **identity})

    async def status(request: web.Request) -> web.StreamResponse:
        raw = request.match_info["code"]
        if not (raw.isdigit() and 200 <= int(raw) <= 599):
            return bad_request("code", f"is {raw!r}; use an HTTP status from 200 to 599, e.g. /status/503")
        code = int(raw)
        if code in (204, 304):  # HTTP forbids a body on these
            return web.Response(status=code)
        return web.json_response({"status": code, **identity}, status=code)

    async def delay(request: web.Request) -> web.Response:
        raw = request.match_info["seconds"]
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not 0 <= seconds <= MAX_DELAY_SECONDS:
            return bad_request(
                "seconds", f"is {raw!r}; use a number from 0 to {MAX_DELAY_SECONDS}, e.g. /delay/2.5"
            )
        await asyncio.sleep(seconds)
        return web.json_response({"delay": seconds, **identity})

    async def add_version_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-version"] = shown or ""  # on every answer, errors and 404s included

    async def client_session(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = sessions = callgraph.Sessions()
        try:
            yield
        finally:
            await sessions.close()

    app = web.Application()
    if settings.tcp_port is not None or settings.tcp_socket is not None:
        app.cleanup_ctx.append(tcp_context(settings))
    if settings.calls is not None:
        app.cleanup_ctx.append(client_session)
    if settings.grpc_port is not None or settings.grpc_socket is not None:
        app.cleanup_ctx.append(grpc_health_context(settings))
    if shown:
        app.on_response_prepare.append(add_version_header)
    app.router.add_get("/", echo if settings.mode == "echo" else whoami)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/headers", headers)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/delay/{seconds}", delay)
    if settings.mode == "rates":
        app.router.add_get("/rates", rates)
    elif settings.mode == "converter":
        app.router.add_get("/convert", convert)
    else:  # echo: every other path, any method, answers who answered (Istio's echo app)
        app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def tcp_echo(prefix: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One TCP connection: answer every line with "<prefix> <line>" until the client closes (tcp-echo)."""
    try:
        while line := await reader.readline():
            writer.write(f"{prefix} ".encode() + line)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def tcp_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """The TCP echo server, started and stopped with the HTTP app."""

    async def serve(app: web.Application) -> AsyncIterator[None]:
        handler = functools.partial(tcp_echo, settings.tcp_prefix)
        if settings.tcp_socket is not None:  # behind a sidecar, as the HTTP app (SOCKET)
            server = await asyncio.start_unix_server(handler, settings.tcp_socket)
            where = settings.tcp_socket
        else:
            server = await asyncio.start_server(handler, settings.host, settings.tcp_port)
            where = f"{settings.host}:{settings.tcp_port}"
        print(f"tcp echo on {where} prefix {settings.tcp_prefix!r}", flush=True)
        yield
        server.close()

    return serve


def grpc_health_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """grpc's own health service (grpcio-health-checking) beside the HTTP app, in the same event loop."""

    async def serve(app: web.Application) -> AsyncIterator[None]:
        import grpc  # imported here: only an app with a gRPC probe loads grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        servicer = health.aio.HealthServicer()
        status = health_pb2.HealthCheckResponse.ServingStatus.Value(settings.grpc_health)
        for name in ("", *settings.grpc_services):
            await servicer.set(name, status)
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        host = f"{settings.host}:{settings.grpc_port}"
        where = f"unix:{settings.grpc_socket}" if settings.grpc_socket else host
        server.add_insecure_port(where)
        await server.start()
        print(f"grpc health on {where}: {settings.grpc_health} {list(settings.grpc_services)}", flush=True)
        yield
        await server.stop(grace=None)

    return serve


class LineLogger(AbstractAccessLogger):
    """One line per request on stdout, where `kubectl logs` and the local backend's log files read it."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        print(
            f"{request.method} {request.path_qs} {response.status} {time * 1000:.1f}ms "
            f"host={request.host} version={response.headers.get('x-version', '-')}",
            flush=True,
        )


def main() -> None:
    settings = settings_from_env(dict(os.environ))
    me = settings.identity
    print(
        f"currency-converter {me.namespace}/{me.workload} {settings.version or '(no version)'} pod {me.pod} "
        f"({settings.mode}) "
        f"on {settings.socket or f'{settings.host}:{settings.port}'} "
        f"FAIL_RATE={settings.fail_rate:g} DELAY_MS={settings.delay_ms:g}",
        flush=True,
    )
    # run_app stops cleanly on SIGTERM and SIGINT; a short shutdown timeout keeps `kubectl delete` and
    # `lab.down()` quick when a delayed request is still in flight.
    where = {"path": settings.socket} if settings.socket else {"host": settings.host, "port": settings.port}
    web.run_app(
        make_app(settings),
        **where,
        ssl_context=ssl_context(settings.tls),
        print=None,
        access_log_class=LineLogger,
        shutdown_timeout=2.0,
    )


if __name__ == "__main__":
    main()
