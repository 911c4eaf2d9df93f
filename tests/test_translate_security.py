"""PeerAuthentication → inbound filter chains (istiod's precedence) and AuthorizationPolicy → RBAC filters."""

from __future__ import annotations

from support.envoy import client, cluster, configs, hcms, listener, route
from support.istio_yaml import AUTHZ, CC, V2_SELECTOR, pa

V1 = "sidecar~currency-converter-v1-0.payments-prod"
V2 = "sidecar~currency-converter-v2-0.payments-prod"
ISTIO_ALPNS = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]


def chains(cfgs, proxy_id: str) -> list[dict]:
    """What the inbound filter_chain_matcher accepts, in filter_chain_match terms (tls first)."""
    by_transport = listener(cfgs[proxy_id], "virtualInbound_8080")["filter_chain_matcher"]["matcher_tree"]
    out = []
    for transport, on_match in sorted(by_transport["exact_match_map"]["map"].items(), reverse=True):
        if "matcher" in on_match:  # PERMISSIVE: TLS only with an Istio ALPN
            [m] = on_match["matcher"]["matcher_list"]["matchers"]
            regex = m["predicate"]["single_predicate"]["value_match"]["safe_regex"]["regex"]
            alpns = regex.removeprefix(".*'(").removesuffix(")'.*").replace("\\", "").split("|")
            out.append({"transport_protocol": transport, "application_protocols": alpns})
        else:
            out.append({"transport_protocol": transport})
    return out


def test_default_is_permissive_with_an_istio_alpn_tls_chain_and_a_plaintext_chain(tmp_path):
    topo, cfgs = configs(tmp_path)
    lst = listener(cfgs[V1], "virtualInbound_8080")
    assert lst["address"]["socket_address"]["port_value"] == topo.proxies[V1].inbound_ports[8080]
    assert lst["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    assert chains(cfgs, V1) == [
        {"transport_protocol": "tls", "application_protocols": ISTIO_ALPNS},
        {"transport_protocol": "raw_buffer"},
    ]
    tls_chain = lst["filter_chains"][0]
    assert tls_chain["name"] == "0.0.0.0_8080"
    ctx = tls_chain["transport_socket"]["typed_config"]
    assert ctx["require_client_certificate"] is True
    assert ctx["common_tls_context"]["validation_context"] == {
        "trusted_ca": {"filename": str(topo.proxies[V1].ca_file)}
    }
    hcm = hcms(lst)[0]
    assert hcm["stat_prefix"] == "inbound_0.0.0.0_8080;"
    assert hcm["rds"]["route_config_name"] == "inbound|8080||"
    [inbound_route] = route(cfgs[V1], "inbound|8080||")["virtual_hosts"][0]["routes"]
    assert inbound_route["route"]["cluster"] == "inbound|8080||" and inbound_route["route"]["timeout"] == "0s"
    assert "typed_per_filter_config" not in inbound_route
    app_socket = next(i.app_socket for i in topo.instances if i.proxy is topo.proxies[V1])
    endpoint = cluster(cfgs[V1], "inbound|8080||")["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"] == {"pipe": {"path": str(app_socket), "mode": 0o600}}
    assert rbac(cfgs, V1) == {}  # no AuthorizationPolicy: the RBAC filters enforce nothing
    # the caller identity headers become metadata and are removed before the app
    rules = hcm["http_filters"][0]["typed_config"]["request_rules"]
    assert {r["header"] for r in rules} >= {"x-lab-source-workload", "x-lab-source-workload-namespace"}
    assert all(r["remove"] for r in rules)
    plain_rules = hcms(lst)[1]["http_filters"][0]["typed_config"]["request_rules"]
    assert all(
        r["on_header_present"]["value"] == "unknown" for r in plain_rules
    )  # a plaintext caller can't forge


def test_namespace_strict_leaves_only_the_tls_chain(tmp_path):
    _, cfgs = configs(tmp_path, "peer-authentication-strict.yaml")
    assert chains(cfgs, V1) == [{"transport_protocol": "tls"}]


def test_workload_policy_beats_namespace_beats_mesh_and_unset_inherits(tmp_path):
    _, cfgs = configs(
        tmp_path,
        pa("default", "istio-system", "STRICT"),
        pa("ns", "payments-prod", "DISABLE"),
        pa("v2-unset", "payments-prod", "UNSET", V2_SELECTOR),
    )
    assert chains(cfgs, V1) == [{"transport_protocol": "raw_buffer"}]  # namespace DISABLE over mesh STRICT
    assert chains(cfgs, V2) == [{"transport_protocol": "raw_buffer"}]  # UNSET inherits the namespace
    _, cfgs = configs(
        tmp_path, pa("default", "istio-system", "STRICT"), pa("v2", "payments-prod", "DISABLE", V2_SELECTOR)
    )
    assert chains(cfgs, V1) == [{"transport_protocol": "tls"}]  # mesh-wide STRICT
    assert chains(cfgs, V2) == [{"transport_protocol": "raw_buffer"}]


