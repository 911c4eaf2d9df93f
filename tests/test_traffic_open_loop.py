"""Open-loop latency accounting (``traffic.send(..., qps=..., open_loop=True)``) against a real HTTP
server that stalls: the queue a stall builds up shows in open-loop latencies; closed-loop timing hides it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from support.serving import serving

from labkit import traffic
from labkit.errors import LabError

STALL_AT, STALL_S = 50, 1.0  # the 51st request takes a second; the server answers one request at a time


class _Stalling(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load generator's pool expects
    disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart (delayed ACK)
    served = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).served += 1
        if type(self).served == STALL_AT + 1:
            time.sleep(STALL_S)
        body = b'{"version": "v1"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def stalling_server() -> Iterator[traffic.Resolver]:
    """A single-threaded server on a free port whose 51st request stalls for a second."""
    handler = type("Handler", (_Stalling,), {"served": 0})
    with serving(HTTPServer(("127.0.0.1", 0), handler)) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/convert"
        yield lambda _: (url, {})


def slow_requests(result: traffic.TrafficResult, over: float = 0.5) -> int:
    return sum(o.latency > over for o in result.outcomes)


def test_a_stall_shows_in_open_loop_latencies_and_hides_in_closed_loop_ones() -> None:
    # 100 rps for 2.5 s with one connection: the 1 s stall at 0.5 s delays the ~100 requests due during it.
    runs = {}
    for open_loop in (False, True):
        with stalling_server() as resolver:
            runs[open_loop] = traffic.send(
                resolver, "http://app/convert", n=250, qps=100, concurrency=1, open_loop=open_loop
            )
    closed, opened = runs[False], runs[True]
    assert closed.codes() == opened.codes() == {200: 250}
    # Closed loop: only the stalled request itself was slow; the ones queued behind it were timed from
    # their late send, so they look fast (coordinated omission).
    assert slow_requests(closed) <= 2
    # Open loop: every request due in the first half of the stall waited more than 0.5 s for its answer.
    assert slow_requests(opened) >= 40
    assert opened.latency()["v1"][90] > 0.5 > closed.latency()["v1"][90]


def test_open_loop_times_from_the_schedule_so_t_keeps_the_asked_rate() -> None:
    with stalling_server() as resolver:
        result = traffic.send(resolver, "http://app/convert", n=250, qps=100, concurrency=1, open_loop=True)
    starts = sorted(o.t for o in result.outcomes)
    # Request i is timed from i / qps even when the stall made it leave a second late.
    assert starts[-1] == pytest.approx(2.49, abs=0.05)
    assert max(o.t + o.latency for o in result.outcomes) >= STALL_S + STALL_AT / 100


def test_an_open_loop_run_ends_on_time_and_the_shortfall_shows_in_the_count() -> None:
    """A server that cannot keep up: the run still ends after ``duration``; fewer requests were sent."""
    with stalling_server() as resolver:
        result = traffic.send(
            resolver, "http://app/convert", duration=1.0, qps=200, concurrency=1, open_loop=True
        )
    assert result.elapsed < 1.0 + STALL_S + 0.5
    assert len(result) < 0.9 * 200  # the stall cost the requests due during it


def test_open_loop_needs_a_rate() -> None:
    with pytest.raises(LabError, match="What to do: give qps="):
        traffic.send(lambda u: (u, {}), "http://127.0.0.1:1/", n=1, open_loop=True)
