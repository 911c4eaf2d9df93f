"""HTTPRoute → Envoy config, field by field, as istiod converts it (pilot/pkg/config/kube/gateway/
conversion.go ``convertHTTPRoute`` and the functions it calls) and then translates the internal
VirtualService with gateway semantics (route/route.go); real Envoy validates the result."""

from __future__ import annotations

import itertools

import pytest
from support.envoy import MESH, client, envoy_validate, route

from labkit import manifests, paths
from labkit.local.httproute import with_status
from labkit.local.topology import build_topology
from labkit.local.translate import ensure_ports, route_status, translate

GATEWAY_API = paths.CLUSTER_CONFIG / "gateway-api"
CC = "currency-converter.payments-prod.svc.cluster.local"
V1 = "outbound|8080||currency-converter-v1.payments-prod.svc.cluster.local"
V2 = "outbound|8080||currency-converter-v2.payments-prod.svc.cluster.local"

EVERYTHING = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: currency-converter, namespace: payments-prod}
spec:
  parentRefs: [{group: "", kind: Service, name: currency-converter, port: 8080}]
  rules:
    - matches:
        - path: {type: Exact, value: /rates}
          method: POST
        - path: {type: RegularExpression, value: "/v[0-9]+/convert"}
          queryParams: [{name: debug, value: "1"}]
      backendRefs: [{name: currency-converter-v2, port: 8080}]
      timeouts: {request: 500ms}
    - matches: [{path: {type: PathPrefix, value: /old/}}]
      filters:
        - type: RequestRedirect
          requestRedirect:
            scheme: https
            statusCode: 301
            path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
    - matches:
        - path: {type: PathPrefix, value: /api/}
          headers: [{name: X-User, type: RegularExpression, value: "a.*"}]
      filters:
        - type: URLRewrite
          urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Env, value: lab}, {name: x-env, value: ignored}]
            remove: [x-debug]
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: x-served-by, value: gateway-api}]}
        - type: RequestMirror
          requestMirror: {backendRef: {name: currency-converter-v2, port: 8080}, percent: 25}
        - type: RequestMirror
          requestMirror: {backendRef: {name: currency-converter-v1, port: 8080}}
      backendRefs:
        - {name: currency-converter-v1, port: 8080, weight: 3}
        - {name: currency-converter-v2, port: 8080, weight: 1}
    - backendRefs: [{name: currency-converter-v1, port: 8080, weight: 0}]
"""


def translated(tmp_path, *sources):
    """(topology, configs, resources) for the lab's apps plus the per-version Services and ``sources``."""
    ports = itertools.count(21000)
    apps = manifests.load(paths.APPS) + manifests.load(
        GATEWAY_API / "service-currency-converter-versions.yaml"
    )
    topo = build_topology(apps, tmp_path, lambda: next(ports))
    resources = [r for s in sources for r in manifests.load(s)]
    ensure_ports(resources, topo, lambda: next(ports))
    return topo, translate(resources, topo, MESH), resources


def routes_of(cfgs, host: str = CC) -> list[dict]:
    vhost = next(v for v in route(client(cfgs), "8080")["virtual_hosts"] if v["name"] == f"{host}:8080")
    return vhost["routes"]


def test_90_10_is_a_weighted_split_of_the_version_services(tmp_path):
    _, cfgs, _ = translated(tmp_path, GATEWAY_API / "http-route-currency-converter-90-10.yaml")
    (only,) = routes_of(cfgs)
    assert only["match"] == {"prefix": "/", "case_sensitive": True}  # no matches: the catch-all
    assert only["route"]["weighted_clusters"]["clusters"] == [
        {"name": V1, "weight": 90},
        {"name": V2, "weight": 10},
    ]
    assert only["route"]["cluster_not_found_response_code"] == "INTERNAL_SERVER_ERROR"


def test_a_zero_weight_backend_is_dropped_and_a_lone_one_is_a_plain_cluster(tmp_path):
    _, cfgs, _ = translated(tmp_path, GATEWAY_API / "http-route-currency-converter-0-100.yaml")
    (only,) = routes_of(cfgs)
    assert only["route"]["cluster"] == V2
    assert "weighted_clusters" not in only["route"]


