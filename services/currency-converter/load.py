"""A tiny load tool that the kind backend runs inside the client pod (`kubectl exec deploy/client -- ...`).

Requests must leave from a pod with a sidecar for the VirtualService weights to apply, so the lab's traffic
starts here rather than on the laptop. Prints one JSON line per request, as it completes:

    {"t": <unix start>, "status": 200 | null, "version": "v2" | null, "latency": <s>, "error": null | "...",
     "flags": null | "UH"}

`version` is the answer's `x-version` header; `flags` Envoy's response flags (as `labkit.traffic` reports
them). Timeouts and connection errors are recorded, never raised, so one refused connection (e.g. STRICT mTLS
against a plaintext caller) does not lose the rest of the run; `error` uses labkit's short names ("refused",
"connection reset", "timeout").

    python load.py --url 'http://currency-converter:8080/convert?from=NOK&to=EUR&amount=100' --n 200 \
        --concurrency 8 --qps 50 --header 'x-canary: true'

With `--open-loop` (and `--qps`) it works as labkit.traffic's open loop (wrk2's way): request i is due at
i/qps, its `t` and latency count from then, so a stall that delays later sends counts against them too
instead of hiding the queue (coordinated omission); `--duration` then ends the run on time, and requests
still due are never sent (the achieved rate falls short of the asked one).
A `tcp://host:port` URL opens one TCP connection per "request" instead, sends the line "hello" and reads
the echo "<prefix> hello" (Istio's tcp-echo task); `version` is the prefix, `status` null, and `error`
"no echo" when the connection closed without one (as `labkit.traffic.tcp` reports it).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

# Copies of labkit.traffic.ENVOY_LOCAL_REPLIES, _flags and _error: this file runs in the client pod, which has
# no labkit, and the kind backend must report what the local one does. Keep them in step.
ENVOY_LOCAL_REPLIES = {
    "no healthy upstream": "UH",
    # A circuit breaker's overflow: the same words with its reset reason (first: the longer prefix wins)
    "upstream connect error or disconnect/reset before headers. reset reason: overflow": "UO",
    "upstream connect error or disconnect/reset before headers": "UF",
    "upstream request timeout": "UT",
    "fault filter abort": "FI",
    "RBAC: access denied": "RBAC",
}


def flags(headers: Mapping[str, str], body: bytes) -> str | None:
    """Envoy response flags: header `x-envoy-response-flags` if the proxy adds it, else its local reply."""
    if "x-envoy-response-flags" in headers:
        return headers["x-envoy-response-flags"]
    if headers.get("server", "").endswith("envoy") and len(body) < 200:
        text = body.decode(errors="replace")
        for prefix, flag in ENVOY_LOCAL_REPLIES.items():
            if text.startswith(prefix):
                return flag
    return None


def error_name(exc: BaseException) -> str:
    """A short, stable name for a failed request ("refused", "connection reset", "timeout")."""
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


def header(text: str) -> tuple[str, str]:
    """Parse 'Name: value' (argparse type)."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header {text!r} is not 'Name: value', e.g. 'x-canary: true'")
    return name.strip(), value.strip()


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: a number of `kind` greater than 0."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
        return value

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Send N HTTP GETs and print one JSON line per request.")
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=positive(int), required=True, help="number of requests")
    p.add_argument("--concurrency", type=positive(int), default=1, help="requests in flight at once")
    p.add_argument(
        "--qps", type=positive(float), default=None, help="overall rate limit (default: as fast as possible)"
    )
    p.add_argument("--header", type=header, action="append", default=[], help="'Name: value', repeatable")
    p.add_argument("--timeout", type=positive(float), default=5.0, help="seconds per request")
    p.add_argument("--open-loop", action="store_true", help="time each request from when it was due")
    p.add_argument("--duration", type=positive(float), default=None, help="with --open-loop: stop on time")
    args = p.parse_args(argv)
    if args.open_loop and not args.qps:
        p.error("--open-loop needs --qps: latency is measured from each request's scheduled time")
    return args


async def one(session: aiohttp.ClientSession, url: str, late: float = 0.0) -> dict[str, Any]:
    """One GET; ``late`` seconds it was sent after it was due (open loop) count in its t and latency."""
    start, t0 = time.time() - late, time.perf_counter() - late
    try:
        async with session.get(url, allow_redirects=False) as response:
            body = await response.read()
            status, version, error = response.status, response.headers.get("x-version"), None
            flag = flags(response.headers, body)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        status, version, error, flag = None, None, error_name(exc), None
    return {
        "t": start,
        "status": status,
        "version": version,
        "latency": time.perf_counter() - t0,
        "error": error,
        "flags": flag,
    }


async def one_tcp(url: str, timeout: float, line: str = "hello") -> dict[str, Any]:
    """One TCP connection: send ``line``, read the echo; the same fields as an HTTP request's line."""
    parts = urlsplit(url)
    start, t0 = time.time(), time.perf_counter()
    version, error = None, None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            try:
                writer.write(f"{line}\n".encode())
                await writer.drain()
                answer = (await reader.readline()).decode(errors="replace").strip()
            finally:
                writer.close()
        prefix, sep, echoed = answer.partition(" ")
        version, error = (prefix, None) if sep and echoed == line else (None, "no echo")
    except ConnectionRefusedError:
        error = "refused"
    except (TimeoutError, OSError) as exc:
        error = error_name(exc)
    return {"t": start, "status": None, "version": version, "latency": time.perf_counter() - t0,
            "error": error, "flags": None}  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    """Spread the n requests over `concurrency` workers; with --qps, request i starts at i/qps or later."""
    indices = iter(range(args.n))
    began = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(timeout=timeout, headers=dict(args.header)) as session:

        async def worker() -> None:
            for i in indices:  # shared iterator: each index is taken by exactly one worker
                late = 0.0
                if args.qps:
                    due = began + i / args.qps
                    if args.open_loop and args.duration and time.monotonic() - began >= args.duration:
                        return  # open loop ends on time: what is still due is a shortfall
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    late = max(0.0, time.monotonic() - due) if args.open_loop else 0.0
                if args.url.startswith("tcp://"):
                    outcome = await one_tcp(args.url, args.timeout)
                else:
                    outcome = await one(session, args.url, late)
                print(json.dumps(outcome), flush=True)

        await asyncio.gather(*(worker() for _ in range(min(args.concurrency, args.n))))


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
