"""The split measured from the mesh's own telemetry, for apps whose answers do not say their version.

A user's own image rarely reports a version, but every sidecar counts each request in
``istio_requests_total`` with ``destination_version``, the answering pod's ``version`` label (istio.io
reference/config/metrics; istio/proxy testdata/metric/server_request_total.yaml.tmpl). A ``Meter`` reads the
counters before a run and, when no answer carried a version, again after it (until the counters caught up with
the answers, or ``lag`` seconds: Prometheus on kind scrapes every 15 s); the growth per version is the split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from labkit import metrics
from labkit.errors import LabError
from labkit.meshmodel import service_fqdn
from labkit.scenario import INGRESS, SOURCES

if TYPE_CHECKING:
    from labkit.metrics import RequestCount
    from labkit.traffic import TrafficResult

#: The ingress gateway, as Istio's telemetry names it (source_workload, source_workload_namespace).
GATEWAY = ("istio-system", "istio-ingressgateway")
#: How often the counters are re-read while they catch up with the answers.
POLL_SECONDS = 0.2


def source_of(source: str) -> tuple[str | None, str]:
    """(namespace, workload) of a traffic source: a lesson alias, "namespace/workload" or a bare workload."""
    if source == INGRESS:
        return GATEWAY
    if source in SOURCES:
        return SOURCES[source]
    namespace, _, workload = source.rpartition("/")
    return namespace or None, workload


def destination_of(url: str, source_namespace: str | None) -> str:
    """The ``destination_service`` a URL's host names; a short Service name resolves in the caller's
    namespace, as its DNS search path would (``orders`` from ``shop``: ``orders.shop.svc.cluster.local``)."""
    host = urlsplit(url).hostname or ""
    parts = host.split(".")
    if len(parts) == 1 and source_namespace:
        return service_fqdn(host, source_namespace)
    if len(parts) == 2 or (len(parts) == 3 and parts[2] == "svc"):
        return service_fqdn(parts[0], parts[1])
    return host


def version_counts(
    before: list[RequestCount], after: list[RequestCount], *, source: str, url: str
) -> tuple[dict[str, int], str]:
    """Requests per ``destination_version`` between two readings, and which reporter counted them.

    The caller's own sidecar (reporter "source") counts what it sent; a caller without one is only seen by the
    destinations (reporter "destination", source_workload "unknown" over plaintext)."""
    namespace, workload = source_of(source)
    caller = {"source_workload": workload, **({"source_workload_namespace": namespace} if namespace else {})}
    destination = destination_of(url, namespace)
    for reporter, match in (
        ("source", caller),
        ("destination", caller),
        ("destination", {"source_workload": "unknown", "destination_service": destination}),
    ):
        grown = _growth(before, after, reporter=reporter, **match)
        mine = {k: v for k, v in grown.items() if k[0] == destination}
        counts: dict[str, int] = {}
        for (_, version), value in (mine or grown).items():  # else all: an ingress URL names no Service
            counts[version] = counts.get(version, 0) + value
        if counts:
            return dict(sorted(counts.items())), reporter
    return {}, ""


def _growth(
    before: list[RequestCount], after: list[RequestCount], **match: str
) -> dict[tuple[str, ...], int]:
    """Per (destination_service, destination_version): how much the counters grew (a restarted proxy's
    counter starts again at 0, so a series that shrank counts from 0)."""
    old = metrics.group(before, "destination_service", "destination_version", **match)
    new = metrics.group(after, "destination_service", "destination_version", **match)
    grown = {}
    for key, value in new.items():
        delta = value - old.get(key, 0.0)
        grown[key] = round(delta if delta >= 0 else value)
    return {k: v for k, v in grown.items() if v > 0}


class Meter:
    """Reads the counters now; ``finish(result)`` fills in the telemetry split when the answers had none."""

    def __init__(self, read: Callable[[], list[RequestCount]], *, source: str, url: str, lag: float = 2.0):
        self.read, self.source, self.url, self.lag = read, source, url, lag
        self.before: list[RequestCount] | None = None
        self.problem = ""
        try:
            self.before = read()
        except LabError as exc:  # the answers may carry versions; only then is this a problem
            self.problem = str(exc)

    def finish(self, result: TrafficResult) -> TrafficResult:
        answered = sum(o.status is not None for o in result.outcomes)
        if result.measured_by == "responses" or not answered:
            return result
        if self.before is None:
            result.telemetry_problem = f"the mesh's telemetry could not be read: {self.problem}"
            return result
        deadline = time.monotonic() + self.lag
        while True:
            counts, reporter = version_counts(self.before, self.read(), source=self.source, url=self.url)
            if sum(counts.values()) >= answered or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        if counts:
            result.telemetry, result.telemetry_reporter = counts, reporter
        else:
            result.telemetry_problem = (
                f"istio_requests_total shows no requests from {self.source} to "
                f"{destination_of(self.url, None)} after {self.lag:g} s"
            )
        return result
