"""A test's own server (HTTP or a Unix socket) in a background thread, stopped promptly when the test is done.

``socketserver``'s ``serve_forever`` looks for ``shutdown()`` every ``poll_interval``, half a second by
default, so every test that stopped a server waited up to that long for nothing (the stand-in API server
alone is stopped by some 150 tests). Here it looks every 20 ms.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

#: How often a serving thread checks whether it was asked to stop, in seconds.
POLL_INTERVAL = 0.02

Server = TypeVar("Server", bound=socketserver.BaseServer)


def start(server: socketserver.BaseServer) -> Callable[[], None]:
    """Serve ``server`` in a daemon thread; returns what stops it (shutdown, close, join)."""
    thread = threading.Thread(target=server.serve_forever, args=(POLL_INTERVAL,), daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(10)

    return stop


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    """``server`` serves for the ``with`` block, and is stopped however the block ends."""
    stop = start(server)
    try:
        yield server
    finally:
        stop()
