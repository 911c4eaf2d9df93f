"""Is the observed split the configured one? Wilson intervals and goodness-of-fit tests, all from scipy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import stats as sps

from labkit.errors import LabError

#: The lab's one confidence level, budgeted for a whole CI run (``bash .ci/run``): such a run may fail
#: falsely at most 1 time in 1,000 ...
RUN_FALSE_FAILURE = 0.001
#: ... and holds at most this many statistical checks on live traffic: the notebook run's 32 (tallied by
#: tests/test_notebooks.py), the test modules' assertions on measured splits and shares (about 30: the
#: mesh, shop, Gateway API, call-graph, traffic, telemetry, tour and JupyterHub tests) and the rerun of the
#: mesh tests on the oldest supported Envoy (4), with room to grow ...
CHECKS_PER_RUN = 100
#: ... so, by the union bound, each check works at 1 - 0.001 / 100 = 99.999 %. A wrong configuration (50/50
#: where 90/10 is configured) is still dozens of standard errors away at the lab's sample sizes.
CONFIDENCE = 1 - RUN_FALSE_FAILURE / CHECKS_PER_RUN
#: The same level as the text says it: "99.999 %".
LEVEL = f"{100 * CONFIDENCE:.4f}".rstrip("0").rstrip(".") + " %"


class Outcome(Protocol):
    """What these statistics read of one request (``labkit.traffic.Outcome`` has it): when it left, its
    status, who answered and how long it took."""

    @property
    def t(self) -> float: ...
    @property
    def status(self) -> int | None: ...
    @property
    def version(self) -> str | None: ...
    @property
    def latency(self) -> float: ...


@dataclass(frozen=True)
class Share:
    """``k`` of ``n`` requests, their share and its Wilson interval; ``expected`` is the configured share."""

    version: str
    k: int
    n: int
    share: float
    low: float
    high: float
    expected: float | None = None


@dataclass(frozen=True)
class SplitReport:
    """The observed split, and (given weights) the p-value of "traffic follows the weights"."""

    shares: dict[str, Share]
    n: int
    confidence: float
    expected: dict[str, float] | None
    p_value: float | None
    test: str | None  # "exact binomial" or "chi-square"

    @property
    def consistent(self) -> bool | None:
        """True when the test keeps the weights at level ``1 - confidence``; None without weights or data."""
        if self.p_value is None:
            return None
        return self.p_value >= 1 - self.confidence

    def verdict(self, version: str | None = None) -> str:
        """One line for a trainee about ``version`` (default: the canary, the smallest non-zero weight)."""
        if self.n == 0:
            return "no responses carried a version yet, so the split cannot be judged"
        version = version or self._canary()
        s = self.shares.get(version) or Share(version, 0, self.n, 0.0, *interval(0, self.n, self.confidence))
        line = (
            f"{version} got {s.share * 100:.1f} % ({s.low * 100:.1f}–{s.high * 100:.1f} %, "
            f"{self.confidence * 100:g} %) of {self.n}"
        )
        if self.expected is None or self.p_value is None:
            return line
        configured = f"{round(self.expected.get(version, 0.0) * 100, 1):g} %"
        if self.consistent:
            return f"{line} — consistent with the configured {configured}"
        return f"{line} — NOT consistent with the configured {configured} (p = {self.p_value:.2g})"

    def _canary(self) -> str:
        if self.expected:
            unexpected = [v for v, s in self.shares.items() if s.k and not self.expected.get(v)]
            if unexpected:
                return unexpected[0]  # a version with weight 0 answered: that is the story
            nonzero = {v: w for v, w in self.expected.items() if w > 0}
            return min(nonzero, key=lambda v: (nonzero[v], v)) if nonzero else min(self.expected)
        return min(self.shares, key=lambda v: (self.shares[v].k, v))

    def __str__(self) -> str:
        return self.verdict()


def normalise(weights: Mapping[str, float]) -> dict[str, float]:
    """Relative weights as shares: ``{"v1": 1, "v2": 3}`` -> ``{"v1": 0.25, "v2": 0.75}``."""
    total = float(sum(weights.values()))
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise LabError(f"weights {dict(weights)} must be 0 or more with a positive sum")
    return {v: w / total for v, w in weights.items()}


def interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k/n``."""
    if n == 0:
        return 0.0, 1.0
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def fit(counts: Mapping[str, int], weights: Mapping[str, float]) -> tuple[float, str]:
    """p-value of "these counts come from these weights": exact binomial for two versions, else chi-square."""
    expected = normalise(weights)
    versions = sorted(set(expected) | set(counts))
    observed = np.array([counts.get(v, 0) for v in versions])
    p = np.array([expected.get(v, 0.0) for v in versions])
    n = int(observed.sum())
    if np.any(observed[p == 0] > 0):
        return 0.0, "impossible under the weights"  # a version with weight 0 answered
    observed, p = observed[p > 0], p[p > 0]
    if len(p) == 1:
        return 1.0, "single version"
    if len(p) == 2:
        return float(sps.binomtest(int(observed[1]), n, float(p[1])).pvalue), "exact binomial"
    return float(sps.chisquare(observed, p * n).pvalue), "chi-square"


