"""``KubeLab`` end to end on stand-ins for what this machine cannot run: fake kind/docker/istioctl/kubectl
executables (tests/fakes/bin) and a stand-in Kubernetes API server on 127.0.0.1 (tests/fakes/apiserver.py)
that rolls Deployments out over a fraction of a second and injects sidecars (classic or native) as the
namespace label says when a pod is created.
They check the orchestration a trainee relies on: what up() runs and in which order, reuse on a second up(),
the sidecar diagnosis and repair, in-pod traffic parsed into outcomes, and kube mode never creating or
deleting a cluster. The real thing is tests/test_kind_live.py (marked ``cluster``)."""

from __future__ import annotations

import copy
import json
import os
import time

import pytest
from fakes import harness

from labkit import lesson, manifests, metrics, paths, traffic
from labkit.backends.kind import KubeLab, _ingress
from labkit.errors import BackendError, CommandError, LabError
from labkit.kind import cluster
from labkit.kind.podtraffic import parse_load_output


@pytest.fixture
def env(tmp_path, monkeypatch):
    fake, api = harness.kind_lab(tmp_path, monkeypatch)
    yield fake, api
    api.stop()


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One lab brought up once for the tests that only read from it (up() is the slow part)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        fake, api = harness.kind_lab(tmp_path_factory.mktemp("running"), monkeypatch)
        lab = KubeLab("kind")
        lab.up()
        yield fake, api, lab
        api.stop()


def _steps(fake) -> list[str]:
    return [" ".join(c[:3]) for c in fake.calls() if c[1] not in ("version", "info")]


def test_up_builds_the_whole_lab_in_order_and_reports_it_healthy(env):
    fake, api = env
    status = KubeLab("kind").up()
    assert _steps(fake) == [
        "kind get clusters",  # doctor: is the cluster there already?
        "kind get clusters",  # create: reuse or create
        "kind create cluster",
        "docker build -t",
        "kind load docker-image",
        "istioctl install -y",
        "kind get clusters",  # status: the cluster is there
    ]
    assert status.healthy, str(status)
    by_name = {w.name: w for w in status.workloads}
    assert {"currency-converter-v1", "currency-converter-v2", "client", "legacy-client", "fx-rates"} <= set(
        by_name
    )
    assert by_name["currency-converter-v2"].sidecar and by_name["client"].sidecar
    assert not by_name["legacy-client"].sidecar  # namespace legacy is outside the mesh on purpose
    assert status.ingress_url == "http://127.0.0.1:8080"
    assert os.environ["KUBECONFIG"] == str(cluster.kubeconfig()), (
        "kubectl cells in the notebook reach the lab"
    )
    applied = [r for r in api.writes() if "/deployments/currency-converter-v1" in r.path]
    assert applied and "fieldManager=labkit" in applied[0].path


def test_second_up_reuses_the_cluster_and_istio(env):
    fake, _ = env
    lab = KubeLab("kind")
    lab.up()
    before = len(fake.calls())
    lab.up()
    again = _steps(fake)[len([c for c in fake.calls()[:before] if c[1] not in ("version", "info")]) :]
    assert "kind create cluster" not in again and "istioctl install -y" not in again


def test_up_refuses_with_the_doctor_lines_when_docker_is_down(env):
    fake, _ = env
    fake.docker_down()
    with pytest.raises(
        BackendError, match=r"cannot start \(`labkit doctor`\):\n  \[error\] Docker daemon not reach"
    ):
        KubeLab("kind").up()
    assert not [c for c in fake.calls("kind") if c[1] == "create"]


def _pods_started_before_injection(api):
    """The trainee pitfall: the apps' pods exist from before payments-prod was labelled for injection."""
    for r in manifests.load(paths.APPS / "currency-converter.yaml") + manifests.load(
        paths.APPS / "client.yaml"
    ):
        body = copy.deepcopy(r.body)
        if r.kind == "Namespace":
            body["metadata"]["labels"] = {}
        if r.kind in ("Namespace", "Deployment"):
            api.store(body)


