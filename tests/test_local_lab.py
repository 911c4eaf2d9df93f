"""The local backend end to end: real Envoy sidecars, real mTLS, real HTTP, driven only through LocalLab.

One lab for the whole module; the scenarios run in file order and each leaves the canary at 90/10 + STRICT.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import time
from pathlib import Path

import psutil
import pytest
import yaml
from scipy.stats import binomtest
from support.request import get

from labkit import lesson, metrics, paths, stats, traffic
from labkit.backends.local import LocalLab
from labkit.errors import LabError, ManifestError, PortInUseError, ToolNotFoundError, UnsupportedError
from labkit.local import envoy, processes, telemetry
from labkit.local.ca import LocalCA

pytestmark = pytest.mark.mesh

URL = lesson.URL
MESH = paths.CLUSTER_CONFIG / "mesh"


def wilson_contains(k: int, n: int, p: float) -> bool:
    """At the lab's one confidence level (labkit.stats.CONFIDENCE)."""
    ci = binomtest(k, n, p).proportion_ci(confidence_level=stats.CONFIDENCE, method="wilson")
    return ci.low <= p <= ci.high


def vs(http: list[dict]) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "currency-converter", "namespace": "payments-prod"},
        "spec": {"hosts": ["currency-converter"], "http": http},
    }


def route(subset: str, weight: int | None = None) -> dict:
    dest: dict = {"destination": {"host": "currency-converter", "subset": subset}}
    if weight is not None:
        dest["weight"] = weight
    return dest


def test_up_runs_every_workload_and_is_idempotent(lab):
    status = lab.status()
    assert status.healthy, str(status)
    by_name = {w.name: w for w in status.workloads}
    assert by_name["currency-converter-v1"].sidecar and by_name["client"].sidecar
    assert not by_name["legacy-client"].sidecar
    assert status.ingress_url and status.ingress_url.startswith("http://127.0.0.1:")
    pids = {r.name: r.pid for r in processes.records(lab.files.run_dir)}
    assert lab.up().healthy
    assert {r.name: r.pid for r in processes.records(lab.files.run_dir)} == pids  # reused, not restarted


def test_canary_90_10_split_within_binomial_interval(lab):
    result = lab.send(URL, n=2000, concurrency=8, progress=False)
    counts = result.counts()
    assert sum(counts.values()) == 2000, result.codes()
    assert wilson_contains(counts.get("v2", 0), 2000, 0.10), counts
    samples = lab.metrics()
    seen = metrics.group(samples, "destination_version", reporter="source", source_workload="client")
    assert seen.get(("v2",), 0) >= counts["v2"] and seen.get(("v1",), 0) >= counts["v1"]


def _find(node, key: str):
    """Every value stored under ``key`` anywhere in a JSON document."""
    if isinstance(node, dict):
        if key in node:
            yield node[key]
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            yield from _find(item, key)


def test_admin_api_shows_what_the_client_sidecar_runs(lab):
    client = next(p for p in lab._current().sidecars if p.workload == "client")
    fqdn = "currency-converter.payments-prod.svc.cluster.local"
    split = [c for wc in _find(envoy.config_dump(client), "weighted_clusters") for c in wc["clusters"]]
    assert {c["name"]: c["weight"] for c in split} == {
        f"outbound|8080|v1|{fqdn}": 90,
        f"outbound|8080|v2|{fqdn}": 10,
    }
    hosts = {c["name"]: len(c.get("host_statuses", [])) for c in envoy.clusters(client)["cluster_statuses"]}
    assert hosts[f"outbound|8080|v1|{fqdn}"] == 1


