"""Checks of notebooks 20 and 21: TCP connections echoed (the tcp-echo task), and Prometheus counting what
the traffic did (the "Querying Metrics" task). Prometheus scrapes on an interval, so its checks wait for it
(``lab.scrape_interval``): the counts it shows are the proxies' counters at its last scrape."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from labkit.checks.report import _describe, _requests, fail, passed

if TYPE_CHECKING:
    from labkit.lab import Lab
    from labkit.traffic import TrafficResult

#: How many scrape intervals a check waits for Prometheus to show a change.
SCRAPES = 4


def all_echoed(result: TrafficResult, what: str = "the TCP echo port") -> None:
    """Every TCP connection got its line back (``lab.send_tcp``)."""
    outcomes = _requests(result, what)
    bad = [o for o in outcomes if o.error or o.version is None]
    if bad:
        raise fail(
            f"{len(bad)} of {len(outcomes)} connections to {what} got no echo ({_describe(result)})",
            "the Service port (named `tcp`, or appProtocol: tcp), the VirtualService's tcp route (its port "
            "and subsets) and mTLS: a caller without a sidecar is refused under STRICT",
            result,
        )
    passed(f"{len(outcomes)}/{len(outcomes)} connections to {what} echoed their line")


def by_label(samples: list[dict[str, Any]], label: str = "destination_version") -> dict[str, float]:
    """A PromQL answer (``lab.promql``) as ``{label value: sample value}``, summed per value."""
    out: dict[str, float] = {}
    for s in samples:
        key = s.get("metric", {}).get(label, "unknown")
        out[key] = out.get(key, 0.0) + float(s["value"][1])
    return dict(sorted(out.items()))


def settled_counts(lab: Lab, query: str, label: str = "destination_version") -> dict[str, float]:
    """The query's counts once Prometheus has caught up: the same at two scrapes in a row."""
    last = by_label(lab.promql(query), label)
    for _ in range(SCRAPES):
        time.sleep(lab.scrape_interval + 0.5)
        now = by_label(lab.promql(query), label)
        if now == last:
            return now
        last = now
    return last


def _growth(lab: Lab, query: str, before: dict[str, float], label: str) -> dict[str, int]:
    now = by_label(lab.promql(query), label)
    grew = {k: round(now.get(k, 0.0) - before.get(k, 0.0)) for k in sorted(set(now) | set(before))}
    return {k: v for k, v in grew.items() if v}


def prometheus_counted(
    lab: Lab, query: str, before: dict[str, float], result: TrafficResult, label: str = "destination_version"
) -> None:
    """What ``query`` counts (per ``label``) grew by exactly the answers ``result`` got from each version:
    Prometheus's numbers are the proxies' counters, not an estimate. Waits for the scrapes."""
    sent = result.counts()
    deadline = time.monotonic() + SCRAPES * lab.scrape_interval + lab.telemetry_lag
    grew = _growth(lab, query, before, label)
    while sum(grew.values()) < sum(sent.values()) and time.monotonic() < deadline:
        time.sleep(lab.scrape_interval / 2)
        grew = _growth(lab, query, before, label)
    time.sleep(lab.scrape_interval + 0.5)  # every proxy scraped once more: a query counting twice shows it
    grew = _growth(lab, query, before, label)
    total = sum(grew.values())
    if grew != sent:
        twice = total == 2 * sum(sent.values())
        raise fail(
            f"Prometheus counted {grew or 'nothing'} for the {sum(sent.values())} answers {sent} "
            f"(query: {query})" + (": every request twice" if twice else ""),
            "the query's filters: each request is counted by the caller's proxy (reporter=\"source\") AND "
            'by the server\'s (reporter="destination"), so select one reporter; select the service '
            "(destination_service) and the caller (source_workload); if it counted too few, Prometheus has "
            f"not scraped yet (every {lab.scrape_interval:g} s): run the check again",
            result,
        )
    shares = ", ".join(f"{k} {v / total:.1%}" for k, v in grew.items())
    passed(f"Prometheus counted the {total} requests per {label} exactly as they were answered: {shares}")
