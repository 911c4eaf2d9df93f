"""TCP connections instead of HTTP requests, as Istio's tcp-echo task sends them (``nc``: one line per
connection): each connection sends a line and reads the echo "<prefix> <line>"; the sample app's prefix is
its version (services/currency-converter/app.py, TCP_PORT), so a connection's answer says who served it.

A ``TcpResult`` is a ``TrafficResult`` of connections: ``split()``/``report()`` count connections per
version, ``codes()`` says "echoed" or why a connection failed ("refused", "connection reset", "no echo")."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from urllib.parse import urlsplit

from labkit import unixhttp
from labkit.traffic.load import Resolver, _error
from labkit.traffic.results import Outcome, TrafficResult

ECHOED = "echoed"


class TcpResult(TrafficResult):
    """One outcome per connection: ``version`` the echo's prefix, ``error`` why there was none."""

    def codes(self) -> dict[int | str, int]:
        return dict(Counter(o.error or ECHOED for o in self.outcomes))

    def errors(self) -> dict[int | str, int]:
        return dict(Counter(o.error for o in self.outcomes if o.error))


async def _connection(where: str | tuple[str, int], line: str, timeout: float, start: float) -> Outcome:
    """One connection to ``where``: a Unix socket path (a sidecar's outbound listener) or (host, port)."""
    sent = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            if isinstance(where, str):
                reader, writer = await asyncio.open_unix_connection(where)
            else:
                reader, writer = await asyncio.open_connection(*where)
            try:
                writer.write(f"{line}\n".encode())
                await writer.drain()
                answer = (await reader.readline()).decode(errors="replace").strip()
            finally:
                writer.close()
    except ConnectionRefusedError:
        return Outcome(sent - start, None, None, time.monotonic() - sent, "refused")
    except (TimeoutError, OSError) as exc:
        return Outcome(sent - start, None, None, time.monotonic() - sent, _error(exc))
    prefix, sep, echoed = answer.partition(" ")
    if not sep or echoed != line:  # nothing came back (the proxy closed it), or not our line
        return Outcome(sent - start, None, None, time.monotonic() - sent, "no echo")
    return Outcome(sent - start, None, prefix, time.monotonic() - sent)


async def _run(target: str, n: int, concurrency: int, line: str, timeout: float) -> list[Outcome]:
    sock, plain = unixhttp.split(target)  # the resolver's http+unix:// form names a socket
    parts = urlsplit(plain)
    where: str | tuple[str, int] = (
        sock if sock is not None else (parts.hostname or "127.0.0.1", parts.port or 0)
    )
    start, todo = time.monotonic(), iter(range(n))
    out: list[Outcome] = []

    async def worker() -> None:
        for _ in todo:  # shared iterator: each connection is opened by exactly one worker
            out.append(await _connection(where, line, timeout, start))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    return out


def send_tcp(
    resolver: Resolver,
    url: str,
    n: int,
    *,
    concurrency: int = 8,
    line: str = "hello",
    timeout: float = 5.0,
    source: str = "client",
) -> TcpResult:
    """Open ``n`` connections from ``source`` to ``url`` (``tcp://host:port``), one line each."""
    from labkit.traffic.runner import background  # the one event-loop thread every run shares

    target, _ = resolver(url)
    began = time.monotonic()
    outcomes = background().submit(_run(target, n, concurrency, line, timeout)).result()
    return TcpResult(outcomes, source, url, time.monotonic() - began)
