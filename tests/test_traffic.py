"""The load generator against the real sample service run as a subprocess, and against broken targets."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from scipy.stats import linregress
from support.sample import direct, free_port, service

import labkit
from labkit import lesson, paths, traffic

URL = lesson.URL


@pytest.fixture(scope="module")
def v1() -> Iterator[str]:
    with service("v1") as base:
        yield base


def test_versions_split_codes_and_summary_from_real_responses(v1: str) -> None:
    rng = random.Random(7)
    with service("v2", FAIL_RATE="1") as v2:
        r1, r2 = direct(v1), direct(v2)
        result = traffic.send(lambda url: (r2 if rng.random() < 0.1 else r1)(url), URL, n=600, concurrency=8)

    counts = result.counts()
    assert sum(counts.values()) == len(result) == 600
    assert result.codes() == {200: counts["v1"], 500: counts["v2"]}
    assert result.errors() == {500: counts["v2"]}  # v2 answers 500 but still says who it is
    assert result.split()["v2"] == pytest.approx(counts["v2"] / 600)
    assert "consistent with the configured 10 %" in result.verdict({"v1": 90, "v2": 10})
    assert set(result.latency()) == {"v1", "v2"}
    summary = result.summary({"v1": 9, "v2": 1})
    assert f"v1: {counts['v1']}" in summary and "500:" in summary and "consistent" in summary


def test_rate_holds_within_5_percent_at_200_rps(v1: str) -> None:
    result = traffic.send(direct(v1), URL, n=1000, qps=200, concurrency=32)
    assert result.codes() == {200: 1000}
    # The slope of send time against request number is the schedule actually kept (robust to start-up jitter).
    fit = linregress(range(len(result.outcomes)), sorted(o.t for o in result.outcomes))
    assert 1 / fit.slope == pytest.approx(200, rel=0.05)


def test_duration_bounds_the_run(v1: str) -> None:
    result = traffic.send(direct(v1), URL, duration=1.0, qps=100)
    assert 90 <= len(result) <= 101
    assert max(o.t for o in result.outcomes) < 1.0


class ResettingServer:
    """Accepts every connection and closes it with an RST (SO_LINGER 0), as a STRICT sidecar does."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()


def test_reset_and_refused_targets_are_recorded_not_raised() -> None:
    resetting = ResettingServer()
    try:
        reset = traffic.send(lambda url: (f"http://127.0.0.1:{resetting.port}/x", {}), URL, n=40)
    finally:
        resetting.sock.close()
    closed = free_port()
    refused = traffic.send(lambda url: (f"http://127.0.0.1:{closed}/x", {}), URL, n=40)

    assert reset.codes() == {"connection reset": 40}
    assert refused.codes() == {"refused": 40}
    assert all(o.status is None and o.version is None and o.failed for o in reset.outcomes + refused.outcomes)
    assert reset.split() == {} and "no responses carried a version" in reset.verdict({"v1": 1})


def test_per_request_timeout() -> None:
    with service("v1", DELAY_MS="3000") as slow:
        result = traffic.send(direct(slow), URL, n=4, timeout=0.5)
    assert result.codes() == {"timeout": 4}
    assert all(0.4 < o.latency < 2.5 for o in result.outcomes)


def test_send_works_inside_a_running_event_loop(v1: str) -> None:
    async def cell() -> traffic.TrafficResult:  # what a Jupyter cell is: code run while a loop is running
        return traffic.send(direct(v1), URL, n=20)

    assert asyncio.run(cell()).counts() == {"v1": 20}


def test_async_run_on_the_callers_loop(v1: str) -> None:
    result = asyncio.run(traffic.run(direct(v1), URL, n=10, concurrency=2))
    assert result.counts() == {"v1": 10}


def test_stop_ends_a_long_send_with_what_it_has(v1: str) -> None:
    threading.Timer(0.5, traffic.stop).start()
    result = traffic.send(direct(v1), URL, duration=30, qps=100, progress=False)
    assert 10 < len(result) < 300  # stopped after about half a second, not 30


def test_progress_bar_on_request(v1: str, capsys: pytest.CaptureFixture[str]) -> None:
    traffic.send(direct(v1), URL, n=50, progress=True)
    assert "50/50" in capsys.readouterr().err


def test_stream_delivers_batches_in_the_background_until_stopped(v1: str) -> None:
    batches: list[list[traffic.Outcome]] = []
    stream = traffic.Stream(direct(v1), URL, qps=100, on_batch=batches.append, interval=0.2)
    stream.start()
    time.sleep(1.5)  # the caller's thread is free meanwhile
    stream.stop()
    delivered = len(batches)
    outcomes = [o for batch in batches for o in batch]
    time.sleep(0.5)

    assert not stream.running and len(batches) == delivered  # nothing arrives after stop()
    assert delivered >= 4
    assert 100 <= len(outcomes) <= 160 and {o.version for o in outcomes} == {"v1"}
    assert max(o.t for o in outcomes) < 1.7


# --- through the local mesh --------------------------------------------------------------------------------


@pytest.mark.mesh
def test_mesh_rate_holds_within_5_percent_at_200_rps_and_the_split_is_90_10(lab: labkit.Lab) -> None:
    result = lab.send(URL, n=1000, qps=200, concurrency=32)  # headroom: a loaded machine adds latency
    assert result.codes() == {200: 1000}
    fit = linregress(range(len(result.outcomes)), sorted(o.t for o in result.outcomes))
    assert 1 / fit.slope == pytest.approx(200, rel=0.05)
    assert result.report({"v1": 90, "v2": 10}).consistent
    assert not result.report({"v1": 50, "v2": 50}).consistent


@pytest.mark.mesh
def test_mesh_strict_mtls_refusal_is_recorded(lab: labkit.Lab) -> None:
    result = lab.send(URL, n=20, source="legacy")  # plaintext from outside the mesh into STRICT mTLS
    assert result.codes() == {"connection reset": 20}


@pytest.mark.mesh
def test_mesh_envoy_fault_replies_carry_their_response_flag(lab: labkit.Lab) -> None:
    lab.apply(paths.MESH / "virtual-service-currency-converter-fault-abort.yaml")  # 50 % aborted with 503
    try:
        result = lab.send(URL, n=200)
    finally:
        lab.apply(paths.MESH / "virtual-service-currency-converter-90-10.yaml")
    aborted = [o for o in result.outcomes if o.status == 503]
    assert 60 < len(aborted) < 140
    assert all(o.flags == "FI" and o.version is None for o in aborted)
    assert all(o.flags is None and o.version in ("v1", "v2") for o in result.outcomes if o.status == 200)