def split_report(
    counts: Mapping[str, int], weights: Mapping[str, float] | None = None, confidence: float = CONFIDENCE
) -> SplitReport:
    """Shares with Wilson intervals for every version, tested against ``weights`` when given."""
    n = sum(counts.values())
    expected = normalise(weights) if weights else None
    versions = sorted(set(counts) | set(expected or {}))
    shares = {
        v: Share(
            v,
            counts.get(v, 0),
            n,
            counts.get(v, 0) / n if n else 0.0,
            *interval(counts.get(v, 0), n, confidence),
            expected.get(v, 0.0) if expected else None,
        )
        for v in versions
    }
    p_value, test = fit(counts, weights) if weights and n else (None, None)
    return SplitReport(shares, n, confidence, expected, p_value, test)


def latency_percentiles(
    outcomes: Iterable[Outcome], percentiles: Sequence[float] = (50, 90, 99)
) -> dict[str, dict[float, float]]:
    """Latency percentiles (seconds) per version, over the requests that got a response."""
    by_version: dict[str, list[float]] = {}
    for o in outcomes:
        if o.status is not None:
            by_version.setdefault(o.version or "none", []).append(o.latency)
    return {
        v: dict(zip(percentiles, np.percentile(values, percentiles).tolist(), strict=True))
        for v, values in sorted(by_version.items())
    }


def rolling_shares(
    outcomes: Sequence[Outcome], window: float = 5.0, step: float = 1.0, start: float | None = None
) -> tuple[list[float], dict[str, list[float]]]:
    """Share per version among the versioned responses sent in ``[end - window, end)``, for ends every
    ``step`` s from ``start`` (default: one step after the first)."""
    answered = [o for o in outcomes if o.version is not None]
    return rolling([o.t for o in answered], [o.version or "" for o in answered], window, step, start)


def rolling(
    times: Sequence[float],
    labels: Sequence[str],
    window: float = 5.0,
    step: float = 1.0,
    start: float | None = None,
) -> tuple[list[float], dict[str, list[float]]]:
    """Share of each label among the events in ``[end - window, end)``, for ends every ``step`` s.

    A window without events gives NaN, so a chart shows a gap rather than a false 0 %.
    """
    if len(times) == 0:
        return [], {}
    order = np.argsort(times, kind="stable")
    t, names = np.asarray(times, dtype=float)[order], np.asarray(labels)[order]
    ends = np.arange(t[0] + step if start is None else start, t[-1] + step, step)
    lo, hi = np.searchsorted(t, ends - window, side="left"), np.searchsorted(t, ends, side="left")
    totals = hi - lo
    shares: dict[str, list[float]] = {}
    for label in sorted(set(names.tolist())):
        cumulative = np.concatenate([[0], np.cumsum(names == label)])
        k = cumulative[hi] - cumulative[lo]
        shares[label] = np.where(totals > 0, k / np.maximum(totals, 1), np.nan).tolist()
    return ends.tolist(), shares
