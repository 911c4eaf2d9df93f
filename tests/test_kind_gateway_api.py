"""The Gateway API on the kind backend, on the stand-ins (tests/fakes: kind, docker, istioctl and an API
server that serves a CRD's kinds only once it is applied and Established, as the real one does): up()
installs the pinned CRDs from the verified file ``labkit tools install`` keeps, leaves CRDs a cluster already
has alone, says what to do without the file; the lab's Gateway API manifests then apply, read back through
``lab.get``; ``labkit doctor`` reports the CRDs."""

from __future__ import annotations

import time

import pytest
from fakes import apiobjects, harness
from fakes import gatewayapi as fake_release

from labkit import manifests, paths
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
