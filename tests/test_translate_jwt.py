"""RequestAuthentication and the JWT parts of AuthorizationPolicy → Envoy config, in istiod's shapes
(pilot/pkg/security/authn/policy_applier.go ``convertToEnvoyJwtConfig``; authz/model/generator.go
``requestPrincipalGenerator``, ``requestClaimGenerator``); real Envoy accepts them. Through real traffic:
tests/test_tasks_jwt.py."""

from __future__ import annotations

import json

import pytest
from support.envoy import configs, envoy_validate, hcms, listener

from labkit import manifests
from labkit.errors import UnsupportedError, ValidationError
from labkit.local import authz
from labkit.local.requestauthn import FILTER
from labkit.local.supported import check_supported
from labkit.tokens import Issuer
from labkit.validation import check

V1 = "sidecar~currency-converter-v1-0.payments-prod"
V2 = "sidecar~currency-converter-v2-0.payments-prod"


def request_authentication(*issuers: Issuer, name: str = "jwt", namespace: str = "payments-prod") -> dict:
    body = issuers[0].request_authentication(name=name, namespace=namespace)
    body["spec"]["jwtRules"] = [{"issuer": i.issuer, "jwks": i.jwks} for i in issuers]
    return body


def to_yaml(body: dict) -> str:
    import yaml

    return yaml.safe_dump(body)


def test_one_issuer_is_one_provider_with_allow_missing_before_rbac_and_envoy_accepts_it(tmp_path):
    issuer = Issuer()
    body = request_authentication(issuer)
    body["spec"]["selector"]["matchLabels"]["version"] = "v1"
    topo, cfgs = configs(tmp_path, to_yaml(body))
    jwt = cfgs[V1].extensions[FILTER]
    assert jwt["providers"] == {
        "origins-0": {
            "issuer": issuer.issuer,
            "local_jwks": {"inline_string": issuer.jwks},
            "payload_in_metadata": "payload",
            "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "scope"]},
        }
    }
    assert jwt["rules"] == [
        {
            "match": {"prefix": "/"},
            "requires": {
                "requires_any": {"requirements": [{"provider_name": "origins-0"}, {"allow_missing": {}}]}
            },
        }
    ]
    assert jwt["bypass_cors_preflight"] is True
    # on the inbound connection manager, before the RBAC filters; not on v2, which the policy does not select
    [hcm, *_] = hcms(listener(cfgs[V1], "virtualInbound_8080"))
    names = [f["name"] for f in hcm["http_filters"]]
    assert names.index(FILTER) < names.index("envoy.filters.http.rbac.deny")
    assert cfgs[V2].extensions[FILTER] == {"@type": jwt["@type"]}  # checks nothing
    envoy_validate(topo, cfgs, tmp_path / "validate")


def test_two_issuers_any_provider_or_every_present_token_valid_sorted_by_issuer():
    """More than one provider: OR{P0, P1, AND{OR{P0, allow_missing}, OR{P1, allow_missing}}}."""
    from labkit.local.requestauthn import jwt_config
    from labkit.local.topology import Proxy

    b, a = Issuer("https://b.example"), Issuer("https://a.example")
    policy = manifests.load(request_authentication(b, a))
    proxy = Proxy("x", "sidecar", "payments-prod", "w", {"app": "currency-converter"}, "sa", "", 0, None)  # type: ignore[arg-type]
    config = jwt_config(policy, proxy, "istio-system")
    assert [p["issuer"] for p in config["providers"].values()] == ["https://a.example", "https://b.example"]
    [rule] = config["rules"]
    either = [
        {"requires_any": {"requirements": [{"provider_name": n}, {"allow_missing": {}}]}}
        for n in ("origins-0", "origins-1")
    ]
    assert rule["requires"] == {
        "requires_any": {
            "requirements": [
                {"provider_name": "origins-0"},
                {"provider_name": "origins-1"},
                {"requires_all": {"requirements": either}},
            ]
        }
    }


def _payload(key: str, value: dict) -> dict:
    return {"metadata": {"filter": FILTER, "path": [{"key": "payload"}, {"key": key}], "value": value}}


