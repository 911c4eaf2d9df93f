"""The mesh's traffic graph from ``istio_requests_total``, as Kiali draws it: an edge per caller and callee
with its requests, errors, mTLS and its share of the caller's traffic to that service, and each workload's
place (callers left, callees right). Plain data, so the figure (viz.topology) only draws it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from labkit.metrics import RequestCount


class Edge:
    """Traffic from one workload to another, as one reporter saw it."""

    def __init__(self) -> None:
        self.requests = 0.0
        self.errors = 0.0
        self.mtls = False
        self.service = ""
        self.share = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def edges(
    samples: Iterable[RequestCount], before: Iterable[RequestCount] | None
) -> dict[tuple[str, str], Edge]:
    """Edges from the destination reporter where it saw the traffic, else from the source reporter (a
    destination without a sidecar, or a request that never reached it)."""
    earlier = {_series(s): s.value for s in before or ()}
    by_reporter: dict[str, dict[tuple[str, str], Edge]] = {"destination": {}, "source": {}}
    for s in samples:
        value = s.value - earlier.get(_series(s), 0.0)
        if value <= 0 or s["reporter"] not in by_reporter:
            continue
        edge = by_reporter[s["reporter"]].setdefault(
            (s["source_workload"], s["destination_workload"]), Edge()
        )
        edge.requests += value
        edge.errors += value if s["response_code"][:1] in ("4", "5") or s["response_code"] == "0" else 0
        edge.mtls |= s["connection_security_policy"] == "mutual_tls"
        edge.service = s["destination_service"]
    found = dict(by_reporter["destination"])
    for key, edge in by_reporter["source"].items():
        found.setdefault(key, edge)
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for (src, _), e in found.items():
        totals[src, e.service] += e.requests
    for (src, _), e in found.items():
        e.share = e.requests / totals[src, e.service]
    return found


def _series(s: RequestCount) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(s.labels.items()))


def layout(graph: Mapping[tuple[str, str], Edge]) -> dict[str, tuple[float, float]]:
    """Callers left, callees right: a node's column is the longest call chain leading to it."""
    names = sorted({n for edge in graph for n in edge})
    column = dict.fromkeys(names, 0)
    for _ in names:  # longest path by relaxation; a cycle simply stops growing after len(names) rounds
        for src, dst in graph:
            if src != dst and column[dst] <= column[src]:
                column[dst] = column[src] + 1
    rows: dict[int, list[str]] = defaultdict(list)
    for n in names:
        rows[column[n]].append(n)
    tallest = max((len(r) for r in rows.values()), default=1)
    return {
        n: (float(c), (tallest - 1) / 2 + (len(members) - 1) / 2 - i)
        for c, members in rows.items()
        for i, n in enumerate(members)
    }
