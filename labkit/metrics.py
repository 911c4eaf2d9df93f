"""The counters both backends report, shaped like Istio's standard metrics: ``istio_requests_total`` and the
``istio_tcp_*`` connection counters."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from labkit.errors import LabError

#: The labels labkit guarantees on every sample: Istio's ``istio_requests_total`` label set (istio.io
#: reference/config/metrics), in this order on the local backend; the kind backend's Prometheus has them too.
LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",  # the caller's SPIFFE ID from its mTLS certificate ("unknown" for plaintext)
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
)

REQUESTS = "istio_requests_total"
#: Istio's TCP metrics (istio.io reference/config/metrics; istio/proxy istio_stats.cc ``reportHelper``).
TCP_METRICS = (
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
)
METRICS = (REQUESTS, *TCP_METRICS)
#: A TCP series' labels: the request labels but ``response_code``; ``request_protocol`` is ``tcp``.
TCP_LABELS = tuple(label for label in LABELS if label != "response_code")


def check_metric(name: str) -> None:
    """A metric labkit reports, else LabError naming the ones it does."""
    if name not in METRICS:
        raise LabError(f"labkit reports no metric {name!r}", f"ask for one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class RequestCount:
    """One series of a metric (``istio_requests_total`` unless asked for another): labels and value."""

    labels: dict[str, str]
    value: float

    def __getitem__(self, label: str) -> str:
        return self.labels.get(label, "unknown")


def total(samples: Iterable[RequestCount], **match: str) -> float:
    """Sum of the samples whose labels equal every ``label=value`` given."""
    return sum(s.value for s in samples if all(s[k] == v for k, v in match.items()))


def group(samples: Iterable[RequestCount], *by: str, **match: str) -> dict[tuple[str, ...], float]:
    """Totals keyed by the values of the ``by`` labels, over the samples matching ``match``."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for s in samples:
        if all(s[k] == v for k, v in match.items()):
            out[tuple(s[b] for b in by)] += s.value
    return dict(out)


def envoy_stats(text: str, contains: str = "") -> dict[str, int]:
    """Envoy's admin ``/stats`` text (``name: value`` lines; what ``pilot-agent request GET stats`` prints on
    kind) as ``{name: value}`` for the counters and gauges whose name contains ``contains``; histogram lines
    (``P0(...)`` quantiles) are left out."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and contains in name and value.strip().isdigit():
            out[name.strip()] = int(value)
    return out
