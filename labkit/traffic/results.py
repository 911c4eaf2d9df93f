"""What a run of traffic gathered: one ``Outcome`` per request, and the ``TrafficResult`` of them all."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labkit.stats import SplitReport


@dataclass(frozen=True)
class Outcome:
    """What happened to one request: ``status`` None means no HTTP response (``error`` says why)."""

    t: float  # seconds since the run started, when the request was sent (open loop: when it was due)
    status: int | None
    version: str | None
    latency: float  # seconds from ``t`` to the response
    error: str | None = None
    flags: str | None = None

    @property
    def failed(self) -> bool:
        """A request the caller would count against the service: no response, or a 5xx."""
        return self.status is None or self.status >= 500


class TrafficResult:
    """All outcomes of one run, with the summaries a trainee asks for."""

    def __init__(self, outcomes: list[Outcome], source: str = "client", url: str = "", elapsed: float = 0.0):
        self.outcomes, self.source, self.url, self.elapsed = outcomes, source, url, elapsed
        # Filled by labkit.telemetry_split when no answer said its version: requests per destination_version.
        self.telemetry: dict[str, int] | None = None
        self.telemetry_reporter = ""  # which proxies counted them: "source" or "destination"
        self.telemetry_problem = ""  # why there is no telemetry split either

    def __len__(self) -> int:
        return len(self.outcomes)

    @property
    def measured_by(self) -> str:
        """How the split was measured: "responses" (their version), "telemetry" (mesh counters), "none"."""
        if any(o.version is not None for o in self.outcomes):
            return "responses"
        return "telemetry" if self.telemetry else "none"

    def counts(self) -> dict[str, int]:
        """Requests per version: from the answers, else from the mesh telemetry (unversioned left out)."""
        counted = Counter(o.version for o in self.outcomes if o.version is not None)
        return dict(counted) if counted or not self.telemetry else dict(self.telemetry)

    def split(self) -> dict[str, float]:
        """Share of the versioned responses each version answered."""
        counts = self.counts()
        total = sum(counts.values())
        return {v: k / total for v, k in sorted(counts.items())} if total else {}

    def codes(self) -> dict[int | str, int]:
        """Count per HTTP status, or per connection error (``"connection reset"``, ``"refused"``...)."""
        return dict(
            Counter(o.status if o.status is not None else (o.error or "error") for o in self.outcomes)
        )

    def errors(self) -> dict[int | str, int]:
        """Like ``codes()``, only for the failed requests (no response or 5xx)."""
        failed = Counter(
            o.status if o.status is not None else (o.error or "error") for o in self.outcomes if o.failed
        )
        return dict(failed)

    def latency(self, percentiles: tuple[float, ...] = (50, 90, 99)) -> dict[str, dict[float, float]]:
        """Latency percentiles in seconds per version."""
        from labkit import stats  # here: scipy's import would slow every use of the load generator

        return stats.latency_percentiles(self.outcomes, percentiles)

    def report(
        self, weights: Mapping[str, float] | None = None, confidence: float | None = None
    ) -> SplitReport:
        """The observed split with intervals, tested against the configured ``weights`` when given, at the
        lab's one level (``stats.CONFIDENCE``) unless ``confidence`` says otherwise."""
        from labkit import stats  # here: scipy's import would slow every use of the load generator

        level = stats.CONFIDENCE if confidence is None else confidence
        return stats.split_report(self.counts(), weights, confidence=level)

    def verdict(self, weights: Mapping[str, float], confidence: float | None = None) -> str:
        """One line: is the observed split consistent with ``weights``?"""
        return self.report(weights, confidence).verdict()

    def summary(self, weights: Mapping[str, float] | None = None) -> str:
        """Lines for a terminal: rate, split, latency, codes, failures (and a verdict, given ``weights``)."""
        rate = len(self.outcomes) / self.elapsed if self.elapsed else 0.0
        head = f"{len(self.outcomes)} requests from {self.source} to {self.url}"
        lines = [f"{head} in {self.elapsed:.1f} s ({rate:.1f}/s)"]
        counts, split, latency = self.counts(), self.split(), self.latency()
        lines.append("  " + self.measured())
        for version in sorted(counts):
            share = f"  {version}: {counts[version]} ({split[version]:.1%})"
            p = latency.get(version)  # per-version latency only when the answers said their version
            lines.append(
                share + f"  p50 {p[50] * 1000:.1f} ms  p90 {p[90] * 1000:.1f} ms  p99 {p[99] * 1000:.1f} ms"
                if p and self.measured_by == "responses"
                else share
            )
        lines.append(
            "  codes: " + ", ".join(f"{code}: {k}" for code, k in sorted(self.codes().items(), key=str))
        )
        errors = self.errors()
        if errors:
            lines.append(
                f"  failed: {sum(errors.values())} ({sum(errors.values()) / len(self.outcomes):.1%})"
            )
        if weights:
            lines.append("  " + self.verdict(weights))
        return "\n".join(lines)

    def measured(self) -> str:
        """One line saying which way the split was measured."""
        if self.measured_by == "responses":
            return "split measured from the answers (their x-version header or version field)"
        if self.measured_by == "telemetry":
            return (
                f"split measured from the mesh's telemetry: istio_requests_total by destination_version, "
                f"reporter={self.telemetry_reporter} (the answers did not say their version)"
            )
        if all(o.status is None for o in self.outcomes):
            return "no split: no request got an answer"
        return "no split: the answers did not say their version" + (
            f", and {self.telemetry_problem}" if self.telemetry_problem else ""
        )

    def __repr__(self) -> str:
        return f"<TrafficResult {len(self.outcomes)} requests {self.split()}>"
