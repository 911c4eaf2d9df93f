"""Istio traffic resources → the Envoy routes and clusters istiod would send: names, weights, retries,
subsets, traffic policy, ServiceEntry, Gateway and the telemetry hooks the runtime reads."""

from __future__ import annotations

import pytest
from support.envoy import client, cluster, configs, hcms, listener, route, vhost
from support.istio_yaml import CC, FEATURES, GATEWAY, INGRESS_VS, POLICY_DR, SERVICE_ENTRY, vs

from labkit import metrics
from labkit.errors import ManifestError, UnsupportedError
from labkit.local.listeners import ACCESS_LOG_FORMAT
from labkit.mesh import MeshSettings

CANARY = ("destination-rule-currency-converter.yaml", "virtual-service-currency-converter-90-10.yaml")
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


def test_canary_weights_become_weighted_subset_clusters_with_the_mesh_defaults(tmp_path):
    _, cfgs = configs(tmp_path, *CANARY)
    rc = route(client(cfgs), "8080")
    assert rc["validate_clusters"] is False and rc["ignore_port_in_host_matching"] is True
    host = vhost(client(cfgs), "8080", f"{CC}:8080")
    assert host["domains"] == [
        CC,
        "currency-converter",
        "currency-converter.payments-prod",
        "currency-converter.payments-prod.svc",
    ]
    [r] = host["routes"]
    assert r["route"]["weighted_clusters"]["clusters"] == [
        {"name": f"outbound|8080|v1|{CC}", "weight": 90},
        {"name": f"outbound|8080|v2|{CC}", "weight": 10},
    ]
    assert r["route"]["timeout"] == "0s"
    retry = r["route"]["retry_policy"]
    assert (retry["num_retries"], retry["retry_on"]) == (2, DEFAULT_RETRY_ON)
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    assert r["decorator"] == {"operation": f"{CC}:8080/*"}
    assert rc["virtual_hosts"][-1] == {
        "name": "block_all",
        "domains": ["*"],
        "routes": [{"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}],
        "include_request_attempt_count": True,
    }


def test_zero_weight_destinations_are_dropped_but_several_stay_a_weighted_split(tmp_path):
    _, cfgs = configs(
        tmp_path, "destination-rule-currency-converter.yaml", "virtual-service-currency-converter-100-0.yaml"
    )
    [r] = vhost(client(cfgs), "8080", f"{CC}:8080")["routes"]
    # applyHTTPRouteDestination: more than one destination is always weighted_clusters (a 100/0 split too)
    assert r["route"]["weighted_clusters"]["clusters"] == [{"name": f"outbound|8080|v1|{CC}", "weight": 100}]
    assert "cluster" not in r["route"]


def test_weights_stay_relative_and_all_zero_is_refused(tmp_path):
    three = "  - route:\n" + "".join(
        f"    - destination: {{host: currency-converter, subset: {s}}}\n      weight: {w}\n"
        for s, w in (("v1", 1), ("v2", 3), ("v9", 0))
    )
    _, cfgs = configs(tmp_path, three and vs(three))
    [r] = vhost(client(cfgs), "8080", f"{CC}:8080")["routes"]
    assert [(c["name"].split("|")[2], c["weight"]) for c in r["route"]["weighted_clusters"]["clusters"]] == [
        ("v1", 1),
        ("v2", 3),
    ]
    zero = three.replace("weight: 1", "weight: 0").replace("weight: 3", "weight: 0")
    with pytest.raises(ManifestError, match=r"VirtualService/currency-converter: field spec.http\[0\].route"):
        configs(tmp_path, vs(zero))


def test_without_a_virtual_service_each_service_gets_the_default_route(tmp_path):
    _, cfgs = configs(tmp_path)
    [r] = vhost(client(cfgs), "8080", f"{CC}:8080")["routes"]
    assert r["name"] == "default" and r["route"]["cluster"] == f"outbound|8080||{CC}"
    fx = vhost(client(cfgs), "80", "fx-rates.external.svc.cluster.local:80")
    assert fx["domains"] == [
        "fx-rates.external.svc.cluster.local",
        "fx-rates.external",
        "fx-rates.external.svc",
    ]


def test_subset_clusters_select_endpoints_by_label_and_use_auto_mtls(tmp_path):
    topo, cfgs = configs(tmp_path, *CANARY)
    v2 = cluster(client(cfgs), f"outbound|8080|v2|{CC}")
    assert v2["alt_stat_name"] == f"outbound|8080|v2|{CC};"
    [endpoint] = v2["load_assignment"]["endpoints"][0]["lb_endpoints"]
    v2_proxy = topo.proxies["sidecar~currency-converter-v2-0.payments-prod"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": v2_proxy.inbound_ports[8080],
    }
    meta = endpoint["metadata"]["filter_metadata"]
    assert meta["envoy.transport_socket_match"] == {"tlsMode": "istio"}
    assert meta[
        "istio"
    ] == {  # the destination_* labels the client reports (CanonicalService for the last two)
        "workload": "currency-converter-v2",
        "workload_namespace": "payments-prod",
        "app": "currency-converter",
        "version": "v2",
        "canonical_service": "currency-converter",
        "canonical_revision": "v2",
        "cluster": "Kubernetes",
    }
    istio, plain = v2["transport_socket_matches"]
    assert (istio["match"], plain["match"]) == ({"tlsMode": "istio"}, {})
    tls = istio["transport_socket"]["typed_config"]
    assert tls["sni"] == f"outbound_.8080_.v2_.{CC}"
    ctx = tls["common_tls_context"]
    assert ctx["alpn_protocols"] == ["istio-http/1.1", "istio", "http/1.1"]
    assert ctx["validation_context"]["match_typed_subject_alt_names"] == [
        {
            "san_type": "URI",
            "matcher": {"exact": "spiffe://cluster.local/ns/payments-prod/sa/currency-converter"},
        }
    ]
    client_proxy = topo.proxies["sidecar~client-0.payments-prod"]
    assert ctx["tls_certificates"][0]["certificate_chain"]["filename"] == str(client_proxy.cert_file)
    assert (
        len(cluster(client(cfgs), f"outbound|8080||{CC}")["load_assignment"]["endpoints"][0]["lb_endpoints"])
        == 2
    )


def test_endpoints_without_a_sidecar_are_the_app_port_in_plaintext(tmp_path):
    topo, cfgs = configs(tmp_path)
    fx = cluster(client(cfgs), "outbound|80||fx-rates.external.svc.cluster.local")
    [endpoint] = fx["load_assignment"]["endpoints"][0]["lb_endpoints"]
    [fx_instance] = [i for i in topo.instances if i.workload.name == "fx-rates"]
    assert endpoint["endpoint"]["address"]["socket_address"]["port_value"] == fx_instance.app_port
    assert "envoy.transport_socket_match" not in endpoint["metadata"]["filter_metadata"]


def test_traffic_policy_maps_to_cluster_fields_and_a_subset_replaces_whole_blocks(tmp_path):
    _, cfgs = configs(tmp_path, POLICY_DR)
    v1 = cluster(client(cfgs), f"outbound|8080|v1|{CC}")
    assert v1["lb_policy"] == "ROUND_ROBIN" and v1["connect_timeout"] == "0.25s"
    assert v1["circuit_breakers"]["thresholds"][0] == {
        "max_connections": 1,
        "max_pending_requests": 1,
        "max_requests": 4294967295,
        "max_retries": 4294967295,
        "track_remaining": False,  # getDefaultCircuitBreakerThresholds: DISABLE_TRACK_REMAINING_CB_METRICS
    }
    options = v1["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["common_http_protocol_options"] == {"max_requests_per_connection": 1}
    assert v1["outlier_detection"] == {
        "enforcing_success_rate": 0,
        "consecutive_5xx": 1,
        "enforcing_consecutive_5xx": 100,
        "interval": "1s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 100,
    }
    assert v1["common_lb_config"] == {"healthy_panic_threshold": {"value": 0.0}}  # panic mode off, as Istio
    assert "transport_socket_matches" in v1
    v2 = cluster(client(cfgs), f"outbound|8080|v2|{CC}")
    # the subset's connectionPool replaced the top-level one whole: maxConnections is back to the default
    assert v2["circuit_breakers"]["thresholds"][0]["max_connections"] == 4294967295
    assert v2["circuit_breakers"]["thresholds"][0]["max_requests"] == 7
    assert v2["outlier_detection"]["consecutive_5xx"] == 1  # not replaced: inherited
    assert "transport_socket" not in v2 and "transport_socket_matches" not in v2  # tls DISABLE


def test_explicit_istio_mutual_sets_one_transport_socket(tmp_path):
    dr = POLICY_DR.replace("tls: {mode: DISABLE}", "tls: {mode: ISTIO_MUTUAL}")
    _, cfgs = configs(tmp_path, dr)
    v2 = cluster(client(cfgs), f"outbound|8080|v2|{CC}")
    assert v2["transport_socket"]["typed_config"]["sni"] == f"outbound_.8080_.v2_.{CC}"
    assert "transport_socket_matches" not in v2


def test_virtual_service_http_features_translate_like_istiod(tmp_path):
    _, cfgs = configs(tmp_path, vs(FEATURES))
    jason, regex, fallback = vhost(client(cfgs), "8080", f"{CC}:8080")["routes"]  # the third http is dropped
    assert (jason["name"], regex["name"]) == ("canary.jason", "canary")
    assert jason["match"] == {
        "prefix": "/convert",
        "case_sensitive": True,
        "headers": [
            {"name": "end-user", "string_match": {"exact": "jason"}},
            {"name": "x-b", "present_match": True},
            {"name": ":method", "string_match": {"exact": "GET"}},
        ],
        "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}],
    }
    assert regex["match"] == {"safe_regex": {"regex": "/v[0-9]+/.*"}, "case_sensitive": False}
    action = jason["route"]
    assert action["cluster"] == f"outbound|8080|v2|{CC}" and action["timeout"] == "0.3s"
    assert action["retry_policy"]["num_retries"] == 3 and action["retry_policy"]["per_try_timeout"] == "0.1s"
    assert action["retry_policy"]["retry_on"] == "5xx,retriable-status-codes"
    assert action["retry_policy"]["retriable_status_codes"] == [503]
    assert action["request_mirror_policies"] == [
        {
            "cluster": f"outbound|8080|v1|{CC}",
            "runtime_fraction": {"default_value": {"numerator": 250000, "denominator": "MILLION"}},
            "trace_sampled": False,
            "disable_shadow_host_suffix_append": True,
        }
    ]
    assert (action["prefix_rewrite"], action["host_rewrite_literal"]) == ("/rewritten", "other.example")
    fault = jason["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"] == {
        "fixed_delay": "0.5s",
        "percentage": {"numerator": 100000, "denominator": "MILLION"},
    }
    assert fault["abort"] == {
        "http_status": 503,
        "percentage": {"numerator": 505000, "denominator": "MILLION"},
    }
    assert jason["request_headers_to_add"] == [
        {"header": {"key": "x-canary", "value": "yes"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    ]
    assert jason["response_headers_to_add"] == [
        {"header": {"key": "x-served-by", "value": "mesh"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
    ]
    assert jason["response_headers_to_remove"] == ["server"]
    assert fallback["match"] == {"prefix": "/", "case_sensitive": True}
    assert "retry_policy" not in fallback["route"]  # attempts: 0 disables retries


def test_fault_without_percentage_stays_unset_so_envoy_injects_nothing(tmp_path):
    http = (
        "  - fault: {abort: {httpStatus: 500}}\n    route:\n    - destination: {host: currency-converter}\n"
    )
    _, cfgs = configs(tmp_path, vs(http))
    [r] = vhost(client(cfgs), "8080", f"{CC}:8080")["routes"]
    assert r["typed_per_filter_config"]["envoy.filters.http.fault"]["abort"] == {"http_status": 500}


def test_a_missing_subset_still_names_its_cluster(tmp_path):
    http = "  - route:\n    - destination: {host: currency-converter, subset: v9}\n"
    _, cfgs = configs(tmp_path, vs(http))  # no DestinationRule: Envoy answers 503 NC at request time
    [r] = vhost(client(cfgs), "8080", f"{CC}:8080")["routes"]
    assert r["route"]["cluster"] == f"outbound|8080|v9|{CC}"
    assert not any(c["name"] == r["route"]["cluster"] for c in client(cfgs).clusters)


def test_gateway_bound_virtual_services_stay_off_the_sidecars(tmp_path):
    http = "  - route:\n    - destination: {host: currency-converter, subset: v2}\n"
    _, cfgs = configs(tmp_path, vs(http, extra="  gateways: [istio-system/meshlab-gateway]\n"))
    [r] = vhost(client(cfgs), "8080", f"{CC}:8080")["routes"]
    assert r["route"]["cluster"] == f"outbound|8080||{CC}"


def test_gateway_servers_become_listeners_with_vhosts_from_bound_virtual_services(tmp_path):
    topo, cfgs = configs(tmp_path, GATEWAY, INGRESS_VS, *CANARY)
    gw = cfgs["istio-ingressgateway.istio-system"]
    lst = listener(gw, "0.0.0.0_8080")  # resolvePorts: the Service targetPort
    assert lst["address"]["socket_address"]["port_value"] == topo.gateway.gateway_ports[80]
    assert hcms(lst)[0]["rds"]["route_config_name"] == "http.8080"
    [host] = route(gw, "http.8080")["virtual_hosts"]
    assert (host["name"], host["domains"]) == ("*:80", ["*"])
    assert host["routes"][0]["route"]["cluster"] == f"outbound|8080|v1|{CC}"
    tls = cluster(gw, f"outbound|8080|v1|{CC}")["transport_socket_matches"][0]["transport_socket"][
        "typed_config"
    ]
    assert tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"] == str(
        topo.gateway.cert_file
    )
    # the ingress VirtualService is not mesh-bound: sidecars keep the canary split
    assert "weighted_clusters" in vhost(client(cfgs), "8080", f"{CC}:8080")["routes"][0]["route"]


def test_a_gateway_without_bound_virtual_service_answers_404(tmp_path):
    _, cfgs = configs(tmp_path, GATEWAY)
    assert route(cfgs["istio-ingressgateway.istio-system"], "http.8080")["virtual_hosts"] == [
        {"name": "blackhole:80", "domains": ["*"], "routes": []}
    ]


def test_service_entry_adds_a_vhost_and_a_plaintext_cluster_to_the_lab_service(tmp_path):
    topo, cfgs = configs(tmp_path, SERVICE_ENTRY)
    host = vhost(client(cfgs), "80", "api.fxrates.example:80")
    assert host["domains"] == ["api.fxrates.example"]
    fx = cluster(client(cfgs), "outbound|80||api.fxrates.example")
    [fx_instance] = [i for i in topo.instances if i.workload.name == "fx-rates"]
    [endpoint] = fx["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint == {
        "endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": fx_instance.app_port}}
        }
    }
    assert "transport_socket_matches" not in fx  # mesh-external: no auto mTLS


def test_service_entry_ports_get_listeners_and_endpoints_must_stay_local(tmp_path):
    topo, cfgs = configs(tmp_path, SERVICE_ENTRY.replace("number: 80,", "number: 9090,"))
    assert listener(client(cfgs), "0.0.0.0_9090")["address"] == {
        "pipe": {
            "path": str(topo.proxies["sidecar~client-0.payments-prod"].outbound_sockets[9090]),
            "mode": 0o600,
        }
    }
    literal = SERVICE_ENTRY.replace("fx-rates.external.svc.cluster.local", "127.0.0.1")
    [endpoint] = cluster(client(configs(tmp_path, literal)[1]), "outbound|80||api.fxrates.example")[
        "load_assignment"
    ]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}
    remote = SERVICE_ENTRY.replace("fx-rates.external.svc.cluster.local", "api.example.com")
    with pytest.raises(
        UnsupportedError, match=r"ServiceEntry/fx-rates: field spec.endpoints\[0\].address 'api.example.com'"
    ):
        configs(tmp_path, remote)


def test_every_connection_manager_logs_istio_text_format_and_counts_requests_with_istio_labels(tmp_path):
    topo, cfgs = configs(tmp_path, "peer-authentication-permissive.yaml", *CANARY)
    for proxy_id, cfg in cfgs.items():
        for lst in cfg.listeners:
            for hcm in hcms(lst):
                if "tcp_proxy" in hcm["@type"]:
                    continue  # TCP connections are logged, not counted as requests
                file_log, stats_log = hcm["access_log"]
                assert file_log["typed_config"]["path"] == str(topo.proxies[proxy_id].access_log)
                assert (
                    file_log["typed_config"]["log_format"]["text_format_source"]["inline_string"]
                    == ACCESS_LOG_FORMAT
                )
                stats = stats_log["typed_config"]
                assert stats["stat_prefix"] == "istiolocal"
                tags = {t["name"]: t["value_format"] for t in stats["counters"][0]["stat"]["tags"]}
                assert tuple(tags) == metrics.LABELS
    out_tags = _tags(listener(client(cfgs), "0.0.0.0_8080"))[0]
    assert out_tags["reporter"] == "source" and out_tags["source_workload"] == "client"
    assert out_tags["destination_workload"] == "%UPSTREAM_METADATA(istio:workload)%"
    assert out_tags["destination_service"] == "%METADATA(ROUTE:istio:service)%"
    [canary] = vhost(client(cfgs), "8080", f"{CC}:8080")["routes"]
    assert canary["metadata"] == {
        "filter_metadata": {
            "istio": {"service": CC, "name": "currency-converter", "namespace": "payments-prod"}
        }
    }
    assert (out_tags["source_principal"], out_tags["destination_principal"]) == (
        "%UPSTREAM_LOCAL_URI_SAN%",  # unknown over plaintext
        "%UPSTREAM_PEER_URI_SAN%",
    )
    assert out_tags["connection_security_policy"] == "unknown"
    tls_chain, plain_chain = _tags(
        listener(cfgs["sidecar~currency-converter-v2-0.payments-prod"], "virtualInbound_8080")
    )
    assert (tls_chain["reporter"], tls_chain["destination_workload"], tls_chain["destination_version"]) == (
        "destination",
        "currency-converter-v2",
        "v2",
    )
    assert tls_chain["destination_service"] == CC
    assert (tls_chain["connection_security_policy"], plain_chain["connection_security_policy"]) == (
        "mutual_tls",
        "none",
    )
    # the caller's identity travels in headers its proxy sets (to in-mesh hosts only) and the server's strips
    assert {
        h["header"]["key"]: h["header"]["value"]
        for h in vhost(client(cfgs), "8080", f"{CC}:8080")["request_headers_to_add"]
    } == {
        "x-lab-source-workload": "client",
        "x-lab-source-workload-namespace": "payments-prod",
        "x-lab-source-app": "client",
        "x-lab-source-version": "v1",
        "x-lab-source-canonical-service": "client",
        "x-lab-source-canonical-revision": "v1",
        "x-lab-source-cluster": "Kubernetes",
    }


def test_no_access_log_file_means_only_the_request_counter(tmp_path):
    _, cfgs = configs(tmp_path, mesh=MeshSettings(access_log_file=None))
    [only] = hcms(listener(client(cfgs), "0.0.0.0_8080"))[0]["access_log"]
    assert only["name"] == "envoy.access_loggers.stats"


def test_allow_any_is_refused_with_the_reason(tmp_path):
    with pytest.raises(UnsupportedError, match="ALLOW_ANY is not supported by the local backend.*iptables"):
        configs(tmp_path, mesh=MeshSettings(outbound_policy="ALLOW_ANY"))


def _tags(lst: dict) -> list[dict]:
    return [
        {
            t["name"]: t["value_format"]
            for t in hcm["access_log"][-1]["typed_config"]["counters"][0]["stat"]["tags"]
        }
        for hcm in hcms(lst)
    ]


def test_the_destination_rule_in_the_callers_namespace_wins_and_the_oldest_virtual_service_wins(tmp_path):
    def dr(namespace: str, lb: str) -> str:
        return (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            f"metadata: {{name: cc, namespace: {namespace}}}\n"
            f"spec: {{host: {CC}, trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}}}\n"
        )

    to = "  - route:\n    - destination: {{host: currency-converter, subset: {}}}\n"
    _, cfgs = configs(
        tmp_path, dr("istio-system", "RANDOM"), dr("payments-prod", "ROUND_ROBIN"), vs(to.format("v1"))
    )
    assert cluster(client(cfgs), f"outbound|8080||{CC}")["lb_policy"] == "ROUND_ROBIN"
    _, cfgs = configs(
        tmp_path, dr("istio-system", "RANDOM"), vs(to.format("v1")), vs(to.format("v2"), name="later")
    )
    assert (
        cluster(client(cfgs), f"outbound|8080||{CC}")["lb_policy"] == "RANDOM"
    )  # the root namespace applies
    [r] = vhost(client(cfgs), "8080", f"{CC}:8080")["routes"]
    assert r["route"]["cluster"] == f"outbound|8080|v1|{CC}"


def test_a_gateway_reference_resolves_in_the_virtual_service_namespace(tmp_path):
    elsewhere = INGRESS_VS.replace("namespace: payments-prod", "namespace: legacy")
    _, cfgs = configs(tmp_path, GATEWAY, elsewhere)  # legacy/meshlab-gateway does not exist
    assert (
        route(cfgs["istio-ingressgateway.istio-system"], "http.8080")["virtual_hosts"][0]["name"]
        == "blackhole:80"
    )
    qualified = elsewhere.replace("gateways: [meshlab-gateway]", "gateways: [payments-prod/meshlab-gateway]")
    _, cfgs = configs(tmp_path, GATEWAY, qualified)
    assert route(cfgs["istio-ingressgateway.istio-system"], "http.8080")["virtual_hosts"][0]["name"] == "*:80"
