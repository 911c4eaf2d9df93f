"""Checks of the canary control's progressive rollout (``labkit.widgets``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.checks.report import fail, passed

if TYPE_CHECKING:
    from labkit.widgets import ControlState


# --- the canary control (labkit.widgets) --------------------------------------------------------------------


def rollout_promoted(state: ControlState, canary: str = "v2") -> None:
    """The progressive rollout finished: the canary carries 100 % (``control.state``)."""
    if state.rollout != "done" or state.weights.get(canary) != 100:
        raise fail(
            f"the rollout did not promote {canary}: status {state.rollout!r}, weights {state.weights}",
            "the control's log below the chart (each step's error rate); is "
            f"{canary} healthy (FAIL_RATE 0)? `checks.all_ok(lab.send(lesson.URL, n=50))`",
        )
    passed(f"rollout done: {canary} at 100 %")


def rollout_rolled_back(state: ControlState, canary: str = "v2") -> None:
    """The progressive rollout stopped and put the canary back to 0 % (``control.state``)."""
    if state.rollout != "rolled back" or state.weights.get(canary) != 0:
        raise fail(
            f"the rollout did not roll {canary} back: status {state.rollout!r}, weights {state.weights}",
            f"is {canary} failing (FAIL_RATE set on its Deployment)? The control's log shows each step's "
            "error rate and the threshold (max_error)",
        )
    why = next((line for line in reversed(state.log) if "ROLLBACK" in line), "")
    passed(f"rolled back: {canary} at 0 % {why}".rstrip())
