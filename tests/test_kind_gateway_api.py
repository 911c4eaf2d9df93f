"""The Gateway API on the kind backend, on the stand-ins (tests/fakes: kind, docker, istioctl and an API
server that serves a CRD's kinds only once it is applied and Established, as the real one does): up()
installs the pinned CRDs from the verified file ``labkit tools install`` keeps, leaves CRDs a cluster already
has alone, says what to do without the file; the lab's Gateway API manifests then apply, read back through
``lab.get``; ``labkit doctor`` reports the CRDs."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
from fakes import apiobjects, harness
from fakes import gatewayapi as fake_release

from labkit import manifests, paths
from labkit.backends import kind as kind_backend
from labkit.backends.kind import KubeLab
from labkit.errors import BackendError
from labkit.kind import doctor, gatewayapi, tools

GATEWAY_API = paths.CLUSTER_CONFIG / "gateway-api"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"


@pytest.fixture
def env(tmp_path, monkeypatch):
    fake, api = harness.kind_lab(tmp_path, monkeypatch)
    yield fake, api
    api.stop()


def _downloaded(text: str | None = None) -> None:
    """What `labkit tools install` leaves: the verified standard-install.yaml in the state folder."""
    path = tools.gateway_api_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text or fake_release.standard_install())


def _crd_writes(api) -> list[str]:
    return [r.path.split("?")[0].rsplit("/", 1)[1] for r in api.writes() if r.path.startswith(CRDS)]


def test_up_installs_the_pinned_crds_then_the_gateway_api_manifests_apply(env, capsys):
    fake, api = env
    _downloaded()
    lab = KubeLab("kind")
    lab.up()
    assert "installing the Gateway API v1.5.1 CRDs (standard channel)" in capsys.readouterr().out
    assert set(_crd_writes(api)) == {f"{k[1]}.gateway.networking.k8s.io" for k in fake_release.KINDS}
    steps = [" ".join(c[:2]) for c in fake.calls() if c[0] in ("istioctl", "kind")]
    assert "istioctl install" in steps  # the CRDs went in first, so istiod starts watching them
    assert gatewayapi.installed(lab.kube) == ("v1.5.1", "standard")

    changes = lab.apply(GATEWAY_API / "service-currency-converter-versions.yaml")
    changes += lab.apply(GATEWAY_API / "http-route-currency-converter-90-10.yaml")
    assert [(c.kind, c.name, c.action) for c in changes][-1] == ("HTTPRoute", "currency-converter", "created")
    (route,) = lab.get("httproutes", "payments-prod")
    assert [b["weight"] for b in route.spec["rules"][0]["backendRefs"]] == [90, 10]
    assert lab.kube.kind_named("gtw") == ("gateway.networking.k8s.io/v1", "Gateway")
    assert lab.kube.kind_named("gateways")[0] == "networking.istio.io/v1"  # Istio's first, as kubectl does
    assert lab.kube.kind_named("gateways.gateway.networking.k8s.io")[0] == "gateway.networking.k8s.io/v1"
    assert "HTTPRoute" in {r.kind for r in lab.applied()}  # lab.reset sees (and removes) it


def test_crds_a_cluster_has_already_are_left_alone(env, capsys):
    _, api = env
    _downloaded()
    for doc in manifests.load(fake_release.standard_install(bundle="v1.4.0")):
        api.store(doc.body)  # installed earlier by someone else, another release
    KubeLab("kind").up()
    assert _crd_writes(api) == []  # `kubectl get crd gateways... || kubectl apply -f ...`
    out = capsys.readouterr().out
    assert "the cluster has Gateway API v1.4.0 (standard channel); the lab is tested with v1.5.1" in out


def test_without_the_verified_file_up_goes_on_and_an_http_route_says_what_to_do(env, capsys):
    _, api = env
    lab = KubeLab("kind")
    lab.up()  # the Istio APIs do not need the Gateway API
    assert "What to do: run `labkit tools install`" in capsys.readouterr().out
    assert _crd_writes(api) == []
    refused = r"does not know HTTPRoute.*\n.*Gateway API CRDs are not installed"
    with pytest.raises(BackendError, match=refused):
        lab.apply(GATEWAY_API / "http-route-currency-converter-90-10.yaml")


def test_a_crd_is_served_only_once_established_and_its_objects_go_with_it(env):
    _, api = env
    api.rollout_seconds = 0.3  # the API server establishes a CRD a moment after it is stored
    api.store(fake_release.crd("HTTPRoute", "httproutes", True, ["v1"], [], bundle="v1.5.1"))
    assert "HTTPRoute" not in {k for _, k, *_ in api.resources()}  # not Established yet
    time.sleep(api.rollout_seconds)
    assert "HTTPRoute" in {k for _, k, *_ in api.resources()}
    _downloaded()
    lab = KubeLab("kind")
    lab.up()
    lab.apply(GATEWAY_API / "http-route-currency-converter-90-10.yaml")
    assert lab.get("httproutes", "payments-prod")
    lab.kube.delete(api.objects[CRDS + "httproutes.gateway.networking.k8s.io"])
    assert not [p for p in api.objects if "/httproutes/" in p]
    served = apiobjects.discovery(api, "/apis/gateway.networking.k8s.io/v1")["resources"]
    assert "httproutes" not in {r["name"] for r in served} and "gateways" in {r["name"] for r in served}
    assert lab.get("httproutes", "payments-prod") == []


def test_doctor_reports_the_crds_file_then_the_clusters_crds(env):
    fake, _ = env
    assert doctor.check_gateway_api(cluster_exists=False).level == "warning"
    assert "labkit tools install" in str(doctor.check_gateway_api(cluster_exists=False))
    _downloaded()
    check = doctor.check_gateway_api(cluster_exists=False)
    assert check.level == "ok" and "v1.5.1 CRDs verified in" in check.message
    KubeLab("kind").up()
    check = doctor.check_gateway_api(cluster_exists=True)
    assert (check.level, check.message) == ("ok", "Gateway API v1.5.1 CRDs (standard channel) installed")


def test_set_weights_in_gateway_mode_writes_the_http_route_and_waits_for_the_proxy(env, capsys):
    _, api = env
    _downloaded()
    lab = KubeLab("kind")
    lab.up()
    lab.apply(paths.MESH / "destination-rule-currency-converter.yaml")
    lab.set_weights("currency-converter", v1=90, v2=10)
    lab.apply(GATEWAY_API / "service-currency-converter-versions.yaml")
    capsys.readouterr()
    changes = lab.set_weights("currency-converter", api="gateway", v1=70, v2=30)
    assert [(c.kind, c.action) for c in changes] == [("VirtualService", "deleted"), ("HTTPRoute", "created")]
    (route,) = lab.get("httproutes", "payments-prod")
    assert [(b["name"], b["weight"]) for b in route.spec["rules"][0]["backendRefs"]] == [
        ("currency-converter-v1", 70),
        ("currency-converter-v2", 30),
    ]
    assert lab.route_weights() == {"v1": 70, "v2": 30}  # the client's proxy: the version Services' clusters
    assert "still routes" not in capsys.readouterr().out  # set_weights saw the proxy hold the split
    changes = lab.set_weights("currency-converter", v1=90, v2=10)  # back to the Istio API
    assert [(c.kind, c.action) for c in changes] == [("HTTPRoute", "deleted"), ("VirtualService", "created")]
    assert lab.get("httproutes", "payments-prod") == []


INGRESS = "istio-ingressgateway.istio-system.svc.cluster.local"
GATEWAY_FILES = [
    GATEWAY_API / "service-currency-converter-versions.yaml",
    GATEWAY_API / "gateway-currency-ingress.yaml",
    GATEWAY_API / "http-route-currency-converter-ingress.yaml",
]


class _KindPortMapping(http.server.BaseHTTPRequestHandler):
    """Stands in for what kind publishes on 127.0.0.1:8080 (NodePort 30080 of istio-ingressgateway, which
    the bound Gateway programs): answers as the currency converter does, and keeps what arrived."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append((self.path, self.headers.get("Host")))
        body = json.dumps({"version": "v1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_the_gateway_api_ingress_is_the_host_mapped_istio_ingressgateway(env, monkeypatch):
    _, api = env
    _downloaded()
    lab = KubeLab("kind")
    lab.up()
    changes = [str(c) for f in GATEWAY_FILES for c in lab.apply(f)]
    assert changes[-2:] == [
        "gateway/currency-ingress (istio-system) created",
        "httproute/currency-converter-ingress (payments-prod) created",
    ]
    (gw,) = lab.get("gateways.gateway.networking.k8s.io", "istio-system")
    assert gw.spec["addresses"] == [{"type": "Hostname", "value": INGRESS}]  # no currency-ingress-istio
    status = lab.status()
    assert status.ingress_url == "http://127.0.0.1:8080" and status.problems == []
    assert doctor.check_gateway_bindings() == []
    # The chain the URL rests on: the listener's port is a port of the istio-ingressgateway Service, whose
    # NodePort kind publishes on the host port of the reported URL.
    (listener,) = gw.spec["listeners"]
    (operator,) = manifests.load(paths.CLUSTER_CONFIG / "istio" / "install.yaml")
    (gateway,) = operator.spec["components"]["ingressGateways"]
    (port,) = [p for p in gateway["k8s"]["service"]["ports"] if p["port"] == listener["port"]]
    (node,) = manifests.load(paths.CLUSTER_CONFIG / "kind" / "cluster.yaml")[0].body["nodes"]
    (mapping,) = [m for m in node["extraPortMappings"] if m["containerPort"] == port["nodePort"]]
    assert status.ingress_url == f"http://{mapping['listenAddress']}:{mapping['hostPort']}"
    # lab.send from "ingress" goes to that URL with the route's host as Host header; the host port itself is
    # a stand-in on a free port here (this shared machine's 8080 belongs to whoever has it).
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KindPortMapping)
    monkeypatch.setattr(kind_backend, "INGRESS_URL", f"http://127.0.0.1:{server.server_address[1]}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = "http://currency.example.com/convert?from=NOK&to=EUR&amount=1"
        result = lab.send(url, n=3, source="ingress", progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert result.codes() == {200: 3}
    assert _KindPortMapping.seen[-3:] == [("/convert?from=NOK&to=EUR&amount=1", "currency.example.com")] * 3


def test_a_gateway_the_host_cannot_reach_is_named_by_status_and_doctor(env):
    _, api = env
    _downloaded()
    lab = KubeLab("kind")
    lab.up()
    unbound = (GATEWAY_API / "gateway-currency-ingress.yaml").read_text()
    unbound = unbound.replace(f"  addresses:\n    - type: Hostname\n      value: {INGRESS}\n", "")
    lab.apply(unbound)  # valid Istio: istiod deploys currency-ingress-istio for it
    (problem,) = lab.status().problems
    assert problem.startswith(
        "Gateway istio-system/currency-ingress (gateway.networking.k8s.io) has no Hostname address, so "
        "istiod deployed currency-ingress-istio for it, which kind does not publish on the host. What to do: "
        "bind it"
    )
    assert f"spec.addresses [{{type: Hostname, value: {INGRESS}}}]" in problem
    (check,) = doctor.check_gateway_bindings()
    assert check.level == "warning" and check.fix.startswith("bind it to the lab's ingress gateway")
    lab.delete(unbound)
    # Bound, but beside the routes: istiod's status says it is not programmed, and the lab repeats it.
    beside = (GATEWAY_API / "gateway-currency-ingress.yaml").read_text()
    (gw,) = manifests.load(beside.replace("namespace: istio-system", "namespace: payments-prod"))
    message = (
        f'Failed to assign to any requested addresses: hostname "{INGRESS}" not found in namespace '
        '"payments-prod", but it was found in namespace(s) "istio-system"'
    )
    programmed = {"type": "Programmed", "status": "False", "reason": "AddressNotUsable", "message": message}
    api.store({**gw.body, "status": {"conditions": [programmed]}})  # what istiod writes
    (problem,) = lab.status().problems
    assert f"is not programmed (AddressNotUsable: {message}). What to do: bind it" in problem


def test_doctor_says_the_cluster_has_another_release_and_up_leaves_it(env, capsys):
    _, api = env
    _downloaded()
    for doc in manifests.load(fake_release.standard_install(bundle="v1.6.0")):
        api.store(doc.body)  # newer than the lab's: replacing them would downgrade
    KubeLab("kind").up()
    assert _crd_writes(api) == []
    assert "What to do: nothing while the Gateway API lessons work" in capsys.readouterr().out
    check = doctor.check_gateway_api(cluster_exists=True)
    assert check.level == "warning"
    assert check.message == (
        "the cluster has Gateway API v1.6.0 (standard channel); the lab is tested with v1.5.1 (what Istio "
        "1.30 supports)"
    )
    assert "never replaces or downgrades CRDs a cluster already has" in check.fix


def test_reset_removes_the_gateway_api_ingress_from_istios_root_namespace_too(env):
    _downloaded()
    lab = KubeLab("kind")
    lab.up()
    for f in GATEWAY_FILES:
        lab.apply(f)
    lab.reset("canary-90-10")  # what the next notebook's first cell does
    assert lab.get("gateways.gateway.networking.k8s.io") == []  # the Gateway lives in istio-system
    assert lab.get("httproutes") == []
    assert lab.get("deployments", "istio-system")  # Istio's own objects there are not the lab's to reset
