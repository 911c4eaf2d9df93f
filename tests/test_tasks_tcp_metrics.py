"""Istio's TCP metrics on the local backend (Istio's "Collecting Metrics for TCP Services" task), through
real Envoy and real TCP connections to notebook 20's echo port: ``istio_tcp_connections_opened_total``,
``..._closed_total``, ``istio_tcp_sent_bytes_total`` and ``istio_tcp_received_bytes_total`` move by the
connections made and the bytes sent and echoed (labkit/local/counters.py, after istio/proxy istio_stats.cc).
"""

from __future__ import annotations

import shutil
import time

import pytest

from labkit import checks, metrics
from labkit.errors import LabError
from labkit.scenario import NAMESPACE

pytestmark = pytest.mark.mesh

PORT = 9001
TCP_URL = f"tcp://tcp-echo.{NAMESPACE}:{PORT}"
FQDN = f"tcp-echo.{NAMESPACE}.svc.cluster.local"
LINE = "hello"  # what send_tcp writes on each connection, then a newline
OPENED, CLOSED, SENT, RECEIVED = metrics.TCP_METRICS


def totals(lab, reporter: str) -> dict[str, float]:
    """Each TCP metric's total for connections to tcp-echo, as ``reporter`` counts them."""
    match = {"reporter": reporter, "destination_service": FQDN}
    return {name: metrics.total(lab.metrics(name), **match) for name in metrics.TCP_METRICS}


def growth(lab, reporter: str, before: dict[str, float], connections: int) -> dict[str, float]:
    """The growth since ``before`` once every connection was counted (the counters move when it closes;
    ``totals`` reads OPENED first, so once that has them all, the later reads have too)."""
    deadline = time.monotonic() + 5
    while True:
        now = {k: v - before[k] for k, v in totals(lab, reporter).items()}
        if now[OPENED] >= connections or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def test_tcp_counters_move_by_the_connections_and_the_bytes_sent_and_echoed(lab):
    before = {r: totals(lab, r) for r in ("source", "destination")}
    versions = metrics.group(lab.metrics(OPENED), "destination_version", reporter="source")
    result = lab.send_tcp(TCP_URL, 20)
    assert result.codes() == {"echoed": 20}, result.summary()
    received = 20 * len(f"{LINE}\n")
    sent = sum(len(f"{o.version} {LINE}\n") for o in result.outcomes)  # the echo: "<version> hello"
    for reporter in ("source", "destination"):  # each proxy's downstream: the app, then the client's proxy
        assert growth(lab, reporter, before[reporter], 20) == {
            OPENED: 20,
            CLOSED: 20,
            RECEIVED: received,
            SENT: sent,
        }, reporter
    after = metrics.group(lab.metrics(OPENED), "destination_version", reporter="source")
    assert {v: n - versions.get((v,), 0) for (v,), n in after.items()} == result.counts()


def test_tcp_series_carry_istios_tcp_labels(lab):
    lab.send_tcp(TCP_URL, 3)
    [series] = [
        s
        for s in lab.metrics(OPENED)
        if s["reporter"] == "destination"
        and s["destination_version"] == "v1"
        and s["source_principal"] != "unknown"
    ]
    assert tuple(series.labels) == metrics.TCP_LABELS  # no response_code
    assert series["request_protocol"] == "tcp" and series["connection_security_policy"] == "mutual_tls"
    assert series["source_principal"] == f"spiffe://cluster.local/ns/{NAMESPACE}/sa/client"
    assert series["destination_workload"] == "currency-converter-v1"
    [client] = {s["source_workload"] for s in lab.metrics(OPENED) if s["reporter"] == "source"}
    assert client == "client"


def test_an_unknown_metric_is_refused_naming_the_ones_there_are(lab):
    refused = r"no metric 'istio_tcp_bytes'\nWhat to do: .*istio_tcp_sent_bytes_total"
    with pytest.raises(LabError, match=refused):
        lab.metrics("istio_tcp_bytes")


@pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus (make system-deps)")
def test_prometheus_counts_tcp_connections_as_istios_task_queries_them(lab):
    query = (
        "sum by (destination_version) "
        f'(istio_tcp_connections_opened_total{{reporter="source", destination_service="{FQDN}"}})'
    )
    lab.prometheus()
    before = checks.settled_counts(lab, query)
    result = lab.send_tcp(TCP_URL, 30)
    checks.prometheus_counted(lab, query, before, result)  # exact, per version
    [series, *_] = lab.promql(f'istio_tcp_received_bytes_total{{destination_service="{FQDN}"}}')
    assert "response_code" not in series["metric"] and series["metric"]["request_protocol"] == "tcp"
