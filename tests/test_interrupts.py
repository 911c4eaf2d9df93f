"""Ctrl-C (a KeyboardInterrupt in the cell's thread) during ``send`` or a stream stops its traffic: after the
call returns, the server receives nothing more. A real HTTP server on 127.0.0.1 counts what arrives."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.serving import serving

from labkit import traffic


class Counter:
    def __init__(self) -> None:
        self.hits = 0
        self.lock = threading.Lock()


@pytest.fixture
def server() -> Iterator[tuple[str, Counter]]:
    counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            with counter.lock:
                counter.hits += 1
            body = b'{"version": "v1"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None: ...

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as httpd:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/convert", counter


def _settles(counter: Counter) -> int:
    """The count once nothing arrived for 1 s (what was in flight when the call returned may land)."""
    seen = -1
    while seen != counter.hits:
        seen = counter.hits
        time.sleep(1.0)
    return seen


def test_an_interrupt_during_send_stops_its_traffic(server, monkeypatch: pytest.MonkeyPatch) -> None:
    url, counter = server

    class Bar:
        n, raised = 0, False

        def update(self, k: int) -> None:
            if not Bar.raised and counter.hits > 20:  # the interrupt lands while the run is under way
                Bar.raised = True
                raise KeyboardInterrupt

        def close(self) -> None: ...

    monkeypatch.setattr(traffic.runner, "_progress_bar", lambda *args: Bar())
    with pytest.raises(KeyboardInterrupt):
        traffic.send(lambda u: (u, {}), url, duration=30, qps=100, progress=True)
    at_return = counter.hits
    assert at_return < 30 * 100
    assert _settles(counter) <= at_return + 8  # at most the 8 workers' in-flight requests
    time.sleep(1.5)
    assert counter.hits == _settles(counter), "traffic continued after send() was interrupted"


def test_stop_all_ends_every_stream_of_the_process(server) -> None:
    url, counter = server
    streams = [traffic.Stream(lambda u: (u, {}), url, qps=50, on_batch=lambda b: None) for _ in range(2)]
    for stream in streams:
        stream.start()
    time.sleep(0.5)
    traffic.stop_all()
    assert not any(s.running for s in streams)
    stopped = _settles(counter)
    time.sleep(1.5)
    assert counter.hits == stopped, "a stream kept sending after stop_all()"


def test_an_interrupt_in_the_cell_of_a_plain_stream_stops_its_traffic(server) -> None:
    url, counter = server
    batches: list[list] = []
    stream = traffic.Stream(lambda u: (u, {}), url, qps=100, on_batch=batches.append)
    with pytest.raises(KeyboardInterrupt), stream:  # the cell: `with lab.stream(...) as stream: ...`
        deadline = time.monotonic() + 30
        while sum(map(len, batches)) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyboardInterrupt  # the kernel's interrupt lands in the cell while the stream sends
    assert sum(map(len, batches)) >= 20 and not stream.running
    stopped = _settles(counter)
    time.sleep(1.5)
    assert counter.hits == stopped, "the stream kept sending after its cell was interrupted"
    stream.start()  # run the cell again: it sends again
    deadline = time.monotonic() + 30
    while counter.hits < stopped + 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    stream.stop()
    assert counter.hits >= stopped + 10
