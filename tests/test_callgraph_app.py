"""The sample app's echo mode and call graphs as real processes on 127.0.0.1 (no Envoy), and what the local
backend hands each app (services/currency-converter/callgraph.py, labkit/local/standin.py)."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import psutil
import pytest
from support.sample import free_port
from support.serving import serving

from labkit import manifests, paths, unixhttp
from labkit.local import standin, supervisor
from labkit.local.topology import build_topology
from labkit.state import LocalState

APP = paths.SERVICE_DIR / "app.py"
#: What a pod learns about itself or is told to do; never inherited from the test's own environment.
APP_ENV = ("VERSION", "POD_NAME", "POD_NAMESPACE", "POD_VERSION", "MESHLAB_POD", "MODE", "CALLS")


@contextlib.contextmanager
def app(**env: str) -> Iterator[int]:
    """The app as the local backend starts it; yields its port, always stopped."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if k not in APP_ENV}
    settings = {"HOST": "127.0.0.1", "PORT": str(port), **env}
    process = subprocess.Popen(
        [sys.executable, str(APP)], env={**inherited, **settings}, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 15
        while get(port, "/healthz", timeout=1)[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"app.py did not start: {process.communicate(timeout=5)[0]}")
            time.sleep(0.05)
        yield port
    finally:
        process.kill()
        process.communicate(timeout=10)


def get(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET", timeout: float = 10
):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if e.headers.get_content_type() == "application/json" else {}
    except OSError:
        return None, {}


def outbound(**hosts: int) -> str:
    """MESHLAB_OUTBOUND as the backend writes it for a caller without a sidecar: host:port -> endpoints."""
    return json.dumps({"endpoints": {f"{h}:9080": [p] for h, p in hosts.items()}})


def test_echo_mode_answers_every_path_and_method_with_who_answered_and_what_it_received():
    with app(
        MODE="echo", POD_NAME="catalog-v7-5d9c8b7f4-x2kzp", POD_NAMESPACE="shop", POD_VERSION="v7"
    ) as port:
        status, body = get(port, "/books/1?x=2", {"end-user": "ann"}, method="POST")
        assert status == 200
        assert body["namespace"] == "shop" and body["workload"] == "catalog-v7" and body["version"] == "v7"
        assert (body["method"], body["path"], body["host"]) == ("POST", "/books/1?x=2", f"127.0.0.1:{port}")
        assert {k.lower(): v for k, v in body["headers"].items()}["end-user"] == "ann"
        assert body["proto"] == "HTTP/1.1"
        assert get(port, "/status/418")[0] == 418  # the httpbin-like set stays
        assert get(port, "/convert?from=NOK&to=EUR&amount=1")[0] == 200  # any path: no currency API here


def test_the_converter_keeps_its_404_outside_its_api():
    with app(VERSION="v1") as port:
        assert get(port, "/books/1")[0] == 404
        assert "calls" not in get(port, "/")[1]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLS", "ftp://reviews/x"),
        ("CALLS_MODE", "both"),
        ("CALL_TIMEOUT", "0"),
        ("ON_CALL_FAILURE", "404"),
        ("MESHLAB_OUTBOUND", "[1]"),
    ],
)
def test_a_bad_call_setting_stops_the_app_naming_the_variable(name, value):
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV}
    env.update({"CALLS": "http://reviews:9080/", "PORT": str(free_port()), "HOST": "127.0.0.1", name: value})
    done = subprocess.run([sys.executable, str(APP)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and f"{name}={value!r} is invalid" in done.stderr


class Recorder(http.server.BaseHTTPRequestHandler):
    """A callee that remembers the headers of every request it gets and answers who it is."""

    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        Recorder.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = json.dumps({"workload": "recorder", "version": "v9"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def recorder() -> Iterator[int]:
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)) as server:
        yield server.server_address[1]


def test_calls_forward_istios_headers_only_and_report_the_chain():
    Recorder.seen.clear()
    with recorder() as callee:
        calls = "http://reviews:9080/reviews/1"
        with app(
            MODE="echo", POD_NAME="front-0", CALLS=calls, MESHLAB_OUTBOUND=outbound(reviews=callee)
        ) as f:
            headers = {
                "end-user": "ann",
                "x-request-id": "r-1",
                "traceparent": "00-ab-cd-01",
                "x-secret": "s",
            }
            status, body = get(f, "/", headers)
            with app(
                CALLS=calls, FORWARD_HEADERS="x-secret", MESHLAB_OUTBOUND=outbound(reviews=callee)
            ) as own:
                get(own, "/", headers)
    assert status == 200 and "degraded" not in body
    [call] = body["calls"]
    assert (call["url"], call["status"], call["workload"], call["version"]) == (calls, 200, "recorder", "v9")
    first, second = Recorder.seen
    assert first["host"] == "reviews:9080"  # the logical name, for the caller's sidecar to route by
    assert (first["end-user"], first["x-request-id"], first["traceparent"]) == ("ann", "r-1", "00-ab-cd-01")
    assert "x-secret" not in first
    assert second["x-secret"] == "s" and "end-user" not in second  # FORWARD_HEADERS replaces Istio's list


def test_parallel_calls_overlap_and_sequential_ones_add_up():
    with app(MODE="echo") as slow:
        calls = "http://a:9080/delay/1,http://b:9080/delay/1"
        hosts = outbound(a=slow, b=slow)
        with app(MODE="echo", CALLS=calls, CALLS_MODE="parallel", MESHLAB_OUTBOUND=hosts) as parallel:
            started = time.monotonic()
            assert get(parallel, "/")[0] == 200
            both = time.monotonic() - started
        with app(MODE="echo", CALLS=calls, MESHLAB_OUTBOUND=hosts) as sequence:
            started = time.monotonic()
            assert get(sequence, "/")[0] == 200
            one_after_the_other = time.monotonic() - started
    assert one_after_the_other >= 2.0 and both < 1.8


def test_a_failed_call_degrades_the_answer_or_makes_it_the_configured_5xx():
    with app(MODE="echo") as callee:
        calls = "http://ratings:9080/status/503,http://nowhere:9080/"
        hosts = outbound(ratings=callee)
        with app(MODE="echo", CALLS=calls, MESHLAB_OUTBOUND=hosts) as degrade:
            status, body = get(degrade, "/")
        assert status == 200 and body["degraded"] is True
        failing, unknown = body["calls"]
        assert failing["status"] == 503
        assert unknown["status"] is None and "no such Service" in unknown["error"]
        with app(MODE="echo", CALLS=calls, ON_CALL_FAILURE="502", MESHLAB_OUTBOUND=hosts) as strict:
            status, body = get(strict, "/")
        assert status == 502 and "ON_CALL_FAILURE=502" in body["error"] and len(body["calls"]) == 2
        with app(
            MODE="echo", CALLS="http://ratings:9080/delay/2", CALL_TIMEOUT="0.5", MESHLAB_OUTBOUND=hosts
        ) as t:
            _, body = get(t, "/")
        assert "timed out after 0.5 s" in body["calls"][0]["error"]


@pytest.mark.parametrize(
    ("image", "sample"),
    [
        ("meshlab/currency-converter:0.1.0", True),
        ("registry.local:5000/meshlab/currency-converter@sha256:abc", True),
        ("meshlab/currency-converter", True),
        ("", True),
        ("docker.io/istio/examples-bookinfo-ratings-v1:1.20.2", False),
        ("meshlab/currency-converter-fork:1", False),
    ],
)
def test_the_sample_image_is_known_by_its_repository(image, sample):
    assert standin.is_sample(image) is sample


def test_the_backend_gives_other_images_echo_mode_and_callers_their_sidecars_outbound_listeners(tmp_path):
    apps = manifests.load(paths.ROOT / "cluster-config" / "examples" / "bookshop" / "bookshop.yaml")
    [details] = [r for r in apps if r.name == "details-v1"]
    details.body["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/details:1"
    ports = itertools.count(30000)
    topo = build_topology(apps, tmp_path, lambda: next(ports))
    want = supervisor.wanted(topo, LocalState(tmp_path))
    env = {name.split(".")[-1]: w.env for name, w in want.items() if name.startswith("app.")}
    assert env["details-v1-0"]["MODE"] == "echo"  # another image: the stand-in
    assert env["ratings-v1-0"]["MODE"] == "echo"  # the sample image, in the mode its env asks for
    assert "MESHLAB_OUTBOUND" not in env["ratings-v1-0"]  # calls nothing: nothing to restart it for
    [front] = [i for i in topo.instances if i.workload.name == "storefront-v1"]
    assert front.proxy is not None
    via = json.loads(env["storefront-v1-0"]["MESHLAB_OUTBOUND"])["via"]
    assert via == {str(p): str(sock) for p, sock in front.proxy.outbound_sockets.items()}
    assert "9080" in via


def test_an_app_on_a_socket_listens_on_no_port_and_a_caller_reaches_it_through_its_via_socket(tmp_path):
    """The local backend's app behind a sidecar (SOCKET) and a caller's calls through a Unix socket (its
    sidecar's outbound listener, here the callee itself): the same HTTP, no TCP port."""
    sock = tmp_path / "callee.sock"
    inherited = {k: v for k, v in os.environ.items() if k not in APP_ENV}
    callee = subprocess.Popen(
        [sys.executable, str(APP)],
        env={**inherited, "SOCKET": str(sock), "MODE": "echo", "POD_NAME": "reviews-v1-0"},
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while not sock.exists() or unixhttp.get(sock, "/healthz", 1)[0] != 200:
            assert callee.poll() is None and time.monotonic() < deadline, "app.py did not start on SOCKET"
            time.sleep(0.05)
        listening = [c for c in psutil.Process(callee.pid).net_connections("inet") if c.status == "LISTEN"]
        assert listening == []  # nothing on TCP: only whoever may open the socket reaches it
        outbound = json.dumps({"via": {"9080": str(sock)}})
        calls = "http://reviews:9080/r,http://ratings:9090/r"  # 9090: no listener, refused like a sidecar's
        with app(MODE="echo", CALLS=calls, MESHLAB_OUTBOUND=outbound) as caller:
            status, body = get(caller, "/")
    finally:
        callee.kill()
        callee.communicate(timeout=10)
    reached, refused = body["calls"]
    assert status == 200 and (reached["status"], reached["workload"]) == (200, "reviews-v1-0")
    assert refused["status"] is None and "no answer" in refused["error"]
