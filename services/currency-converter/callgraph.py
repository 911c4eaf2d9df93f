"""Call graphs for the sample app: the services a workload calls for each request it receives.

A Deployment says it in env (the same on both backends): CALLS (URLs, comma-separated), CALLS_MODE
(sequence | parallel), CALL_TIMEOUT (seconds, per call), ON_CALL_FAILURE (degrade, or the status to answer)
and FORWARD_HEADERS (which incoming headers each call carries; Istio's list by default). Each call's answer is
reported in the caller's answer, nested, so the whole chain (who called whom, each version, each status) comes
back to whoever sent the first request.

Calls leave through the workload's own sidecar. On kind, iptables makes that transparent: the app calls the
URL. The local backend has no iptables, so it hands the app MESHLAB_OUTBOUND (JSON): ``{"via": {"<port>":
"<socket>"}}``, the Unix socket of the sidecar's outbound listener for each Service port (the Host header
names the Service, as labkit/local/resolve.py sends), or, without a sidecar, ``{"endpoints": {"<host>:<port>":
[<port>, ...]}}``, what kube-proxy would pick from.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import aiohttp

#: The headers an app must copy from the request it serves onto its own calls for tracing and header-based
#: routing to work (istio.io "Distributed tracing: trace context propagation"; Bookinfo's productpage
#: forwards the same, samples/bookinfo/src/productpage/productpage.py getForwardHeaders): the request id,
#: the B3 and W3C trace context, Bookinfo's `end-user`, and the user's cookies and credentials.
FORWARD_HEADERS = (
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
)
#: A port nothing listens on: a sidecar without a listener for a call's port refuses it (as resolve.py does).
CLOSED_PORT = 1
MAX_TIMEOUT = 60.0


@dataclass(frozen=True)
class Outbound:
    """Where a call connects on the local backend (see the module docstring); empty: call the URL."""

    via: dict[int, str] = field(default_factory=dict)
    endpoints: dict[str, list[int]] = field(default_factory=dict)

    def target(self, url: str) -> tuple[str, dict[str, str], str | None] | None:
        """The URL to connect to, the Host header that keeps the logical name and the Unix socket to connect
        through (None: TCP); None: no such Service."""
        parts = urlsplit(url)
        port = parts.port or 80
        host = {"Host": parts.netloc}
        if self.via:
            if port in self.via:
                return urlunsplit(("http", "localhost", parts.path, parts.query, "")), host, self.via[port]
            local = CLOSED_PORT
        elif self.endpoints:
            choices = self.endpoints.get(f"{parts.hostname}:{port}")
            if choices is None:
                return None
            local = random.choice(choices or [CLOSED_PORT])
        else:
            return url, {}, None
        return urlunsplit(("http", f"127.0.0.1:{local}", parts.path, parts.query, "")), host, None


@dataclass(frozen=True)
class CallPlan:
    urls: tuple[str, ...]
    parallel: bool
    timeout: float
    failure_status: int | None  # None: degrade (answer 200, the failed call marked); else answer this status
    forward: tuple[str, ...]
    outbound: Outbound


def plan_from_env(env: dict[str, str]) -> CallPlan | None:
    """The calls this workload makes, or None without CALLS; exits naming the variable when one is invalid."""
    urls = tuple(u.strip() for u in env.get("CALLS", "").split(",") if u.strip())
    if not urls:
        return None
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            _invalid("CALLS", url, "list http:// URLs, comma-separated, e.g. http://reviews:9080/reviews")
    mode = env.get("CALLS_MODE", "sequence")
    if mode not in ("sequence", "parallel"):
        _invalid("CALLS_MODE", mode, "set 'sequence' or 'parallel'")
    raw_timeout = env.get("CALL_TIMEOUT", "3")
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = math.nan
    if not 0 < timeout <= MAX_TIMEOUT:
        _invalid("CALL_TIMEOUT", raw_timeout, f"set seconds above 0, at most {MAX_TIMEOUT:g}")
    failure = env.get("ON_CALL_FAILURE", "degrade")
    if failure != "degrade" and not (failure.isdigit() and 500 <= int(failure) <= 599):
        _invalid("ON_CALL_FAILURE", failure, "set 'degrade' or a 5xx status, e.g. 503")
    forward = env.get("FORWARD_HEADERS")
    names = [h.strip().lower() for h in forward.split(",")] if forward is not None else FORWARD_HEADERS
    return CallPlan(
        urls=urls,
        parallel=mode == "parallel",
        timeout=timeout,
        failure_status=None if failure == "degrade" else int(failure),
        forward=tuple(h for h in names if h),
        outbound=_outbound(env.get("MESHLAB_OUTBOUND")),
    )


def _outbound(raw: str | None) -> Outbound:
    try:
        data = json.loads(raw) if raw else {}
        return Outbound(
            via={int(k): str(v) for k, v in (data.get("via") or {}).items()},
            endpoints={str(k): [int(p) for p in v] for k, v in (data.get("endpoints") or {}).items()},
        )
    except (ValueError, TypeError, AttributeError):
        _invalid("MESHLAB_OUTBOUND", raw or "", "the lab sets it; leave it")


def _invalid(name: str, value: str, fix: str) -> NoReturn:
    sys.exit(f"currency-converter: {name}={value!r} is invalid; {fix}")


class Sessions:
    """The app's client pools: one over TCP, one per Unix socket it calls through (a sidecar's listener)."""

    def __init__(self) -> None:
        self._by_socket: dict[str | None, aiohttp.ClientSession] = {}

    def get(self, socket: str | None) -> aiohttp.ClientSession:
        if socket not in self._by_socket:
            connector = aiohttp.UnixConnector(path=socket) if socket else aiohttp.TCPConnector()
            self._by_socket[socket] = aiohttp.ClientSession(connector=connector)
        return self._by_socket[socket]

    async def close(self) -> None:
        for session in self._by_socket.values():
            await session.close()


async def call_all(plan: CallPlan, session: Sessions, incoming: dict[str, str]) -> tuple[list[dict], bool]:
    """Make every call of ``plan`` for one incoming request; (each call's report, whether any failed)."""
    headers = {k: v for k, v in incoming.items() if k.lower() in plan.forward}
    if plan.parallel:
        reports = list(await asyncio.gather(*(_call(plan, session, u, headers) for u in plan.urls)))
    else:
        reports = [await _call(plan, session, url, headers) for url in plan.urls]
    return reports, any(_failed(r) for r in reports)


def _failed(report: dict) -> bool:
    """As Bookinfo's pages treat it: no answer, or an answer that is not a success."""
    status = report.get("status")
    return status is None or status >= 400


async def _call(plan: CallPlan, sessions: Sessions, url: str, headers: dict[str, str]) -> dict:
    """One call: its URL, status and time, and who answered (the callee's own report, its calls included)."""
    started = time.monotonic()
    report: dict = {"url": url}
    resolved = plan.outbound.target(url)
    if resolved is None:
        return {**report, "status": None, "error": "no such Service (name resolution fails)", "ms": 0.0}
    target, host, socket = resolved
    try:
        timeout = aiohttp.ClientTimeout(total=plan.timeout)
        session = sessions.get(socket)
        async with session.get(target, headers={**headers, **host}, timeout=timeout) as response:
            raw = await response.read()
            report["status"] = response.status
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            if isinstance(body, dict):
                for key in ("namespace", "workload", "version", "pod", "calls"):
                    if key in body:
                        report[key] = body[key]
            if response.headers.get("x-version"):
                report["version"] = response.headers["x-version"]
    except TimeoutError:
        report.update(status=None, error=f"timed out after {plan.timeout:g} s (CALL_TIMEOUT)")
    except aiohttp.ClientError as e:
        report.update(status=None, error=f"no answer: {e}")
    report["ms"] = round((time.monotonic() - started) * 1000, 1)
    return report
