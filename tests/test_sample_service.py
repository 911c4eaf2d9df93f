"""The sample service and its load tool over real HTTP on 127.0.0.1, plus a parse check of cluster-config/.

Each test starts `services/currency-converter/app.py` exactly as the local backend does (a subprocess with env
settings) and always stops it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from support.sample import free_port

from labkit import paths, stats

APP = paths.SERVICE_DIR / "app.py"
LOAD = paths.SERVICE_DIR / "load.py"
CONVERT = "/convert?from=NOK&to=EUR&amount=100"
#: What a pod learns about itself; never inherited from the test's own environment.
IDENTITY_ENV = ("VERSION", "POD_NAME", "POD_NAMESPACE", "POD_VERSION", "MESHLAB_POD", "REPORT_VERSION")


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: dict


@dataclass
class Service:
    port: int
    process: subprocess.Popen

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            raw = response.read()
            body = (
                json.loads(raw)
                if response.getheader("content-type", "").startswith("application/json")
                else {}
            )
            return Reply(response.status, response.headers, body)
        finally:
            conn.close()

    def stop(self) -> str:
        """SIGTERM, as Kubernetes and lab.down() send it; returns everything the service printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=10)
        return out


@contextlib.contextmanager
def service(**env: str | None) -> Iterator[Service]:
    """The app as a real process; a setting given as None is left out of its environment."""
    port = free_port()
    settings = {"HOST": "127.0.0.1", "PORT": str(port), "VERSION": "v1", "POD_NAME": "cc-test-0", **env}
    inherited = {k: v for k, v in os.environ.items() if k not in IDENTITY_ENV}
    process = subprocess.Popen(
        [sys.executable, str(APP)],
        env={**inherited, **{k: v for k, v in settings.items() if v is not None}},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    svc = Service(port, process)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}: {process.stdout.read()}")  # type: ignore[union-attr]
            with contextlib.suppress(OSError):
                if svc.get("/healthz").status == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("app.py did not answer /healthz within 15 s")
            time.sleep(0.05)
        yield svc
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


def run_load(*args: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, str(LOAD), *args], capture_output=True, text=True, timeout=60, check=True
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_convert_reports_version_in_header_and_body_and_converts_correctly():
    with service(VERSION="v2") as svc:
        reply = svc.get(CONVERT)
    assert reply.status == 200
    assert reply.headers["x-version"] == "v2"
    body = reply.body
    assert (body["version"], body["instance"], body["from"], body["to"]) == ("v2", "cc-test-0", "NOK", "EUR")
    assert body["amount"] == 100
    # The table is quoted per EUR: 100 NOK at 11.70 NOK/EUR is 8.55 EUR.
    assert body["rate"] == pytest.approx(1 / 11.70, rel=1e-4)
    assert body["result"] == pytest.approx(8.55, abs=0.005)


def test_rate_table_round_trips_between_every_pair():
    with service() as svc:
        there = svc.get("/convert?from=USD&to=SEK&amount=250").body
        back = svc.get(f"/convert?from=SEK&to=USD&amount={there['result']}").body
    assert back["result"] == pytest.approx(250, abs=0.01)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("to=EUR&amount=100", "from"),
        ("from=NOK&amount=100", "to"),
        ("from=NOK&to=XYZ&amount=100", "to"),
        ("from=NOK&to=EUR", "amount"),
        ("from=NOK&to=EUR&amount=ten", "amount"),
        ("from=NOK&to=EUR&amount=-5", "amount"),
    ],
)
def test_bad_query_gets_400_naming_the_parameter(query, parameter):
    with service() as svc:
        reply = svc.get(f"/convert?{query}")
    assert reply.status == 400
    assert reply.body["parameter"] == parameter
    assert f"'{parameter}'" in reply.body["error"]
    assert reply.headers["x-version"] == "v1"


def test_fail_rate_share_of_500s_is_within_a_binomial_interval():
    n = 400
    with service(FAIL_RATE="0.3") as svc:
        statuses = [svc.get(CONVERT).status for _ in range(n)]
    assert set(statuses) <= {200, 500}
    failures = statuses.count(500)
    low, high = stats.interval(failures, n)  # at the lab's one level (a whole CI run's budget)
    assert low <= 0.3 <= high, f"{failures}/{n} answered 500 with FAIL_RATE=0.3"