def test_every_implemented_match_and_filter(tmp_path):
    topo, cfgs, _ = translated(tmp_path, EVERYTHING)
    by_path = {
        r["match"].get("path") or r["match"].get("path_separated_prefix") or "": r for r in routes_of(cfgs)
    }
    exact = by_path["/rates"]
    assert exact["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "POST"}}]
    assert exact["route"]["timeout"] == "0.5s"
    redirect = by_path["/old"]  # PathPrefix: the trailing / ignored, whole segments only
    assert redirect["redirect"] == {  # no port: the scheme's default (FROM_PROTOCOL_DEFAULT)
        "response_code": "MOVED_PERMANENTLY",
        "scheme_redirect": "https",
        "prefix_rewrite": "/new",
    }
    api = by_path["/api"]
    assert api["match"]["headers"] == [{"name": "X-User", "string_match": {"safe_regex": {"regex": "a.*"}}}]
    assert "prefix_rewrite" not in api["route"]  # removing the prefix must not leave "//"
    assert api["route"]["regex_rewrite"] == {"pattern": {"regex": "^/api(/?)(.*)"}, "substitution": "/\\2"}
    assert api["request_headers_to_add"] == [
        {"header": {"key": "x-env", "value": "lab"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    ]
    assert api["request_headers_to_remove"] == ["x-debug"]
    assert api["response_headers_to_add"][0]["header"] == {"key": "x-served-by", "value": "gateway-api"}
    assert api["route"]["request_mirror_policies"][0]["cluster"] == V2
    assert (
        api["route"]["request_mirror_policies"][0]["runtime_fraction"]["default_value"]["numerator"] == 250000
    )
    assert api["route"]["weighted_clusters"]["clusters"] == [
        {"name": V1, "weight": 3},
        {"name": V2, "weight": 1},
    ]
    regex = next(r for r in routes_of(cfgs) if "safe_regex" in r["match"])
    assert regex["match"]["query_parameters"] == [{"name": "debug", "string_match": {"exact": "1"}}]
    last = routes_of(cfgs)[-1]
    assert last["direct_response"] == {"status": 500}  # no backend of weight > 0: 500
    envoy_validate(topo, cfgs, tmp_path / "validate")


def test_routes_are_ordered_as_gateway_api_requires(tmp_path):
    _, cfgs, _ = translated(tmp_path, EVERYTHING)
    kinds = [
        next(k for k in ("path", "path_separated_prefix", "safe_regex", "prefix") if k in r["match"])
        for r in routes_of(cfgs)
    ]
    assert kinds == ["path", "path_separated_prefix", "path_separated_prefix", "safe_regex", "prefix"]
    # /old and /api are as long (4): rule order is kept (a stable sort); a match beats no match.


def test_ingress_route_binds_to_the_gateway_listener(tmp_path):
    topo, cfgs, _ = translated(
        tmp_path,
        GATEWAY_API / "gateway-currency-ingress.yaml",
        GATEWAY_API / "http-route-currency-converter-ingress.yaml",
    )
    gateway = cfgs[topo.gateway.id]
    (config,) = [r for r in gateway.routes if r["name"] == "http.8080"]
    (vhost,) = config["virtual_hosts"]
    assert vhost["domains"] == ["*"]
    (only,) = vhost["routes"]
    assert only["match"]["path_separated_prefix"] == "/convert"
    assert [c["weight"] for c in only["route"]["weighted_clusters"]["clusters"]] == [90, 10]
    envoy_validate(topo, cfgs, tmp_path / "validate")


def test_a_route_from_another_namespace_is_not_allowed_by_the_same_namespace_listener(tmp_path):
    same = (GATEWAY_API / "gateway-currency-ingress.yaml").read_text().replace("from: All", "from: Same")
    topo, cfgs, resources = translated(
        tmp_path, same, GATEWAY_API / "http-route-currency-converter-ingress.yaml"
    )
    (config,) = [r for r in cfgs[topo.gateway.id].routes if r["name"] == "http.8080"]
    assert config["virtual_hosts"][0]["name"] == "blackhole:80"  # nothing bound: 404 NR
    status = route_status(resources, topo, MESH)[
        ("gateway.networking.k8s.io", "HTTPRoute", "payments-prod", "currency-converter-ingress")
    ]
    (accepted,) = status["parents"][0]["conditions"]
    assert (accepted["type"], accepted["status"], accepted["reason"]) == (
        "Accepted",
        "False",
        "NotAllowedByListeners",
    )


@pytest.mark.parametrize(
    ("parent", "reason"),
    [
        ('{group: "", kind: Service, name: no-such-service, port: 8080}', "NoMatchingParent"),
        ("{name: no-such-gateway}", "NoMatchingParent"),
        ("{kind: Service, name: currency-converter, port: 8080}", "UnsupportedValue"),  # group defaulted
    ],
)
def test_a_missing_parent_is_not_accepted(tmp_path, parent, reason):
    text = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: payments-prod}}
spec:
  parentRefs: [{parent}]
  rules: [{{backendRefs: [{{name: currency-converter-v1, port: 8080}}]}}]
"""
    topo, cfgs, resources = translated(tmp_path, text)
    status = route_status(resources, topo, MESH)[
        ("gateway.networking.k8s.io", "HTTPRoute", "payments-prod", "r")
    ]
    (accepted,) = status["parents"][0]["conditions"]
    assert (accepted["status"], accepted["reason"]) == ("False", reason)
    assert routes_of(cfgs)[0]["name"] == "default"  # the Service keeps its default route


def test_an_http_route_in_the_callers_namespace_wins_over_an_older_virtual_service(tmp_path):
    mesh = paths.CLUSTER_CONFIG / "mesh"
    _, cfgs, _ = translated(
        tmp_path,
        mesh / "destination-rule-currency-converter.yaml",
        mesh / "virtual-service-currency-converter-90-10.yaml",
        GATEWAY_API / "http-route-currency-converter-0-100.yaml",
    )
    (only,) = routes_of(cfgs)  # the client runs in payments-prod, the HTTPRoute's namespace
    assert only["route"]["cluster"] == V2


def test_with_status_puts_istiods_status_on_routes_and_gateways(tmp_path):
    missing = GATEWAY_API / "http-route-currency-converter-missing-backend.yaml"
    ingress = GATEWAY_API / "http-route-currency-converter-ingress.yaml"
    topo, _, resources = translated(tmp_path, GATEWAY_API / "gateway-currency-ingress.yaml", missing, ingress)
    gateway, route_, _ = with_status(resources, route_status(resources, topo, MESH))
    assert [c["type"] for c in gateway.body["status"]["conditions"]] == ["Accepted", "Programmed"]
    (listener,) = gateway.body["status"]["listeners"]
    assert (listener["name"], listener["attachedRoutes"]) == (
        "http",
        1,
    )  # the ingress route; not the mesh one
    (parent,) = route_.body["status"]["parents"]
    assert parent["controllerName"] == "istio.io/gateway-controller"
    assert parent["parentRef"] == {"group": "", "kind": "Service", "name": "currency-converter", "port": 8080}
    assert [c["reason"] for c in parent["conditions"]] == ["Accepted", "BackendNotFound"]


MULTI_PORT = """
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: payments-prod}
spec:
  selector: {app: currency-converter}
  ports:
    - {name: http, port: 8080, targetPort: 8080}
    - {name: http-alt, port: 9090, targetPort: 8080}
"""


def test_a_service_parent_port_limits_the_route_to_that_port(tmp_path):
    ports = itertools.count(22000)
    apps = manifests.load(paths.APPS) + manifests.load(MULTI_PORT)
    apps += manifests.load(GATEWAY_API / "service-currency-converter-versions.yaml")
    topo = build_topology(apps, tmp_path, lambda: next(ports))
    route_text = (GATEWAY_API / "http-route-currency-converter-90-10.yaml").read_text()
    resources = manifests.load(
        route_text.replace("name: currency-converter\n      port: 8080", "name: multi\n      port: 9090")
    )
    ensure_ports(resources, topo, lambda: next(ports))
    cfgs = translate(resources, topo, MESH)
    host = "multi.payments-prod.svc.cluster.local"
    (on_9090,) = next(v for v in route(client(cfgs), "9090")["virtual_hosts"] if v["name"] == f"{host}:9090")[
        "routes"
    ]
    assert on_9090["match"] == {"prefix": "/", "case_sensitive": True}  # augmentPortMatch: port 9090 only
    assert [c["weight"] for c in on_9090["route"]["weighted_clusters"]["clusters"]] == [90, 10]
    (on_8080,) = next(v for v in route(client(cfgs), "8080")["virtual_hosts"] if v["name"] == f"{host}:8080")[
        "routes"
    ]
    assert on_8080["name"] == "default"  # the other port keeps the Service's default route
