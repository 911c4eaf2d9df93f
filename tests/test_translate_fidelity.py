"""Where the local mesh must give istiod's outcome: each behaviour through LocalLab, real Envoy and real HTTP.

One lab for the module (the canary checkpoint: STRICT, the DR, the 90/10 VS); each test puts back
what it changed. docs/fidelity.md names the istiod source of each behaviour and the test here.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from support.request import get

from labkit import lesson, metrics, paths, traffic, unixhttp
from labkit.backends.local import LocalLab
from labkit.local import envoy, telemetry

pytestmark = pytest.mark.mesh

URL = lesson.URL
HEADERS_URL = URL.split("/convert")[0] + "/headers"
MESH = paths.CLUSTER_CONFIG / "mesh"
CC = "currency-converter.payments-prod.svc.cluster.local"


def seen_headers(lab: LocalLab, url: str = HEADERS_URL, **kwargs) -> dict[str, str]:
    """The request headers the app received (its /headers echo), lower-cased."""
    status, body, _ = get(lab, url, **kwargs)
    assert status == 200, body
    return {k.lower(): v for k, v in json.loads(body)["headers"].items()}


def doc(kind: str, name: str, namespace: str, spec: dict, **metadata) -> dict:
    api = "security.istio.io/v1" if kind == "AuthorizationPolicy" else "networking.istio.io/v1"
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": spec,
    }


def vs(http: list[dict], name: str = "currency-converter", **spec) -> dict:
    return doc(
        "VirtualService", name, "payments-prod", {"hosts": ["currency-converter"], "http": http, **spec}
    )


def dest(subset: str, **extra) -> dict:
    return {"destination": {"host": "currency-converter", "subset": subset}, **extra}


def dr(name: str, namespace: str, host: str, subsets: list[str], **spec) -> dict:
    subs = [{"name": s, "labels": {"version": s if s != "v3" else "v2"}} for s in subsets]
    return doc("DestinationRule", name, namespace, {"host": host, "subsets": subs, **spec})


CANARY_DR = MESH / "destination-rule-currency-converter.yaml"
CANARY_VS = MESH / "virtual-service-currency-converter-90-10.yaml"


def restore(lab: LocalLab, *extra: dict) -> None:
    for d in extra:
        lab.delete(d)
    lab.apply(CANARY_DR)
    lab.apply(CANARY_VS)


def test_destination_rule_namespace_order_merge_and_no_foreign_namespace(lab):
    """PushContext.destinationRule / mergeDestinationRule."""
    foreign = dr("foreign", "legacy", CC, ["v1", "v2"])
    root_exact = dr("root", "istio-system", CC, ["v1", "v2"])
    local_wild = dr("wild", "payments-prod", "*.payments-prod.svc.cluster.local", [])
    extra = dr("more-subsets", "payments-prod", "currency-converter", ["v3"])
    try:
        lab.delete(CANARY_DR)
        lab.apply(foreign)  # a DR in a namespace that is neither the caller's, the service's nor root
        assert get(lab)[0] == 503  # its subsets do not exist for the client: 503 NC
        lab.apply(root_exact)
        assert get(lab)[0] == 200  # the root namespace's DR applies
        lab.apply(local_wild)  # the caller's namespace before host specificity: its wildcard DR wins
        assert get(lab)[0] == 503
        lab.delete(local_wild)
        lab.apply(CANARY_DR)
        lab.apply(extra)  # a second DR for the same host, same namespace: subsets merged
        lab.apply(vs([{"route": [dest("v3")]}]))
        result = lab.send(URL, n=10, concurrency=2, progress=False)
        assert result.counts() == {"v2": 10}, result.codes()
    finally:
        restore(lab, foreign, root_exact, local_wild, extra)


def test_connection_pool_zeros_are_unset_not_a_limit_of_zero(lab):
    """applyConnectionPool: only values > 0 are set."""
    zero = {
        "http": {"http2MaxRequests": 0, "http1MaxPendingRequests": 0, "maxRetries": 0},
        "tcp": {"maxConnections": 0},
    }
    pooled = dr("currency-converter", "payments-prod", "currency-converter", ["v1", "v2"])
    pooled["spec"]["trafficPolicy"] = {"connectionPool": zero}
    try:
        lab.apply(pooled)
        result = lab.send(URL, n=20, concurrency=4, progress=False)
        assert result.codes() == {200: 20}
    finally:
        restore(lab)


def test_destination_header_set_wins_and_host_in_set_rewrites_the_authority(lab):
    """TranslateRoute + processDestination (append order), translateAppendHeaders (authority)."""
    route_level = {"request": {"set": {"x-who": "route", "host": "renamed.example"}}}
    try:
        lab.apply(
            vs(
                [
                    {
                        "headers": route_level,
                        "route": [dest("v1", headers={"request": {"set": {"x-who": "dest"}}})],
                    }
                ]
            )
        )
        seen = seen_headers(lab)
        assert seen["x-who"] == "dest"
        assert seen["host"] == "renamed.example"
    finally:
        restore(lab)


def test_mirrored_request_keeps_the_host(lab):
    """TranslateRequestMirrorPolicy: DISABLE_SHADOW_HOST_SUFFIX is true, no ``-shadow`` suffix."""
    try:
        lab.apply(vs([{"route": [dest("v1")], "mirror": {"host": "currency-converter", "subset": "v2"}}]))
        assert get(lab, HEADERS_URL + "?mirror=1")[0] == 200
        lines = telemetry.wait_for_lines(
            lambda: lab.access_log("currency-converter-v2", tail=20),
            lambda ls: any("mirror=1" in line for line in ls),
        )
        [line] = [line for line in lines if "mirror=1" in line]
        assert f'"{CC}:8080"' in line or '"currency-converter.payments-prod:8080"' in line, line
        assert "-shadow" not in line
    finally:
        restore(lab)


def test_faults_without_delay_or_status_are_dropped_like_istiod(lab):
    """TranslateFault: a delay without fixedDelay, an abort without httpStatus, make no fault."""
    fault = {"delay": {"percentage": {"value": 100}}, "abort": {"percentage": {"value": 100}}}
    try:
        lab.apply(vs([{"fault": fault, "route": [dest("v1")]}]))
        assert lab.send(URL, n=10, concurrency=2, progress=False).codes() == {200: 10}
    finally:
        restore(lab)


GATEWAY = doc(
    "Gateway",
    "gw",
    "payments-prod",
    {
        "selector": {"istio": "ingressgateway"},
        "servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["payments.example"]}
        ],
    },
)


def gw_vs(name: str, http: list[dict], hosts: list[str] | None = None) -> dict:
    return doc(
        "VirtualService", name, "payments-prod", {"hosts": hosts or ["*"], "gateways": ["gw"], "http": http}
    )


def test_gateway_hosts_intersect_virtual_services_merge_and_port_80_listens_on_8080(lab):
    """buildGatewayHTTPRouteConfig (Intersection, vhost merge, SortVHostRoutes), resolvePorts."""
    catch_all = gw_vs("a-all", [{"route": [{"destination": {"host": CC, "subset": "v1"}}]}])
    health = gw_vs(
        "b-health",
        [
            {
                "match": [{"uri": {"exact": "/healthz"}}],
                "route": [{"destination": {"host": CC, "subset": "v2"}}],
            }
        ],
    )
    other_ns = doc(
        "Gateway",
        "gw",
        "payments-prod",
        {**GATEWAY["spec"], "servers": [{**GATEWAY["spec"]["servers"][0], "hosts": ["legacy/*"]}]},
    )
    try:
        for d in (GATEWAY, catch_all, health):
            lab.apply(d)
        assert (
            get(lab, "http://payments.example/convert?from=NOK&to=EUR&amount=1", source="ingress")[0] == 200
        )
        assert get(lab, "http://other.example/convert?from=NOK&to=EUR&amount=1", source="ingress")[0] == 404
        # the later VirtualService's /healthz is merged before the older one's catch-all
        status, _, headers = get(lab, "http://payments.example/healthz", source="ingress")
        assert (status, headers["x-version"]) == (200, "v2")
        names = {
            lst["name"]
            for lst in _find(envoy.config_dump(lab._current().gateway), "listener")
            if "name" in lst
        }
        assert "0.0.0.0_8080" in names and "0.0.0.0_80" not in names
        lab.apply(other_ns)  # hosts: legacy/*: only VirtualServices in namespace legacy
        assert get(lab, "http://payments.example/healthz", source="ingress")[0] == 404
    finally:
        for d in (health, catch_all, GATEWAY):
            lab.delete(d)


def test_the_gateway_takes_the_services_destination_rule_before_the_root_namespace(lab):
    """PushContext.destinationRule: a proxy in the root namespace starts at the service's namespace."""
    root_dr = dr("no-subsets", "istio-system", CC, [])
    to_v1 = gw_vs("to-v1", [{"route": [{"destination": {"host": CC, "subset": "v1"}}]}])
    try:
        for d in (GATEWAY, to_v1, root_dr):
            lab.apply(d)
        status, _, headers = get(lab, "http://payments.example/healthz", source="ingress")
        assert (status, headers.get("x-version")) == (200, "v1")  # the canary DR in payments-prod has v1
    finally:
        for d in (root_dr, to_v1, GATEWAY):
            lab.delete(d)


