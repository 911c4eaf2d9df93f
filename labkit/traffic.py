"""Traffic you can watch: an aiohttp load generator that records one ``Outcome`` per request.

Every run happens on one background event loop thread, so ``send()`` works the same in a script and inside
Jupyter's already-running loop, and a ``Stream`` keeps sending while the kernel stays responsive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from labkit.errors import LabError

if TYPE_CHECKING:
    from labkit.stats import SplitReport

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


@dataclass(frozen=True)
class Outcome:
    """What happened to one request: ``status`` None means no HTTP response (``error`` says why)."""

    t: float  # seconds since the run started, when the request was sent (open loop: when it was due)
    status: int | None
    version: str | None
    latency: float  # seconds from ``t`` to the response
    error: str | None = None
    flags: str | None = None

    @property
    def failed(self) -> bool:
        """A request the caller would count against the service: no response, or a 5xx."""
        return self.status is None or self.status >= 500


class TrafficResult:
    """All outcomes of one run, with the summaries a trainee asks for."""

    def __init__(self, outcomes: list[Outcome], source: str = "client", url: str = "", elapsed: float = 0.0):
        self.outcomes, self.source, self.url, self.elapsed = outcomes, source, url, elapsed
        # Filled by labkit.telemetry_split when no answer said its version: requests per destination_version.
        self.telemetry: dict[str, int] | None = None
        self.telemetry_reporter = ""  # which proxies counted them: "source" or "destination"
        self.telemetry_problem = ""  # why there is no telemetry split either

    def __len__(self) -> int:
        return len(self.outcomes)

    @property
    def measured_by(self) -> str:
        """How the split was measured: "responses" (their version), "telemetry" (mesh counters), "none"."""
        if any(o.version is not None for o in self.outcomes):
            return "responses"
        return "telemetry" if self.telemetry else "none"

    def counts(self) -> dict[str, int]:
        """Requests per version: from the answers, else from the mesh telemetry (unversioned left out)."""
        counted = Counter(o.version for o in self.outcomes if o.version is not None)
        return dict(counted) if counted or not self.telemetry else dict(self.telemetry)

    def split(self) -> dict[str, float]:
        """Share of the versioned responses each version answered."""
        counts = self.counts()
        total = sum(counts.values())
        return {v: k / total for v, k in sorted(counts.items())} if total else {}

    def codes(self) -> dict[int | str, int]:
        """Count per HTTP status, or per connection error (``"connection reset"``, ``"refused"``...)."""
        return dict(
            Counter(o.status if o.status is not None else (o.error or "error") for o in self.outcomes)
        )

    def errors(self) -> dict[int | str, int]:
        """Like ``codes()``, only for the failed requests (no response or 5xx)."""
        failed = Counter(
            o.status if o.status is not None else (o.error or "error") for o in self.outcomes if o.failed
        )
        return dict(failed)

    def latency(self, percentiles: tuple[float, ...] = (50, 90, 99)) -> dict[str, dict[float, float]]:
        """Latency percentiles in seconds per version."""
        from labkit import stats  # here: scipy's import would slow every use of the load generator

        return stats.latency_percentiles(self.outcomes, percentiles)

    def report(
        self, weights: Mapping[str, float] | None = None, confidence: float | None = None
    ) -> SplitReport:
        """The observed split with intervals, tested against the configured ``weights`` when given, at the
        lab's one level (``stats.CONFIDENCE``) unless ``confidence`` says otherwise."""
        from labkit import stats  # here: scipy's import would slow every use of the load generator

        level = stats.CONFIDENCE if confidence is None else confidence
        return stats.split_report(self.counts(), weights, confidence=level)

    def verdict(self, weights: Mapping[str, float], confidence: float | None = None) -> str:
        """One line: is the observed split consistent with ``weights``?"""
        return self.report(weights, confidence).verdict()

    def summary(self, weights: Mapping[str, float] | None = None) -> str:
        """Lines for a terminal: rate, split, latency, codes, failures (and a verdict, given ``weights``)."""
        rate = len(self.outcomes) / self.elapsed if self.elapsed else 0.0
        head = f"{len(self.outcomes)} requests from {self.source} to {self.url}"
        lines = [f"{head} in {self.elapsed:.1f} s ({rate:.1f}/s)"]
        counts, split, latency = self.counts(), self.split(), self.latency()
        lines.append("  " + self.measured())
        for version in sorted(counts):
            share = f"  {version}: {counts[version]} ({split[version]:.1%})"
            p = latency.get(version)  # per-version latency only when the answers said their version
            lines.append(
                share + f"  p50 {p[50] * 1000:.1f} ms  p90 {p[90] * 1000:.1f} ms  p99 {p[99] * 1000:.1f} ms"
                if p and self.measured_by == "responses"
                else share
            )
        lines.append(
            "  codes: " + ", ".join(f"{code}: {k}" for code, k in sorted(self.codes().items(), key=str))
        )
        errors = self.errors()
        if errors:
            lines.append(
                f"  failed: {sum(errors.values())} ({sum(errors.values()) / len(self.outcomes):.1%})"
            )
        if weights:
            lines.append("  " + self.verdict(weights))
        return "\n".join(lines)

    def measured(self) -> str:
        """One line saying which way the split was measured."""
        if self.measured_by == "responses":
            return "split measured from the answers (their x-version header or version field)"
        if self.measured_by == "telemetry":
            return (
                f"split measured from the mesh's telemetry: istio_requests_total by destination_version, "
                f"reporter={self.telemetry_reporter} (the answers did not say their version)"
            )
        if all(o.status is None for o in self.outcomes):
            return "no split: no request got an answer"
        return "no split: the answers did not say their version" + (
            f", and {self.telemetry_problem}" if self.telemetry_problem else ""
        )

    def __repr__(self) -> str:
        return f"<TrafficResult {len(self.outcomes)} requests {self.split()}>"


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

    async def go(self) -> None:
        self.start = self.start or time.monotonic()
        try:
            # a keep-alive pool with one connection per worker
            connector = aiohttp.TCPConnector(limit=self.concurrency)
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                await asyncio.gather(*(self._worker(session) for _ in range(self.concurrency)))
        finally:
            self.elapsed = time.monotonic() - self.start
            self.finished.set()

    async def _worker(self, session: aiohttp.ClientSession) -> None:
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
            outcome = await self._one(
                session, self.start + due if self.open_loop and due is not None else None
            )
            if self.sink is None:
                self.outcomes.append(outcome)
            else:
                self.sink(outcome)

    async def _one(self, session: aiohttp.ClientSession, due: float | None = None) -> Outcome:
        target, extra = self.resolver(self.url)
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


