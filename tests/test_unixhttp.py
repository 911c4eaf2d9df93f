"""labkit.unixhttp, the one way the lab speaks HTTP over a Unix socket, against a real HTTP server on one: the
URL form, the synchronous GET, a keep-alive connection, and the load generator's pool per socket."""

from __future__ import annotations

import contextlib
import http.server
import socketserver
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.serving import serving

from labkit import traffic, unixhttp


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's listeners speak it

    def do_GET(self) -> None:
        body = f"{self.path} host={self.headers['Host']}".encode()
        self.send_response(200 if self.path != "/missing" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-version", "v1")
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:  # a Unix socket's peer has no address
        return "unix"

    def log_message(self, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextlib.contextmanager
def server(path: Path) -> Iterator[Path]:
    with serving(_Server(str(path), _Handler)):
        yield path


def test_the_url_form_round_trips_any_socket_path_and_leaves_other_urls_alone():
    sock = Path("/tmp/a dir/x%y.sock")
    target = unixhttp.url(sock, "/convert?from=NOK&to=EUR")
    assert target.startswith("http+unix://%2Ftmp%2Fa%20dir%2Fx%25y.sock/")
    assert unixhttp.split(target) == (str(sock), "http://localhost/convert?from=NOK&to=EUR")
    assert unixhttp.split("http://127.0.0.1:80/x") == (None, "http://127.0.0.1:80/x")


def test_get_and_a_keep_alive_connection_over_a_unix_socket(tmp_path):
    with server(tmp_path / "app.sock") as sock:
        assert unixhttp.get(sock, "/healthz", timeout=2) == (200, "/healthz host=localhost")
        assert unixhttp.get(sock, "/missing", timeout=2)[0] == 404
        conn, path = unixhttp.connect(unixhttp.url(sock, "/a?b=1"), timeout=2)
        try:
            for _ in range(2):
                conn.request("GET", path, headers={"Host": "svc:8080"})
                assert conn.getresponse().read() == b"/a?b=1 host=svc:8080"
        finally:
            conn.close()
    with pytest.raises(OSError):
        unixhttp.get(tmp_path / "app.sock", "/", timeout=1)  # nothing listens any more


def test_the_load_generator_sends_through_a_unix_socket_with_the_logical_host(tmp_path):
    with server(tmp_path / "out.sock") as sock:
        resolver = lambda url: (unixhttp.url(sock, "/convert"), {"Host": "cc:8080"})  # noqa: E731
        result = traffic.send(resolver, "http://cc:8080/convert", n=40, concurrency=4, progress=False)
    assert result.codes() == {200: 40} and result.split() == {"v1": 1.0}
    closed = traffic.send(resolver, "http://cc:8080/convert", n=2, concurrency=1, progress=False)
    assert closed.codes() == {"refused": 2}  # a socket nobody listens on: refused, as a closed port
