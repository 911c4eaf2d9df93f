"""End-user authentication with JWT on the local backend (notebook 18), through real Envoy and real HTTP:
RequestAuthentication → Envoy's jwt_authn (pilot/pkg/security/authn/policy_applier.go), requestPrincipals
and ``request.auth.claims[...]`` → RBAC on the verified payload (authz/model/generator.go). Tokens are
signed by a key made here (labkit.tokens, joserfc).

One lab for the module at the canary checkpoint; each test deletes what it applied.
"""

from __future__ import annotations

import pytest

from labkit import lesson, paths
from labkit.tokens import Issuer, bearer

pytestmark = pytest.mark.mesh

TASKS = paths.CLUSTER_CONFIG / "tasks"
URL = lesson.URL
REQUIRE_JWT = TASKS / "authorization-policy-currency-converter-require-jwt.yaml"
GROUP = TASKS / "authorization-policy-currency-converter-jwt-group.yaml"


def codes(lab, token: str | None = None, n: int = 5) -> dict:
    return lab.send(URL, n=n, headers=bearer(token) if token else None, progress=False).codes()


def test_a_bad_or_expired_token_gets_401_and_no_token_passes_until_a_policy_requires_one(lab):
    issuer = Issuer()
    authn = issuer.request_authentication()
    try:
        lab.apply(authn)
        assert codes(lab) == {200: 5}  # allow_missing: RequestAuthentication alone requires nothing
        assert codes(lab, issuer.token("jason")) == {200: 5}
        assert codes(lab, issuer.token("jason", expires_in=-120)) == {401: 5}  # Jwt is expired
        assert codes(lab, Issuer().token("jason")) == {401: 5}  # signed by another key
        assert codes(lab, "not-a-jwt") == {401: 5}
        lab.apply(REQUIRE_JWT)
        assert codes(lab) == {403: 5}  # no token, no request principal: RBAC denies
        assert codes(lab, issuer.token("jason")) == {200: 5}
        assert codes(lab, issuer.token("jason", expires_in=-120)) == {401: 5}  # authn runs before RBAC
    finally:
        lab.delete(REQUIRE_JWT)
        lab.delete(authn)
    assert codes(lab, "not-a-jwt") == {200: 5}  # nothing checks tokens any more


def test_a_claim_decides_and_a_list_claim_matches_when_it_holds_the_value(lab):
    issuer = Issuer()
    authn = issuer.request_authentication()
    try:
        lab.apply(authn)
        lab.apply(GROUP)
        assert codes(lab, issuer.token("ana", groups=["finance", "ops"])) == {200: 5}
        assert codes(lab, issuer.token("ana", groups="finance")) == {200: 5}
        assert codes(lab, issuer.token("bob", groups=["ops"])) == {403: 5}  # claim mismatch
        assert codes(lab, issuer.token("bob")) == {403: 5}  # no such claim
        assert codes(lab) == {403: 5}
    finally:
        lab.delete(GROUP)
        lab.delete(authn)


def test_a_request_principal_names_one_issuer_and_subject(lab):
    issuer = Issuer()
    authn = issuer.request_authentication()
    only_jason = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "only-jason", "namespace": "payments-prod"},
        "spec": {
            "selector": {"matchLabels": {"app": "currency-converter"}},
            "rules": [{"from": [{"source": {"requestPrincipals": [f"{issuer.issuer}/jason"]}}]}],
        },
    }
    try:
        lab.apply(authn)
        lab.apply(only_jason)
        assert codes(lab, issuer.token("jason")) == {200: 5}
        assert codes(lab, issuer.token("jasonx")) == {403: 5}
    finally:
        lab.delete(only_jason)
        lab.delete(authn)


def test_a_space_delimited_scope_claim_matches_one_of_its_words(lab):
    """``buildSpaceDelimitedClaims``: ``scope`` "read convert" is the list [read, convert] for matching."""
    issuer = Issuer()
    authn = issuer.request_authentication()
    scoped = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "convert-scope", "namespace": "payments-prod"},
        "spec": {
            "selector": {"matchLabels": {"app": "currency-converter"}},
            "rules": [{"when": [{"key": "request.auth.claims[scope]", "values": ["convert"]}]}],
        },
    }
    try:
        lab.apply(authn)
        lab.apply(scoped)
        assert codes(lab, issuer.token("ana", scope="read convert")) == {200: 5}
        assert codes(lab, issuer.token("ana", scope="read")) == {403: 5}
    finally:
        lab.delete(scoped)
        lab.delete(authn)