def test_fail_rate_one_always_fails_and_still_names_the_version():
    with service(VERSION="v2", FAIL_RATE="1") as svc:
        replies = [svc.get(CONVERT) for _ in range(20)]
        health = svc.get("/healthz")
    assert {r.status for r in replies} == {500}
    assert {r.headers["x-version"] for r in replies} == {"v2"}
    assert {r.body["version"] for r in replies} == {"v2"}
    assert health.status == 200, "FAIL_RATE must not fail the readiness probe"


def test_delay_ms_adds_at_least_the_configured_latency():
    with service(DELAY_MS="300") as svc:
        start = time.perf_counter()
        reply = svc.get(CONVERT)
        elapsed = time.perf_counter() - start
    assert reply.status == 200
    assert elapsed >= 0.3


def test_rates_mode_serves_the_rate_table_instead_of_convert():
    with service(MODE="rates") as svc:
        rates = svc.get("/rates")
        convert = svc.get(CONVERT)
    assert rates.status == 200
    assert rates.body["base"] == "EUR"
    assert set(rates.body["rates"]) == {"NOK", "EUR", "USD", "GBP", "SEK", "DKK"}
    assert convert.status == 404


def test_headers_echoes_request_headers():
    with service() as svc:
        reply = svc.get("/headers", headers={"x-canary": "true"})
    assert reply.status == 200
    assert reply.body["headers"]["x-canary"] == "true"
    assert (reply.body["version"], reply.body["pod"]) == ("v1", "cc-test-0")


def meshlab_pod(name: str, namespace: str, **labels: str) -> str:
    """MESHLAB_POD as the local backend sets it (its stand-in for a downward-API volume)."""
    return json.dumps({"name": name, "namespace": namespace, "labels": labels, "serviceAccount": "orders"})


def test_root_says_who_answered_from_the_pods_labels_when_version_is_not_set():
    pod = meshlab_pod("orders-v2-5d8f7b9c4-x2k9q", "shop", app="orders", version="v2")
    with service(VERSION=None, POD_NAME=None, MESHLAB_POD=pod) as svc:
        reply = svc.get("/", headers={"Host": "orders.shop.svc.cluster.local:9000"})
    assert reply.status == 200
    assert reply.body == {
        "namespace": "shop", "workload": "orders-v2", "version": "v2", "pod": "orders-v2-5d8f7b9c4-x2k9q",
    }  # fmt: skip
    assert reply.headers["x-version"] == "v2"


def test_a_local_backend_pod_names_its_deployment_before_the_index():
    pod = meshlab_pod("orders-v1-1", "shop", version="v1")
    with service(VERSION=None, POD_NAME=None, MESHLAB_POD=pod) as svc:
        reply = svc.get("/")
    assert (reply.body["workload"], reply.body["pod"]) == ("orders-v1", "orders-v1-1")


def test_version_env_wins_over_the_label():
    pod = meshlab_pod("orders-v2-5d8f7b9c4-x2k9q", "shop", version="v2")
    with service(VERSION="canary", MESHLAB_POD=pod, POD_NAME=None) as svc:
        reply = svc.get("/")
    assert (reply.body["version"], reply.headers["x-version"]) == ("canary", "canary")


def test_kind_downward_api_env_gives_the_same_identity():
    env = {"POD_NAME": "web-7c9d5b8f6d-q4z7m", "POD_NAMESPACE": "shop", "POD_VERSION": "v1"}
    with service(VERSION=None, **env) as svc:
        reply = svc.get("/")
    assert reply.body == {
        "namespace": "shop",
        "workload": "web",
        "version": "v1",
        "pod": "web-7c9d5b8f6d-q4z7m",
    }


def test_traffic_reads_the_version_the_app_reports_for_any_path():
    """labkit.traffic's contract: the version comes from the answer (x-version header, else the body)."""
    from labkit import traffic

    pod = meshlab_pod("orders-v3-6b7c8d9f5b-abcde", "shop", version="v3")
    with service(VERSION=None, MESHLAB_POD=pod) as svc:
        base = f"http://127.0.0.1:{svc.port}"
        for path in ("/", "/headers", "/status/503", "/delay/0", CONVERT):
            result = traffic.send(lambda url: (url, {}), base + path, n=3, concurrency=1)
            assert result.counts() == {"v3": 3}, path