def test_the_oldest_policy_wins_at_one_level(tmp_path):
    _, cfgs = configs(
        tmp_path, pa("first", "payments-prod", "STRICT"), pa("second", "payments-prod", "DISABLE")
    )
    assert chains(cfgs, V1) == [{"transport_protocol": "tls"}]


def test_port_level_mtls_overrides_by_target_port(tmp_path):
    port_level = "  portLevelMtls:\n    8080: {mode: PERMISSIVE}\n"
    _, cfgs = configs(tmp_path, pa("v2", "payments-prod", "STRICT", V2_SELECTOR, port_level))
    assert len(chains(cfgs, V2)) == 2  # PERMISSIVE on 8080 despite the workload's STRICT


def test_auto_mtls_follows_namespace_policy_but_not_workload_policy(tmp_path):
    _, cfgs = configs(tmp_path, pa("ns", "payments-prod", "DISABLE"))
    assert "transport_socket_matches" not in cluster(client(cfgs), f"outbound|8080||{CC}")
    _, cfgs = configs(tmp_path, pa("v2", "payments-prod", "DISABLE", V2_SELECTOR))
    assert "transport_socket_matches" in cluster(client(cfgs), f"outbound|8080||{CC}")


def rbac(cfgs, proxy_id: str) -> dict:
    """The enforced RBAC rules of a sidecar's inbound connection manager (its ECDS configs), by action."""
    [hcm, plaintext] = hcms(listener(cfgs[proxy_id], "virtualInbound_8080"))
    names = [f["name"] for f in hcm["http_filters"] if "config_discovery" in f]
    assert (
        names
        == [f["name"] for f in plaintext["http_filters"] if "config_discovery" in f]
        == [
            "envoy.filters.http.jwt_authn",
            "envoy.filters.http.rbac.deny",
            "envoy.filters.http.rbac.allow",
        ]
    )
    configs_ = [cfgs[proxy_id].extensions[n] for n in names[1:]]
    return {c["rules"]["action"]: c["rules"] for c in configs_ if "rules" in c}


def test_authorization_policies_become_deny_then_allow_rbac_rules_with_istio_policy_names(tmp_path):
    _, cfgs = configs(tmp_path, AUTHZ)
    for hcm in hcms(listener(cfgs[V1], "virtualInbound_8080")):  # both chains, mTLS and plaintext
        assert [f["name"] for f in hcm["http_filters"]] == [
            "envoy.filters.http.header_to_metadata",
            "envoy.filters.http.jwt_authn",  # RequestAuthentication (test_translate_jwt.py), before RBAC
            "envoy.filters.http.rbac.deny",
            "envoy.filters.http.rbac.allow",
            "envoy.filters.http.fault",
            "envoy.filters.http.router",
        ]
    rules = rbac(cfgs, V1)
    assert list(rules) == ["DENY", "ALLOW"]
    deny, allow = rules["DENY"], rules["ALLOW"]
    assert deny["action"] == "DENY" and list(deny["policies"]) == [
        "ns[payments-prod]-policy[deny-admin]-rule[0]"
    ]
    assert deny["policies"]["ns[payments-prod]-policy[deny-admin]-rule[0]"] == {
        "permissions": [{"and_rules": {"rules": [{"url_path": {"path": {"prefix": "/admin"}}}]}}],
        "principals": [{"any": True}],
    }
    assert allow["action"] == "ALLOW"
    rule0 = allow["policies"]["ns[payments-prod]-policy[allow-client]-rule[0]"]
    assert rule0["permissions"] == [
        {
            "and_rules": {
                "rules": [
                    {
                        "or_rules": {
                            "rules": [
                                {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                                {"header": {"name": ":method", "string_match": {"exact": "HEAD"}}},
                            ]
                        }
                    }
                ]
            }
        }
    ]
    assert rule0["principals"] == [
        {
            "and_ids": {
                "ids": [
                    {
                        "authenticated": {
                            "principal_name": {"exact": "spiffe://cluster.local/ns/payments-prod/sa/client"}
                        }
                    },
                    {"header": {"name": "x-team", "string_match": {"exact": "payments"}}},
                ]
            }
        }
    ]
    rule1 = allow["policies"]["ns[payments-prod]-policy[allow-client]-rule[1]"]
    assert rule1["principals"] == [
        {
            "and_ids": {
                "ids": [
                    {
                        "authenticated": {
                            "principal_name": {"safe_regex": {"regex": ".*/ns/istio\\-system/.*"}}
                        }
                    }
                ]
            }
        }
    ]
    assert rule1["permissions"] == [{"any": True}]


def test_an_allow_policy_without_rules_denies_everything(tmp_path):
    deny_all = (
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: allow-nothing, namespace: payments-prod}\nspec: {}\n"
    )
    _, cfgs = configs(tmp_path, deny_all)
    never = {"permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}
    assert rbac(cfgs, V2) == {  # rbacPolicyMatchNever
        "ALLOW": {"action": "ALLOW", "policies": {"ns[payments-prod]-policy[allow-nothing]-rule[0]": never}}
    }