@pytest.mark.parametrize(
    ("value", "iss", "sub"),
    [
        ("https://auth.example/jason", {"exact": "https://auth.example"}, {"exact": "jason"}),
        ("https://auth.example/*", {"exact": "https://auth.example"}, {"safe_regex": {"regex": ".+"}}),
        ("*", {"safe_regex": {"regex": ".+"}}, {"safe_regex": {"regex": ".+"}}),
        ("*/jason", {"safe_regex": {"regex": ".+"}}, {"exact": "jason"}),
        ("*.example/jason", {"suffix": ".example"}, {"exact": "jason"}),
        ("https://auth.example/ja*", {"exact": "https://auth.example"}, {"prefix": "ja"}),
    ],
)
def test_request_principals_split_at_the_last_slash_into_iss_and_sub(value, iss, sub):
    [principal] = authz._policy({"from": [{"source": {"requestPrincipals": [value]}}]})["principals"]
    expected = {
        "and_ids": {"ids": [_payload("iss", {"string_match": iss}), _payload("sub", {"string_match": sub})]}
    }
    assert principal == {"and_ids": {"ids": [expected]}}


def test_a_claim_condition_matches_the_value_or_a_list_holding_it_and_not_values_negate_it():
    policy = authz._policy(
        {
            "when": [
                {"key": "request.auth.claims[groups]", "values": ["finance", "ops*"], "notValues": ["intern"]}
            ]
        }
    )
    one_of = {
        "or_match": {
            "value_matchers": [{"string_match": {"exact": "finance"}}, {"string_match": {"prefix": "ops"}}]
        }
    }
    intern = {"string_match": {"exact": "intern"}}
    [principal] = policy["principals"]
    assert principal == {
        "and_ids": {
            "ids": [
                _payload(
                    "groups", {"or_match": {"value_matchers": [{"list_match": {"one_of": one_of}}, one_of]}}
                ),
                {
                    "not_id": _payload(
                        "groups",
                        {"or_match": {"value_matchers": [{"list_match": {"one_of": intern}}, intern]}},
                    )
                },
            ]
        }
    }
    nested = authz._policy({"when": [{"key": "request.auth.claims[realm][role]", "values": ["admin"]}]})
    path = nested["principals"][0]["and_ids"]["ids"][0]["metadata"]["path"]
    assert path == [{"key": "payload"}, {"key": "realm"}, {"key": "role"}]


def test_jwks_uri_and_other_jwt_fields_are_refused_by_name_and_a_rule_needs_inline_keys():
    body = request_authentication(Issuer())
    body["spec"]["jwtRules"][0]["jwksUri"] = "https://auth.meshlab.example/jwks.json"
    with pytest.raises(UnsupportedError, match=r"spec\.jwtRules\[0\]\.jwksUri is not supported by the local"):
        check_supported(manifests.load(body))
    body["spec"]["jwtRules"][0] = {
        "issuer": "https://auth.meshlab.example",
        "fromHeaders": [{"name": "x-jwt"}],
    }
    with pytest.raises(UnsupportedError, match=r"spec\.jwtRules\[0\]\.fromHeaders is not supported"):
        check_supported(manifests.load(body))
    body["spec"]["jwtRules"][0] = {"issuer": "https://auth.meshlab.example"}
    with pytest.raises(UnsupportedError, match=r"spec\.jwtRules\[0\]\.jwks is required by the local backend"):
        check_supported(manifests.load(body))
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "payments-prod"},
        "spec": {"rules": [{"when": [{"key": "request.auth.audiences", "values": ["a"]}]}]},
    }
    with pytest.raises(
        UnsupportedError, match=r"spec\.rules\[0\]\.when\[0\]\.key value 'request\.auth\.audiences'"
    ):
        check_supported(manifests.load(policy))


def test_validation_rejects_a_jwks_that_does_not_parse_and_an_empty_issuer_and_warns_of_private_keys():
    body = request_authentication(Issuer())
    body["spec"]["jwtRules"][0]["jwks"] = '{"keys": [{"kty": "RSA"}]}'
    with pytest.raises(ValidationError, match=r"spec\.jwtRules\[0\]\.jwks: jwks parse error"):
        check(manifests.load(body))
    body["spec"]["jwtRules"][0] = {"issuer": "", "jwks": Issuer().jwks}  # the CRD requires the key only
    with pytest.raises(ValidationError, match=r"spec\.jwtRules\[0\]\.issuer: '' should be non-empty"):
        check(manifests.load(body))
    from joserfc.jwk import RSAKey

    private = RSAKey.generate_key(2048).as_dict(private=True)
    body["spec"]["jwtRules"][0] = {
        "issuer": "https://x.example",
        "jwks": json.dumps({"keys": [private]}),
    }
    [warning] = [f for f in check(manifests.load(body)) if f.field == "spec.jwtRules[0].jwks"]
    assert warning.severity == "warning" and "contains private key material" in warning.message
