"""RequestAuthentication → Envoy's ``jwt_authn`` filter for one proxy, as istiod builds it
(istio/istio pilot/pkg/security/authn/policy_applier.go ``newPolicyApplier``, ``convertToEnvoyJwtConfig``).

Every ``jwtRules`` entry of the policies that select the proxy (model/authentication.go
``GetJwtPoliciesForWorkload``: its namespace or the root one, selector matching) is one provider
``origins-<i>``, the rules sorted by issuer. A request passes the filter with no token (``allow_missing``) or
with a token one provider verifies; a token that fails (bad signature, expired, other issuer) gets
``401 Jwt verification fails`` / ``Jwt is expired`` from Envoy. Requiring a token is the AuthorizationPolicy's
job (``requestPrincipals``, authz.py), which reads the verified payload the filter puts in dynamic metadata
(``envoy.filters.http.jwt_authn`` → ``payload``).

The filter sits on the inbound and gateway connection managers before RBAC (plugin/authn/authentication.go
``BuildHTTP``: not outbound); its config comes from file-based ECDS like RBAC's, so a policy change leaves the
listener alone. Where istiod emits no filter, the config has no providers and no rules: it checks nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.local.authz import JWT_FILTER, JWT_PAYLOAD, applies

if TYPE_CHECKING:
    from labkit.local.topology import Proxy
    from labkit.manifests import Resource

JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
#: ``authn_model.EnvoyJwtFilterName``: the filter's name, also the metadata namespace RBAC matches.
FILTER = JWT_FILTER
#: ``buildSpaceDelimitedClaims`` without extra claims: these are split into lists for matching.
SPACE_DELIMITED = ["permission", "scope"]


def jwt_config(policies: list[Resource], proxy: Proxy, root_namespace: str) -> dict[str, Any]:
    """The ``jwt_authn`` filter config for ``proxy``; ``clear_route_cache`` is istiod's for non-sidecars."""
    rules = [
        rule for p in policies if applies(p, proxy, root_namespace) for rule in p.spec.get("jwtRules") or []
    ]
    rules.sort(key=lambda r: str(r.get("issuer", "")))  # slices.SortBy is stable, as list.sort
    config: dict[str, Any] = {"@type": JWT_AUTHN}
    if not rules:
        return config
    providers = {f"origins-{i}": _provider(rule, proxy.kind != "sidecar") for i, rule in enumerate(rules)}
    inner_and = [
        {"requires_any": {"requirements": [{"provider_name": n}, {"allow_missing": {}}]}} for n in providers
    ]
    if len(inner_and) == 1:
        requires = inner_and[0]
    else:  # any one provider, or else every token present valid: OR{P1, P2, ..., AND{OR{Pi, allow_missing}}}
        outer_or = [{"provider_name": n} for n in providers]
        requires = {
            "requires_any": {"requirements": [*outer_or, {"requires_all": {"requirements": inner_and}}]}
        }
    config |= {
        "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": requires}],
        "bypass_cors_preflight": True,
    }
    return config


def _provider(rule: dict, clear_route_cache: bool) -> dict[str, Any]:
    """One ``JwtProvider``: the issuer, the inline JWKS (``BuildLocalJwks`` inlines ``jwks`` as written), the
    payload in metadata; the original token is not forwarded (``forwardOriginalToken`` false)."""
    provider: dict[str, Any] = {
        "issuer": rule["issuer"],
        "local_jwks": {"inline_string": rule["jwks"]},
        "payload_in_metadata": JWT_PAYLOAD,  # filters.EnvoyJwtFilterPayload
        "normalize_payload_in_metadata": {"space_delimited_claims": SPACE_DELIMITED},
    }
    if clear_route_cache:
        provider["clear_route_cache"] = True
    return provider
