"""The sample service as a real process on a free loopback port, and a resolver that sends a logical mesh URL
straight to it, for tests that need real HTTP without the mesh."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from labkit import paths, traffic


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def service(version: str, **env: str) -> Iterator[str]:
    """The sample service on a free port; yields its base URL."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "VERSION": version, **env}
    proc = subprocess.Popen(
        [sys.executable, str(paths.SERVICE_DIR / "app.py")], env=env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "sample service did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def direct(base: str) -> traffic.Resolver:
    """The logical URL's path and query on ``base``, with its Host header (as a mesh resolver does)."""

    def resolve(url: str) -> tuple[str, dict[str, str]]:
        host, _, rest = url.removeprefix("http://").partition("/")
        return f"{base}/{rest}", {"Host": host}

    return resolve
