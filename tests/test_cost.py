"""The sidecar-cost measurement (labkit.cost) and its CHECK, against the real sample service: the check fails
when the load generator could not reach the asked rate, when a point has too few requests, or on errors."""

from __future__ import annotations

import pytest
from support.sample import direct, service

from labkit import checks, cost, traffic
from labkit.errors import CheckFailed
from labkit.traffic import Outcome, TrafficResult

URL = "http://currency-converter.payments-prod:8080/convert?from=NOK&to=EUR&amount=100"
QUICK = cost.Mode(fractions=(0.5,), repeats=1, seconds=1.0, ceiling=800)


def path_to(base: str, concurrency: int = 16) -> cost.Path:
    resolver = direct(base)
    return cost.Path(
        "direct",
        lambda rate, s: traffic.send(
            resolver, URL, duration=s, qps=rate, open_loop=True, concurrency=concurrency, progress=False
        ),
    )


def test_the_check_fails_when_the_asked_rate_was_not_reached() -> None:
    # 50 ms per request and 2 connections: at most 40 rps, asked 200.
    with service("v1", DELAY_MS="50") as base:
        point = cost.measure(path_to(base, concurrency=2), rate=200, seconds=1.0)
    assert point.achieved < 60
    with pytest.raises(CheckFailed, match=r"reached \d+ rps, more than 5% short of the asked rate") as caught:
        checks.measurement_sound([point])
    assert "What to do: look at a rate this machine did not reach" in str(caught.value)


def test_a_reachable_rate_passes_and_reports_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    with service("v1") as base:
        points = [cost.measure(path_to(base), rate=200, seconds=1.0, repeat=r) for r in range(2)]
    checks.measurement_sound(points)  # quiet: one ✔ line, returns nothing
    assert "2 runs, each ≥ 200 requests" in capsys.readouterr().out
    [row] = cost.latency_rows(points)
    assert row["path"] == "direct" and row["rate"] == "200" and "[" in row["p99 ms"]  # median [min, max]


def test_errors_fail_the_check() -> None:
    with service("v1", FAIL_RATE="1") as base:
        point = cost.measure(path_to(base), rate=200, seconds=1.0)
    with pytest.raises(CheckFailed, match=r"\d+ errors \{500: \d+\}"):
        checks.measurement_sound([point])


def result_of(latencies_ms: list[float], rate: float = 100) -> TrafficResult:
    outcomes = [Outcome(i / rate, 200, "v1", ms / 1000) for i, ms in enumerate(latencies_ms)]
    return TrafficResult(outcomes, elapsed=len(outcomes) / rate)


def test_a_slow_last_answer_is_latency_not_a_shortfall_in_the_rate() -> None:
    # All 200 requests sent on schedule in 1 s; the last one answered 150 ms after the run's end.
    result = result_of([1.0] * 199 + [150.0], rate=200)
    result.elapsed = 1.15
    point = cost.Point("direct", rate=200, seconds=1.0, repeat=0, result=result)
    assert point.achieved == 200 and cost.problems([point]) == []


def test_too_few_requests_for_a_p99_fail_the_check() -> None:
    point = cost.Point("direct", rate=100, seconds=0.5, repeat=0, result=result_of([1.0] * 50))
    with pytest.raises(CheckFailed, match="50 requests, fewer than the 200 a p99 needs"):
        checks.measurement_sound([point])
    with pytest.raises(CheckFailed, match="no points were measured"):
        checks.measurement_sound([])


def test_added_latency_pairs_runs_of_the_same_round() -> None:
    points = [
        cost.Point(cost.DIRECT, 100, 2.0, 0, result_of([1.0] * 200)),
        cost.Point(cost.BOTH, 100, 2.0, 0, result_of([3.0] * 200)),
        cost.Point(cost.DIRECT, 100, 2.0, 1, result_of([2.0] * 200)),
        cost.Point(cost.BOTH, 100, 2.0, 1, result_of([2.5] * 200)),
    ]
    [row] = cost.added_rows(points)
    assert row["path"] == cost.BOTH and row["+p50 ms"] == "1.25 [0.50, 2.00]"  # +2.0 and +0.5


def test_vcpu_per_1000_rps_is_cpu_seconds_per_second_per_thousand_requests() -> None:
    point = cost.Point(
        cost.BOTH,
        500,
        2.0,
        0,
        result_of([1.0] * 1000, rate=500),
        {"client sidecar": 0.2},
        {"client sidecar": 30.0},
    )
    assert point.achieved == 500
    assert point.vcpu_per_1000("client sidecar") == pytest.approx(0.2)  # 0.1 vCPU at 0.5 thousand rps
    [row] = cost.resource_rows([point])
    assert row["Istio's vCPU"] == "0.20" and row["vCPU per 1,000 rps"] == "0.20" and row["memory MB"] == "30"


def test_the_sustained_rate_is_the_last_rate_reached() -> None:
    # 20 ms per request on 4 connections: at most 200 rps; the search doubles from 100.
    with service("v1", DELAY_MS="20") as base:
        best, probes = cost.sustained_rate(path_to(base, concurrency=4), QUICK, start=100)
    assert best in (100, 200)
    assert cost.problems(probes[-1:])  # the search stopped at a rate it could not reach
    assert cost.table_rates(400, cost.Mode((0.25, 0.5), 1, 1.0, 800)) == [100, 200]


def test_the_quick_mode_comes_from_lab_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_QUICK", "1")
    assert cost.Mode.from_env().repeats == 2
    monkeypatch.setenv("LAB_QUICK", "0")
    assert cost.Mode.from_env().repeats == 5
