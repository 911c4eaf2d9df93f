"""Checks of Istio's tasks (notebooks 12-15): mirroring, circuit breaking and its overflow counter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from labkit.checks.report import _describe, _requests, fail, passed
from labkit.stats import CONFIDENCE

if TYPE_CHECKING:
    from labkit.lab import Lab
    from labkit.traffic import TrafficResult


# --- Istio's tasks (notebooks 12-15) ------------------------------------------------------------------------


def mirrored(
    lab: Lab,
    workload: str,
    marker: str,
    sent: int,
    percent: float = 100,
    confidence: float = CONFIDENCE,
    *,
    wait: float = 5.0,
) -> None:
    """``workload``'s access log shows the mirrored copies of the ``sent`` requests whose URL carries
    ``marker``: every one at 100 %, else a share consistent with ``percent`` (its Wilson interval at
    ``confidence``). Copies are sent after the primary answered, so this waits up to ``wait`` seconds for
    them."""
    import time  # with scipy's stats, only on first use (keeps `import labkit` fast)

    from labkit import stats  # imported on first use: keeps `import labkit` fast

    deadline = time.monotonic() + wait
    while True:
        copies = sum(marker in line for line in lab.access_log(workload, tail=max(4 * sent, 200)))
        if copies >= sent * percent / 100 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    look_at = (
        "the applied VirtualService's mirror (host, subset) and mirrorPercentage, and that the mirror's "
        f"subset exists; `lab.access_log({workload!r})` lists what {workload} received"
    )
    if percent >= 100:
        if copies < sent:
            raise fail(f"{workload} received {copies} mirrored copies of {sent} requests", look_at)
        passed(f"{workload} received a copy of each of the {sent} requests (mirrored)")
        return
    low, high = stats.interval(copies, sent, confidence)
    share = f"{copies / sent:.1%}; {low:.1%}–{high:.1%} at {confidence:.1%}"
    seen = f"{workload} received copies of {copies} of {sent} requests ({share})"
    if not low <= percent / 100 <= high:
        raise fail(f"{seen}: not consistent with mirrorPercentage {percent:g} %", look_at)
    passed(f"{seen}: consistent with mirrorPercentage {percent:g} %")


def circuit_breaker_trips(by_concurrency: Mapping[int, TrafficResult]) -> None:
    """The load at each concurrency level, summed up as fortio does (``Code 200 : 30 (100.0 %)``): one call
    at a time always passes; at the highest level the caller's sidecar turns some away with 503 ``UO``
    (upstream overflow), and every failure is that."""
    levels = sorted(by_concurrency)
    for c in levels:
        result = by_concurrency[c]
        n = len(_requests(result, f"concurrency {c}"))
        codes = "  ".join(
            f"Code {code} : {k} ({k / n:.1%})" for code, k in sorted(result.codes().items(), key=str)
        )
        print(f"  -c {c}: {n} calls  {codes}")
    look_at = (
        "the applied DestinationRule's trafficPolicy.connectionPool (tcp.maxConnections, "
        "http.http1MaxPendingRequests, http.maxRequestsPerConnection); the limits act in the CALLER's sidecar"
    )
    lowest, highest = by_concurrency[levels[0]], by_concurrency[levels[-1]]
    if set(lowest.codes()) != {200}:
        raise fail(f"at concurrency {levels[0]} not every call passed ({_describe(lowest)})", look_at)
    other = [o for c in levels for o in by_concurrency[c].outcomes if o.status != 200 and o.flags != "UO"]
    if other:
        flags = Counter(f"{o.status or o.error} {o.flags or '-'}" for o in other)
        raise fail(f"{len(other)} calls failed otherwise than 503 UO: {dict(flags)}", look_at)
    tripped = sum(o.flags == "UO" for o in highest.outcomes)
    if not tripped:
        raise fail(
            f"at concurrency {levels[-1]} no call was turned away with 503 UO ({_describe(highest)}): "
            "the circuit breaker did not trip",
            look_at,
        )
    passed(
        f"concurrency {levels[0]}: all passed; concurrency {levels[-1]}: {tripped} turned away with 503 UO"
    )


def overflow_counted(
    lab: Lab, before: int, results: Iterable[TrafficResult], workload: str = "client"
) -> None:
    """The caller's proxy counted one more ``upstream_rq_pending_overflow`` (summed over its clusters) than
    ``before`` for each 503 ``UO`` in ``results``: Envoy's own record of the calls its circuit breaker turned
    away, read from the proxy as Istio's task does."""
    expected = sum(o.flags == "UO" for r in results for o in r.outcomes)
    now = sum(lab.proxy_stats(workload, "upstream_rq_pending_overflow").values())
    if now - before != expected:
        raise fail(
            f"{workload}'s proxy counted {now - before} pending overflows, the calls saw {expected} 503 UO",
            f"`lab.proxy_stats({workload!r}, 'pending')`: the counter is per cluster (per subset) of the "
            "caller's sidecar, and cumulative until that proxy restarts",
        )
    passed(f"{workload}'s proxy counted {expected} more upstream_rq_pending_overflow: one per 503 UO")
