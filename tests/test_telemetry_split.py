"""The split measured from the mesh's telemetry when the answers do not say their version.

The mesh test runs the lesson's two versions with REPORT_VERSION=false (as a user's own image would answer) on
the local backend's real Envoy sidecars, and measures the 90/10 canary from ``istio_requests_total`` alone.
"""

from __future__ import annotations

import pytest
import yaml

from labkit import paths, scenario
from labkit.errors import BackendError
from labkit.metrics import RequestCount
from labkit.telemetry_split import Meter, destination_of, source_of, version_counts
from labkit.traffic import Outcome, TrafficResult

CC = f"{scenario.SERVICE}.{scenario.NAMESPACE}.svc.cluster.local"


def sample(value: float, reporter: str = "source", version: str = "v1", **labels: str) -> RequestCount:
    base = {
        "reporter": reporter,
        "source_workload": "client",
        "source_workload_namespace": scenario.NAMESPACE,
        "destination_service": CC,
        "destination_version": version,
    }
    return RequestCount({**base, **labels}, value)


def test_sources_name_their_workload_and_short_hosts_resolve_in_the_callers_namespace():
    assert source_of("client") == scenario.SOURCES["client"]
    assert source_of("shop/web") == ("shop", "web")
    assert source_of("web") == (None, "web")
    assert source_of("ingress") == ("istio-system", "istio-ingressgateway")
    assert destination_of("http://orders:9000/", "shop") == "orders.shop.svc.cluster.local"
    assert destination_of("http://orders.shop:9000/", "web") == "orders.shop.svc.cluster.local"
    assert destination_of("http://orders.shop.svc:9000/", None) == "orders.shop.svc.cluster.local"
    assert destination_of("http://api.fxrates.example/rates", "shop") == "api.fxrates.example"


def test_counts_are_the_growth_per_version_as_the_callers_sidecar_reported_it():
    before = [sample(10), sample(5, version="v2"), sample(7, reporter="destination")]
    after = [
        sample(100),
        sample(15, version="v2"),
        sample(
            70, reporter="destination"
        ),  # the same requests seen again by the destination: not counted twice
        sample(50, source_workload="legacy-client"),  # another caller
        sample(9, version="v2", destination_service="fx-rates.external.svc.cluster.local"),  # another Service
    ]
    assert version_counts(before, after, source="client", url=scenario.URL) == (
        {"v1": 90, "v2": 10},
        "source",
    )


def test_a_caller_without_a_sidecar_is_counted_by_the_destinations_and_a_restart_counts_from_zero():
    unknown = {"source_workload": "unknown", "source_workload_namespace": "unknown"}
    before = [sample(40, reporter="destination", **unknown)]
    after = [sample(6, reporter="destination", **unknown), sample(3, "destination", "v2", **unknown)]
    counts = version_counts(before, after, source="legacy", url=scenario.URL)
    assert counts == ({"v1": 6, "v2": 3}, "destination")
    assert version_counts(after, after, source="legacy", url=scenario.URL) == ({}, "")


def unversioned(n: int) -> TrafficResult:
    return TrafficResult([Outcome(0.0, 200, None, 0.01) for _ in range(n)], "client", scenario.URL, 1.0)


def test_without_readable_telemetry_the_result_says_why_there_is_no_split():
    def prometheus_down() -> list[RequestCount]:
        raise BackendError("the addon Prometheus does not answer")

    result = Meter(prometheus_down, source="client", url=scenario.URL).finish(unversioned(5))
    assert (result.measured_by, result.counts()) == ("none", {})
    assert "the addon Prometheus does not answer" in result.summary()


def test_without_any_answer_there_is_nothing_to_measure():
    refused = TrafficResult(
        [Outcome(0.0, None, None, 0.01, "connection reset")] * 3, "legacy", scenario.URL, 1.0
    )
    result = Meter(lambda: [sample(9)], source="legacy", url=scenario.URL).finish(refused)
    assert result.measured_by == "none" and "no split: no request got an answer" in result.summary()


def test_a_meter_waits_for_counters_that_lag_behind_the_answers():
    """Prometheus on kind scrapes every 15 s: the first readings after a run may not hold it all yet."""
    readings = iter([[], [], [sample(3)], [sample(3), sample(2, version="v2")]])
    meter = Meter(lambda: next(readings), source="client", url=scenario.URL, lag=10)
    result = meter.finish(unversioned(5))
    assert (result.measured_by, result.counts()) == ("telemetry", {"v1": 3, "v2": 2})


@pytest.mark.mesh
def test_an_app_that_hides_its_version_gets_its_split_measured_from_telemetry(lab):
    docs = [d for d in yaml.safe_load_all((paths.APPS / "currency-converter.yaml").read_text()) if d]
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        dep["spec"]["template"]["spec"]["containers"][0]["env"].append(
            {"name": "REPORT_VERSION", "value": "false"}
        )
    try:
        lab.apply(docs)
        result = lab.send(scenario.URL, n=400, source="client")
        assert result.codes() == {200: 400}
        assert {o.version for o in result.outcomes} == {None}, "the answers still carry a version"
        assert (result.measured_by, result.telemetry_reporter) == ("telemetry", "source")
        assert sum(result.counts().values()) == 400
        assert result.report({"v1": 90, "v2": 10}).consistent
        assert not result.report({"v1": 50, "v2": 50}).consistent
        assert "measured from the mesh's telemetry" in result.summary()
    finally:
        lab.apply(paths.APPS / "currency-converter.yaml")
    versioned = lab.send(scenario.URL, n=20, source="client")
    assert versioned.measured_by == "responses" and versioned.telemetry is None
    assert "measured from the answers" in versioned.summary()
