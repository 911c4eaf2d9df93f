"""The kind backend's Kubernetes API calls, made by the real official client against a stand-in API server on
127.0.0.1 (tests/fakes/apiserver.py; this machine has no cluster): the exact requests (server-side apply's
method, content type, field manager and force; the Prometheus proxy path not %-encoded) and kubectl's
rollout-complete rule on recorded Deployment status objects."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from fakes.apiserver import FakeApiServer, deployment

from labkit.errors import BackendError, LabError
from labkit.kind.k8s import ApiError, check_client_version, has_sidecar, rollout_complete
from labkit.kind.kube import PROMETHEUS_QUERY, Kube

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
    server = FakeApiServer(istio=True, rollout_seconds=0).start()
    server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments-prod"}})
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


def test_unknown_kind_says_istio_is_missing(kube, api):
    api.istio = False  # a cluster before `istioctl install`: no Istio CRDs in discovery
    body = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "x"}}
    with pytest.raises(
        BackendError, match=r"does not know VirtualService .*\nWhat to do: .*Istio is not installed yet"
    ):
        kube.apply(body)


def test_delete_reports_deleted_then_not_found(kube):
    kube.apply(VS)
    assert kube.delete(VS) == "deleted"
    assert kube.delete(VS) == "not found"


def test_prometheus_is_read_through_the_service_proxy_with_a_literal_path(api, kube):
    api.install_istio()
    api.store(deployment("istio-system", "prometheus", {"app": "prometheus"}))
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
        body = {
            "kind": "Status",
            "code": 422,
            "reason": "Invalid",
            "message": 'spec.hosts: Invalid value: ""',
        }
        self._reply(422, body)

    monkeypatch.setattr(api._server.RequestHandlerClass, "do_PATCH", reject)
    with pytest.raises(
        ApiError, match=r"rejected VirtualService/currency-converter in payments-prod: spec.hosts"
    ) as err:
        kube.apply(VS)
    assert (err.value.status, err.value.reason) == (422, "Invalid")
    assert "\nWhat to do: fix the field" in str(err.value)


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
    native = {"name": "istio-proxy", "restartPolicy": "Always"}
    assert has_sidecar({"spec": {"containers": [{"name": "app"}], "initContainers": [native]}})
    # a plain init container exits before the app starts: no proxy runs beside it
    assert not has_sidecar(
        {"spec": {"containers": [{"name": "app"}], "initContainers": [{"name": "istio-proxy"}]}}
    )
    assert not has_sidecar({"spec": {"containers": [{"name": "app"}]}})


# --- the client the code is written for, and the API server's refusals kept as they were answered ----------


def test_a_client_outside_the_pinned_range_is_refused_with_the_pip_line():
    with pytest.raises(LabError, match=r"needs the kubernetes Python client >=37,<38, but 31\.0\.0") as err:
        check_client_version("31.0.0")
    assert "What to do: pip install 'kubernetes>=37,<38'" in str(err.value)
    check_client_version("37.0.2")


def test_an_unexpected_client_failure_becomes_a_lab_error(kube, monkeypatch):
    def old_client(*args, **kwargs):  # what 31-36 raise on 37.x's call_api(method, url, header_params, ...)
        raise TypeError("call_api() got an unexpected keyword argument 'header_params'")

    monkeypatch.setattr("kubernetes.dynamic.DynamicClient.server_side_apply", old_client)
    with pytest.raises(LabError, match=r"kubernetes client .* TypeError: call_api\(\)") as err:
        kube.apply(VS)
    assert "What to do: install the range labkit is tested with" in str(err.value)


def test_an_object_in_a_missing_namespace_is_a_404_naming_the_namespace(kube):
    body = {**VS, "metadata": {"name": "cc", "namespace": "shop"}}
    with pytest.raises(ApiError, match=r'namespaces "shop" not found \(404 NotFound\)') as err:
        kube.apply(body)
    assert err.value.status == 404 and "create namespace shop first" in err.value.fix


def test_the_fake_server_refuses_what_the_schemas_refuse_with_422(kube):
    bad = {**VS, "spec": {**VS["spec"], "http": "not-a-list"}}
    with pytest.raises(ApiError, match=r"spec.http: Invalid value") as err:
        kube.apply(bad)
    assert (err.value.status, err.value.reason) == (422, "Invalid")


def test_server_side_apply_keeps_managed_fields_and_conflicts_without_force(api, kube):
    kube.apply(VS)
    stored = kube.get("networking.istio.io/v1", "VirtualService", "currency-converter", "payments-prod")
    [entry] = stored["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("labkit", "Apply")
    changed = json.dumps({**VS, "spec": {**VS["spec"], "hosts": ["other"]}})
    path = "/apis/networking.istio.io/v1/namespaces/payments-prod/virtualservices/currency-converter"
    request = urllib.request.Request(
        f"{api.url}{path}?fieldManager=kubectl", data=changed.encode(), method="PATCH",
        headers={"Content-Type": "application/apply-patch+yaml"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 409 and b"conflict with" in err.value.read()


def test_discovery_lists_every_kind_the_lab_applies(api, kube):
    from labkit import manifests, paths, validation

    found = manifests.load(paths.APPS) + manifests.load(paths.MESH)
    kinds = {(r.api_version, r.kind) for r in found if (r.group, r.kind) not in validation.TOOL_CONFIGS}
    kinds |= {
        ("v1", "ConfigMap"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    }  # fmt: skip  (the addons' kinds)
    for api_version, kind in sorted(kinds):
        assert kube._resource(api_version, kind).kind == kind
    assert kube.kind_named("vs") == ("networking.istio.io/v1", "VirtualService")
    assert kube.kind_named("gateways") == ("networking.istio.io/v1", "Gateway")


def test_prometheus_answers_503_until_the_addon_is_ready(api, kube):
    api.install_istio()
    with pytest.raises(ApiError, match="no endpoints available for service") as err:
        kube.prometheus("up")
    assert err.value.status == 503 and "wait for deployment/prometheus" in err.value.fix
    api.store(deployment("istio-system", "prometheus", {"app": "prometheus"}))
    assert kube.prometheus("up") == []


def test_deployments_roll_out_over_time_and_wait_rollout_waits(api, kube):
    api.rollout_seconds = 1.0
    api.store(deployment("payments-prod", "web", {"app": "web"}))
    d = kube.get("apps/v1", "Deployment", "web", "payments-prod")
    assert not rollout_complete(d)
    [pod] = kube.pods("payments-prod", {"app": "web"})
    assert pod["status"]["phase"] == "Pending"
    kube.wait_rollout("payments-prod", "web", timeout=30)
    assert kube.pods("payments-prod", {"app": "web"})[0]["status"]["phase"] == "Running"


def test_ephemeral_container_is_added_by_strategic_merge_patch_and_runs(api, kube):
    api.store(deployment("payments-prod", "web", {"app": "web"}))
    [pod] = kube.pods("payments-prod", {"app": "web"})
    name = pod["metadata"]["name"]
    container = {"name": "load-1", "image": "meshlab/currency-converter:0.1.0", "command": ["sleep", "1d"]}
    kube.add_ephemeral_container("payments-prod", name, container)
    [patch] = [r for r in api.writes() if r.path.split("?")[0].endswith("/ephemeralcontainers")]
    assert patch.headers["Content-Type"] == "application/strategic-merge-patch+json"
    assert json.loads(patch.body) == {"spec": {"ephemeralContainers": [container]}}
    kube.wait_ephemeral_running("payments-prod", name, "load-1", timeout=10)
    with pytest.raises(ApiError, match='Duplicate value: "load-1"'):  # names are unique in a pod
        kube.add_ephemeral_container("payments-prod", name, container)
    with pytest.raises(ApiError, match="ports: Forbidden"):
        kube.add_ephemeral_container("payments-prod", name, {**container, "name": "x", "ports": []})


def test_nodes_not_ready_after_create_are_an_error(api, kube):
    from fakes.apiserver import node

    api.put(node("meshlab-control-plane", ready=False))
    with pytest.raises(BackendError, match=r"meshlab-control-plane not Ready after 0.5s"):
        kube.wait_nodes_ready(timeout=0.5)
    api.put(node("meshlab-control-plane", ready=True))
    kube.wait_nodes_ready(timeout=5)


def test_unknown_fields_are_stored_with_a_warning_as_field_validation_warn_does(api, kube):
    typo = {**VS, "spec": {**VS["spec"], "http": [{"route": [{"destination": {"host": "cc"}, "weigth": 1}]}]}}
    assert kube.apply(typo) == "created"  # the server's default fieldValidation=Warn: accepted
    [patch] = [r for r in api.writes() if "virtualservices" in r.path]
    path = patch.path.split("?")[0]
    request = urllib.request.Request(
        f"{api.url}{path}?fieldManager=labkit&force=true", data=json.dumps(typo).encode(), method="PATCH",
        headers={"Content-Type": "application/apply-patch+yaml"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert "unknown field 'weigth'" in response.headers["Warning"]
