"""currency-converter: the lab's sample service, one process per pod (kind) or per workload (local backend).

Every answer carries the version that produced it (body and `x-version` header), so a client can measure a
canary split from responses alone. FAIL_RATE and DELAY_MS make it misbehave on purpose for the resilience
lessons; MODE=rates turns it into the stand-in external API `fx-rates` for the egress lesson.

Environment: PORT (8080), HOST (0.0.0.0), VERSION (v1), POD_NAME (the host name), FAIL_RATE (0..1, share of
/convert answered 500), DELAY_MS (added to every /convert), MODE (converter | rates).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import socket
import sys
from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

#: Units of each currency per 1 EUR. Fixed, so a converted amount is the same on every version and every run.
RATES: dict[str, float] = {"EUR": 1.0, "NOK": 11.70, "USD": 1.08, "GBP": 0.85, "SEK": 11.45, "DKK": 7.46}


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    version: str
    instance: str
    fail_rate: float
    delay_ms: float
    mode: str


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
    if mode not in ("converter", "rates"):
        sys.exit(f"currency-converter: MODE={mode!r} is invalid; set MODE to 'converter' or 'rates'")
    return Settings(
        host=env.get("HOST", "0.0.0.0"),
        port=int(number("PORT", "8080", 0, 65535)),
        version=env.get("VERSION", "v1"),
        instance=env.get("POD_NAME") or socket.gethostname(),
        fail_rate=number("FAIL_RATE", "0", 0, 1),
        delay_ms=number("DELAY_MS", "0", 0, 600_000),
        mode=mode,
    )


def bad_request(parameter: str, problem: str) -> web.Response:
    return web.json_response(
        {"error": f"parameter '{parameter}' {problem}", "parameter": parameter}, status=400
    )


def make_app(settings: Settings) -> web.Application:
    """The aiohttp application: /convert (or /rates in MODE=rates), /healthz and /headers."""
    who = {"version": settings.version, "instance": settings.instance}
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

    async def headers(request: web.Request) -> web.Response:
        # Repeated headers are joined with ", " (as HTTP allows), so the answer stays a flat JSON object.
        seen: dict[str, str] = {}
        for name, value in request.headers.items():
            seen[name] = f"{seen[name]}, {value}" if name in seen else value
        return web.json_response({"headers": seen, **who})

    async def add_version_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-version"] = settings.version  # on every answer, errors and 404s included

    app = web.Application()
    app.on_response_prepare.append(add_version_header)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/headers", headers)
    if settings.mode == "rates":
        app.router.add_get("/rates", rates)
    else:
        app.router.add_get("/convert", convert)
    return app


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
    print(
        f"currency-converter {settings.version} ({settings.mode}) on {settings.host}:{settings.port} "
        f"FAIL_RATE={settings.fail_rate:g} DELAY_MS={settings.delay_ms:g}",
        flush=True,
    )
    # run_app stops cleanly on SIGTERM and SIGINT; a short shutdown timeout keeps `kubectl delete` and
    # `lab.down()` quick when a delayed request is still in flight.
    web.run_app(
        make_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log_class=LineLogger,
        shutdown_timeout=2.0,
    )


if __name__ == "__main__":
    main()
