"""The check of a cost measurement (``labkit.cost``): can its points be trusted."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from labkit.checks.report import fail, passed

if TYPE_CHECKING:
    from labkit.cost import Point


# --- measurements -------------------------------------------------------------------------------------------


def measurement_sound(points: Iterable[Point]) -> None:
    """Every point of a cost measurement (``labkit.cost``) can be trusted: enough requests for a p99, the
    asked rate reached within ``cost.RATE_TOLERANCE``, no errors. Says nothing about the machine's speed."""
    from labkit import cost  # imported here: only notebook 11 measures

    points = list(points)
    found = cost.problems(points)
    if not points or found:
        raise fail(
            "the measurement is not sound: " + ("; ".join(found) if found else "no points were measured"),
            "a rate this machine did not reach while its cores are shared (load generator, apps, proxies, "
            "and maybe other jobs): measure lower rates or on a quieter machine; errors: print(point.result"
            ".summary()) for that point",
        )
    passed(
        f"{len(points)} runs, each ≥ {cost.MIN_REQUESTS} requests, within {cost.RATE_TOLERANCE:.0%} of its "
        "rate, no errors"
    )
