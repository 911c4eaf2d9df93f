"""AuthorizationPolicy on a TCP port: network RBAC filters before ``tcp_proxy`` on both inbound chains, as
istiod's ``BuildTCP`` makes them (pilot/pkg/security/authz/builder/builder.go ``buildTCP``), with the
HTTP-only fields handled as ``Generate(forTCP)`` does (authz/model/generator.go, model.go ``checkError``).
Traffic through real Envoy: tests/test_tasks_tcp_authz.py."""

from __future__ import annotations

from support.envoy import configs, envoy_validate, listener
from support.istio_yaml import AUTHZ, GATEWAY

V1 = "sidecar~currency-converter-v1-0.payments-prod"
NETWORK_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
PORTS = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-tcp, namespace: payments-prod}
spec:
  selector: {matchLabels: {app: currency-converter}}
  action: DENY
  rules:
  - to: [{operation: {ports: ["9001"], notPorts: ["8080"]}}]
  - to: [{operation: {ports: ["7777"]}}]
"""


def tcp_rbac(cfgs, proxy_id: str = V1) -> dict:
    """The network RBAC configs of the TCP port's inbound chains (by ECDS), by action."""
    chains = listener(cfgs[proxy_id], "virtualInbound_9001")["filter_chains"]
    names = [[f["name"] for f in chain["filters"]] for chain in chains]
    assert (
        names
        == [
            [
                "envoy.filters.network.rbac.deny",
                "envoy.filters.network.rbac.allow",
                "envoy.filters.network.tcp_proxy",
            ]
        ]
        * 2
    )
    return {name.rsplit(".", 1)[1]: cfgs[proxy_id].extensions[name] for name in names[0][:2]}


def test_http_only_fields_drop_an_allow_rule_and_widen_a_deny_rule_on_tcp(tmp_path):
    _, cfgs = configs(tmp_path, AUTHZ)
    rbac = tcp_rbac(cfgs)
    assert {c["@type"] for c in rbac.values()} == {NETWORK_RBAC}
    assert {c["stat_prefix"] for c in rbac.values()} == {"tcp."}  # RBACTCPFilterStatPrefix
    # DENY paths [/admin*]: the path condition is left out, so the rule denies every connection
    assert rbac["deny"]["rules"] == {
        "action": "DENY",
        "policies": {
            "ns[payments-prod]-policy[deny-admin]-rule[0]": {
                "permissions": [{"any": True}],
                "principals": [{"any": True}],
            }
        },
    }
    # ALLOW: rule 0 (methods and a header condition) is skipped, rule 1 (a namespace) keeps its name
    allow = rbac["allow"]["rules"]["policies"]
    assert list(allow) == ["ns[payments-prod]-policy[allow-client]-rule[1]"]
    # the HTTP chain keeps every rule
    http = cfgs[V1].extensions["envoy.filters.http.rbac.allow"]["rules"]["policies"]
    assert list(http) == ["ns[payments-prod]-policy[allow-client]-rule[0]", *allow]
    assert (
        http["ns[payments-prod]-policy[allow-client]-rule[1]"]
        == allow["ns[payments-prod]-policy[allow-client]-rule[1]"]
    )


def test_an_allow_policy_whose_only_rule_is_http_only_allows_no_tcp_connection(tmp_path):
    methods = AUTHZ.split("---")[1].replace("  - from: [{source: {namespaces: [istio-system]}}]\n", "")
    _, cfgs = configs(tmp_path, methods)
    assert tcp_rbac(cfgs)["allow"]["rules"] == {"action": "ALLOW", "policies": {}}  # matches nothing
    assert "rules" not in tcp_rbac(cfgs)["deny"]  # no DENY policy: nothing enforced


def test_ports_match_the_listener_port_that_serves_the_target_port(tmp_path):
    topo, cfgs = configs(tmp_path, PORTS)
    local = topo.proxies[V1].inbound_ports
    rules = tcp_rbac(cfgs)["deny"]["rules"]["policies"]
    assert rules["ns[payments-prod]-policy[deny-tcp]-rule[0]"]["permissions"] == [
        {
            "and_rules": {
                "rules": [
                    {"destination_port": local[9001]},
                    {"not_rule": {"destination_port": local[8080]}},
                ]
            }
        }
    ]
    # a port this proxy does not serve matches no connection
    assert rules["ns[payments-prod]-policy[deny-tcp]-rule[1]"]["permissions"] == [
        {"and_rules": {"rules": [{"not_rule": {"any": True}}]}}
    ]
    http = cfgs[V1].extensions["envoy.filters.http.rbac.deny"]["rules"]["policies"]  # the same on HTTP
    assert (
        http["ns[payments-prod]-policy[deny-tcp]-rule[0]"]
        == rules["ns[payments-prod]-policy[deny-tcp]-rule[0]"]
    )


def test_a_gateway_port_is_its_target_port(tmp_path):
    """At the gateway, Istio's destination port is the ingress Service's targetPort (8080 for port 80)."""
    edge = PORTS.replace("payments-prod", "istio-system").replace(
        "app: currency-converter", "istio: ingressgateway"
    )
    topo, cfgs = configs(tmp_path, GATEWAY, edge.replace('"9001"', '"8080"'))
    deny = cfgs[topo.gateway.id].extensions["envoy.filters.http.rbac.deny"]["rules"]["policies"]
    [rule] = deny["ns[istio-system]-policy[deny-tcp]-rule[0]"]["permissions"]
    assert rule["and_rules"]["rules"][0] == {"destination_port": topo.gateway.gateway_ports[80]}


def test_envoy_accepts_the_network_rbac_filters(tmp_path):
    dry_run = PORTS.replace("name: deny-tcp,", "name: dry, annotations: {istio.io/dry-run: 'true'},")
    topo, cfgs = configs(tmp_path / "state", AUTHZ, PORTS, dry_run)
    shadow = tcp_rbac(cfgs)["deny"]
    assert shadow["shadow_rules_stat_prefix"] == "istio_dry_run_deny_"
    assert list(shadow["shadow_rules"]["policies"]) == [
        "ns[payments-prod]-policy[dry]-rule[0]",
        "ns[payments-prod]-policy[dry]-rule[1]",
    ]
    envoy_validate(topo, cfgs, tmp_path)