def test_the_kind_only_views_of_the_notebooks_run_locally(lab):
    # as notebooks 03 and 04 call them: the lesson's namespace, from the client
    assert lab.route_weights("currency-converter") == {"v1": 90, "v2": 10}
    assert lab.mtls_mode("currency-converter-v1") == "STRICT"
    assert lab.mtls_mode("legacy-client", "legacy") is None  # no sidecar
    assert [(r.kind, r.name) for r in lab.get("peerauthentications", "payments-prod")] == [
        ("PeerAuthentication", "default")
    ]
    gateway = {
        c["name"] for c in lab.proxy_config("ingress", "clusters")
    }  # the gateway reaches every Service
    assert "outbound|8080|v2|currency-converter.payments-prod.svc.cluster.local" in gateway


def test_strict_refuses_legacy_and_serves_the_mesh_over_mtls(lab):
    legacy = lab.send(URL, n=10, source="legacy", concurrency=2)
    assert legacy.codes() == {"connection reset": 10}
    assert get(lab)[0] == 200
    samples = lab.metrics()
    assert metrics.total(samples, reporter="destination", connection_security_policy="mutual_tls") > 0
    assert metrics.total(samples, reporter="destination", connection_security_policy="none") == 0


def test_strict_sidecar_rejects_a_rogue_ca_with_the_right_spiffe_id(lab, tmp_path):
    topo = lab._current()
    server = next(p for p in topo.sidecars if p.workload == "currency-converter-v1")
    client = next(p for p in topo.sidecars if p.workload == "client")
    port = server.inbound_ports[8080]

    def call(cert: Path, key: Path) -> int:
        ctx = ssl.create_default_context(cafile=str(client.ca_file))
        ctx.check_hostname = False  # Istio checks the SPIFFE SAN, not a host name
        ctx.set_alpn_protocols(["istio-http/1.1", "istio", "http/1.1"])
        ctx.load_cert_chain(str(cert), str(key))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status
        finally:
            conn.close()

    assert call(client.cert_file, client.key_file) == 200
    rogue = LocalCA(tmp_path / "rogue")
    rogue.issue(client.spiffe, tmp_path / "cert.pem", tmp_path / "key.pem")
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        call(tmp_path / "cert.pem", tmp_path / "key.pem")


def test_permissive_accepts_plaintext_and_mtls(lab):
    assert lab.apply(MESH / "peer-authentication-permissive.yaml")[0].action == "configured"
    try:
        plain = lab.send(URL, n=10, source="legacy", concurrency=2)
        assert plain.codes() == {200: 10}
        assert get(lab)[0] == 200
    finally:
        lab.apply(MESH / "peer-authentication-strict.yaml")
    assert lab.send(URL, n=4, source="legacy", concurrency=1).codes() == {"connection reset": 4}


def test_header_match_routes_testers_to_v2(lab):
    lab.apply(MESH / "virtual-service-currency-converter-header-match.yaml")
    try:
        testers = lab.send(URL, n=20, headers={"x-canary": "true"}, concurrency=2)
        assert testers.counts() == {"v2": 20}, testers.codes()
        others = lab.send(URL, n=20, concurrency=2)
        assert others.counts() == {"v1": 20}, others.codes()
    finally:
        lab.apply(MESH / "virtual-service-currency-converter-90-10.yaml")


def test_authorization_policy_denies_with_403_and_allow_rules_open_it_again(lab):
    deny_all = MESH / "authorization-policy-currency-converter-deny-all.yaml"
    allow_client = MESH / "authorization-policy-currency-converter-allow-client.yaml"
    try:
        assert [c.action for c in lab.apply(deny_all)] == ["created"]
        assert get(lab)[:2] == (403, "RBAC: access denied")
        lab.apply(allow_client)  # ALLOW policies add up: the client's SPIFFE identity may GET /convert*
        assert get(lab)[0] == 200
        assert get(lab, URL.replace("/convert", "/healthz"))[0] == 403
    finally:
        deleted = [c.action for c in lab.delete(deny_all) + lab.delete(allow_client)]
    assert deleted == ["deleted", "deleted"]
    assert get(lab, URL.replace("/convert", "/healthz"))[0] == 200


def test_registry_only_blocks_unknown_hosts_until_a_service_entry(lab):
    url = "http://api.fxrates.example/rates"
    assert get(lab, url)[0] == 502
    lab.apply(MESH / "service-entry-fx-rates.yaml")
    try:
        status, body, _ = get(lab, url)
        assert status == 200, body
    finally:
        lab.delete(MESH / "service-entry-fx-rates.yaml")
    assert get(lab, url)[0] == 502


def test_ingress_gateway_serves_the_service_once_a_gateway_is_bound(lab):
    gateway = MESH / "gateway-currency-converter.yaml"
    ingress_vs = MESH / "virtual-service-currency-converter-ingress.yaml"
    lab.apply(gateway)
    lab.apply(ingress_vs)
    try:
        base = lab.status().ingress_url
        assert get(lab, f"{base}/convert?from=NOK&to=EUR&amount=1", source="ingress")[0] == 200
        assert (
            get(lab, "http://payments.example/convert?from=NOK&to=EUR&amount=1", source="ingress")[0] == 200
        )
        assert get(lab, "http://payments.example/healthz", source="ingress")[0] == 404  # no route: NR
        assert any(
            '"GET /healthz HTTP/1.1" 404 NR' in line for line in lab.access_log("istio-ingressgateway")
        )
    finally:
        lab.delete(ingress_vs)
        lab.delete(gateway)
    gone = lab.send("http://payments.example/convert", n=1, source="ingress", concurrency=1)
    assert gone.codes() == {"refused": 1}  # no Gateway, no listener


def test_fault_abort_share_matches_the_percentage(lab):
    lab.apply(MESH / "virtual-service-currency-converter-fault-abort.yaml")
    try:
        result = lab.send(URL, n=400, concurrency=8)
    finally:
        lab.apply(MESH / "virtual-service-currency-converter-90-10.yaml")
    aborted = sum(1 for o in result.outcomes if o.status == 503 and o.flags == "FI")
    assert aborted + result.codes().get(200, 0) == 400, result.codes()
    assert wilson_contains(aborted, 400, 0.5), aborted


def test_missing_subset_gives_503_nc_in_metrics_and_access_log(lab):
    lab.apply(MESH / "virtual-service-currency-converter-missing-subset.yaml")
    try:
        result = lab.send(URL, n=200, concurrency=8)
    finally:
        lab.apply(MESH / "virtual-service-currency-converter-90-10.yaml")
    assert result.codes().get(503, 0) > 0, result.codes()
    assert metrics.total(lab.metrics(), reporter="source", response_code="503", response_flags="NC") > 0
    assert any(" 503 NC " in line for line in lab.access_log("client", tail=500))


def _deployment(name: str) -> dict:
    docs = yaml.safe_load_all((paths.APPS / "currency-converter.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def _set_env(deployment: dict, name: str, value: str) -> None:
    for env in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if env["name"] == name:
            env["value"] = value


def test_deployment_env_change_restarts_it_and_a_route_timeout_gives_504(lab):
    v1, original = _deployment("currency-converter-v1"), _deployment("currency-converter-v1")
    _set_env(v1, "DELAY_MS", "1000")
    before = processes.record(lab.files.run_dir, "app.payments-prod.currency-converter-v1-0")
    assert [c.action for c in lab.apply(v1)] == ["configured"]
    after = processes.record(lab.files.run_dir, "app.payments-prod.currency-converter-v1-0")
    assert after.pid != before.pid and not processes.is_alive(before)
    try:
        lab.apply(vs([{"timeout": "0.3s", "route": [route("v1")]}]))
        status, body, _ = get(lab)
        assert (status, body) == (504, "upstream request timeout")
    finally:
        lab.apply(MESH / "virtual-service-currency-converter-90-10.yaml")
        assert [c.action for c in lab.apply(original)] == ["configured"]
    assert lab.status().healthy


def test_a_deployment_change_that_cannot_run_is_rolled_back(lab):
    v2 = _deployment("currency-converter-v2")
    _set_env(v2, "FAIL_RATE", "2")  # the app refuses to start: FAIL_RATE must be 0..1
    before = {r.name: r.pid for r in processes.records(lab.files.run_dir) if "-v2-" not in r.name}
    with pytest.raises(LabError, match="FAIL_RATE"):
        lab.apply(v2)
    assert lab.status().healthy
    after = {r.name: r.pid for r in processes.records(lab.files.run_dir) if "-v2-" not in r.name}
    assert after == before  # the other apps and every Envoy kept running: connections and counters survive
    assert lab.send(URL, n=20, concurrency=2).codes() == {200: 20}


def test_live_weight_change_under_keepalive_traffic_drops_nothing(lab):
    lab.set_weights("currency-converter", v1=100, v2=0)
    outcomes: list[traffic.Outcome] = []
    stream = traffic.Stream(lab.resolver("client"), URL, qps=200, concurrency=4, on_batch=outcomes.extend)

    def wait_for(predicate) -> None:
        deadline = time.monotonic() + 20
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.05)

    stream.start()
    try:
        wait_for(lambda: len(outcomes) >= 100)
        swap_start = time.monotonic() - stream.started
        lab.set_weights("currency-converter", v1=0, v2=100)
        swap_end = time.monotonic() - stream.started
        wait_for(lambda: sum(o.t > swap_end for o in outcomes) >= 100)
    finally:
        stream.stop()
        lab.apply(MESH / "virtual-service-currency-converter-90-10.yaml")
    assert all(o.status == 200 for o in outcomes), [o for o in outcomes if o.status != 200][:3]
    assert {o.version for o in outcomes if o.t < swap_start} == {"v1"}
    after = [o.version for o in outcomes if o.t > swap_end]  # set_weights returns once Envoy routes anew
    assert len(after) >= 100 and set(after) == {"v2"}
    first_v2 = min(o.t + o.latency for o in outcomes if o.version == "v2")
    assert first_v2 - swap_start < 1.0  # the lesson's promise: a weight change shows within a second


def test_resolver_like_dns_and_sidecars(lab):
    with pytest.raises(LabError, match="no-such-service"):
        lab.resolver("legacy")("http://no-such-service.payments-prod:8080/")
    assert get(lab, "http://no-such-service.payments-prod:8080/")[0] == 502  # REGISTRY_ONLY block_all
    closed = lab.send("http://currency-converter.payments-prod:9999/", n=1, concurrency=1)
    assert closed.outcomes[0].status is None  # no outbound listener on that port
    target, headers = lab.resolver("client")("http://127.0.0.1:5/x")
    assert (target, headers) == ("http://127.0.0.1:5/x", {})


def _snapshot(lab: LocalLab) -> dict[Path, bytes]:
    files = [lab.files.applied, *(f for p in lab._current().proxies.values() for f in p.dir.rglob("*.yaml"))]
    return {f: f.read_bytes() for f in files if f.is_file()}


def test_the_lab_s_apps_cannot_be_deleted_and_nothing_stops(lab):
    pids = {r.name: r.pid for r in processes.records(lab.files.run_dir)}
    with pytest.raises(
        UnsupportedError,
        match=r"(?s)client.yaml \(document 1\) ServiceAccount/client: the local backend always runs.*down",
    ):
        lab.delete(paths.APPS / "client.yaml")
    assert {r.name: r.pid for r in processes.records(lab.files.run_dir)} == pids


def test_rejected_input_changes_nothing(lab):
    before = _snapshot(lab)
    with pytest.raises(UnsupportedError, match="EnvoyFilter"):
        lab.apply(
            {
                "apiVersion": "networking.istio.io/v1alpha3",
                "kind": "EnvoyFilter",
                "metadata": {"name": "x", "namespace": "payments-prod"},
                "spec": {"configPatches": []},
            }
        )
    cors = vs([{"route": [route("v2")], "corsPolicy": {"allowOrigins": [{"exact": "https://x.example"}]}}])
    with pytest.raises(UnsupportedError, match=r"spec\.http\[0\]\.corsPolicy"):
        lab.apply(cors)
    with pytest.raises(ManifestError):
        lab.apply("kind: VirtualService\nmetadata: {name: [unclosed\n")
    statefulset = (  # valid, so it passes validation and reaches the local backend's capability check
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: data}\nspec:\n"
        "  selector: {matchLabels: {app: db}}\n  serviceName: db\n"
        "  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: db}]}\n"
    )
    with pytest.raises(
        UnsupportedError, match="ConfigMap, Deployment, Namespace, Secret, Service, ServiceAccount"
    ):
        lab.apply(statefulset)  # the kinds named are those the topology builds
    assert _snapshot(lab) == before


def test_status_needs_no_envoy_binary(lab, monkeypatch):
    def missing() -> str:
        raise ToolNotFoundError("envoy")

    monkeypatch.setattr(envoy, "binary", missing)  # status() names processes; it builds no Envoy command
    assert lab.status().healthy


def test_killed_app_is_reported_and_up_restarts_it(lab):
    rec = processes.record(lab.files.run_dir, "app.payments-prod.currency-converter-v2-0")
    os.kill(rec.pid, 9)
    psutil.wait_procs([psutil.Process(rec.pid)], timeout=5)
    status = lab.status()
    assert not status.healthy
    assert any("currency-converter-v2-0" in p for p in status.problems)
    assert {w.name: w.ready for w in status.workloads}["currency-converter-v2"] == 0
    assert lab.up().healthy
    assert processes.record(lab.files.run_dir, "app.payments-prod.currency-converter-v2-0").pid != rec.pid


def test_access_log_and_metrics_read_the_proxies(lab):
    get(lab)
    lines = telemetry.wait_for_lines(lambda: lab.access_log("client", tail=5), lambda ls: bool(ls))
    assert lines and '"GET /convert?from=NOK&to=EUR&amount=100 HTTP/1.1"' in lines[-1]
    with pytest.raises(LabError, match="legacy-client"):
        lab.access_log("legacy-client")


def _lab_children() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any("envoy" in a or "app.py" in a for a in p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_a_new_kernel_reattaches_to_the_same_lab_and_config(lab):
    pids = {r.name: r.pid for r in processes.records(lab.files.run_dir)}
    fresh = LocalLab(state=lab.state)  # what a new kernel does: only the state folder is shared
    assert fresh.status().healthy
    assert fresh.up().healthy
    assert {r.name: r.pid for r in processes.records(lab.files.run_dir)} == pids
    assert wilson_contains(fresh.send(URL, n=300, concurrency=8).counts().get("v2", 0), 300, 0.10)
    assert fresh.apply(MESH / "virtual-service-currency-converter-90-10.yaml")[0].action == "unchanged"


def test_a_new_kernel_stops_the_lab_and_nothing_is_left(lab):
    pids = [r.pid for r in processes.records(lab.files.run_dir)]
    assert pids
    assert list(lab.files.sock_dir.glob("*.sock"))
    LocalLab(state=lab.state).down()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
    assert _lab_children() == []
    assert list(lab.files.sock_dir.glob("*.sock")) == []  # no socket left behind either
    assert not lab.status().up


def test_port_clash_is_named_and_leaves_nothing_running(lab):
    topo = lab._current()
    port = topo.gateway.gateway_ports[80]
    lab.down()  # a stopped lab whose port another program took meanwhile (a running one's istiod holds it)
    with socket.socket() as squatter:
        squatter.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # the lab's old sockets may be in TIME_WAIT
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(PortInUseError, match=str(port)):
            lab.up()
    assert processes.records(lab.files.run_dir) == []
    assert _lab_children() == []