def test_gateway_virtual_service_short_hosts_are_fully_qualified(lab):
    """ResolveVirtualServiceShortnames: a short VS host is its FQDN, also on the gateway."""
    any_host = {
        **GATEWAY,
        "spec": {**GATEWAY["spec"], "servers": [{**GATEWAY["spec"]["servers"][0], "hosts": ["*"]}]},
    }
    short = gw_vs(
        "short", [{"route": [{"destination": {"host": CC, "subset": "v1"}}]}], hosts=["currency-converter"]
    )
    try:
        lab.apply(any_host)
        lab.apply(short)
        assert get(lab, f"http://{CC}/healthz", source="ingress")[0] == 200
        assert get(lab, "http://currency-converter/healthz", source="ingress")[0] == 404
    finally:
        lab.delete(short)
        lab.delete(any_host)


def _find(node, key: str):
    if isinstance(node, dict):
        if key in node:
            yield node[key]
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            yield from _find(item, key)


def test_gateway_rbac_denies_with_403_even_where_no_route_matches(lab):
    """buildHTTP: RBAC is an HCM filter, evaluated before routing."""
    deny = doc(
        "AuthorizationPolicy",
        "deny-admin",
        "istio-system",
        {
            "selector": {"matchLabels": {"istio": "ingressgateway"}},
            "action": "DENY",
            "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}],
        },
    )
    try:
        lab.apply(GATEWAY)
        lab.apply(deny)
        status, body, _ = get(lab, "http://payments.example/admin", source="ingress")
        assert (status, body) == (403, "RBAC: access denied")
    finally:
        lab.delete(deny)
        lab.delete(GATEWAY)


