"""Split statistics against known cases and scipy, and the verdicts a trainee reads."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from labkit import stats
from labkit.errors import LabError
from labkit.traffic import Outcome


def test_wilson_interval_matches_the_textbook_formula() -> None:
    # Wilson (1927): centre (k + z²/2)/(n + z²), half-width z·sqrt(k(n-k)/n + z²/4)/(n + z²)
    z, k, n = sps.norm.ppf(0.975), 10, 100
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    assert stats.interval(k, n, 0.95) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert stats.interval(0, 0) == (0.0, 1.0)


def test_weights_are_relative() -> None:
    assert stats.normalise({"v1": 1, "v2": 3}) == {"v1": 0.25, "v2": 0.75}
    assert stats.normalise({"v1": 90, "v2": 10}) == pytest.approx({"v1": 0.9, "v2": 0.1})
    with pytest.raises(LabError):
        stats.normalise({"v1": 0, "v2": 0})


def test_ninety_ten_sample_is_consistent_with_ninety_ten() -> None:
    report = stats.split_report({"v1": 904, "v2": 96}, {"v1": 90, "v2": 10})
    assert report.consistent is True and report.test == "exact binomial"
    assert report.p_value == pytest.approx(sps.binomtest(96, 1000, 0.1).pvalue)
    low, high = sps.binomtest(96, 1000).proportion_ci(stats.CONFIDENCE, method="wilson")  # the lab's level
    assert (report.shares["v2"].low, report.shares["v2"].high) == pytest.approx((low, high))
    assert report.verdict() == (
        f"v2 got 9.6 % ({100 * low:.1f}–{100 * high:.1f} %, 99.999 %) of 1000"
        " — consistent with the configured 10 %"
    )


def test_fifty_fifty_sample_is_not_consistent_with_ninety_ten() -> None:
    report = stats.split_report({"v1": 100, "v2": 100}, {"v1": 90, "v2": 10})
    assert report.consistent is False
    assert "NOT consistent with the configured 10 % (p = " in report.verdict()
    assert report.p_value < 1e-20


def test_relative_weights_and_three_versions_use_chi_square() -> None:
    counts = {"v1": 260, "v2": 240, "v3": 500}
    report = stats.split_report(counts, {"v1": 1, "v2": 1, "v3": 2})
    assert report.test == "chi-square"
    assert report.p_value == pytest.approx(sps.chisquare([260, 240, 500], [250, 250, 500]).pvalue)
    assert report.consistent is True
    assert report.expected == {"v1": 0.25, "v2": 0.25, "v3": 0.5}


def test_a_version_with_weight_zero_that_answers_is_flagged() -> None:
    report = stats.split_report({"v1": 95, "v2": 5}, {"v1": 100, "v2": 0})
    assert report.consistent is False
    assert (
        report.verdict().startswith("v2 got 5.0 %")
        and "NOT consistent with the configured 0 %" in report.verdict()
    )


def test_no_data_gives_no_verdict() -> None:
    report = stats.split_report({}, {"v1": 90, "v2": 10})
    assert report.consistent is None and "cannot be judged" in report.verdict()


def outcome(t: float, version: str | None, status: int | None = 200, latency: float = 0.01) -> Outcome:
    return Outcome(t=t, status=status, version=version, latency=latency, error=None if status else "refused")


def test_latency_per_version() -> None:
    outcomes = [outcome(i, "v1", latency=i / 100) for i in range(1, 101)]
    outcomes += [outcome(i, "v2", 500 if i % 4 == 0 else 200) for i in range(40)]
    outcomes += [outcome(0, None, None)]
    latency = stats.latency_percentiles(outcomes, (50, 99))
    assert latency["v1"][50] == pytest.approx(np.percentile(np.arange(1, 101) / 100, 50))
    assert "none" not in latency  # no response, no latency


def test_rolling_shares_follow_a_change() -> None:
    # 10 requests a second; v2 gets 1 in 10 for 10 s, then 1 in 2.
    outcomes = [outcome(i / 10, "v2" if i % (10 if i < 100 else 2) == 0 else "v1") for i in range(200)]
    times, shares = stats.rolling_shares(outcomes, window=2.0, step=1.0, start=2.0)
    assert times[0] == 2.0 and times[-1] == 20.0
    assert shares["v2"][times.index(5.0)] == pytest.approx(0.1)
    assert shares["v2"][times.index(15.0)] == pytest.approx(0.5)
    assert all(a + b == pytest.approx(1) for a, b in zip(shares["v1"], shares["v2"], strict=True))


def test_rolling_window_without_events_is_a_gap() -> None:
    times, shares = stats.rolling([0.5, 0.6, 9.5], ["a", "b", "a"], window=1.0, step=1.0, start=1.0)
    assert shares["a"][0] == 0.5 and math.isnan(shares["a"][4]) and shares["a"][-1] == 1.0
