"""Readiness probes rewritten to the sidecar as Istio's injector does (issue #18): on the local backend an
injected instance is ready while its probe (httpGet, tcpSocket, grpc) passes the way pilot-agent runs it,
and out of the endpoints when it fails; exec probes are left alone. Liveness and startup: test_kubelet.py."""

from __future__ import annotations

import json

import pytest
import yaml

from labkit import manifests
from labkit.local import podfields, probes, readiness

NAMESPACE = "probes"


def _deployment(
    version: str, probe: dict, annotations: dict | None = None, env: dict | None = None, grpc: bool = False
) -> str:
    meta = {"labels": {"app": "web", "version": version}, "annotations": annotations or {}}
    ports = [{"containerPort": 9080, "name": "http"}] + ([{"containerPort": 9090}] if grpc else [])
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"web-{version}", "namespace": NAMESPACE},
            "spec": {
                "selector": {"matchLabels": meta["labels"]},
                "template": {
                    "metadata": meta,
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": "registry.example.com/web:1",
                                "ports": ports,
                                "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                                "readinessProbe": probe,
                            }
                        ]
                    },
                },
            },
        }
    )


def _apps(*deployments: str) -> str:
    head = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}, labels: {{istio-injection: enabled}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NAMESPACE}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 9080, targetPort: 9080}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {NAMESPACE}}}
