"""The canary control: rollout decisions on their own, then the whole control headless on the local mesh."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import labkit
from labkit import lesson, stats, traffic
from labkit.errors import LabError
from labkit.lab import Lab
from labkit.traffic import Outcome
from labkit.widgets import CanaryControl, Rollout, canary_control


def answers(
    start: float, seconds: float, rate: float, canary_share: float, fail_every: int = 0
) -> list[Outcome]:
    """``rate`` answers a second; every ``1/canary_share``-th is v2, every ``fail_every``-th v2 fails."""
    out, every = [], round(1 / canary_share)
    for i in range(round(start * rate), round((start + seconds) * rate)):
        v2 = i % every == 0
        failed = v2 and fail_every and (i // every) % fail_every == 0
        out.append(Outcome(i / rate, 500 if failed else 200, "v2" if v2 else "v1", 0.01))
    return out


def drive(rollout: Rollout, weights: list[int], seconds: float, fail_every: int = 0) -> None:
    """Traffic that follows the last applied weight, fed in 0.25 s batches like the Stream does."""
    t = 0.0
    while t < seconds and rollout.status == "running":
        rollout.observe(answers(t, 0.25, 100, max(weights[-1], 1) / 100, fail_every))
        t += 0.25


def test_rollout_advances_step_by_step_with_a_healthy_canary() -> None:
    weights: list[int] = []
    rollout = Rollout(weights.append, max_error=0.05, confidence=0.95)
    rollout.start(0.0)
    drive(rollout, weights, 120)
    assert rollout.status == "done" and weights == [10, 25, 50, 100]
    # each step held until the Wilson upper bound of v2's error rate fell below 5 %: about 73 clean answers
    assert stats.interval(0, 72, 0.95)[1] >= 0.05 > stats.interval(0, 73, 0.95)[1]
    steps = [t for t, text in rollout.events if text.startswith("step")]
    assert steps[1] - steps[0] >= 1.0 + 72 / 10  # settle, then 73 answers at 10 % of 100 req/s


def test_rollout_rolls_back_when_the_canary_fails() -> None:
    weights: list[int] = []
    rollout = Rollout(weights.append)
    rollout.start(0.0)
    drive(rollout, weights, 120, fail_every=3)  # a third of v2's answers are 500s
    assert rollout.status == "rolled back" and weights == [10, 0] and rollout.weight == 0
    assert rollout.events[-1][1].startswith("ROLLBACK at 10 %")


def test_rollout_without_evidence_rolls_back_at_the_step_timeout() -> None:
    weights: list[int] = []
    rollout = Rollout(weights.append, step_timeout=5)
    rollout.start(0.0)
    rollout.observe([Outcome(t / 10, 200, "v1", 0.01) for t in range(80)])  # v2 never answers
    assert rollout.status == "rolled back" and "no verdict within 5 s (0 samples)" in rollout.events[-1][1]


def test_answers_before_the_step_settles_do_not_count() -> None:
    weights: list[int] = []
    rollout = Rollout(weights.append, settle=2.0)
    rollout.start(0.0)
    rollout.observe([Outcome(1.0, 500, "v2", 0.01)] * 50)  # still the old route's traffic
    assert rollout.status == "running"


def test_sliders_keep_summing_to_100_headless(tmp_path: Path) -> None:
    ctrl = canary_control(labkit.open("local", state=tmp_path))
    ctrl.slider.value = 30
    assert ctrl.baseline_slider.value == 70
    ctrl.baseline_slider.value = 95
    assert ctrl.slider.value == 5
    assert ctrl.state.weights == {"v1": 90, "v2": 10} and ctrl.state.traffic is False  # nothing applied
    assert (
        ctrl._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"]
        == ctrl.widget.model_id
    )


# --- on the local mesh ---------------------------------------------------------------------------------


@pytest.fixture
def ctrl(lab: Lab) -> Iterator[CanaryControl]:
    ctrl = canary_control(lab, qps=100)
    try:
        yield ctrl
    finally:
        ctrl.close()
        lab.set_weights("currency-converter", v1=90, v2=10)


@pytest.mark.mesh
def test_slider_applies_the_virtual_service_and_the_split_converges(ctrl: CanaryControl, lab: Lab) -> None:
    ctrl.start()
    ctrl.slider.value = 30
    changes = ctrl.apply()
    assert [(c.kind, c.name, c.action) for c in changes] == [
        ("VirtualService", "currency-converter", "configured")
    ]
    assert ctrl.state.weights == {"v1": 70, "v2": 30} and ctrl.baseline_slider.value == 70

    # The state's window is the last 2 s: once it holds only traffic sent after the change, the split matches.
    time.sleep(ctrl.window + 1.0)
    deadline = time.monotonic() + 10
    while not stats.split_report(ctrl.state.counts, {"v1": 70, "v2": 30}).consistent:
        assert time.monotonic() < deadline, ctrl.state
        time.sleep(0.5)
    counts = ctrl.state.counts
    assert sum(counts.values()) >= 150, counts  # about 200: 2 s at 100 req/s
    assert not stats.split_report(counts, {"v1": 90, "v2": 10}).consistent, counts

    ctrl.redraw()
    figure = {t.name: t for t in ctrl.figure.data}
    assert list(figure["v2 configured"].y)[-1] == 30
    assert figure["v2 observed"].y[-1] == pytest.approx(100 * ctrl.state.observed["v2"], abs=10)
    assert figure["error rate"].y[-1] == 0


@pytest.mark.mesh
def test_rollout_goes_to_100_with_a_healthy_v2(ctrl: CanaryControl) -> None:
    assert ctrl.rollout(wait=True, timeout=120, max_error=0.1, step_duration=1) == "done"
    state = ctrl.state
    assert state.weights == {"v1": 0, "v2": 100} and state.rollout == "done"
    assert [line.split("] ")[1] for line in state.log if "step" in line] == [
        f"step {i}/4: v2 → {w} %" for i, w in enumerate((10, 25, 50, 100), 1)
    ]
    ctrl.redraw()
    assert [a.text for a in ctrl.figure.layout.annotations] == ["10 %", "25 %", "50 %", "100 %", "done"]


@pytest.mark.mesh
def test_rollout_rolls_back_with_a_failing_v2(ctrl: CanaryControl, lab: Lab) -> None:
    lab.apply(lesson.with_env("currency-converter-v2", FAIL_RATE="0.5"))
    try:
        assert ctrl.rollout(wait=True, timeout=120) == "rolled back"
        state = ctrl.state
        assert state.weights == {"v1": 100, "v2": 0}
        assert "ROLLBACK at 10 %" in state.log[-1]
        ctrl.stop()  # no more traffic batches: the rollback must already be on the chart, no redraw() here
        assert [a.text for a in ctrl.figure.layout.annotations] == ["10 %", "ROLLBACK"]
    finally:
        lab.apply(lesson.with_env("currency-converter-v2", FAIL_RATE="0"))


def test_close_closes_every_widget(tmp_path: Path) -> None:
    ctrl = canary_control(labkit.open("local", state=tmp_path))
    ctrl.close()
    assert ctrl.slider.comm is None and ctrl.figure.comm is None and ctrl.widget.comm is None


def test_a_failing_traffic_stream_shows_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """on_batch raising is recorded in Stream.error: the status line must show it, not hide it."""
    lab = labkit.open("local", state=tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]

    def stream(url: str, *, on_batch: Callable[[list[Outcome]], None], **_: object) -> traffic.Stream:
        def broken(batch: list[Outcome]) -> None:
            on_batch(batch)
            raise RuntimeError("chart broke")

        return traffic.Stream(lambda u: (f"http://127.0.0.1:{closed}/", {}), url, qps=20, on_batch=broken)

    monkeypatch.setattr(lab, "stream", stream)
    ctrl = canary_control(lab)
    try:
        ctrl.start()
        deadline = time.monotonic() + 10
        while "chart broke" not in ctrl.status.value:
            assert time.monotonic() < deadline, ctrl.status.value
            time.sleep(0.1)
        assert "traffic error" in ctrl.status.value and "RuntimeError" in ctrl.status.value
    finally:
        ctrl.close()


def test_a_stream_that_died_turns_traffic_off_and_logs_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kind's PodStream stops by itself when the pod cannot send: the status and the toggle must follow."""

    class PodStream:
        started, running, error = time.monotonic(), True, None

        def start(self) -> None: ...

        def stop(self) -> None: ...

    pod = PodStream()
    lab = labkit.open("local", state=tmp_path)
    monkeypatch.setattr(lab, "stream", lambda *_, **__: pod)
    ctrl = canary_control(lab)
    try:
        ctrl.start()
        assert ctrl.traffic_button.value is True
        pod.running, pod.error = False, LabError("deploy/client cannot send")
        ctrl.redraw()
        assert ctrl.traffic_button.value is False and ctrl.state.traffic is False
        assert ctrl.state.log[-1].endswith("traffic off (LabError: deploy/client cannot send)")
    finally:
        ctrl.close()


