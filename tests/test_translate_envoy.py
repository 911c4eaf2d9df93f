"""Real Envoy 1.40 accepts what the translator generates, for every proxy, in the lab's scenarios."""

from __future__ import annotations

from support.envoy import configs, envoy_validate
from support.istio_yaml import (
    AUTHZ,
    FEATURES,
    GATEWAY,
    INGRESS_VS,
    POLICY_DR,
    SERVICE_ENTRY,
    V2_SELECTOR,
    pa,
    vs,
)


def test_envoy_accepts_the_canary_checkpoint(tmp_path):
    topo, cfgs = configs(
        tmp_path / "state",
        "peer-authentication-strict.yaml",
        "destination-rule-currency-converter.yaml",
        "virtual-service-currency-converter-90-10.yaml",
    )
    envoy_validate(topo, cfgs, tmp_path)


def test_envoy_accepts_every_supported_feature_at_once(tmp_path):
    allow_nothing = (
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: allow-nothing, namespace: istio-system}\n"
        "spec: {selector: {matchLabels: {istio: ingressgateway}}}\n"
    )
    topo, cfgs = configs(
        tmp_path / "state",
        vs(FEATURES),
        POLICY_DR.replace("tls: {mode: DISABLE}", "tls: {mode: ISTIO_MUTUAL}"),
        AUTHZ,
        allow_nothing,
        SERVICE_ENTRY,
        GATEWAY,
        INGRESS_VS,
        pa("default", "istio-system", "PERMISSIVE"),
        pa("v2", "payments-prod", "STRICT", V2_SELECTOR, "  portLevelMtls:\n    8080: {mode: DISABLE}\n"),
    )
    allow = cfgs["istio-ingressgateway.istio-system"].extensions["envoy.filters.http.rbac.allow"]
    assert list(allow["rules"]["policies"]) == [  # rbacPolicyMatchNever, which Envoy must accept too
        "ns[istio-system]-policy[allow-nothing]-rule[0]"
    ]
    envoy_validate(topo, cfgs, tmp_path)
