"""The load generator: an aiohttp client that sends a run's requests, one ``Outcome`` per request.

A resolver may answer an ``http+unix://`` URL (labkit.unixhttp): a sidecar's outbound listener on a Unix
socket; each socket gets its own keep-alive pool beside the TCP one."""

from __future__ import annotations

import asyncio
import errno
import json
import threading
import time
from collections.abc import Callable, Mapping

import aiohttp

from labkit import unixhttp
from labkit.errors import LabError
from labkit.traffic.results import Outcome, TrafficResult

#: logical URL -> (URL to connect to, extra headers such as Host); called once per request.
Resolver = Callable[[str], tuple[str, dict[str, str]]]

#: Bodies of Envoy's own replies, mapped to the response flag its access log would show.
ENVOY_LOCAL_REPLIES = {
    "no healthy upstream": "UH",
    # A circuit breaker's overflow: the same words with its reset reason (first: the longer prefix wins)
    "upstream connect error or disconnect/reset before headers. reset reason: overflow": "UO",
    "upstream connect error or disconnect/reset before headers": "UF",
    "upstream request timeout": "UT",
    "fault filter abort": "FI",
    "RBAC: access denied": "RBAC",
}

#: Runs at or above these sizes show a progress bar unless ``progress`` says otherwise.
AUTO_PROGRESS_N, AUTO_PROGRESS_SECONDS = 2000, 5.0


def _error(exc: BaseException) -> str:
    """A short, stable name for a failed request (the trainee compares these with curl's exit codes)."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error  # a reset can arrive before the loop sees the connection complete
        if isinstance(exc, ConnectionRefusedError):
            return "refused"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return "connection reset"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _flags(headers: Mapping[str, str], body: bytes) -> str | None:
    """Envoy response flags: header ``x-envoy-response-flags`` if the proxy adds it, else its local reply."""
    if "x-envoy-response-flags" in headers:
        return headers["x-envoy-response-flags"]
    if headers.get("server", "").endswith("envoy") and len(body) < 200:
        text = body.decode(errors="replace")
        for prefix, flag in ENVOY_LOCAL_REPLIES.items():
            if text.startswith(prefix):
                return flag
    return None


def _version(headers: Mapping[str, str], body: bytes) -> str | None:
    if "x-version" in headers:
        return headers["x-version"]
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("version") if isinstance(data, dict) else None


class _Load:
    """One run's settings and the outcomes gathered so far (read by the caller's thread while it runs)."""

    def __init__(
        self,
        resolver: Resolver,
        url: str,
        *,
        n: int | None,
        duration: float | None,
        qps: float | None,
        concurrency: int,
        headers: Mapping[str, str] | None,
        method: str,
        timeout: float,
        sink: Callable[[Outcome], None] | None = None,
        open_loop: bool = False,
    ):
        if concurrency < 1:
            raise LabError(f"concurrency is {concurrency}; use 1 or more")
        if qps is not None and qps <= 0:
            raise LabError(f"qps is {qps}; use a positive rate, or None to send as fast as possible")
        if open_loop and qps is None:
            raise LabError(
                "open_loop=True needs a rate: latency is measured from each request's scheduled time. "
                "What to do: give qps= as well"
            )
        self.open_loop = open_loop
        self.resolver, self.url, self.n, self.duration, self.qps = resolver, url, n, duration, qps
        self.concurrency, self.method, self.timeout = concurrency, method, timeout
        self.headers = dict(headers or {})
        self.sink = sink
        self.outcomes: list[Outcome] = []  # kept only without a sink: a stream may run for hours
        self.start = 0.0
        self.elapsed = 0.0
        self.finished = threading.Event()
        self._next = 0
        self._sessions: dict[str | None, aiohttp.ClientSession] = {}

    def _session(self, sock: str | None) -> aiohttp.ClientSession:
        """The keep-alive pool (one connection per worker) for TCP (None) or for the Unix socket ``sock``."""
        if sock not in self._sessions:
            connector = (
                aiohttp.UnixConnector(path=sock, limit=self.concurrency)
                if sock is not None
                else aiohttp.TCPConnector(limit=self.concurrency)
            )
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            self._sessions[sock] = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._sessions[sock]

    async def go(self) -> None:
        self.start = self.start or time.monotonic()
        try:
            await asyncio.gather(*(self._worker() for _ in range(self.concurrency)))
        finally:
            for session in self._sessions.values():
                await session.close()
            self._sessions.clear()
            self.elapsed = time.monotonic() - self.start
            self.finished.set()

    async def _worker(self) -> None:
        while True:
            i, self._next = self._next, self._next + 1
            if self.n is not None and i >= self.n:
                return
            now = time.monotonic() - self.start
            due = None
            if self.qps is not None:
                due = i / self.qps  # a fixed schedule: a late request is sent at once, so the mean rate holds
                if self.duration is not None and due >= self.duration:
                    return
                if due > now:
                    await asyncio.sleep(due - now)
            if self.duration is not None and now >= self.duration and (self.qps is None or self.open_loop):
                return  # open loop ends on time: requests still due are a shortfall in the achieved rate
            # Open loop (as wrk2 does) times a request from when it was due, so a stall that delays the next
            # sends counts against them too, instead of hiding the queue (coordinated omission).
            outcome = await self._one(self.start + due if self.open_loop and due is not None else None)
            if self.sink is None:
                self.outcomes.append(outcome)
            else:
                self.sink(outcome)

    async def _one(self, due: float | None = None) -> Outcome:
        target, extra = self.resolver(self.url)
        sock, target = unixhttp.split(target)
        session = self._session(sock)
        headers = {**self.headers, **extra} if extra else self.headers
        sent = time.monotonic()
        if due is not None:
            sent = min(sent, due)
        try:
            async with session.request(self.method, target, headers=headers, allow_redirects=False) as resp:
                body = await resp.read()
                status, version, flags = resp.status, _version(resp.headers, body), _flags(resp.headers, body)
            error = None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            status, version, flags, error = None, None, None, _error(exc)
        done = time.monotonic()
        return Outcome(sent - self.start, status, version, done - sent, error, flags)

    def result(self, source: str) -> TrafficResult:
        return TrafficResult(list(self.outcomes), source, self.url, self.elapsed)


async def run(
    resolver: Resolver,
    url: str,
    *,
    n: int | None = None,
    duration: float | None = None,
    qps: float | None = None,
    concurrency: int = 8,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    timeout: float = 5.0,
    source: str = "client",
    open_loop: bool = False,
) -> TrafficResult:
    """Send ``n`` requests or for ``duration`` s (or until cancelled), at ``qps`` or as fast as possible."""
    load = _Load(
        resolver, url, n=n, duration=duration, qps=qps, concurrency=concurrency,
        headers=headers, method=method, timeout=timeout, open_loop=open_loop,
    )  # fmt: skip
    await load.go()
    return load.result(source)
