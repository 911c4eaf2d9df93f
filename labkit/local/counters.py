"""Istio's standard metrics from stock Envoy, which has no Istio stats filter (istio/proxy
source/extensions/filters/http/istio_stats/istio_stats.cc): each connection manager and each TCP proxy counts
with Envoy's stats access logger under ``istiolocal.``, tagged with ``labkit.metrics.LABELS``; the readers
(telemetry.py, prometheus.py) give the counters Istio's names back.

HTTP: ``requests_total``, one per request. TCP (``metrics.TCP_METRICS``): ``tcp_connections_opened_total``,
``tcp_connections_closed_total``, ``tcp_sent_bytes_total`` and ``tcp_received_bytes_total`` with
``metrics.TCP_LABELS`` (``request_protocol`` ``tcp``, no ``response_code``), the bytes being those of the
downstream connection, as Istio's filter reads its downstream bytes meter. Where this differs: the stats
access logger runs when the connection closes, so a connection is counted as opened, and its bytes, when
it ends (Istio counts it opened when the peer's metadata arrives and reports bytes every 5 s); and the
serving side of a TCP connection knows its caller only by the mTLS certificate (no TCP metadata exchange
here), so ``source_workload``, ``source_app``, ``source_version``... are ``unknown`` there. A change to an
outbound ``tcp_proxy`` (its VirtualService's ``tcp`` routes) re-creates its filter chain, whose stats scope
takes the ``source`` side's TCP counters with it (HTTP routes come by RDS and leave the counters alone).

The client side reports ``source``, the server side ``destination``; for HTTP the server learns the caller's
labels from headers the caller's proxy adds (routes.py), trusted only over mTLS (listeners.py)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from labkit.local.clusters import PEER_KEYS, peer_labels
from labkit.metrics import LABELS, TCP_LABELS

if TYPE_CHECKING:
    from labkit.local.registry import Host
    from labkit.local.topology import Proxy

STATS_LOG = "type.googleapis.com/envoy.extensions.access_loggers.stats.v3.Config"
STATS_PREFIX = "istiolocal"
STATS_COUNTER = "requests_total"
#: The TCP counters and the value each adds per connection (the downstream bytes; BYTES_* of a TCP log).
TCP_COUNTERS: dict[str, int | str] = {
    "tcp_connections_opened_total": 1,
    "tcp_connections_closed_total": 1,
    "tcp_sent_bytes_total": "%BYTES_SENT%",
    "tcp_received_bytes_total": "%BYTES_RECEIVED%",
}
#: Dynamic-metadata namespace where the server side keeps the caller's identity taken from the headers.
SOURCE_METADATA = "istio.lab"


def request_counter(tags: dict[str, str]) -> dict:
    """The stats access logger counting each request as ``requests_total`` with ``tags``."""
    return _logger({STATS_COUNTER: 1}, tags)


def tcp_counters(tags: dict[str, str]) -> dict:
    """The stats access logger of a ``tcp_proxy``: Istio's four TCP counters with ``tags``."""
    return _logger(TCP_COUNTERS, tags)


def _logger(counters: dict[str, int | str], tags: dict[str, str]) -> dict:
    return _shared_logger(tuple(counters.items()), tuple(tags.items()))


@functools.lru_cache(maxsize=1024)
def _shared_logger(counters: tuple[tuple[str, int | str], ...], tags: tuple[tuple[str, str], ...]) -> dict:
    """One logger object for all the proxies with the same tags (the replicas of a workload): built once,
    encoded once per snapshot (snapshot.Encoder), compared by identity with the one served. Never changed
    after it is built, like every resource of the translator."""
    stat_tags = [{"name": k, "value_format": v} for k, v in tags]
    return {
        "name": "envoy.access_loggers.stats",
        "typed_config": {
            "@type": STATS_LOG,
            # stat_prefix, deprecated in 1.40 for stats_scope.prefix (a log warning): the control plane
            # sends protobuf built from xds-protos, whose newest release (1.85) predates stats_scope.
            "stat_prefix": STATS_PREFIX,
            "counters": [
                {"stat": {"name": name, "tags": stat_tags}}
                | ({"value_fixed": value} if isinstance(value, int) else {"value_format": value})
                for name, value in counters
            ],
        },
    }


def source_tags(proxy: Proxy, host: Host | None = None) -> dict[str, str]:
    """Labels the calling proxy reports: itself as constants, the destination from endpoint metadata and the
    upstream connection's certificates (empty, so ``unknown``, over plaintext); the service from the route's
    metadata, or for a TCP port (``host``) that host, as Istio reads it from the cluster's metadata."""
    tags = {f"source_{k}": v for k, v in peer_labels(proxy.workload, proxy.namespace, proxy.labels).items()}
    tags |= {f"destination_{k}": f"%UPSTREAM_METADATA(istio:{k})%" for k in PEER_KEYS}
    tags |= {
        "reporter": "source",
        "source_principal": "%UPSTREAM_LOCAL_URI_SAN%",
        "destination_principal": "%UPSTREAM_PEER_URI_SAN%",
        "destination_service": "%METADATA(ROUTE:istio:service)%",
        "destination_service_name": "%METADATA(ROUTE:istio:name)%",
        "destination_service_namespace": "%METADATA(ROUTE:istio:namespace)%",
        "connection_security_policy": "unknown",
    }
    if host is not None:
        name = host.fqdn.split(".")[0]  # a TCP port is a Kubernetes Service's (supported.py)
        tags |= {
            "destination_service": host.fqdn,
            "destination_service_name": name,
            "destination_service_namespace": host.namespace,
        }
    return _ordered(tags, tcp=host is not None)


def destination_tags(proxy: Proxy, service: str, security: str, tcp: bool = False) -> dict[str, str]:
    """Labels the serving sidecar reports: itself as constants, the caller from the stripped headers (HTTP)
    or, for TCP, only its certificate."""
    peer = peer_labels(proxy.workload, proxy.namespace, proxy.labels)
    tags = {f"destination_{k}": v for k, v in peer.items()}
    tags |= {
        f"source_{k}": "unknown" if tcp else f"%DYNAMIC_METADATA({SOURCE_METADATA}:{k})%" for k in PEER_KEYS
    }
    known = service != "unknown"
    tags |= {
        "reporter": "destination",
        "source_principal": "%DOWNSTREAM_PEER_URI_SAN%",  # the caller's certificate; empty when plaintext
        "destination_principal": "%DOWNSTREAM_LOCAL_URI_SAN%",
        "destination_service": service,
        "destination_service_name": service.split(".")[0] if known else "unknown",
        "destination_service_namespace": proxy.namespace if known else "unknown",
        "connection_security_policy": security,
    }
    return _ordered(tags, tcp)


def _ordered(tags: dict[str, str], tcp: bool = False) -> dict[str, str]:
    """Every label of ``metrics.LABELS`` (``TCP_LABELS`` for a TCP proxy) in its order."""
    common = {"request_protocol": "tcp" if tcp else "http", "response_code": "%RESPONSE_CODE%"}
    common["response_flags"] = "%RESPONSE_FLAGS%"
    merged = tags | common
    return {k: merged[k] for k in (TCP_LABELS if tcp else LABELS)}
