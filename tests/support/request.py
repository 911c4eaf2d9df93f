"""One request through a local lab's path for a traffic source, read whole: what the tests of the local mesh
look at beyond the load generator's outcome (the body and the response headers)."""

from __future__ import annotations

import urllib.error
import urllib.request

from labkit import lesson

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(lab, url: str = lesson.URL, source: str = "client", headers: dict | None = None):
    """One request through ``source``'s path: (status, body, response headers)."""
    target, extra = lab.resolver(source)(url)
    req = urllib.request.Request(target, headers={**(headers or {}), **extra})
    try:
        with NO_PROXY.open(req, timeout=5) as resp:
            return resp.status, resp.read().decode(), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers
