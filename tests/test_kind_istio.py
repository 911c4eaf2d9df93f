"""istioctl orchestration against a fake ``istioctl`` (tests/fakes/bin; this machine cannot run Istio) that
asks the stand-in API server what the cluster holds: the commands labkit runs, and how it reads istioctl's
outputs as istioctl writes them (``analyze -o json`` exits 0 whatever it finds; origins are
``<Kind> <namespace>/<name>``), version skew, proxy route weights and the mTLS mode of ``x describe pod``."""

from __future__ import annotations

import json

import pytest
from fakes import harness
from fakes.apiserver import FakeApiServer, deployment

from labkit import manifests, paths
from labkit.errors import CommandError
from labkit.kind import istio
from labkit.kind.commands import Target

TARGET = Target(None, "kind-meshlab")

ANALYZE = [
    {
        "code": "IST0101",
        "documentationUrl": "https://istio.io/v1.31/docs/reference/config/analysis/ist0101/?ref=istioctl",
        "level": "Error",
        "message": 'Referenced host+subset in destinationrule not found: "currency-converter+v3"',
        "origin": "VirtualService payments-prod/currency-converter",  # FriendlyName: <Kind> <ns>/<name>
        "reference": "",
    },
    {
        "code": "IST0102",
        "level": "Info",
        "message": "The namespace is not enabled for Istio injection.",
        "origin": "Namespace default",
    },
]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return harness.install(tmp_path, monkeypatch)


@pytest.fixture
def api(fake, monkeypatch):
    """A cluster with Istio installed and a client pod (sidecar injected) for istioctl to look at."""
    server = FakeApiServer(rollout_seconds=0).start()
    monkeypatch.setenv("FAKE_API_SERVER", server.url)
    server.install_istio()
    server.put({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "payments-prod", "labels": {"istio-injection": "enabled"}}})  # fmt: skip
    server.store(deployment("payments-prod", "client", {"app": "client"}))
    yield server
    server.stop()


def _pod(api, app: str) -> str:
    [pod] = [
        o for o in api.objects.values() if o["kind"] == "Pod" and o["metadata"]["labels"] == {"app": app}
    ]
    return pod["metadata"]["name"]


def test_install_uses_the_lab_operator_file_and_the_target_context(fake):
    istio.install(TARGET)
    [call] = fake.calls("istioctl")
    assert call[1:5] == ["install", "-y", "-f", call[4]] and call[4].endswith(
        "cluster-config/istio/install.yaml"
    )
    assert call[-2:] == ["--context", "kind-meshlab"]


def test_analyze_json_findings_exit_0_become_findings_with_the_docs_link(fake):
    fake.respond("istioctl", ["analyze"], stdout=json.dumps(ANALYZE), rc=0)  # -o json: exit 0 with errors
    [finding] = istio.analyze(TARGET, "payments-prod")
    assert (finding.severity, finding.stage, finding.kind, finding.name) == (
        "error",
        "analysis",
        "VirtualService",
        "currency-converter",
    )
    assert finding.message.startswith("IST0101 Referenced host+subset")
    assert "ist0101" in finding.fix
    assert fake.calls("istioctl")[0][1:6] == ["analyze", "-o", "json", "-n", "payments-prod"]


def test_analyze_clean_run_has_no_findings(fake):
    # the real tool: "[]" on stdout with -o json, the sentence on stderr (the fake's default)
    assert istio.analyze(TARGET) == []
    fake.respond("istioctl", ["analyze"], stderr="\u2714 No validation issues found when analyzing x.\n")
    assert istio.analyze(TARGET) == []


def test_analyze_exit_79_is_not_a_json_answer_but_a_failure(fake):
    # 79 comes only with the log format (analyze.go); with -o json it means something else went wrong
    fake.respond("istioctl", ["analyze"], stdout="Error [IST0101] (VirtualService ns/x) ...", rc=79)
    with pytest.raises(CommandError):
        istio.analyze(TARGET)


def test_origin_is_read_as_istioctls_friendly_name():
    assert istio.origin("VirtualService shop/orders") == ("VirtualService", "orders")
    assert istio.origin("Namespace default") == ("Namespace", "default")  # cluster-scoped: no namespace


def test_analyze_other_failures_are_errors(fake):
    fake.respond("istioctl", ["analyze"], stderr="Error: failed to fetch: connection refused", rc=1)
    with pytest.raises(CommandError, match="connection refused"):
        istio.analyze(TARGET)


def test_version_without_istio_has_no_control_plane(fake):
    assert istio.versions(TARGET) == ("1.30.3", [])  # istioctl omits meshVersion: no istiod found


def test_version_skew_between_istioctl_and_control_plane_is_a_problem(fake, api):
    client, control = istio.versions(TARGET)
    assert (client, control) == ("1.30.3", ["1.30.3"])
    assert istio.skew_problem(client, control) is None
    assert "control plane runs 1.30.3" in istio.skew_problem("1.31.1", ["1.30.3"])
    assert istio.skew_problem("1.31.1", ["1.31.0"]) is None  # patch releases do not matter


def test_route_weights_are_read_from_the_proxy_json(fake, api):
    for path in ("apps/currency-converter.yaml", "mesh/virtual-service-currency-converter-90-10.yaml"):
        for r in manifests.load(paths.CLUSTER_CONFIG / path):
            if r.kind in ("Service", "VirtualService"):
                api.put(r.body)  # what istiod turns into the proxy's routes
    pod = _pod(api, "client")
    weights = istio.route_weights(
        TARGET, pod, "payments-prod", "currency-converter.payments-prod.svc.cluster.local", 8080
    )
    assert weights == {"v1": 90, "v2": 10}
    call = fake.calls("istioctl")[0]
    assert call[1:4] == ["proxy-config", "routes", f"{pod}.payments-prod"] and "json" in call


def test_proxy_config_refuses_a_pod_without_a_sidecar(fake, api):
    api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "legacy"}})
    api.store(deployment("legacy", "legacy-client", {"app": "legacy-client"}))
    with pytest.raises(CommandError, match="container istio-proxy is not valid for pod"):
        istio.proxy_config(TARGET, _pod(api, "legacy-client"), "legacy", "clusters")
    with pytest.raises(CommandError, match='pods "nope" not found'):
        istio.proxy_config(TARGET, "nope", "payments-prod", "routes")
    for r in manifests.load(paths.APPS / "currency-converter.yaml"):
        if r.kind == "Service":
            api.put(r.body)
    [config] = istio.proxy_config(TARGET, _pod(api, "client"), "payments-prod", "routes")
    assert config["name"] == "8080"  # one RouteConfiguration per port, named after it


def test_proxy_config_sees_a_native_sidecar(fake, api):
    api.native_sidecars = True
    api.store(deployment("payments-prod", "web", {"app": "web"}))
    [pod] = [
        o for o in api.objects.values() if o["kind"] == "Pod" and o["metadata"]["labels"] == {"app": "web"}
    ]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app"]  # istio-proxy is an init container
    assert istio.proxy_config(TARGET, pod["metadata"]["name"], "payments-prod", "listeners")


def test_route_without_subsets_reports_the_whole_service(fake):
    route = {"route": {"cluster": "outbound|8080||cc.ns.svc.cluster.local"}}
    routes = [{"virtualHosts": [{"domains": ["cc.ns.svc.cluster.local:8080"], "routes": [route]}]}]
    fake.respond("istioctl", ["proxy-config", "routes"], stdout=json.dumps(routes))
    assert istio.route_weights(TARGET, "p", "ns", "cc.ns.svc.cluster.local", 8080) == {"(no subset)": 100}


def test_mtls_mode_from_describe_is_the_mode_actually_applied(fake, api):
    assert istio.mtls_mode(TARGET, _pod(api, "client"), "payments-prod") == "PERMISSIVE"  # Istio's default
    for r in manifests.load(paths.MESH / "peer-authentication-strict.yaml"):
        api.put(r.body)
    assert istio.mtls_mode(TARGET, _pod(api, "client"), "payments-prod") == "STRICT"


def test_install_refuses_an_istio_operator_with_an_unknown_field(fake, tmp_path, monkeypatch):
    bad = tmp_path / "install.yaml"
    bad.write_text("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profil: default\n")
    monkeypatch.setattr(paths, "ISTIO_INSTALL", bad)
    with pytest.raises(CommandError, match='unknown field "profil"'):
        istio.install(TARGET)


def test_addons_are_found_in_istio_home(fake, tmp_path, monkeypatch):
    addons = tmp_path / "istio-1.30.3" / "samples" / "addons"
    addons.mkdir(parents=True)
    assert istio.addons_dir() is None
    for name in istio.ADDONS:
        (addons / name).write_text("")
    monkeypatch.setenv("ISTIO_HOME", str(tmp_path / "istio-1.30.3"))
    assert istio.addons_dir() == addons