# --- interruption: nothing keeps running, nothing is written afterwards ---------------------------------


def test_each_step_lasts_at_least_its_duration_for_the_trainee_to_watch() -> None:
    weights: list[int] = []
    rollout = Rollout(weights.append, max_error=0.5, step_duration=8.0)
    rollout.start(0.0)
    drive(rollout, weights, 200)
    steps = [t for t, text in rollout.events if text.startswith("step")]
    assert rollout.status == "done" and all(b - a >= 8.0 for a, b in zip(steps, steps[1:], strict=False))


def test_a_stopped_rollout_writes_no_weight_even_when_its_evidence_arrives() -> None:
    weights: list[int] = []
    rollout = Rollout(weights.append, max_error=0.5, step_duration=0.0)
    rollout.start(0.0)
    rollout.stop()
    drive_anyway = answers(0, 60, 100, 0.1)  # clean evidence that would advance a running rollout
    rollout.observe(drive_anyway)
    assert weights == [10] and rollout.status == "stopped"
    assert rollout.events[-1][1] == "rollout stopped at 10 %: no further weight changes"


def test_stop_waits_for_a_weight_write_in_progress_and_none_starts_after() -> None:
    import threading

    entered, release, weights = threading.Event(), threading.Event(), []

    def slow_write(weight: int) -> None:
        if weights:  # the second write (the next step) is slow, like an apply on kind
            entered.set()
            release.wait(5)
        weights.append(weight)

    rollout = Rollout(slow_write, max_error=0.5, step_duration=0.0)
    rollout.start(0.0)
    writer = threading.Thread(target=rollout.observe, args=(answers(0, 60, 100, 0.1),))
    writer.start()
    assert entered.wait(5)
    stopper = threading.Thread(target=rollout.stop)
    stopper.start()
    time.sleep(0.2)
    assert stopper.is_alive(), "stop() must wait for the write in progress"
    release.set()
    stopper.join(5)
    writer.join(5)
    rollout.observe(answers(60, 60, 100, 0.25))
    assert weights == [10, 25] and rollout.status == "stopped"