def test_pods_without_sidecar_are_diagnosed_then_restarted_by_up(env):
    fake, api = env
    fake.add_cluster("meshlab")
    lab = KubeLab("kind")
    lab.up()
    _pods_started_before_injection(api)
    api.objects["/api/v1/namespaces/payments-prod"]["metadata"]["labels"] = {"istio-injection": "enabled"}
    problems = lab.status().problems
    assert any(
        "has no istio-proxy container (1/1, not 2/2)" in p
        and "kubectl rollout restart deployment/currency-converter-v1 -n payments-prod" in p
        for p in problems
    ), problems
    status = lab.up()
    assert status.healthy, str(status)
    restarts = [r for r in api.writes() if r.headers.get("Content-Type") == "application/merge-patch+json"]
    assert {r.path.split("?")[0].rsplit("/", 1)[1] for r in restarts} == {
        "currency-converter-v1",
        "currency-converter-v2",
        "client",
    }


def test_send_from_client_runs_load_py_in_the_pod_and_parses_outcomes(running):
    fake, _, lab = running
    url = "http://currency-converter.payments-prod:8080/convert?from=NOK&to=EUR&amount=100"
    result = lab.send(url, n=20, qps=50, headers={"x-canary": "true"})
    assert len(result) == 20
    assert result.split() == pytest.approx({"v1": 0.9, "v2": 0.1})
    call = [c for c in fake.calls("kubectl") if "exec" in c][-1]
    assert call[call.index("exec") :] == [
        "exec", "-n", "payments-prod", "deploy/client", "-c", "client", "--",
        "python", "load.py", "--url", url, "--n", "20", "--concurrency", "8", "--qps", "50",
        "--header", "x-canary: true",
    ]  # fmt: skip
    assert call[1:3] == ["--context", "kind-meshlab"]


def test_send_from_legacy_uses_the_pod_outside_the_mesh(running):
    fake, _, lab = running
    lab.send("http://currency-converter.payments-prod:8080/convert", n=3, source="legacy")
    call = [c for c in fake.calls("kubectl") if "exec" in c][-1]
    assert call[call.index("exec") + 1 : call.index("--")] == [
        "-n",
        "legacy",
        "deploy/legacy-client",
        "-c",
        "legacy-client",
    ]


def test_ingress_resolver_targets_the_mapped_port_with_the_host_header():
    assert _ingress("http://cc.example.com/convert?from=NOK") == (
        "http://127.0.0.1:8080/convert?from=NOK",
        {"Host": "cc.example.com"},
    )


def test_client_resolver_points_to_send():
    with pytest.raises(BackendError, match=r"use lab.send\(url, n=..., source='client'\)"):
        KubeLab("kind").resolver("client")


def test_metrics_have_the_local_backends_shape(running):
    _, api, lab = running
    labels = {
        "reporter": "destination",
        "destination_version": "v2",
        "connection_security_policy": "mutual_tls",
    }
    api.prometheus = [
        {"metric": {"__name__": "istio_requests_total", **labels}, "value": [1764250000.1, "7"]}
    ]
    samples = lab.metrics()
    assert all(isinstance(s, metrics.RequestCount) for s in samples)
    assert metrics.total(samples, destination_version="v2", connection_security_policy="mutual_tls") == 7.0


def test_send_tcp_opens_the_connections_from_inside_the_client_pod(running):
    """Notebook 20 on kind: load.py's tcp:// mode in the client pod, its echoes as a TcpResult."""
    fake, _, lab = running
    url = "tcp://tcp-echo.payments-prod:9001"
    result = lab.send_tcp(url, n=20)
    assert result.counts() == {"v1": 18, "v2": 2} and result.codes() == {"echoed": 20}
    call = [c for c in fake.calls("kubectl") if "exec" in c][-1]
    assert call[call.index("load.py") :] == ["load.py", "--url", url, "--n", "20", "--concurrency", "8"]


def test_promql_queries_the_addon_through_the_api_servers_service_proxy(running):
    """Notebook 21 on kind: the query's answer is Prometheus's own data.result."""
    _, api, lab = running
    series = {"metric": {"destination_version": "v1"}, "value": [1764250000.1, "3.5"]}
    api.prometheus = [series]
    assert lab.promql("sum by (destination_version) (rate(istio_requests_total[1m]))") == [series]
    asked = [r for r in api.requests if "/services/prometheus:9090/proxy/api/v1/query" in r.path]
    assert asked and "rate" in asked[-1].path