spec: {{mtls: {{mode: STRICT}}}}
"""
    if deployments:
        return "---\n".join([head, *deployments])
    return "---\n".join(
        [
            head,
            _deployment("v1", {"httpGet": {"path": "/healthz", "port": "http"}}),
            _deployment("v2", {"httpGet": {"path": "/status/503", "port": 9080}}),
            _deployment(
                "v3",
                {"httpGet": {"path": "/healthz", "port": 9080}},
                {probes.REWRITE_ANNOTATION: "false"},
            ),
            _deployment("v4", {"exec": {"command": ["cat", "/tmp/ready"]}}),
        ]
    )


@pytest.mark.mesh
def test_a_failing_probe_keeps_the_pod_out_of_endpoints_and_a_kubelet_probe_is_refused_under_strict(
    lab, capsys
):
    capsys.readouterr()
    lab.apply(_apps())
    [note] = [line for line in capsys.readouterr().out.splitlines() if "ignores" in line]
    assert "readinessProbe" in note and note.count("Deployment/") == 1 and "Deployment/web-v4" in note
    ready = {w.name: w.ready for w in lab.status().workloads if w.namespace == NAMESPACE}
    # v1 rewritten (pilot-agent probes the app), v2 fails its path, v3 not rewritten: the kubelet's plain
    # text probe meets the STRICT inbound listener of a real Envoy; v4's exec probe is left alone.
    assert ready == {"web-v1": 1, "web-v2": 0, "web-v3": 0, "web-v4": 1}
    result = lab.send(f"http://web.{NAMESPACE}:9080/", n=40, source="client", progress=False)
    assert result.codes() == {200: 40} and set(result.counts()) == {"v1", "v4"}
    lab.apply(_apps().replace("mode: STRICT", "mode: PERMISSIVE"))  # plain text reaches the app now
    # the config write itself probed v3 again (its probe passes the sidecar): the client's Envoy has its
    # endpoint before any status or send
    cluster = f"outbound|9080||web.{NAMESPACE}.svc.cluster.local"
    [web] = [c for c in lab.proxy_config("client", "endpoints") if c["name"] == cluster]
    assert len(web["host_statuses"]) == 3
    ready = {w.name: w.ready for w in lab.status().workloads if w.namespace == NAMESPACE}
    assert ready == {"web-v1": 1, "web-v2": 0, "web-v3": 1, "web-v4": 1}
    result = lab.send(f"http://web.{NAMESPACE}:9080/", n=60, source="client", progress=False)
    assert result.codes() == {200: 60} and set(result.counts()) == {"v1", "v3", "v4"}


@pytest.mark.mesh
def test_a_grpc_probe_asks_the_apps_grpc_health_and_only_serving_pods_get_traffic(lab, capsys):
    """pilot-agent's gRPC probe (server.go handleAppProbeGRPC) through the stand-in's grpc.health.v1: SERVING
    passes; NOT_SERVING fails, and so does a service name the app does not know (NOT_FOUND), as on kubelet."""
    cart = {"grpc": {"port": 9090, "service": "shop.Cart"}}
    lab.apply(
        _apps(
            _deployment("v1", {"grpc": {"port": 9090}}, grpc=True),
            _deployment("v2", {"grpc": {"port": 9090}}, env={"GRPC_HEALTH": "NOT_SERVING"}, grpc=True),
            _deployment("v3", cart, grpc=True),  # the app knows only the server's "" name: NOT_FOUND
            _deployment("v4", cart, env={"GRPC_SERVICES": "shop.Cart"}, grpc=True),
        )
    )
    assert not [line for line in capsys.readouterr().out.splitlines() if "ignores" in line]
    ready = {w.name: w.ready for w in lab.status().workloads if w.namespace == NAMESPACE}
    assert ready == {"web-v1": 1, "web-v2": 0, "web-v3": 0, "web-v4": 1}
    result = lab.send(f"http://web.{NAMESPACE}:9080/", n=40, source="client", progress=False)
    assert result.codes() == {200: 40} and set(result.counts()) == {"v1", "v4"}


def _container(probe: dict | None, **extra) -> dict:
    return {"name": "web", "image": "i", **({"readinessProbe": probe} if probe else {}), **extra}


def test_http_and_tcp_probes_are_run_and_named_ports_resolved():
    ports = [{"name": "http", "containerPort": 9080}]
    http = probes.readiness(_container({"httpGet": {"path": "/ready", "port": "http"}}, ports=ports))
    assert http == probes.Probe("httpGet", 9080, "/ready")
    tcp = probes.readiness(_container({"tcpSocket": {"port": 9080}, "failureThreshold": 1}, ports=ports))
    assert tcp == probes.Probe("tcpSocket", 9080, failures=1)
    # a port the container does not open: nothing listens there, the probe fails as on a cluster
    assert probes.readiness(_container({"tcpSocket": {"port": 7000}}, ports=ports)).port is None
    assert probes.readiness(_container({"httpGet": {"port": "admin"}}, ports=ports)).port is None
    # unnamed ports, as the lesson's Deployments declare 8080 and the TCP echo's 9001: each one counts
    unnamed = [{"containerPort": 8080}, {"containerPort": 9001}]
    assert probes.readiness(_container({"httpGet": {"port": 8080}}, ports=unnamed)).port == 8080


def test_exec_probes_are_left_alone_and_named_as_ignored():
    probe = {"exec": {"command": ["true"]}}
    for field in probes.FIELDS:
        container = {"name": "web", "image": "i", field: probe}
        assert probes.parse(container, field) is None and not probes.honoured(container, field)


def test_a_grpc_probe_asks_its_port_and_service_with_the_spec_timings():
    container = _container(
        {"grpc": {"port": 9090, "service": "shop.Cart"}, "periodSeconds": 2, "timeoutSeconds": 3},
        ports=[{"containerPort": 8080}, {"containerPort": 9090}],
    )
    grpc = probes.readiness(container)
    assert grpc == probes.Probe("grpc", 9090, service="shop.Cart", period=2, timeout=3)
    assert probes.grpc_port(container) == 9090
    assert probes.Probe.from_json(grpc.to_json()) == grpc  # as the pod's kubelet receives it


def test_the_annotation_turns_the_rewrite_off_as_go_parses_it():
    assert probes.rewritten({}) and probes.rewritten({probes.REWRITE_ANNOTATION: "yes"})  # not a Go bool
    assert not probes.rewritten({probes.REWRITE_ANNOTATION: "false"})
    assert not probes.rewritten({probes.REWRITE_ANNOTATION: "0"})


def test_the_note_no_longer_names_an_honoured_readiness_probe():
    [v1, v2, _, v4] = [r for r in manifests.load(_apps()) if r.kind == "Deployment"]
    assert podfields.ignored(v1) == [] and podfields.ignored(v2) == []
    assert podfields.ignored(v4) == ["readinessProbe"]


def test_on_kind_the_injected_pod_shows_the_rewritten_probes(tmp_path, monkeypatch):
    """Contract test on the kind backend's stand-ins (tests/fakes, whose injector rewrites probes as Istio's
    does): ``lab.get("pods")`` shows what the webhook made of each probe."""
    from fakes import harness
    from fakes.apiserver import FakeApiServer

    from labkit.backends.kind import KubeLab
    from labkit.kind import doctor

    harness.install(tmp_path, monkeypatch)
    api = FakeApiServer().start()
    try:
        monkeypatch.setenv("FAKE_API_SERVER", api.url)
        harness.istio_release(tmp_path, monkeypatch)
        monkeypatch.setattr(doctor, "HOST_PORTS", ())
        lab = KubeLab("kind")
        lab.up()
        lab.apply(_apps())
        pods = {p.body["metadata"]["ownerName"]: p.spec["containers"] for p in lab.get("pods", NAMESPACE)}
        [web, proxy] = pods["web-v1"]
        assert web["readinessProbe"] == {"httpGet": {"path": "/app-health/web/readyz", "port": 15020}}
        [env] = [e for e in proxy["env"] if e["name"] == "ISTIO_KUBE_APP_PROBERS"]
        original = {"httpGet": {"path": "/healthz", "port": 9080}}  # the named port resolved
        assert json.loads(env["value"]) == {"/app-health/web/readyz": original}
        assert pods["web-v3"][0]["readinessProbe"] == original  # opted out by the annotation
        assert "exec" in pods["web-v4"][0]["readinessProbe"]  # left alone
    finally:
        api.stop()


def test_the_app_serves_grpc_health_on_its_first_grpc_probes_port_only(tmp_path):
    """Two gRPC probes on two ports: the stand-in answers on the first one's, the other meets no gRPC."""
    from labkit.local.topology import build_topology

    two = yaml.safe_load(_deployment("v1", {"grpc": {"port": 9090}}, grpc=True))
    container = two["spec"]["template"]["spec"]["containers"][0]
    container["ports"].append({"containerPort": 9091})
    container["livenessProbe"] = {"grpc": {"port": 9091}}
    apps = [r for r in manifests.load(_apps(yaml.safe_dump(two))) if r.kind != "PeerAuthentication"]
    [inst] = build_topology(apps, tmp_path, iter(range(20000, 20100)).__next__).instances
    ready, live = inst.workload.readiness, inst.workload.liveness
    assert readiness.probe_target(inst, ready) == inst.grpc_socket != readiness.probe_target(inst, live)


def test_a_config_write_probes_again_only_the_probes_that_pass_the_sidecar(tmp_path):
    """A config change (STRICT to PERMISSIVE) can change only the answer of a probe that meets the
    sidecar's inbound listener (not rewritten); a rewritten one reaches the app past it, so the lab does
    not probe every instance again on each push (100 replicas)."""
    from labkit.local.topology import build_topology

    apps = [r for r in manifests.load(_apps()) if r.kind != "PeerAuthentication"]
    topo = build_topology(apps, tmp_path, iter(range(20000, 20100)).__next__)
    assert [i.workload.name for i in readiness.through_sidecar(topo)] == ["web-v3"]