@pytest.mark.mesh
def test_an_interrupted_rollout_stops_its_traffic_and_never_writes_again(
    ctrl: CanaryControl, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (here: the same KeyboardInterrupt, raised in the waiting cell's thread) during a rollout."""
    import _thread
    import threading

    writes: list[float] = []
    real = lab.set_weights

    def recorded(*args: object, **weights: int) -> object:
        writes.append(time.monotonic())
        return real(*args, **weights)

    monkeypatch.setattr(lab, "set_weights", recorded)
    threading.Timer(4.0, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        ctrl.rollout(wait=True, timeout=60, max_error=0.5, step_duration=1.0)  # a step every ~2 s
    done = len(writes)
    assert done >= 1
    state = ctrl.state
    assert state.rollout == "stopped" and state.traffic is False
    assert "<b>rollout</b> stopped" in ctrl.status.value
    time.sleep(4.0)  # a running rollout would have written two more steps by now
    assert len(writes) == done, "the rollout wrote a VirtualService after it was interrupted"


def test_reset_s_stop_all_ends_a_control_s_traffic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class PodStream:
        started, running, error = time.monotonic(), True, None

        def start(self) -> None: ...

        def stop(self) -> None:
            self.running = False

    pod = PodStream()
    lab = labkit.open("local", state=tmp_path)
    monkeypatch.setattr(lab, "stream", lambda *_, **__: pod)
    ctrl = canary_control(lab)
    try:
        ctrl.start()
        traffic.stop_all()
        assert pod.running is False and ctrl.traffic_button.value is False
    finally:
        ctrl.close()
