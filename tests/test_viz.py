"""Figures show exactly the computed statistics, and export to PNG (kaleido + Debian chromium) and HTML."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labkit import stats, viz
from labkit.metrics import RequestCount
from labkit.traffic import Outcome, TrafficResult


def by_uid(fig, uid: str):
    return next(t for t in fig.data if t.uid == uid)


def test_split_bars_show_the_report_and_its_intervals() -> None:
    report = stats.split_report({"v1": 904, "v2": 96}, {"v1": 90, "v2": 10})
    fig = viz.split_bars(report)
    observed, configured = by_uid(fig, "observed"), by_uid(fig, "configured")
    assert list(configured.y) == pytest.approx([90, 10])
    assert list(observed.y) == pytest.approx([90.4, 9.6])
    v2 = report.shares["v2"]
    assert observed.error_y.array[1] == pytest.approx(100 * (v2.high - v2.share))
    assert observed.error_y.arrayminus[1] == pytest.approx(100 * (v2.share - v2.low))
    assert fig.layout.annotations[0].text == report.verdict()


def test_share_over_time_plots_the_rolling_shares_and_configured_steps() -> None:
    outcomes = [
        Outcome(i / 10, 200, "v2" if i % (10 if i < 100 else 2) == 0 else "v1", 0.01) for i in range(200)
    ]
    times, shares = stats.rolling_shares(outcomes, window=2.0, step=1.0, start=2.0)
    configured = [(0.0, {"v1": 0.9, "v2": 0.1}), (10.0, {"v1": 0.5, "v2": 0.5})]
    fig = viz.share_over_time(times, shares, configured, errors=[0.0] * len(times), events=[(10.0, "50 %")])
    assert list(by_uid(fig, "observed-v2").y) == pytest.approx([100 * s for s in shares["v2"]])
    assert list(by_uid(fig, "observed-v1").x) == times
    step = by_uid(
        fig, "configured-v2"
    )  # the canary sits at the bottom of the stack: its weight is the boundary
    assert list(step.x) == [0.0, 10.0, 20.0] and list(step.y) == [10, 50, 50] and step.line.shape == "hv"
    assert list(by_uid(fig, "events").text) == ["50 %"]


def test_share_over_time_without_data_points_draws_the_configured_steps_as_given() -> None:
    configured = [(0.0, {"v1": 0.9, "v2": 0.1}), (10.0, {"v1": 0.5, "v2": 0.5})]
    step = by_uid(viz.share_over_time([], {}, configured), "configured-v2")
    assert list(step.x) == [0.0, 10.0] and list(step.y) == [10, 50]  # one y per x


def test_latency_and_codes_per_version() -> None:
    result = TrafficResult(
        [Outcome(0, 200, "v1", 0.010), Outcome(0, 200, "v1", 0.030), Outcome(0, 500, "v2", 0.020)]
        + [Outcome(0, None, None, 0.001, "connection reset")],
        url="http://x",
    )
    fig = viz.latency(result, (50,))
    assert list(by_uid(fig, "latency-v1").y) == pytest.approx([20.0]) and list(
        by_uid(fig, "latency-v2").y
    ) == [20]
    codes = viz.status_codes(result)
    assert list(by_uid(codes, "code-200").x) == ["no response", "v1", "v2"]
    assert list(by_uid(codes, "code-200").y) == [0, 2, 0] and list(by_uid(codes, "code-500").y) == [0, 0, 1]
    assert list(by_uid(codes, "code-connection reset").y) == [1, 0, 0]


def sample(src: str, dst: str, code: str, value: float, reporter: str = "destination", mtls: bool = True):
    return RequestCount(
        {
            "reporter": reporter,
            "source_workload": src,
            "destination_workload": dst,
            "destination_service": "currency-converter.payments-prod.svc.cluster.local",
            "response_code": code,
            "connection_security_policy": "mutual_tls" if mtls else "none",
        },
        value,
    )


def test_topology_edges_carry_counts_shares_errors_and_the_lock() -> None:
    samples = [
        sample("client", "currency-converter-v1", "200", 900),
        sample("client", "currency-converter-v2", "200", 90),
        sample("client", "currency-converter-v2", "500", 10),
        sample("client", "currency-converter-v1", "200", 905, reporter="source"),  # same traffic, other side
        sample("unknown", "currency-converter-v1", "200", 20, mtls=False),
    ]
    fig = viz.topology(samples)
    labels = sorted(a.text for a in fig.layout.annotations if a.text)
    assert labels == [
        "100 req · 10% · 10.0% err · mTLS 🔒",
        "20 req · 100% · 0.0% err · plaintext",
        "900 req · 90% · 0.0% err · mTLS 🔒",
    ]
    nodes = by_uid(fig, "workloads")
    assert "client" in nodes.text and "outside the mesh<br>(no sidecar)" in nodes.text
    x = dict(zip(nodes.text, nodes.x, strict=True))
    assert x["client"] < x["currency-converter-v1"]  # callers left of callees
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    assert sorted(a.arrowcolor for a in arrows) == sorted([viz.OK, viz.OK, viz.FAILING])


def test_topology_rate_from_two_snapshots() -> None:
    before = [sample("client", "currency-converter-v1", "200", 100)]
    after = [sample("client", "currency-converter-v1", "200", 300)]
    fig = viz.topology(after, before=before, seconds=10)
    assert [a.text for a in fig.layout.annotations if a.text] == ["20.0 req/s · 100% · 0.0% err · mTLS 🔒"]


def test_export_html(tmp_path: Path) -> None:
    path = viz.export(viz.split_bars(stats.split_report({"v1": 9, "v2": 1})), tmp_path / "split.html")
    text = path.read_text()
    assert "plotly" in text.lower() and '"uid":"observed"' in text.replace(" ", "")


@pytest.mark.skipif(
    not shutil.which("chromium"), reason="PNG export needs Debian's chromium (apt-get install)"
)
def test_export_png(tmp_path: Path) -> None:
    path = viz.export(viz.split_bars(stats.split_report({"v1": 9, "v2": 1})), tmp_path / "split.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_an_empty_window_is_a_gap_not_an_invalid_json_number() -> None:
    times, shares = stats.rolling([0.5, 9.5], ["v1", "v1"], window=1.0, step=1.0, start=1.0)
    fig = viz.share_over_time(times, shares)
    assert by_uid(fig, "observed-v1").y[1] is None
    assert "NaN" not in fig.to_json()
