"""The kind backend's Kubernetes API calls, made by the real official client against a stand-in API server on
127.0.0.1 (tests/fakes/apiserver.py; this machine has no cluster): the exact requests (server-side apply's
method, content type, field manager and force; the Prometheus proxy path not %-encoded) and kubectl's
rollout-complete rule on recorded Deployment status objects."""

from __future__ import annotations

import json

import pytest
from fakes.apiserver import FakeApiServer, deployment

from labkit.errors import BackendError, LabError
from labkit.kind.kube import PROMETHEUS_QUERY, Kube, has_sidecar, rollout_complete

VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "currency-converter", "namespace": "payments-prod"},
    "spec": {
        "hosts": ["currency-converter"],
        "http": [{"route": [{"destination": {"host": "currency-converter"}}]}],
    },
}


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE", str(tmp_path / "state"))
    server = FakeApiServer().start()
    yield server
    server.stop()


@pytest.fixture
def kube(api, tmp_path):
    return Kube(api.kubeconfig(tmp_path / "kubeconfig"), "kind-meshlab")


def test_istio_objects_are_server_side_applied_with_labkit_as_forced_field_manager(api, kube):
    assert kube.apply(VS) == "created"
    [patch] = api.writes()
    assert patch.method == "PATCH"
    path, _, query = patch.path.partition("?")
    assert path == "/apis/networking.istio.io/v1/namespaces/payments-prod/virtualservices/currency-converter"
    assert sorted(query.split("&")) == ["fieldManager=labkit", "force=true"]
    assert patch.headers["Content-Type"] == "application/apply-patch+yaml"
    assert {k.lower(): v for k, v in patch.headers.items()}["authorization"] == "Bearer fake-token"
    assert json.loads(patch.body)["spec"] == VS["spec"]


def test_apply_reports_created_unchanged_configured(kube):
    assert kube.apply(VS) == "created"
    assert kube.apply(VS) == "unchanged"
    changed = {**VS, "spec": {**VS["spec"], "hosts": ["currency-converter.payments-prod"]}}
    assert kube.apply(changed) == "configured"


def test_cluster_scoped_kinds_are_applied_without_a_namespace(api, kube):
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments-prod"}})
    assert api.writes()[0].path.startswith("/api/v1/namespaces/payments-prod?")


def test_unknown_kind_says_istio_is_missing(kube):
    body = {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": "x"}}
    with pytest.raises(
        BackendError, match=r"does not know Sidecar .*Istio is not installed yet: run lab.up\(\)"
    ):
        kube.apply(body)


def test_delete_reports_deleted_then_not_found(kube):
    kube.apply(VS)
    assert kube.delete(VS) == "deleted"
    assert kube.delete(VS) == "not found"


def test_prometheus_is_read_through_the_service_proxy_with_a_literal_path(api, kube):
    api.prometheus = [{"metric": {"destination_version": "v2"}, "value": [1764250000.0, "12"]}]
    result = kube.prometheus('istio_requests_total{reporter="destination"}')
    assert result == api.prometheus
    [request] = [r for r in api.requests if "proxy" in r.path]
    assert request.path.startswith(PROMETHEUS_QUERY + "?query=")
    assert "services/prometheus:9090/proxy/api/v1/query" in request.path  # no %3A or %2F


def test_unreachable_api_server_names_the_host_and_next_step(tmp_path, monkeypatch, api):
    monkeypatch.setenv("LAB_STATE", str(tmp_path / "state"))
    config = api.kubeconfig(tmp_path / "kubeconfig")
    api.stop()
    with pytest.raises(
        BackendError, match=r"cannot reach the Kubernetes API server at http://127\.0\.0\.1:\d+"
    ):
        Kube(config, "kind-meshlab").get("v1", "Namespace", "payments-prod")
    api.start()  # for the fixture's stop()


def test_unknown_context_says_how_to_list_contexts(api, tmp_path):
    with pytest.raises(BackendError, match="kubectl config get-contexts"):
        Kube(api.kubeconfig(tmp_path / "kubeconfig"), "no-such-context")


def test_rejected_object_is_named_with_the_server_message(api, kube, monkeypatch):
    def reject(self):
        self._record()
        self._reply(422, {"kind": "Status", "code": 422, "message": 'spec.hosts: Invalid value: "": empty'})

    monkeypatch.setattr(api._server.RequestHandlerClass, "do_PATCH", reject)
    with pytest.raises(
        LabError, match=r"rejected VirtualService/currency-converter in payments-prod: spec.hosts"
    ):
        kube.apply(VS)


def test_pods_logs_and_restart(api, kube):
    api.store(deployment("payments-prod", "client", {"app": "client"}, container="client"))
    [pod] = kube.pods("payments-prod", {"app": "client"})
    api.logs[f"payments-prod/{pod['metadata']['name']}/istio-proxy"] = "[2026-11-27T10:00:00.000Z] GET /\n"
    assert kube.logs("payments-prod", pod["metadata"]["name"], "istio-proxy", tail=5).startswith("[2026")
    kube.restart("payments-prod", "client")
    patch = api.writes()[-1]
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert "kubectl.kubernetes.io/restartedAt" in patch.body


# --- kubectl's rollout rule, on Deployment statuses recorded during a rollout -------------------------------

SPEC = {"replicas": 2}


def _deploy(generation: int, **status) -> dict:
    return {
        "metadata": {"name": "cc", "namespace": "ns", "generation": generation},
        "spec": SPEC,
        "status": status,
    }


def test_rollout_complete_only_when_new_replicas_are_all_available_and_old_ones_gone():
    done = _deploy(2, observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2)
    assert rollout_complete(done)
    # Available=True would already hold here: old pods still serve while the new ones start.
    old_pods_left = _deploy(2, observedGeneration=2, replicas=3, updatedReplicas=2, availableReplicas=3)
    assert not rollout_complete(old_pods_left)
    not_observed = _deploy(3, observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2)
    assert not rollout_complete(not_observed)
    new_not_ready = _deploy(2, observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=1)
    assert not rollout_complete(new_not_ready)


def test_progress_deadline_exceeded_is_a_failure_not_a_wait():
    stuck = _deploy(2, observedGeneration=2, replicas=2, updatedReplicas=1, availableReplicas=1)
    stuck["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "cc-7d9" has timed out progressing.'}
    ]  # fmt: skip
    with pytest.raises(BackendError, match=r"deployment/cc \(ns\) exceeded its progress deadline"):
        rollout_complete(stuck)


def test_sidecar_is_seen_as_a_container_or_a_native_sidecar():
    assert has_sidecar({"spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]}})
    assert has_sidecar(
        {"spec": {"containers": [{"name": "app"}], "initContainers": [{"name": "istio-proxy"}]}}
    )
    assert not has_sidecar({"spec": {"containers": [{"name": "app"}]}})