def _stat(lab: LocalLab, workload: str, name: str) -> int:
    proxy = next(p for p in lab._current().sidecars if p.workload == workload)
    text = envoy.admin_get(proxy, "/stats?filter=" + urllib.request.quote(name))
    return sum(int(line.rpartition(": ")[2]) for line in text.splitlines() if line.strip())


def test_dry_run_policy_counts_but_does_not_enforce(lab):
    """build: istio.io/dry-run policies become shadow_rules."""
    deny_all = doc(
        "AuthorizationPolicy",
        "deny-all-dry",
        "payments-prod",
        {"selector": {"matchLabels": {"app": "currency-converter"}}, "action": "DENY", "rules": [{}]},
        annotations={"istio.io/dry-run": "true"},
    )
    try:
        lab.apply(deny_all)
        assert lab.send(URL, n=10, concurrency=2, progress=False).codes() == {200: 10}
        assert _stat(lab, "currency-converter-v1", "rbac.istio_dry_run_deny_.shadow_denied") > 0
    finally:
        lab.delete(deny_all)


def test_a_policy_change_reaches_keep_alive_connections(lab):
    deny_all = MESH / "authorization-policy-currency-converter-deny-all.yaml"
    outcomes: list[traffic.Outcome] = []
    stream = traffic.Stream(lab.resolver("client"), URL, qps=100, concurrency=2, on_batch=outcomes.extend)
    stream.start()
    try:
        deadline = time.monotonic() + 20
        while len(outcomes) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        lab.apply(deny_all)  # returns once Envoy applied it and drained the old connections
        applied = time.monotonic() - stream.started
        while sum(o.t > applied for o in outcomes) < 50 and time.monotonic() < deadline + 20:
            time.sleep(0.05)
    finally:
        stream.stop()
        lab.delete(deny_all)
    after = [o.status for o in outcomes if o.t > applied]
    assert len(after) >= 50 and set(after) == {403}, after[:5]


