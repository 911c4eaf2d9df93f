"""One request through a local lab's path for a traffic source, read whole: what the tests of the local mesh
look at beyond the load generator's outcome (the body and the response headers). The path may be a Unix
socket (a sidecar's outbound listener): labkit.unixhttp connects either way."""

from __future__ import annotations

from labkit import lesson, unixhttp


def get(lab, url: str = lesson.URL, source: str = "client", headers: dict | None = None):
    """One request through ``source``'s path: (status, body, response headers)."""
    target, extra = lab.resolver(source)(url)
    conn, path = unixhttp.connect(target, timeout=5)
    try:
        conn.request("GET", path, headers={**(headers or {}), **extra})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), resp.headers
    finally:
        conn.close()
