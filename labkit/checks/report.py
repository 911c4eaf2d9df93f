"""How a check reports: its success line, the error it raises, and the exact test statistical checks share."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from labkit.errors import WHAT_TO_DO, CheckFailed
from labkit.stats import CONFIDENCE

if TYPE_CHECKING:
    from labkit.traffic import Outcome, TrafficResult


#: The end of every hint: symptoms like these also come from configuration an earlier notebook left.
LEFTOVER = (
    "leftover configuration from an earlier or interrupted notebook (a fault, a policy, FAIL_RATE) gives "
    "the same symptoms: run this notebook's first cell again (`lab.ensure(...)` puts the lab back to exactly "
    'that state), or `lab.reset("CHECKPOINT")` / `labkit reset CHECKPOINT`'
)


def passed(message: str) -> None:
    """Print the success line every check ends with."""
    print(f"✔ {message}")


def fail(
    problem: str, look_at: str, result: TrafficResult | None = None, leftover: bool = True
) -> CheckFailed:
    """The error a check raises: what went wrong, what to look at (as in the troubleshooting sections),
    the traffic's summary and response flags, and the leftover-configuration hint."""
    lines = [problem, f"  {WHAT_TO_DO} look at {look_at}"]  # the lab's one wording for the next step
    if result is not None:
        lines.append("  What the requests got: " + result.summary().replace("\n", "\n    "))
        lines.append(f"  Response flags seen: {_flags(result)}")
    if leftover:
        lines.append(f"  Also possible: {LEFTOVER}")
    return CheckFailed("\n".join(lines))


def _flags(result: TrafficResult) -> str:
    """Envoy response flags of the requests (FI, DI, UH, UT, NC, RBAC ...), with counts; "none" without."""
    flags = Counter(f for o in result.outcomes if o.flags for f in o.flags.split(",") if f and f != "-")
    return ", ".join(f"{f}: {n}" for f, n in sorted(flags.items())) or "none"


def _test(k: int, n: int, expected: float, alternative: str = "two-sided") -> tuple[bool, float, float]:
    """Exact binomial test of ``k`` of ``n`` against ``expected``: (consistent at CONFIDENCE, exact
    interval low, high). Its false-failure rate is at most 1 - CONFIDENCE whatever ``n`` is."""
    from scipy import stats as sps  # imported on first use: keeps `import labkit` fast

    test = sps.binomtest(k, n, expected, alternative=alternative)
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return test.pvalue >= 1 - CONFIDENCE, float(ci.low), float(ci.high)


def _describe(result: TrafficResult) -> str:
    """Answers by status code, requests without one by their error ("refused", "connection reset"...)."""
    parts = [f"{code}: {n}" for code, n in sorted(result.codes().items(), key=lambda kv: str(kv[0]))]
    return ", ".join(parts) or "no requests"


def _requests(result: TrafficResult, what: str) -> list[Outcome]:
    outcomes = list(result.outcomes)
    if not outcomes:
        raise fail(
            f"no requests were sent for {what}", "send traffic first, e.g. `lab.send(lesson.URL, n=100)`"
        )
    return outcomes