def test_a_policy_change_reaches_the_same_open_connection(lab):
    """ECDS: the new RBAC config applies to the next request on a connection opened before the change."""
    deny_all = MESH / "authorization-policy-currency-converter-deny-all.yaml"
    target, headers = lab.resolver("client")(URL)
    conn, path = unixhttp.connect(target, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        assert conn.getresponse().read() and conn.sock is not None
        opened = conn.sock
        lab.apply(deny_all)
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        assert (response.status, response.read()) == (403, b"RBAC: access denied")
        assert conn.sock is opened  # the same connection (http.client opens a new socket after a close)
    finally:
        conn.close()
        lab.delete(deny_all)


def test_counters_survive_a_peer_authentication_change_and_carry_istio_labels(lab):
    """Per-proxy cumulative counters; Istio's label set, ``server: istio-envoy``, x-envoy-attempt-count."""
    try:
        lab.apply(MESH / "peer-authentication-permissive.yaml")
        assert lab.send(URL, n=5, source="legacy", concurrency=1, progress=False).codes() == {200: 5}
        lab.apply(MESH / "peer-authentication-strict.yaml")
    finally:
        lab.apply(MESH / "peer-authentication-strict.yaml")
    samples = lab.metrics()
    assert metrics.total(samples, reporter="destination", connection_security_policy="none") >= 5
    get(lab)
    samples = lab.metrics()
    [s] = [
        s
        for s in samples
        if s["reporter"] == "destination"
        and s["source_workload"] == "client"
        and s["destination_version"] == "v1"
    ][:1]
    assert {
        k: s[k] for k in ("source_app", "source_version", "destination_app", "destination_service_name")
    } == {
        "source_app": "client",
        "source_version": "v1",
        "destination_app": "currency-converter",
        "destination_service_name": "currency-converter",
    }
    assert s["destination_principal"] == "spiffe://cluster.local/ns/payments-prod/sa/currency-converter"
    assert (s["request_protocol"], s["destination_service_namespace"], s["source_cluster"]) == (
        "http",
        "payments-prod",
        "Kubernetes",
    )
    assert all(set(metrics.LABELS) <= set(x.labels) for x in samples)
    plain = [x for x in samples if x["connection_security_policy"] == "none"]
    assert plain and all(x["source_principal"] == "unknown" for x in plain)
    _, _, headers = get(lab)
    assert headers["server"] == "istio-envoy"
    assert seen_headers(lab)["x-envoy-attempt-count"] == "1"


def test_counters_survive_an_authorization_policy_change(lab):
    """Counters reset only when the proxy restarts: RBAC config arrives by ECDS, the listener stays."""
    assert get(lab)[0] == 200
    before = metrics.total(lab.metrics(), reporter="destination")
    policy = MESH / "authorization-policy-currency-converter-allow-client.yaml"
    lab.apply(policy)
    lab.delete(policy)
    assert metrics.total(lab.metrics(), reporter="destination") >= before > 0


def test_identity_headers_never_reach_apps(lab):
    outside = seen_headers(lab, "http://fx-rates.external/headers")  # no sidecar there
    assert not [h for h in outside if h.startswith("x-lab-")], outside
    assert not [h for h in seen_headers(lab) if h.startswith("x-lab-")]


def test_a_caller_without_a_sidecar_cannot_forge_its_identity(lab):
    forged = {"x-lab-source-workload": "forged", "x-lab-source-workload-namespace": "forged"}
    try:
        lab.apply(MESH / "peer-authentication-permissive.yaml")
        seen = seen_headers(lab, source="legacy", headers=forged)
        assert not [h for h in seen if h.startswith("x-lab-")], seen
    finally:
        lab.apply(MESH / "peer-authentication-strict.yaml")
    assert metrics.total(lab.metrics(), reporter="destination", source_workload="forged") == 0


def allow(name: str, source: dict | None = None, paths_: list[str] | None = None) -> dict:
    rule: dict = {}
    if source:
        rule["from"] = [{"source": source}]
    if paths_:
        rule["to"] = [{"operation": {"paths": paths_}}]
    spec = {"selector": {"matchLabels": {"app": "currency-converter"}}, "action": "ALLOW", "rules": [rule]}
    return doc("AuthorizationPolicy", name, "payments-prod", spec)


def test_authorization_namespace_wildcards_and_path_templates(lab):
    """srcNamespaceGenerator (``*`` in a namespace), pathGenerator (``{*}`` templates)."""
    for pattern, status in (("payments-*", 200), ("legacy*", 403)):
        by_namespace = allow("ns-wildcard", source={"namespaces": [pattern]})
        try:
            lab.apply(by_namespace)
            assert get(lab)[0] == status, pattern
        finally:
            lab.delete(by_namespace)
    by_template = allow("template", paths_=["/{*}"])  # one path segment
    try:
        lab.apply(by_template)
        assert get(lab)[0] == 200
        assert get(lab, URL.replace("/convert", "/convert/more"))[0] == 403
    finally:
        lab.delete(by_template)


def test_an_empty_query_parameter_match_is_a_presence_match(lab):
    """translateQueryParamMatch / canBeConvertedToPresentMatch."""
    try:
        lab.apply(
            vs([{"match": [{"queryParams": {"canary": {}}}], "route": [dest("v2")]}, {"route": [dest("v1")]}])
        )
        assert lab.send(URL + "&canary=1", n=10, concurrency=2, progress=False).counts() == {"v2": 10}
        assert lab.send(URL, n=10, concurrency=2, progress=False).counts() == {"v1": 10}
    finally:
        restore(lab)


def test_a_case_insensitive_catch_all_ends_the_route_list(lab):
    """BuildHTTPRoutesForVirtualService / IsCatchAllRoute: prefix ``/`` ignores case sensitivity."""
    http = [
        {"match": [{"uri": {"prefix": "/"}, "ignoreUriCase": True}], "route": [dest("v1")]},
        {"match": [{"uri": {"prefix": "/convert"}}], "route": [dest("v2")]},
    ]
    try:
        lab.apply(vs(http))
        routes = [r for r in _find(envoy.config_dump(_client(lab)), "routes") if isinstance(r, list)]
        assert not any(r.get("match", {}).get("prefix") == "/convert" for rs in routes for r in rs)
    finally:
        restore(lab)


def _client(lab: LocalLab):
    return next(p for p in lab._current().sidecars if p.workload == "client")