def test_access_log_keeps_only_access_lines_of_the_proxy(running):
    _, api, lab = running
    [pod] = [o for p, o in api.objects.items() if "/pods/currency-converter-v1-" in p]
    api.logs[f"payments-prod/{pod['metadata']['name']}/istio-proxy"] = (
        "2026-11-27T10:00:00.000000Z\tinfo\tEnvoy proxy is ready\n"
        '[2026-11-27T10:00:01.000Z] "GET /convert HTTP/1.1" 200 - via_upstream - "-" 0 57 3 2 "-" "py" "id" '
        '"currency-converter:8080" "10.244.0.7:8080" inbound|8080|| 127.0.0.6:0 10.244.0.7:8080 '
        "10.244.0.9:0 - default\n"
    )
    [line] = lab.access_log("currency-converter-v1")
    assert line.startswith("[2026-11-27T10:00:01.000Z]") and "inbound|8080||" in line


def test_down_deletes_the_kind_cluster(env):
    fake, _ = env
    fake.add_cluster("meshlab")
    KubeLab("kind").down()
    assert fake.calls("kind")[-1][1:4] == ["delete", "cluster", "--name"]


def test_kube_mode_never_creates_or_deletes_a_cluster(env, tmp_path, monkeypatch):
    fake, api = env
    monkeypatch.setenv(
        "KUBECONFIG", str(api.kubeconfig(tmp_path / "user-kubeconfig", context="team-cluster"))
    )
    lab = KubeLab("kube", context="team-cluster")
    status = lab.up()
    lab.down()
    assert status.up and status.ingress_url is None
    assert fake.calls("kind") == [] and fake.calls("docker") == []
    install = [c for c in fake.calls("istioctl") if c[1] == "install"]
    assert install and install[0][-2:] == ["--context", "team-cluster"]


