"""Any workload can send, show its proxy's config and list what is live, on the kind backend (issue #11),
end to end on the stand-ins (tests/fakes): ``lab.send(url, source="shop/web")`` runs the lab's load tool in
an ephemeral container of a pod of that workload (through its sidecar), ``proxy_config`` is istioctl's JSON
for that pod, ``get`` lists live objects like ``kubectl get``."""

from __future__ import annotations

import json
import time

import pytest
from fakes import harness

from labkit import manifests, paths, validation
from labkit.backends.kind import KubeLab
from labkit.errors import CommandError, LabError
from labkit.kind import cluster

SHOP = """apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec: {containers: [{name: web, image: "example.com/shop/web:1.0"}]}
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The lab brought up once, plus a namespace ``shop`` with a Deployment ``web`` of one's own image."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        fake, api = harness.kind_lab(tmp_path_factory.mktemp("shop"), monkeypatch)
        lab = KubeLab("kind")
        lab.up()
        lab.apply(SHOP)
        yield fake, api, lab
        api.stop()


def _ephemeral_patches(api):
    return [r for r in api.writes() if r.path.split("?")[0].endswith("/ephemeralcontainers")]


def test_send_from_any_workload_runs_the_load_tool_in_an_ephemeral_container(shop):
    fake, api, lab = shop
    before = len(_ephemeral_patches(api))
    result = lab.send("http://orders.shop:9000/", n=20, source="shop/web", headers={"x-beta": "yes"})
    assert len(result) == 20 and result.split() == pytest.approx({"v1": 0.9, "v2": 0.1})
    [patch] = _ephemeral_patches(api)[before:]
    pod = patch.path.split("?")[0].split("/")[6]
    assert patch.path.startswith(f"/api/v1/namespaces/shop/pods/{pod}/") and pod.startswith("web-")
    [container] = json.loads(patch.body)["spec"]["ephemeralContainers"]
    assert container["image"] == cluster.IMAGE  # the lab's load tool, beside the app in the pod's network
    assert container["securityContext"]["runAsUser"] not in (0, 1337)  # 1337 would bypass the sidecar
    call = [c for c in fake.calls("kubectl") if "exec" in c][-1]
    assert call[call.index("exec") :] == [
        "exec", "-n", "shop", f"pod/{pod}", "-c", container["name"], "--", "python", "load.py",
        "--url", "http://orders.shop:9000/", "--n", "20", "--concurrency", "8", "--header", "x-beta: yes",
    ]  # fmt: skip
    lab.send("http://orders.shop:9000/", n=3, source="web")  # a bare name that is unique
    assert len(_ephemeral_patches(api)) == before + 1  # the pod's load container is reused


def test_the_lesson_sources_stay_aliases_that_exec_into_their_own_container(shop):
    fake, api, lab = shop
    before = len(_ephemeral_patches(api))
    lab.send("http://currency-converter.payments-prod:8080/convert", n=3, source="client")
    assert len(_ephemeral_patches(api)) == before
    assert "deploy/client" in [c for c in fake.calls("kubectl") if "exec" in c][-1]


def test_an_unknown_or_ambiguous_source_is_refused_by_name(shop):
    _, api, lab = shop
    with pytest.raises(LabError, match="no Deployment named 'nope' in the cluster"):
        lab.send("http://x/", n=1, source="nope")
    with pytest.raises(LabError, match=r"no Deployment shop/nope for source 'shop/nope'\nWhat to do:"):
        lab.send("http://x/", n=1, source="shop/nope")


ORDERS = """apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec: {selector: {app: orders}, ports: [{name: http, port: 9000, targetPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: orders, namespace: shop}
spec:
  host: orders
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: shop}
spec:
  hosts: [orders]
  http:
  - route:
    - {destination: {host: orders, subset: v1}, weight: 80}
    - {destination: {host: orders, subset: v2}, weight: 20}
"""


def test_proxy_config_of_a_workload_is_istioctls_json(shop):
    fake, _, lab = shop
    lab.apply(ORDERS)
    [config] = [c for c in lab.proxy_config("shop/web", "routes") if c["name"] == "9000"]
    [orders] = [h for h in config["virtualHosts"] if h["name"] == "orders.shop.svc.cluster.local:9000"]
    weights = orders["routes"][-1]["route"]["weightedClusters"]["clusters"]
    assert {c["name"].split("|")[2]: c["weight"] for c in weights} == {"v1": 80, "v2": 20}
    call = fake.calls("istioctl")[-1]
    assert (
        call[1:3] == ["proxy-config", "routes"] and call[3].endswith(".shop") and call[4:6] == ["-o", "json"]
    )
    with pytest.raises(LabError, match="What to do: choose one of: routes, clusters"):
        lab.proxy_config("shop/web", "bootstrap")


def test_route_weights_of_a_teams_service_on_its_own_port_from_its_own_caller(shop):
    fake, _, lab = shop
    lab.apply(ORDERS, quiet=True)
    lab.apply(paths.ROOT / "tests" / "shop" / "routing.yaml", quiet=True)  # x-beta: yes -> v3 first
    assert lab.route_weights("orders", "shop", source="web") == {"v1": 80, "v2": 20}  # the catch-all route
    call = fake.calls("istioctl")[-1]
    assert call[1:3] == ["proxy-config", "routes"] and call[3].startswith("web-")
    assert call[3].endswith(".shop")  # web's pod
    assert call[call.index("--name") + 1] == "9000"  # the route configuration of the Service's port
    with pytest.raises(LabError, match="no Service 'nope' with a port in namespace 'shop'"):
        lab.route_weights("nope", "shop", source="web")


def test_proxy_config_of_a_workload_without_sidecar_says_so(shop):
    _, _, lab = shop
    with pytest.raises(CommandError, match="container istio-proxy is not valid"):
        lab.proxy_config("legacy", "clusters")


def test_get_lists_live_objects_like_kubectl_get(shop):
    _, _, lab = shop
    [web] = lab.get("deployments", "shop")  # Resources, as on the local backend
    assert (web.kind, web.namespace, web.name) == ("Deployment", "shop", "web")
    assert "managedFields" not in web.metadata
    assert {d.namespace for d in lab.get("deploy")} >= {"shop", "payments-prod"}
    with pytest.raises(LabError, match="the cluster knows no kind 'virtualservise'"):
        lab.get("virtualservise")


def test_live_chart_stream_from_any_workload_reuses_one_load_container(shop):
    _, api, lab = shop
    lab.send("http://orders.shop:9000/", n=1, source="shop/web")  # the pod's load container exists now
    before = len(_ephemeral_patches(api))
    batches: list[list] = []
    stream = lab.stream("http://orders.shop:9000/", source="shop/web", qps=5, on_batch=batches.append)
    stream.start()
    deadline = time.monotonic() + 60
    while len(batches) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    stream.stop(timeout=30)
    assert stream.error is None and len(batches) >= 3
    assert len(_ephemeral_patches(api)) == before  # chunks exec into it; the pod spec does not grow


def test_a_virtual_service_for_a_live_service_of_ones_own_is_not_an_unknown_host(shop, capsys):
    _, _, lab = shop
    lab.apply(ORDERS)  # Service, DestinationRule and VirtualService for shop/orders are live now
    capsys.readouterr()
    vs = [r for r in manifests.load(ORDERS) if r.kind == "VirtualService"]
    assert validation.validate(vs, context=lab._context(vs)) == []  # host and subsets found live
    lab.apply([r.body for r in vs])
    assert "warning" not in capsys.readouterr().out
