"""The live canary control: weights slider, Apply, background traffic, a chart of configured vs observed
share, and a progressive rollout (``Rollout``) it drives; every button is a method, so code can drive it."""

from __future__ import annotations

import dataclasses
import html
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import plotly.graph_objects as go

from labkit import canary, scenario, stats, traffic, viz
from labkit.lesson import URL as DEFAULT_URL
from labkit.stats import CONFIDENCE
from labkit.widgets.rollout import Rollout

if TYPE_CHECKING:
    from labkit.lab import Change, Lab


@dataclass(frozen=True)
class ControlState:
    """What the control shows, for check cells: configured weights, the last window's split and errors."""

    weights: dict[str, int]
    counts: dict[str, int]  # responses per version in the last window
    observed: dict[str, float]
    error_rate: float | None
    samples: int
    verdict: str
    traffic: bool
    rollout: str
    log: tuple[str, ...]
    api: str = "istio"  # which canary route the control writes: istio (VirtualService), gateway (HTTPRoute)


class CanaryControl:
    """The widget and its logic; display it, or drive it with ``apply``, ``start``, ``stop``, ``rollout``."""

    def __init__(
        self,
        lab: Lab,
        service: str = "currency-converter",
        url: str = DEFAULT_URL,
        source: str = "client",
        qps: float = 50,
        *,
        namespace: str = scenario.NAMESPACE,
        weights: Mapping[str, int] | None = None,
        window: float = 2.0,
        history: float = 90.0,
        api: str = "istio",
        port: int = scenario.PORT,
    ):
        """``weights``: what the lab runs now (default 90/10, as in the canary checkpoint); not applied.
        ``window``: the observed share and error rate are over the last ``window`` s (shorter than a
        rollout step, so the chart reaches each step's weight). ``api``: the canary route Apply and the
        rollout write, a VirtualService ("istio") or an HTTPRoute ("gateway"); the toggle switches it."""
        self.lab, self.service, self.url, self.source, self.namespace = lab, service, url, source, namespace
        self.port = port
        self.window, self.history = window, history
        current = dict(weights or {"v1": 90, "v2": 10})
        self.baseline, self.canary = list(current)
        self._t0 = time.monotonic()
        self._lock = threading.RLock()
        self._outcomes: deque[traffic.Outcome] = deque()
        self._configured: list[tuple[float, dict[str, int]]] = [(0.0, current)]
        self._events: list[tuple[float, str]] = []
        self._log: list[str] = []
        self._stream: traffic.Stream | None = None
        self._stream_offset = 0.0
        self._rollout: Rollout | None = None
        self._drawn = 0.0
        self._draw_lock = threading.Lock()

        pct = {"min": 0, "max": 100, "step": 5, "continuous_update": False}
        self.slider = w.IntSlider(value=current[self.canary], description=f"{self.canary} %", **pct)
        self.baseline_slider = w.IntSlider(
            value=current[self.baseline], description=f"{self.baseline} %", **pct
        )
        self.slider.observe(lambda c: self._pair(self.baseline_slider, c["new"]), "value")
        self.baseline_slider.observe(lambda c: self._pair(self.slider, c["new"]), "value")
        self.api_toggle = w.ToggleButtons(
            options=[("Istio APIs", "istio"), ("Gateway API", "gateway")], value=api, description="API"
        )
        self.apply_button = w.Button(description="Apply", button_style="primary", icon="check")
        self.apply_button.on_click(lambda _: self.apply())
        self.qps = w.BoundedIntText(value=int(qps), min=1, max=2000, description="req/s")
        self.traffic_button = w.ToggleButton(value=False, description="Send traffic", icon="play")
        self.traffic_button.observe(lambda c: self.start() if c["new"] else self.stop(), "value")
        self.rollout_button = w.Button(description="Progressive rollout", icon="forward")
        self.rollout_button.on_click(lambda _: self.rollout())
        self.status = w.HTML()
        self.log_view = w.HTML()
        chart = viz.share_over_time(
            [],
            {},
            self._configured_shares(),
            errors=[],
            title=f"{service}: configured vs observed (last {window:g} s)",
        )
        self.figure = go.FigureWidget(chart)
        for mine, trace in zip(chart.data, self.figure.data, strict=True):
            trace.uid = mine.uid  # FigureWidget draws fresh random uids; keep viz's, for stable outputs
        self._trace = {t.uid: t for t in self.figure.data}
        self.widget = w.VBox(
            [
                self.api_toggle,
                w.HBox([self.baseline_slider, self.slider, self.apply_button]),
                w.HBox([self.qps, self.traffic_button, self.rollout_button]),
                self.status,
                self.figure,
                self.log_view,
            ]
        )
        self._render_status()

    # --- what the buttons do ------------------------------------------------------------------------------

    def apply(self, weight: int | None = None) -> list[Change]:
        """Apply the slider's split (or ``weight`` % to the canary) as the VirtualService, or the HTTPRoute
        in Gateway API mode."""
        if weight is not None:
            self.slider.value = weight
        return self._set_weight(self.slider.value)

    def start(self) -> None:
        """Start background traffic at the ``qps`` box's rate."""
        with self._lock:
            if self._stream is not None and self._stream.running:
                return
            self._stream = self.lab.stream(
                self.url, source=self.source, qps=self.qps.value, on_batch=self._on_batch
            )
            self._stream.start()
            self._stream_offset = self._stream.started - self._t0
        traffic.register(self)  # lab.reset / traffic.stop_all() end this control's traffic and rollout
        self.traffic_button.value = True
        self._note(f"traffic on: {self.qps.value} req/s from {self.source}")

    def stop(self) -> None:
        """Stop the background traffic and a running rollout (which then writes no more weights)."""
        if self._rollout is not None:
            self._rollout.stop()
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            error = getattr(stream, "error", None)
            self._note("traffic off" + ("" if error is None else f" ({type(error).__name__}: {error})"))
        self.traffic_button.value = False

    def rollout(self, *, wait: bool = False, timeout: float = 300.0, **options: Any) -> str:
        """Start a progressive rollout of the canary (``options`` go to ``Rollout``, e.g. ``step_duration``);
        with ``wait``, block until it is done or rolled back, and return that status. Interrupting the
        cell (Ctrl-C, the stop button) stops the rollout and its traffic: the control shows "stopped"."""
        if self._rollout is not None:
            self._rollout.stop()
        self._rollout = Rollout(
            self._set_weight, canary=self.canary, on_event=self._on_rollout_event, **options
        )
        try:
            self.start()
            self._rollout.start(self._now())
            deadline = time.monotonic() + timeout
            while wait and self._rollout.status == "running" and time.monotonic() < deadline:
                time.sleep(0.2)
        except BaseException:  # KeyboardInterrupt above all: nothing may keep running unseen
            self.stop()
            raise
        return self._rollout.status

    def snapshot(self) -> go.Figure:
        """The chart as it is now, as a plain figure: it keeps a static image in a saved or exported
        notebook, where the live widget shows nothing."""
        self.redraw()
        return go.Figure(self.figure)

    @property
    def state(self) -> ControlState:
        with self._lock:
            weights = dict(self._configured[-1][1])
            recent = self._recent(self.window)
            log = tuple(self._log)
        counts = Counter(o.version for o in recent if o.version is not None)
        report = stats.split_report(counts, weights, CONFIDENCE)
        return ControlState(
            weights=weights,
            counts=dict(sorted(counts.items())),
            observed={v: s.share for v, s in report.shares.items() if s.k},  # versions that answered
            error_rate=sum(o.failed for o in recent) / len(recent) if recent else None,
            samples=len(recent),
            verdict=report.verdict(self.canary),
            traffic=self._stream is not None and self._stream.running,
            rollout=self._rollout.status if self._rollout else "idle",
            log=log,
            api=self.api_toggle.value,
        )

    def close(self) -> None:
        """Stop traffic and close the widgets (each of them: closing a box leaves its children open)."""
        self.stop()
        pending: list[w.Widget] = [self.widget]
        while pending:
            widget = pending.pop()
            pending.extend(getattr(widget, "children", ()))
            widget.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # --- internals ------------------------------------------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic() - self._t0

    @staticmethod
    def _pair(other: w.IntSlider, value: int) -> None:
        """Keep the two sliders summing to 100."""
        if other.value != 100 - value:
            other.value = 100 - value

    def _set_weight(self, canary_weight: int) -> list[Change]:
        weights = {self.baseline: 100 - canary_weight, self.canary: canary_weight}
        api = self.api_toggle.value
        changes = self.lab.set_weights(self.service, self.namespace, api=api, port=self.port, **weights)
        with self._lock:
            self._configured.append((self._now(), weights))
        if self.slider.value != canary_weight:
            self.slider.value = canary_weight
        kind = canary.KINDS[api]
        self._note(
            f"applied {self.baseline} {100 - canary_weight} % / {self.canary} {canary_weight} % ({kind})"
        )
        self._draw(force=True)
        return changes

    def _on_batch(self, batch: list[traffic.Outcome]) -> None:
        """Runs on the traffic worker thread, about every 0.25 s."""
        shifted = [dataclasses.replace(o, t=o.t + self._stream_offset) for o in batch]
        with self._lock:
            self._outcomes.extend(shifted)
            while self._outcomes and self._outcomes[0].t < self._now() - self.history - self.window:
                self._outcomes.popleft()
        rollout = self._rollout
        if rollout is not None and rollout.status == "running":
            try:
                rollout.observe(shifted)
            except Exception as exc:  # e.g. the lab refused the weights: stop, and say why
                rollout.status = "error"
                self._note(f"rollout stopped: {exc}")
        self._draw()

    def _on_rollout_event(self, now: float, text: str, mark: str | None) -> None:
        if mark is not None:
            with self._lock:
                self._events.append((now, mark))
        self._note(text)
        self._draw(force=True)  # the mark must show even when no traffic batch triggers the next redraw

    def _recent(self, seconds: float) -> list[traffic.Outcome]:
        cutoff = self._now() - seconds
        return [o for o in self._outcomes if o.t >= cutoff]

    def _configured_shares(self) -> list[tuple[float, dict[str, float]]]:
        return [(t, stats.normalise(weights)) for t, weights in self._configured]

    def redraw(self) -> None:
        """Redraw the chart now (it redraws by itself twice a second while traffic flows)."""
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        """Redraw the chart at most twice a second (and on every weight change)."""
        now = self._now()
        if not force and now - self._drawn < 0.5:
            return
        self._drawn = now
        step = 0.5
        with self._lock:
            outcomes = self._recent(self.history + self.window)
            configured = self._configured_shares()
            events = list(self._events)
        start = max(0.0, now - self.history)
        start = round(start / step) * step + step
        times, shares = stats.rolling_shares(outcomes, self.window, step, start)
        error_times, failed = stats.rolling(
            [o.t for o in outcomes],
            ["failed" if o.failed else "ok" for o in outcomes],
            self.window,
            step,
            start,
        )
        errors = failed.get("failed", [0.0] * len(error_times))
        configured = [(max(t, start - step), w) for t, w in configured]
        with self._draw_lock, self.figure.batch_update():  # the traffic thread and the kernel both draw
            for v in (self.baseline, self.canary):
                self._trace[f"observed-{v}"].update(x=times, y=viz.percent(shares.get(v, [])))
            boundary = [100 * w.get(self.canary, 0.0) for _, w in configured]
            self._trace[f"configured-{self.canary}"].update(
                x=[t for t, _ in configured] + [now], y=boundary + boundary[-1:]
            )
            self._trace["error-rate"].update(x=error_times, y=viz.percent(errors))
            events = [(t, text) for t, text in events if t >= start - step]
            self._trace["events"].update(
                x=[t for t, _ in events], y=[100] * len(events), hovertext=[text for _, text in events]
            )
            self.figure.update_layout(viz.event_layout(events, (start - step, max(now, start))))
        self._render_status()

    def _note(self, text: str) -> None:
        with self._lock:
            self._log.append(f"[{self._now():6.1f} s] {text}")
            lines = self._log[-8:]
        self.log_view.value = "<pre style='margin:0'>" + "\n".join(lines) + "</pre>"
        self._render_status()

    def _render_status(self) -> None:
        state = self.state
        observed = ", ".join(f"{v} {s:.0%}" for v, s in state.observed.items()) or "no responses yet"
        errors = "–" if state.error_rate is None else f"{state.error_rate:.1%}"
        self.status.value = (
            f"<b>configured</b> {state.weights} · <b>observed</b> (last {self.window:g} s, "
            f"{state.samples} req) {observed} · <b>errors</b> {errors} · <b>rollout</b> {state.rollout}"
        ) + self._stream_problem(state.traffic)
        if not state.traffic and self.traffic_button.value and self._stream is not None:
            self.traffic_button.value = False  # the stream died by itself: stop() logs why

    def _stream_problem(self, running: bool) -> str:
        """The traffic stream's last failure (the pod cannot send, on_batch raised), else ""."""
        error = getattr(self._stream, "error", None)
        if error is None:
            return ""
        what = "traffic error" if running else "traffic stopped"
        return f" · <b style='color:#c00'>{what}</b> {html.escape(f'{type(error).__name__}: {error}')}"


def canary_control(
    lab: Lab,
    service: str = "currency-converter",
    url: str = DEFAULT_URL,
    source: str = "client",
    qps: float = 50,
    **options: Any,
) -> CanaryControl:
    """The live canary control for ``service``; display the result in a notebook cell."""
    return CanaryControl(lab, service, url, source, qps, **options)