def test_live_chart_stream_from_client_delivers_batches_from_the_pod(running):
    fake, _, lab = running
    batches: list[list] = []
    stream = lab.stream(
        "http://currency-converter.payments-prod:8080/convert", qps=10, on_batch=batches.append
    )
    stream.start()
    deadline = time.monotonic() + 60
    while len(batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    stream.stop(timeout=30)
    assert stream.error is None and not stream.running
    assert len(batches) >= 2 and all(len(b) == 20 for b in batches)  # qps 10 x 2 s chunks
    assert batches[1][0].t > batches[0][0].t  # t counts from the stream's start, across chunks
    call = [c for c in fake.calls("kubectl") if "exec" in c][-1]
    assert call[call.index("--qps") + 1] == "10"


def test_an_interrupted_stream_cell_stops_the_pods_traffic_and_stop_all_ends_a_started_one(running):
    fake, _, lab = running
    url = "http://currency-converter.payments-prod:8080/convert"
    batches: list[list] = []

    def execs() -> int:
        return len([c for c in fake.calls("kubectl") if "exec" in c])

    with pytest.raises(KeyboardInterrupt), lab.stream(url, qps=10, on_batch=batches.append) as stream:
        deadline = time.monotonic() + 60
        while not batches and time.monotonic() < deadline:
            time.sleep(0.1)
        raise KeyboardInterrupt  # the kernel's interrupt in the cell, while chunks run in the pod
    assert batches and not stream.running
    after = execs()
    time.sleep(3)  # longer than a chunk: another one would have started by now
    assert execs() == after, "the pod stream kept sending after its cell was interrupted"
    started = lab.stream(url, qps=10, on_batch=batches.append)
    started.start()
    traffic.stop_all()  # what lab.reset does first
    assert not started.running


def test_set_weights_waits_until_the_client_proxy_holds_the_split(running, monkeypatch, capsys):
    fake, api, lab = running
    for r in manifests.load(paths.MESH / "destination-rule-currency-converter.yaml"):
        api.put(r.body)  # the subsets the split refers to, as on the cluster
    lab.set_weights("currency-converter", v1=90, v2=10)  # the fake istiod pushes it to the proxy at once
    assert "warning" not in capsys.readouterr().out
    vs = api.objects[
        "/apis/networking.istio.io/v1/namespaces/payments-prod/virtualservices/currency-converter"
    ]
    assert [d["weight"] for d in vs["spec"]["http"][0]["route"]] == [90, 10]
    monkeypatch.setattr("labkit.kind.proxyview.PROPAGATION_TIMEOUT", 0.0)
    stale = json.dumps(lab.proxy_config("client", "routes"))  # what the proxy holds now: 90/10
    fake.respond("istioctl", ["proxy-config", "routes"], stdout=stale)  # istiod has not pushed yet
    try:
        lab.set_weights("currency-converter", v1=50, v2=50)
    finally:
        fake.forget_responses()
    out = capsys.readouterr().out
    assert "client's proxy still routes {'v1': 90, 'v2': 10}, not {'v1': 50, 'v2': 50}" in out


def test_load_py_wall_clock_times_become_seconds_since_the_first_request():
    text = (
        '{"t": 1764250000.50, "status": 200, "version": "v2", "latency": 0.01, "error": null}\n'
        'Defaulted container "client" out of: client, istio-proxy (init)\n'
        '{"t": 1764250000.25, "status": null, "version": null, "latency": 5.0, "error": "TimeoutError"}\n'
    )
    first, second = parse_load_output(text)
    assert (first.t, first.status, first.error) == (0.0, None, "TimeoutError")
    assert (second.t, second.version) == (0.25, "v2")


def test_apply_then_delete_report_what_happened_like_kubectl(running, capsys):
    _, api, lab = running
    dr = paths.MESH / "destination-rule-currency-converter-outlier.yaml"
    capsys.readouterr()
    assert [str(c) for c in lab.apply(dr)] in (
        ["destinationrule/currency-converter (payments-prod) created"],
        ["destinationrule/currency-converter (payments-prod) configured"],
    )
    line = f"# on a cluster: kubectl apply -f cluster-config/mesh/{dr.name}"
    assert capsys.readouterr().out.splitlines() == [line]  # the command it stands for, once
    assert [c.action for c in lab.apply(dr, quiet=True)] == ["unchanged"]
    assert capsys.readouterr().out == ""  # quiet, for scripts
    assert [c.action for c in lab.delete(dr)] == ["deleted"]
    assert capsys.readouterr().out.splitlines() == [line.replace("apply", "delete")]
    assert [c.action for c in lab.delete(dr)] == ["not found"]


def test_apply_returns_once_a_changed_deployment_has_rolled_out(running):
    _, api, lab = running
    path = "/apis/apps/v1/namespaces/payments-prod/deployments/currency-converter-v2"
    try:
        before = len(api.requests)
        changes = lab.apply(lesson.with_env("currency-converter-v2", FAIL_RATE="0.5"))
        assert [(c.kind, c.action) for c in changes] == [("Deployment", "configured")]
        calls = [(r.method, r.path.split("?")[0]) for r in api.requests[before:]]
        patched = calls.index(("PATCH", path))
        assert ("GET", path) in calls[patched + 1 :], "apply() did not wait for the rollout"
    finally:
        lab.apply(lesson.with_env("currency-converter-v2", FAIL_RATE="0"))


def test_set_env_prints_the_kubectl_set_env_it_stands_for(running, capsys):
    _, _, lab = running
    capsys.readouterr()
    changes = lesson.set_env(lab, "currency-converter-v2", DELAY_MS="0")  # as the manifest says: a no-op
    assert capsys.readouterr().out.splitlines() == [
        # every variable: the ones not named go back to the manifest's values, as the lab's apply does
        "# on a cluster: kubectl set env deployment/currency-converter-v2 -n payments-prod TCP_PORT=9001 "
        "VERSION=v2 FAIL_RATE=0 DELAY_MS=0",
        *(str(c) for c in changes),
    ]


def test_status_reports_a_rollout_past_its_progress_deadline(running):
    _, api, lab = running
    path = "/apis/apps/v1/namespaces/payments-prod/deployments/currency-converter-v2"
    healthy = copy.deepcopy(api.objects[path])
    stuck = copy.deepcopy(healthy)
    stuck["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    api.put(stuck)
    try:
        status = lab.status()
        assert not status.healthy
        assert any("currency-converter-v2" in p and "progress deadline" in p for p in status.problems)
    finally:
        api.put(healthy)
    assert lab.status().healthy


def test_proxy_stats_reads_the_istio_proxy_counters_with_pilot_agent(running):
    """As Istio's circuit-breaking task does: pilot-agent request GET stats in the pod's istio-proxy."""
    fake, _, lab = running
    stats = lab.proxy_stats("client", "pending")
    cc = "cluster.outbound|8080||currency-converter.payments-prod.svc.cluster.local"
    assert stats == {f"{cc}.upstream_rq_pending_overflow": 7, f"{cc}.upstream_rq_pending_total": 23}
    call = [c for c in fake.calls("kubectl") if "exec" in c][-1]
    assert call[call.index("-c") :] == ["-c", "istio-proxy", "--", "pilot-agent", "request", "GET", "stats"]


def test_pod_urls_are_each_pods_ip_with_its_app_ports_not_the_sidecars(running):
    """What notebook 03 dials directly on kind: a pod IP and the app's containerPort (iptables sends it into
    the sidecar); the istio-proxy container's own ports are not the app's."""
    _, api, lab = running
    pods = [
        o
        for o in api.objects.values()
        if o.get("kind") == "Pod" and o["metadata"].get("ownerName") == "currency-converter-v1"
    ]
    assert pods and all(any(c["name"] == "istio-proxy" for c in p["spec"]["containers"]) for p in pods)
    assert lab.pod_urls("currency-converter-v1") == [  # the HTTP port and the TCP echo's
        f"http://{p['status']['podIP']}:{port}/" for p in pods for port in (8080, 9001)
    ]
    with pytest.raises(LabError, match="no Deployment 'nope'"):
        lab.pod_urls("nope")


# --- how the real tools behave (#20) ------------------------------------------------------------------------


def test_native_sidecars_count_as_sidecars_in_status_and_injection_checks(env):
    _, api = env
    api.native_sidecars = True  # Istio 1.31 on Kubernetes 1.36: istio-proxy is an init container
    status = KubeLab("kind").up()
    assert status.healthy, str(status)
    by_name = {w.name: w for w in status.workloads}
    assert by_name["client"].sidecar and not by_name["legacy-client"].sidecar
    [pod] = [o for p, o in api.objects.items() if "/pods/client-" in p]
    assert "istio-proxy" not in [c["name"] for c in pod["spec"]["containers"]]
    assert {"name": "istio-proxy", "restartPolicy": "Always"}.items() <= pod["spec"]["initContainers"][
        1
    ].items()


def test_prepull_mode_pulls_from_the_mirror_and_loads_every_image(env, monkeypatch):
    fake, _ = env
    monkeypatch.setenv("LAB_REGISTRY_MIRROR", "registry.local:5000")
    KubeLab("kind").up()
    docker = fake.calls("docker")
    assert ["docker", "pull", "registry.local:5000/istio/pilot:1.30.3"] in docker
    assert [
        "docker",
        "tag",
        "registry.local:5000/istio/pilot:1.30.3",
        "docker.io/istio/pilot:1.30.3",
    ] in docker
    loaded = {c[3] for c in fake.calls("kind") if c[1:3] == ["load", "docker-image"]}
    assert loaded >= {cluster.IMAGE, "docker.io/istio/pilot:1.30.3", "docker.io/istio/proxyv2:1.30.3",
                      "prometheus", "kiali"}  # fmt: skip
    [install] = [c for c in fake.calls("istioctl") if c[1] == "install"]
    assert "hub=docker.io/istio" in install and "tag=1.30.3" in install  # what was loaded is what runs


def test_without_prepull_nothing_is_pulled_on_the_host(env, monkeypatch):
    fake, _ = env
    monkeypatch.delenv("LAB_REGISTRY_MIRROR", raising=False)
    monkeypatch.delenv("LAB_IMAGES", raising=False)
    KubeLab("kind").up()
    assert not [c for c in fake.calls("docker") if c[1] == "pull"]


def test_up_stops_when_the_nodes_never_become_ready(env, monkeypatch):
    from fakes.apiserver import node

    fake, api = env
    api.put(node("meshlab-control-plane", ready=False))  # `kind create --wait` timed out, exit 0
    monkeypatch.setattr("labkit.backends.kind.NODE_READY_TIMEOUT", 0.5)
    with pytest.raises(BackendError, match="meshlab-control-plane not Ready"):
        KubeLab("kind").up()
    assert not [c for c in fake.calls("istioctl") if c[1] == "install"]


def test_up_refuses_a_reused_cluster_without_the_port_mapping(env):
    fake, _ = env
    fake.add_cluster("meshlab", ports=())
    with pytest.raises(BackendError, match="does not publish port 8080"):
        KubeLab("kind").up()
    assert not [c for c in fake.calls("istioctl") if c[1] == "install"]


def test_kubectl_exec_is_refused_while_the_client_pod_is_not_running(running):
    _, api, lab = running
    pods = [p for p, o in api.objects.items() if "/pods/client-" in p]
    for path in pods:
        api._ready_at[path] = time.monotonic() + 3600  # still Pending, as right after a rollout starts
    try:
        with pytest.raises(CommandError, match="unable to upgrade connection: container not found"):
            lab.send("http://currency-converter.payments-prod:8080/convert", n=3)
    finally:
        for path in pods:
            api._ready_at[path] = 0.0
    assert len(lab.send("http://currency-converter.payments-prod:8080/convert", n=3)) == 3


def test_context_is_the_apps_and_live_istio_objects_minus_the_incoming_ones(running):
    _, api, lab = running
    dr = manifests.load(paths.MESH / "destination-rule-currency-converter.yaml")
    for r in dr:
        api.put(r.body)  # live in the cluster
    vs = manifests.load(paths.MESH / "virtual-service-currency-converter-90-10.yaml")
    keys = {r.key for r in lab._context(vs)}
    assert {r.key for r in dr} <= keys  # the subsets the incoming VirtualService refers to
    assert not keys & {r.key for r in vs}
    assert {r.key for r in lab._context(dr)}.isdisjoint(r.key for r in dr)


def test_apply_hook_applies_without_validating_again(running, capsys):
    _, _, lab = running
    missing = manifests.load(paths.MESH / "virtual-service-currency-converter-missing-subset.yaml")
    try:
        changes = lab._apply(missing)  # lab.py validated already and showed the warning once
        assert [c.kind for c in changes] == ["VirtualService"]
        assert "warning" not in capsys.readouterr().out
    finally:
        lab._apply(manifests.load(paths.MESH / "virtual-service-currency-converter-90-10.yaml"))


def test_proxy_status_parses_istioctl_proxy_status_one_row_per_sidecar(running):
    fake, _, lab = running
    rows = lab.proxy_status()
    assert rows and all(r.synced for r in rows)
    assert any(r.proxy.startswith("client-") and r.proxy.endswith(".payments-prod") for r in rows)
    assert {r.types["ECDS"] for r in rows} == {"NOT SENT"}  # IGNORED: the proxy uses no ECDS
    assert fake.calls("istioctl")[-1][:2] == ["istioctl", "proxy-status"]


def test_a_stale_or_rejected_type_reads_as_istioctl_prints_it():
    from labkit.kind.istio import parse_proxy_status

    text = (
        "NAME                         CLUSTER        CDS                            LDS            "
        "EDS            RDS            ECDS        ISTIOD            VERSION\n"
        "client-7d9.payments-prod     Kubernetes     STALE (Never Acknowledged)     SYNCED (5m)    "
        "SYNCED (5m)    ERROR          IGNORED     istiod-abc-1      1.30.3\n"
    )
    [row] = parse_proxy_status(text)
    assert row.proxy == "client-7d9.payments-prod" and row.version == "1.30.3"
    assert row.types == {"CDS": "STALE", "LDS": "SYNCED", "EDS": "SYNCED", "RDS": "NACK", "ECDS": "NOT SENT"}
    assert not row.synced