def test_report_version_false_hides_the_version_everywhere():
    from labkit import traffic

    pod = meshlab_pod("orders-v2-5d8f7b9c4-x2k9q", "shop", version="v2")
    with service(VERSION=None, POD_NAME=None, MESHLAB_POD=pod, REPORT_VERSION="false") as svc:
        root, convert = svc.get("/"), svc.get(CONVERT)
        result = traffic.send(lambda url: (url, {}), f"http://127.0.0.1:{svc.port}/", n=5, concurrency=1)
    assert "x-version" not in root.headers and "x-version" not in convert.headers
    assert "version" not in root.body and "version" not in convert.body
    assert root.body["workload"] == "orders-v2" and convert.body["result"] == pytest.approx(8.55, abs=0.005)
    assert result.codes() == {200: 5} and result.counts() == {}


def test_an_app_that_knows_no_version_claims_none():
    with service(VERSION=None, POD_NAME="orders-5d8f7b9c4-x2k9q") as svc:
        root, convert = svc.get("/"), svc.get(CONVERT)
    assert "x-version" not in root.headers and "version" not in root.body
    assert "x-version" not in convert.headers and "version" not in convert.body
    assert root.body == {"namespace": "unknown", "workload": "orders", "pod": "orders-5d8f7b9c4-x2k9q"}


def test_status_answers_the_code_asked_for():
    with service(VERSION="v2") as svc:
        unavailable, empty, teapot = svc.get("/status/503"), svc.get("/status/204"), svc.get("/status/418")
        bad, too_low = svc.get("/status/abc"), svc.get("/status/99")
    assert (unavailable.status, unavailable.body["status"], unavailable.body["version"]) == (503, 503, "v2")
    assert (empty.status, empty.headers["x-version"]) == (204, "v2")
    assert teapot.status == 418
    for reply in (bad, too_low):
        assert reply.status == 400 and reply.body["parameter"] == "code"
        assert "200 to 599" in reply.body["error"]


def test_delay_waits_the_seconds_asked_for_and_refuses_more_than_the_bound():
    with service() as svc:
        start = time.perf_counter()
        slow = svc.get("/delay/0.3")
        elapsed = time.perf_counter() - start
        too_long, not_a_number = svc.get("/delay/31"), svc.get("/delay/soon")
    assert slow.status == 200 and slow.body["delay"] == 0.3 and elapsed >= 0.3
    for reply in (too_long, not_a_number):
        assert reply.status == 400 and reply.body["parameter"] == "seconds"
        assert "0 to 30" in reply.body["error"]


