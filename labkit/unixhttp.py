"""HTTP over a Unix socket: how the lab reaches what only its own user may open (an Envoy's admin API, a
sidecar's outbound listener, an app behind its sidecar), with no TCP port another user of the machine could
dial.

One URL form names such a target everywhere (a resolver's answer, the load generator, the sample app's calls):
``http+unix://<socket path, percent-encoded>/<path>?<query>``, the form requests-unixsocket and Docker's SDK
use. ``get`` is the synchronous read (admin API, readiness): ``http.client`` on an ``AF_UNIX`` socket, since
aiohttp's ``UnixConnector`` is async (a notebook's loop is already running) and one GET needs no more.
"""

from __future__ import annotations

import http.client
import socket
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

SCHEME = "http+unix"


def url(sock: Path | str, path: str = "/") -> str:
    """The ``http+unix://`` URL of ``path`` (with any query) on the Unix socket ``sock``."""
    return f"{SCHEME}://{quote(str(sock), safe='')}{path if path.startswith('/') else '/' + path}"


def split(target: str) -> tuple[str | None, str]:
    """``(socket path, http URL on localhost)`` for an ``http+unix://`` URL; ``(None, target)`` otherwise."""
    parts = urlsplit(target)
    if parts.scheme != SCHEME:
        return None, target
    return unquote(parts.netloc), urlunsplit(("http", "localhost", parts.path or "/", parts.query, ""))


class _Connection(http.client.HTTPConnection):
    def __init__(self, sock: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = str(sock)

    def connect(self) -> None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(self.timeout)
        try:
            conn.connect(self._socket_path)
        except OSError:
            conn.close()
            raise
        self.sock = conn


def connect(target: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A keep-alive ``http.client`` connection for ``target`` (``http://`` or ``http+unix://``), and the
    path with query to request on it."""
    sock, plain = split(target)
    parts = urlsplit(plain)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if sock is not None:
        return _Connection(Path(sock), timeout), path
    return http.client.HTTPConnection(parts.hostname or "localhost", parts.port, timeout=timeout), path


def get(sock: Path, path: str, timeout: float) -> tuple[int, str]:
    """GET ``path`` on the Unix socket ``sock``: ``(status, body text)``; OSError when nothing answers."""
    conn = _Connection(sock, timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", errors="replace")
    except http.client.HTTPException as exc:  # a torn answer: as unreachable as a refused connection
        raise OSError(f"{sock}: {exc!r}") from exc
    finally:
        conn.close()
