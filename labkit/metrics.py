"""The request counter both backends report, shaped like Istio's ``istio_requests_total``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class RequestCount:
    """One ``istio_requests_total`` series: its labels and its current value."""

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