class _Background:
    """The one event loop thread every send and stream runs on."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="labkit-traffic", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        if threading.current_thread() is self.thread:
            coro.close()
            raise LabError(
                "send() was called on labkit's traffic thread (e.g. in on_batch); call it from another thread"
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


_background: _Background | None = None
_background_lock = threading.Lock()
_active: set[concurrent.futures.Future[Any]] = set()


def background() -> _Background:
    """The traffic loop thread, started on first use."""
    global _background
    with _background_lock:
        if _background is None:
            _background = _Background()
        return _background


def stop() -> None:
    """Stop every ``send()`` in progress (from another thread); each returns what it gathered so far."""
    for future in list(_active):
        future.cancel()


#: Background work of this process that ``stop_all()`` ends: streams, and what drives one (a rollout).
_running: weakref.WeakSet[Any] = weakref.WeakSet()


def register(task: Any) -> None:
    """Have ``stop_all()`` call ``task.stop()`` (a ``Stream``, a rollout); forgotten when collected."""
    _running.add(task)


def stop_all() -> None:
    """Stop every send, stream and registered rollout of this process (``lab.reset`` starts with this)."""
    stop()
    for task in list(_running):
        task.stop()
        _running.discard(task)


def send(
    resolver: Resolver,
    url: str,
    *,
    n: int | None = None,
    duration: float | None = None,
    qps: float | None = None,
    concurrency: int = 8,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    progress: bool | None = None,
    source: str = "client",
    timeout: float = 5.0,
    open_loop: bool = False,
) -> TrafficResult:
    """Blocking ``run()``: ``n`` requests (100 if neither ``n`` nor ``duration`` is given) from ``source``.

    ``open_loop`` (with ``qps``): each latency counts from the request's scheduled time, so a slow server
    shows its queue; a ``duration`` run then ends on time and requests still due are never sent (the
    achieved rate ``len(result) / result.elapsed`` falls short of ``qps``).

    Ctrl-C (or the Jupyter stop button) stops the run and re-raises; ``traffic.stop()`` from another thread
    stops it and returns the outcomes so far.
    """
    if n is None and duration is None:
        n = 100
    load = _Load(
        resolver, url, n=n, duration=duration, qps=qps, concurrency=concurrency,
        headers=headers, method=method, timeout=timeout, open_loop=open_loop,
    )  # fmt: skip
    if progress is None:
        progress = (n or 0) >= AUTO_PROGRESS_N or (duration or 0) >= AUTO_PROGRESS_SECONDS
    bar = _progress_bar(n, duration, source, url) if progress else None
    future = background().submit(load.go())
    _active.add(future)
    try:
        while not load.finished.wait(0.2):
            if bar is not None:
                bar.update(_done(load, n, duration) - bar.n)
        if not future.cancelled():
            future.result()  # re-raise a bug in the run itself
    except KeyboardInterrupt:
        future.cancel()
        load.finished.wait(5)
        raise
    finally:
        _active.discard(future)
        if bar is not None:
            bar.update(_done(load, n, duration) - bar.n)
            bar.close()
    return load.result(source)


def _progress_bar(n: int | None, duration: float | None, source: str, url: str) -> Any:
    from tqdm.auto import tqdm

    if n is not None:
        return tqdm(total=n, desc=f"{source} -> {url}", unit="req")
    return tqdm(total=round(duration or 0), desc=f"{source} -> {url}", unit="s")


def _done(load: _Load, n: int | None, duration: float | None) -> int:
    if n is not None:
        return len(load.outcomes)
    return min(round(time.monotonic() - load.start), round(duration or 0)) if load.start else 0


class Stream:
    """Background traffic for a live chart: ``on_batch(list[Outcome])`` is called about every ``interval`` s.

    ``on_batch`` runs on a worker thread, one batch at a time and in order; ``t`` counts from ``started``
    (a ``time.monotonic()`` value). ``start``/``stop`` may be called from any thread.
    """

    def __init__(
        self,
        resolver: Resolver,
        url: str,
        *,
        qps: float = 50,
        on_batch: Callable[[list[Outcome]], None],
        interval: float = 0.25,
        concurrency: int = 8,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        timeout: float = 5.0,
    ):
        self.resolver, self.url, self.qps, self.on_batch, self.interval = (
            resolver,
            url,
            qps,
            on_batch,
            interval,
        )
        self.concurrency, self.headers, self.method, self.timeout = concurrency, headers, method, timeout
        self.started = 0.0
        self.error: BaseException | None = None  # the last exception raised by on_batch
        self._future: concurrent.futures.Future[Any] | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._future is not None and not self._future.done()

    def start(self) -> None:
        """Start sending (a no-op when already running)."""
        with self._lock:
            if self.running:
                return
            self._stopped = threading.Event()
            self.started = time.monotonic()
            self._future = background().submit(self._go())
            register(self)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending and deliver the last batch before returning."""
        with self._lock:
            future, self._future = self._future, None
        if future is None:
            return
        future.cancel()
        self._stopped.wait(timeout)

    async def _go(self) -> None:
        pending: list[Outcome] = []
        load = _Load(
            self.resolver, self.url, n=None, duration=None, qps=self.qps, concurrency=self.concurrency,
            headers=self.headers, method=self.method, timeout=self.timeout, sink=pending.append,
        )  # fmt: skip
        load.start = self.started
        sender = asyncio.ensure_future(load.go())
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.interval)
                batch, pending[:] = pending[:], []
                if batch:
                    await loop.run_in_executor(None, self._deliver, batch)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            if pending:
                await loop.run_in_executor(None, self._deliver, list(pending))
            self._stopped.set()

    def _deliver(self, batch: list[Outcome]) -> None:
        try:
            self.on_batch(batch)
        except Exception as exc:  # a broken chart must not stop the traffic
            self.error = exc
