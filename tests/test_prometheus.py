"""Querying metrics (notebook 21) on the local backend: the real ``prometheus`` binary (Debian's package,
which ``make system-deps`` installs) scraping every real Envoy, so the PromQL of Istio's "Querying Metrics"
task runs unchanged (labkit/local/prometheus.py)."""

from __future__ import annotations

import re
import shutil
import time
from types import SimpleNamespace

import psutil
import pytest

from labkit import checks, lesson
from labkit.checks import CheckFailed
from labkit.errors import LabError
from labkit.local import processes, prometheus
from labkit.scenario import NAMESPACE, SERVICE

HOST = f"{SERVICE}.{NAMESPACE}.svc.cluster.local"
#: The task's per-version query, for the lesson's caller and one reporter.
BY_VERSION = (
    f'sum by (destination_version) (istio_requests_total{{reporter="source", source_workload="client", '
    f'destination_service="{HOST}"}})'
)


def wait_for(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


needs_prometheus = pytest.mark.skipif(
    not shutil.which("prometheus"), reason="needs Debian's prometheus (make system-deps installs it)"
)


def test_a_missing_binary_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_PROMETHEUS", str(tmp_path / "no-prometheus"))
    with pytest.raises(LabError, match=r"not found\nWhat to do: install Prometheus: `sudo apt-get install"):
        prometheus.binary()


def test_the_tour_leaves_out_its_prometheus_step_saying_how_to_get_the_binary(monkeypatch, tmp_path):
    from labkit import tour

    monkeypatch.setenv("LAB_PROMETHEUS", str(tmp_path / "no-prometheus"))
    local, kind = SimpleNamespace(backend="local"), SimpleNamespace(backend="kind")
    assert "sudo apt-get install prometheus" in tour._prometheus_missing(local)
    assert tour._prometheus_missing(kind) == ""  # the addon: nothing to install by hand


def test_the_scrape_renames_the_counter_and_fills_empty_labels_as_istio_does():
    proxy = SimpleNamespace(stats_port=15090, namespace="payments-prod", id="sidecar~client-0.payments-prod")
    config = prometheus.config([proxy])
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/stats/prometheus" and job["params"] == {"filter": ["istiolocal"]}
    assert job["static_configs"] == [
        {"targets": ["127.0.0.1:15090"], "labels": {"namespace": "payments-prod", "pod": "client-0"}}
    ]
    rename, *unknown = job["metric_relabel_configs"]
    for envoy_name, istio_name in [
        ("envoy_istiolocal_requests_total", "istio_requests_total"),
        ("envoy_istiolocal_tcp_sent_bytes_total", "istio_tcp_sent_bytes_total"),
    ]:
        assert re.fullmatch(rename["regex"], envoy_name)  # Prometheus anchors a relabel regex
        assert re.sub(rename["regex"], rename["replacement"].replace("$1", r"\1"), envoy_name) == istio_name
    *labels, code = unknown
    assert {r["target_label"] for r in labels} >= {"destination_version", "source_principal"}
    assert all((r["regex"], r["replacement"]) == ("", "unknown") for r in labels)
    # response_code is filled on requests only: Istio's TCP series have none
    assert (code["source_labels"], code["regex"]) == (["__name__", "response_code"], "istio_requests_total;")


@pytest.mark.mesh
@needs_prometheus
def test_istios_queries_run_unchanged_and_count_exactly_what_was_answered(lab):
    lab.prometheus()
    before = checks.settled_counts(lab, BY_VERSION)
    result = lab.send(lesson.URL, duration=4, qps=50, progress=False)
    checks.prometheus_counted(lab, BY_VERSION, before, result)  # exact, per version

    series = lab.promql(f'istio_requests_total{{destination_service="{HOST}"}}')
    reporters = {s["metric"]["reporter"] for s in series}
    assert reporters == {"source", "destination"} and all(s["metric"]["job"] == "envoy-stats" for s in series)
    assert {s["metric"]["destination_principal"] for s in series} == {
        f"spiffe://cluster.local/ns/{NAMESPACE}/sa/{SERVICE}"
    }
    rates = checks.by_label(
        lab.promql(
            f'sum by (destination_version) (rate(istio_requests_total{{destination_service="{HOST}", '
            'reporter="destination"}[1m]))'
        )
    )
    assert set(rates) == {"v1", "v2"} and rates["v1"] > rates["v2"] > 0  # the 90/10 canary, as rates


@pytest.mark.mesh
@needs_prometheus
def test_a_query_counting_both_reporters_fails_the_lessons_check(lab):
    both = BY_VERSION.replace('reporter="source", ', "")
    before = checks.settled_counts(lab, both)
    result = lab.send(lesson.URL, n=60, progress=False)
    with pytest.raises(CheckFailed, match="every request twice"):
        checks.prometheus_counted(lab, both, before, result)


@pytest.mark.mesh
@needs_prometheus
def test_bad_promql_is_refused_new_targets_are_reloaded_and_down_stops_prometheus(lab):
    with pytest.raises(LabError, match=r"Prometheus refused the query 'sum by \(\(': .*parse error"):
        lab.promql("sum by ((")
    server = prometheus.Prometheus(lab.files)
    proxies = sorted(lab._require_up().proxies.values(), key=lambda p: p.id)
    server.ensure(proxies[:1])  # the proxies changed: the config is reloaded, not the process restarted
    assert wait_for(lambda: len(prometheus.query(server.url, "up")) == 1)
    server.ensure(proxies)
    assert wait_for(lambda: len(prometheus.query(server.url, "up == 1")) == len(proxies))
    record = processes.record(server.run_dir, prometheus.NAME)
    assert record is not None and processes.is_alive(record)
    lab.send(lesson.URL, n=5, progress=False)
    assert wait_for(lambda: lab.promql("count(istio_requests_total)") != [])
    lab.down()
    assert not psutil.pid_exists(record.pid) or not processes.is_alive(record)
    lab.up()  # the module's lab, for the fixture's own down()
    lab.prometheus()  # a new Prometheus: no stale series of the stopped proxies (5 min lookback) in its sums
    assert lab.promql("count(istio_requests_total)") == []