def test_a_broken_meshlab_pod_exits_naming_it():
    done = subprocess.run(
        [sys.executable, str(APP)],
        env={**os.environ, "MESHLAB_POD": "{not json", "PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "MESHLAB_POD" in done.stderr


def test_invalid_setting_exits_naming_the_variable():
    done = subprocess.run(
        [sys.executable, str(APP)],
        env={**os.environ, "FAIL_RATE": "30%", "PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "FAIL_RATE" in done.stderr


def test_logs_one_line_per_request_and_stops_cleanly_on_sigterm():
    with service() as svc:
        svc.get(CONVERT)
        svc.get("/convert?from=NOK")
        output = svc.stop()
        assert svc.process.returncode == 0
    lines = [line for line in output.splitlines() if line.startswith("GET /convert")]
    assert len(lines) == 2
    assert " 200 " in lines[0] and " 400 " in lines[1]


def test_load_tool_prints_one_json_line_per_request_with_status_and_version():
    with service(VERSION="v2") as svc:
        ok = run_load("--url", f"http://127.0.0.1:{svc.port}{CONVERT}", "--n", "12", "--concurrency", "3")
        bad = run_load("--url", f"http://127.0.0.1:{svc.port}/convert?from=NOK", "--n", "2", "--qps", "50")
    assert len(ok) == 12
    assert {(r["status"], r["version"], r["error"]) for r in ok} == {(200, "v2", None)}
    assert all(r["latency"] >= 0 and r["t"] > 0 for r in ok)
    assert [r["status"] for r in bad] == [400, 400]


def test_load_tool_open_loop_counts_a_stall_against_the_requests_it_delays():
    """Concurrency 1 at 20 rps against answers that take 0.2 s: closed loop, each latency is one answer; open
    loop, request i waits for the i answers before it, so its latency holds at least i * 0.15 s."""
    with service() as svc:
        args = ("--url", f"http://127.0.0.1:{svc.port}/delay/0.2", "--concurrency", "1", "--qps", "20")
        closed = run_load(*args, "--n", "8")
        opened = run_load(*args, "--n", "8", "--open-loop")
        on_time = run_load(*args, "--n", "8", "--open-loop", "--duration", "0.5")
    assert all(r["latency"] >= i * 0.15 for i, r in enumerate(opened)) and opened[-1]["latency"] >= 1.05
    assert max(r["latency"] for r in closed) < opened[-1]["latency"]
    starts = [r["t"] for r in opened]  # t is when each request was due: 1/20 s apart
    assert [round(b - a, 2) for a, b in itertools.pairwise(starts)] == [0.05] * 7
    assert 1 <= len(on_time) <= 4  # ends on time: requests due after 0.5 s are never sent


def test_load_tool_sends_extra_headers():
    with service() as svc:
        run_load(
            "--url",
            f"http://127.0.0.1:{svc.port}{CONVERT}",
            "--n",
            "1",
            "--header",
            "Host: api.fxrates.example",
        )
        output = svc.stop()
    assert "host=api.fxrates.example" in output


def test_load_tool_records_connection_errors_instead_of_crashing():
    records = run_load("--url", f"http://127.0.0.1:{free_port()}{CONVERT}", "--n", "3", "--timeout", "2")
    assert len(records) == 3
    for record in records:
        assert record["status"] is None and record["version"] is None
        assert record["error"]


@contextlib.contextmanager
def replying(status: int, body: str, headers: dict[str, str]) -> Iterator[int]:
    """A small aiohttp server on 127.0.0.1 answering every request the same way; yields its port."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(status=status, text=body, headers=headers)

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    port = free_port()
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_load_tool_reports_envoys_local_reply_as_response_flags():
    with replying(503, "no healthy upstream", {"server": "envoy"}) as port:
        records = run_load("--url", f"http://127.0.0.1:{port}{CONVERT}", "--n", "2")
    assert [(r["status"], r["flags"], r["error"]) for r in records] == [(503, "UH", None)] * 2


def test_load_tool_reports_the_envoy_response_flags_header():
    with replying(500, "boom", {"x-envoy-response-flags": "FI"}) as port:
        records = run_load("--url", f"http://127.0.0.1:{port}{CONVERT}", "--n", "1")
    assert [(r["status"], r["flags"]) for r in records] == [(500, "FI")]


def test_load_tool_names_a_refused_connection_as_labkit_does():
    records = run_load("--url", f"http://127.0.0.1:{free_port()}{CONVERT}", "--n", "2", "--timeout", "2")
    assert [(r["status"], r["error"], r["flags"]) for r in records] == [(None, "refused", None)] * 2


def test_tcp_echo_port_answers_each_line_with_the_version_as_prefix():
    """Istio's tcp-echo sample: every line of a connection comes back as "<prefix> <line>"."""
    tcp = free_port()
    with service(VERSION="v2", TCP_PORT=str(tcp)), socket.create_connection(("127.0.0.1", tcp), 5) as conn:
        conn.sendall(b"hello\nworld\n")
        answers = conn.makefile("rb")
        lines = [answers.readline(), answers.readline()]
    assert lines == [b"v2 hello\n", b"v2 world\n"]
    with (
        service(VERSION="v1", TCP_PORT=str(tcp), TCP_PREFIX="one"),
        socket.create_connection(("127.0.0.1", tcp), 5) as conn,
    ):
        conn.sendall(b"hi\n")
        assert conn.makefile("rb").readline() == b"one hi\n"


def test_load_tool_opens_one_tcp_connection_per_request_for_a_tcp_url():
    """The kind backend's send_tcp: load.py in the client pod reports each connection's echo prefix."""
    tcp = free_port()
    with service(VERSION="v2", TCP_PORT=str(tcp)):
        echoed = run_load("--url", f"tcp://127.0.0.1:{tcp}", "--n", "5", "--concurrency", "2")
    refused = run_load("--url", f"tcp://127.0.0.1:{free_port()}", "--n", "1", "--timeout", "2")
    assert {(r["status"], r["version"], r["error"]) for r in echoed} == {(None, "v2", None)} and len(
        echoed
    ) == 5
    assert [(r["version"], r["error"]) for r in refused] == [(None, "refused")]


def test_load_tool_rejects_a_malformed_header():
    done = subprocess.run(
        [sys.executable, str(LOAD), "--url", "http://127.0.0.1:1/", "--n", "1", "--header", "x-canary"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "Name: value" in done.stderr


CONFIG_FILES = sorted(paths.CLUSTER_CONFIG.rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(paths.CLUSTER_CONFIG)))
def test_every_cluster_config_file_parses_as_yaml_resources(path: Path):
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path} has no YAML documents"
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: a document without apiVersion/kind"


@pytest.mark.parametrize(("v1", "v2"), [(100, 0), (90, 10), (75, 25), (50, 50), (0, 100)])
def test_canary_files_replace_each_other_and_carry_the_weights_in_their_name(v1, v2):
    path = paths.MESH / f"virtual-service-currency-converter-{v1}-{v2}.yaml"
    vs = yaml.safe_load(path.read_text())
    assert (vs["metadata"]["name"], vs["metadata"]["namespace"]) == ("currency-converter", "payments-prod")
    route = vs["spec"]["http"][0]["route"]
    assert {d["destination"]["subset"]: d["weight"] for d in route} == {"v1": v1, "v2": v2}


def test_image_pins_the_aiohttp_version_the_tests_run_against():
    pins = (paths.SERVICE_DIR / "requirements.txt").read_text().split()
    assert f"aiohttp=={aiohttp.__version__}" in pins
    dockerfile = (paths.SERVICE_DIR / "Dockerfile").read_text()
    assert "COPY app.py load.py" in dockerfile, "the client pod runs load.py from the same image"


def _docs(folder: Path) -> list[dict]:
    return [d for p in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def test_every_app_service_selects_pods_and_every_deployment_selects_its_own_template():
    apps = _docs(paths.APPS)
    deployments = [d for d in apps if d["kind"] == "Deployment"]
    for dep in deployments:
        template = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= template.items(), dep["metadata"]["name"]
    for svc in (d for d in apps if d["kind"] == "Service"):
        selector, ns = svc["spec"]["selector"], svc["metadata"]["namespace"]
        chosen = [
            d["metadata"]["name"]
            for d in deployments
            if d["metadata"]["namespace"] == ns
            and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert chosen, f"Service {ns}/{svc['metadata']['name']} selects no pods"


def test_all_workloads_run_the_one_locally_loaded_image():
    containers = [
        c
        for d in _docs(paths.APPS)
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert {(c["image"], c["imagePullPolicy"]) for c in containers} == {
        ("meshlab/currency-converter:0.1.0", "IfNotPresent")
    }


def test_scenario_routes_use_defined_subsets_except_the_missing_subset_lesson():
    defined = {
        s["name"]
        for s in yaml.safe_load((paths.MESH / "destination-rule-currency-converter.yaml").read_text())[
            "spec"
        ]["subsets"]
    }
    for path in sorted(paths.MESH.glob("virtual-service-currency-converter-*.yaml")):
        vs = yaml.safe_load(path.read_text())
        for i, entry in enumerate(vs["spec"]["http"]):
            assert entry.get("route"), (
                f"{path.name}: spec.http[{i}] has no route (fault/timeout belong in one entry)"
            )
        used = {r["destination"].get("subset") for h in vs["spec"]["http"] for r in h["route"]} - {None}
        if path.name.endswith("-missing-subset.yaml"):
            assert used - defined == {"v3"}, "the 503 NC lesson needs exactly one undefined subset"
        else:
            assert used <= defined, f"{path.name} routes to undefined subsets {used - defined}"


def test_every_app_deployment_declares_the_downward_api_identity_the_app_reports():
    """On kind the kubelet fills these; the local backend resolves the same fieldRefs (MESHLAB_POD aside)."""
    wanted = {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_VERSION": "metadata.labels['version']",
    }
    for dep in (d for d in _docs(paths.APPS) if d["kind"] == "Deployment"):
        env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        refs = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in env if "valueFrom" in e}
        assert refs == wanted, dep["metadata"]["name"]
        literal = {e["name"]: e["value"] for e in env if "value" in e}
        if dep["metadata"]["namespace"] == "payments-prod" and dep["metadata"]["name"] != "client":
            label = dep["spec"]["template"]["metadata"]["labels"]["version"]
            assert literal["VERSION"] == label, f"{dep['metadata']['name']}: VERSION differs from its label"
