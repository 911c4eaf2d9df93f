"""The live canary control: weights slider, Apply, background traffic, a chart of configured vs observed
share, and a progressive rollout that rolls back by itself when the canary's error rate is not acceptable.

The rollout decisions live in ``Rollout`` (no widgets), and everything the buttons do is a method of
``CanaryControl``, so a check cell or a test drives it from code: ``ctrl.slider.value = 30; ctrl.apply()``.
"""

from __future__ import annotations

from labkit.widgets.control import CanaryControl, ControlState, canary_control
from labkit.widgets.rollout import Rollout

__all__ = ["CanaryControl", "ControlState", "Rollout", "canary_control"]
