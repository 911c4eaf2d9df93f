"""The one background event loop thread every ``send()`` and ``Stream`` runs on, and what ``stop_all()`` ends.

Every run happens on that thread, so ``send()`` works the same in a script and inside Jupyter's running
loop, and a ``Stream`` keeps sending while the kernel stays responsive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from labkit.errors import LabError
from labkit.traffic.load import AUTO_PROGRESS_N, AUTO_PROGRESS_SECONDS, Resolver, _Load
from labkit.traffic.results import Outcome, TrafficResult


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
    from tqdm.auto import tqdm  # imported on first use: keeps `import labkit` fast

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
    (a ``time.monotonic()`` value). ``start``/``stop`` may be called from any thread. As a context manager
    (``with lab.stream(...) as stream:``) it starts on entry and stops on exit, so interrupting the cell
    (Ctrl-C, Jupyter's stop button: a KeyboardInterrupt in the cell) stops its traffic too.
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

    def __enter__(self) -> Stream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
