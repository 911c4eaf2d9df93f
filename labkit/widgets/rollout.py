"""The progressive rollout's decisions (no widgets): advance a step on evidence, roll back at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

from labkit import stats, traffic
from labkit.stats import CONFIDENCE


class Rollout:
    """Progressive delivery by evidence: each step's canary weight holds until the Wilson interval of the
    canary's error rate (at the lab's confidence) says it is below ``max_error`` and the step has lasted
    ``step_duration`` s (advance, so a trainee can watch each step), or above it (roll back to 0 % at once).

    Feed it outcomes with ``observe()``; time is the outcomes' own clock, so it needs no timer. A step that
    reaches no verdict within ``step_timeout`` s rolls back too: not knowing is not healthy. ``stop()`` ends
    it for good: once it returns, the rollout writes no weight any more (an interrupted cell, ``lab.reset``).
    """

    def __init__(
        self,
        set_weight: Callable[[int], object],
        *,
        steps: Sequence[int] = (10, 25, 50, 100),
        canary: str = "v2",
        max_error: float = 0.05,
        confidence: float = CONFIDENCE,
        min_samples: int = 10,
        settle: float = 1.0,
        step_duration: float = 8.0,
        step_timeout: float = 60.0,
        on_event: Callable[[float, str, str | None], object] | None = None,
    ):
        self.set_weight, self.steps, self.canary = set_weight, list(steps), canary
        self.max_error, self.confidence, self.min_samples = max_error, confidence, min_samples
        self.settle, self.step_duration, self.step_timeout = settle, step_duration, step_timeout
        self.on_event = on_event
        self.status = "idle"  # idle | running | done | rolled back | stopped
        self._writing = threading.Lock()  # held while a weight is written: stop() waits for it
        self.step = -1
        self.events: list[tuple[float, str]] = []  # (t, what happened)
        self._last = 0.0  # the newest outcome's time: when stop() happened, on the outcomes' clock
        self._since = 0.0
        self._failed = self._n = 0

    @property
    def weight(self) -> int | None:
        """The canary weight of the current step (0 after a rollback)."""
        if self.status == "rolled back":
            return 0
        return self.steps[self.step] if self.step >= 0 else None

    def start(self, now: float) -> None:
        self.status, self._last = "running", now
        self._enter(0, now)

    def stop(self) -> None:
        """Stop for good; a weight write in progress finishes first, none starts after this returns."""
        with self._writing:
            if self.status != "running":
                return
            self.status = "stopped"
        self._event(self._last, f"rollout stopped at {self.weight} %: no further weight changes", "stopped")

    def _write(self, weight: int) -> bool:
        """Apply ``weight`` unless the rollout was stopped meanwhile (then nothing is written)."""
        with self._writing:
            if self.status != "running":
                return False
            self.set_weight(weight)
            return True

    def observe(self, outcomes: Iterable[traffic.Outcome]) -> None:
        """Count the canary's answers sent after the current step settled, then decide."""
        now = None
        for o in outcomes:
            now = o.t if now is None else max(now, o.t)
            if self.status == "running" and o.version == self.canary and o.t >= self._since + self.settle:
                self._n += 1
                self._failed += o.failed
        if self.status == "running" and now is not None:
            self._last = max(self._last, now)
            self._decide(now)

    def _decide(self, now: float) -> None:
        low, high = stats.interval(self._failed, self._n, self.confidence)
        level = f"{100 * self.confidence:.3f}".rstrip("0").rstrip(".")
        evidence = f"{self._failed}/{self._n} failed, error rate ≤ {high:.1%} at {level} %"
        if self._n >= self.min_samples and high < self.max_error:
            if now - self._since < self.step_duration:
                return  # healthy so far: hold the step for the trainee to watch
            if self.step + 1 == len(self.steps):
                self.status = "done"
                self._event(
                    now, f"{self.canary} healthy at {self.weight} % ({evidence}): rollout done", "done"
                )
            else:
                self._event(now, f"{self.canary} healthy at {self.weight} % ({evidence})")
                self._enter(self.step + 1, now)
        elif self._n >= self.min_samples and low > self.max_error:
            self._rollback(
                now, f"{self._failed}/{self._n} failed, error rate ≥ {low:.1%} > {self.max_error:.0%}"
            )
        elif now - self._since > self.step_timeout:
            self._rollback(now, f"no verdict within {self.step_timeout:g} s ({self._n} samples)")

    def _enter(self, step: int, now: float) -> None:
        if not self._write(self.steps[step]):
            return
        self.step, self._since, self._failed, self._n = step, now, 0, 0
        self._event(
            now,
            f"step {step + 1}/{len(self.steps)}: {self.canary} → {self.steps[step]} %",
            f"{self.steps[step]} %",
        )

    def _rollback(self, now: float, why: str) -> None:
        if not self._write(0):
            return
        self._event(now, f"ROLLBACK at {self.steps[self.step]} %: {why}; {self.canary} → 0 %", "ROLLBACK")
        self.status = "rolled back"  # last: a waiting caller then sees the weights back and the mark drawn

    def _event(self, now: float, text: str, mark: str | None = None) -> None:
        """Record ``text``; ``mark`` is the short label a chart puts at ``now`` (steps and the rollback)."""
        self.events.append((now, text))
        if self.on_event is not None:
            self.on_event(now, text, mark)
