"""AuthorizationPolicy → Envoy RBAC for one proxy, as istiod's authz builder emits it
(pilot/pkg/security/authz/builder/builder.go ``build``/``buildHTTP``): one ``envoy.filters.http.rbac``
filter per action on the connection manager, DENY before ALLOW, one policy per rule named
``ns[<ns>]-policy[<name>]-rule[<i>]``.

A policy with no rules is one never-matching policy (so an ALLOW policy with no rules denies everything);
with no ALLOW policy at all there is no ALLOW filter. ``istio.io/dry-run: "true"`` policies go to
``shadow_rules`` (stats ``istio_dry_run_{allow,deny}_``): evaluated, logged and counted, never enforced.
Envoy answers a denied request ``403 RBAC: access denied``, before routing, so also where no route matches.

A TCP port's filter chain gets the same policies as network RBAC filters before ``tcp_proxy`` (``BuildTCP``/
``buildTCP``: ``envoy.filters.network.rbac``, stat prefix ``tcp.``), built with ``forTCP``: an HTTP-only
field (methods, paths, requestPrincipals, request.headers, request.auth.claims; authz/model/generator.go
returns "... is HTTP only") drops the whole rule from an ALLOW policy (``Builder.build`` logs "skipped rule
... on TCP filter chain" at debug level), so such a policy allows no connection, and is left out of a DENY
rule (model.go ``rule.checkError``), which then denies more. Envoy closes a denied connection at its first
byte.

The filters sit on the connection manager as istiod puts them, but their config comes from file-based ECDS
(``config_discovery``), one resource per filter: a policy change then leaves the listener as it is, so it
reaches keep-alive connections at their next request (ECDS applies to new streams) and the listener's
request counters are not re-created (a re-created filter chain would take its stats scope with it).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from labkit.meshmodel import selects

if TYPE_CHECKING:
    from labkit.local.topology import Proxy
    from labkit.manifests import Resource

RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
NETWORK_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
URI_TEMPLATE = "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"
#: The HCM's RBAC filters by action, in istiod's order (after AUDIT, which the local backend refuses); each
#: is also the name of the filter's ECDS resource.
FILTERS = {"DENY": "envoy.filters.http.rbac.deny", "ALLOW": "envoy.filters.http.rbac.allow"}
#: The TCP filter chain's network RBAC filters by action (``buildTCP``), also their ECDS resource names.
TCP_FILTERS = {"DENY": "envoy.filters.network.rbac.deny", "ALLOW": "envoy.filters.network.rbac.allow"}
TCP_STAT_PREFIX = "tcp."  # authz/model/model.go ``RBACTCPFilterStatPrefix``
DRY_RUN = "istio.io/dry-run"
SHADOW_PREFIX = {"ALLOW": "istio_dry_run_allow_", "DENY": "istio_dry_run_deny_"}  # authz/model/model.go
#: ``rbacPolicyMatchNever``: the one policy of an AuthorizationPolicy without rules.
MATCH_NEVER = {"permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}
_HEADER_KEY = re.compile(r"request\.headers\[([^\]]+)\]")
_CLAIMS_KEY = re.compile(r"request\.auth\.claims((?:\[[^\]]+\])+)")
#: Where jwt_authn (requestauthn.py) puts the verified token: ``MetadataValueMatcherForJWTClaim``'s filter
#: (``authn_model.EnvoyJwtFilterName``) and first key (``filters.EnvoyJwtFilterPayload``).
JWT_FILTER, JWT_PAYLOAD = "envoy.filters.http.jwt_authn", "payload"


def applies(policy: Resource, proxy: Proxy, root_namespace: str) -> bool:
    """A policy applies in its own namespace, or mesh-wide from the root one; its selector must match."""
    if policy.namespace not in (proxy.namespace, root_namespace):
        return False
    return selects((policy.spec.get("selector") or {}).get("matchLabels"), proxy.labels)


def dry_run(policy: Resource) -> bool:
    """``isDryRun``: the annotation parsed as a Go bool (``strconv.ParseBool``)."""
    value = str((policy.metadata.get("annotations") or {}).get(DRY_RUN, "false"))
    return value in ("1", "t", "T", "TRUE", "true", "True")


def rbac_configs(
    policies: list[Resource], proxy: Proxy, root_namespace: str, ports: dict[int, int] | None = None
) -> dict[str, dict]:
    """The RBAC filter config per action, HTTP (``FILTERS``) and TCP (``TCP_FILTERS``), for the policies
    that apply to ``proxy``: istiod's ``buildHTTP``/``buildTCP`` output, or a rule-less config (enforcing
    nothing) where istiod emits no filter. ``ports`` maps the port Istio sees as ``destination.port`` (a
    target port) to the proxy's listener port for it (default: the sidecar's inbound ports)."""
    mine = [p for p in policies if applies(p, proxy, root_namespace)]
    local = proxy.inbound_ports if ports is None else ports
    out = {}
    for tcp, filters in ((False, FILTERS), (True, TCP_FILTERS)):
        for action, name in filters.items():
            group = [p for p in mine if (p.spec.get("action") or "ALLOW") == action]
            config: dict[str, Any] = (
                {"@type": NETWORK_RBAC, "stat_prefix": TCP_STAT_PREFIX} if tcp else {"@type": RBAC}
            )
            enforced = [p for p in group if not dry_run(p)]
            shadow = [p for p in group if dry_run(p)]
            if enforced:
                config["rules"] = {"action": action, "policies": _policies(enforced, action, tcp, local)}
            if shadow:
                config["shadow_rules"] = {"action": action, "policies": _policies(shadow, action, tcp, local)}
                config["shadow_rules_stat_prefix"] = SHADOW_PREFIX[action]
            out[name] = config
    return out


def _policies(group: list[Resource], action: str, tcp: bool, ports: dict[int, int]) -> dict[str, dict]:
    rules: dict[str, dict] = {}
    for p in group:
        for i, rule in enumerate(p.spec.get("rules") or []):
            if tcp and action == "ALLOW" and _http_only(rule or {}):
                continue  # ``Builder.build``: ``Generate(forTCP)`` failed, the rule is skipped
            rules[f"ns[{p.namespace}]-policy[{p.name}]-rule[{i}]"] = _policy(rule or {}, tcp, ports)
        if not p.spec.get("rules"):
            rules[f"ns[{p.namespace}]-policy[{p.name}]-rule[0]"] = MATCH_NEVER
    return rules


def _http_only(rule: dict) -> bool:
    """Whether the rule uses a field generator.go calls "HTTP only" (of those the local backend takes)."""
    sources = [(f or {}).get("source") or {} for f in rule.get("from") or []]
    operations = [(t or {}).get("operation") or {} for t in rule.get("to") or []]
    return (
        any(s.get("requestPrincipals") for s in sources)
        or any(o.get(k) for o in operations for k in ("methods", "paths", "notPaths"))
        or bool(rule.get("when"))  # request.headers[...] and request.auth.claims[...] only (supported.py)
    )


def _policy(rule: dict, tcp: bool = False, ports: dict[int, int] | None = None) -> dict:
    """One rule (authz/model/model.go ``New``): permissions = one per ``to`` (OR), principals = one per
    ``from`` (OR), ``when`` ANDed into each principal (header conditions are principal matchers in istiod);
    a field's values are ORed and its ``not`` values are one negated OR after them. For a TCP chain
    (``tcp``) the HTTP-only fields are left out (a DENY rule; an ALLOW rule with one never gets here)."""
    http = not tcp
    when = []
    for condition in (rule.get("when") or []) if http else []:
        # check_supported admits request.headers[...] and request.auth.claims[...] only
        header, claims = _HEADER_KEY.fullmatch(condition["key"]), _CLAIMS_KEY.fullmatch(condition["key"])
        if header is not None:
            # model.go ``rule.principal``: the values ORed, then the notValues ORed under one ``not_id``
            if condition.get("values"):
                when.append(_or_ids([_header(header.group(1), v) for v in condition["values"]]))
            if condition.get("notValues"):
                when.append(
                    {"not_id": _or_ids([_header(header.group(1), v) for v in condition["notValues"]])}
                )
        elif claims is not None:  # an extended generator: one matcher for all values, ``not_id`` of it
            path = re.findall(r"\[([^\]]+)\]", claims.group(1))
            if condition.get("values"):
                when.append(_claim(path, condition["values"]))
            if condition.get("notValues"):
                when.append({"not_id": _claim(path, condition["notValues"])})
    principals = []
    for f in rule.get("from") or [{}]:
        source = (f or {}).get("source") or {}
        ids = []
        if source.get("principals"):
            ids.append(_or_ids([_principal(p) for p in source["principals"]]))
        if http and source.get("requestPrincipals"):  # model.go: after principals, before namespaces
            ids.append(_or_ids([_request_principal(p) for p in source["requestPrincipals"]]))
        if source.get("namespaces"):
            ids.append(_or_ids([_namespace(ns) for ns in source["namespaces"]]))
        principals.append(_and_ids(ids + when))
    permissions = []
    for t in rule.get("to") or [{}]:
        op = (t or {}).get("operation") or {}
        rules = []
        if http and op.get("methods"):
            rules.append(_or_rules([{"header": {"name": ":method", **_match(m)}} for m in op["methods"]]))
        if http and op.get("paths"):
            rules.append(_or_rules([_path(p) for p in op["paths"]]))
        if http and op.get("notPaths"):  # model.go ``rule.permission``: ``permissionNot(permissionOr(...))``
            rules.append({"not_rule": _or_rules([_path(p) for p in op["notPaths"]])})
        if op.get("ports"):  # ``destPortGenerator``, after paths (model.go ``New`` inserts it first)
            rules.append(_or_rules([_port(p, ports or {}) for p in op["ports"]]))
        if op.get("notPorts"):
            rules.append({"not_rule": _or_rules([_port(p, ports or {}) for p in op["notPorts"]])})
        permissions.append({"and_rules": {"rules": rules}} if rules else {"any": True})
    return {"permissions": permissions, "principals": principals}


def _port(value: str | int, ports: dict[int, int]) -> dict:
    """``destPortGenerator``: ``destination_port``, the connection's local port. In Istio that is the target
    port (iptables keeps the original destination); a local proxy listens for each target port on a port
    of its own, so the match names that one, and a port this proxy does not serve matches nothing."""
    local = ports.get(int(value))
    return {"destination_port": local} if local is not None else {"not_rule": {"any": True}}


def _header(name: str, value: str) -> dict:
    return {"header": {"name": name, **_match(value)}}


def _path(value: str) -> dict:
    """``pathGenerator``: a path with ``{*}``/``{**}`` is a URI template (``PathTemplateMatcher``), else a
    wildcard string."""
    if "{*}" in value or "{**}" in value:
        template = value.replace("{**}", "**").replace("{*}", "*")
        return {
            "uri_template": {
                "name": "uri-template",
                "typed_config": {"@type": URI_TEMPLATE, "path_template": template},
            }
        }
    return {"url_path": {"path": _string_match(value)}}


def _principal(value: str) -> dict:
    """``srcPrincipalGenerator``: ``cluster.local/ns/x/sa/y`` as the peer's ``spiffe://`` URI SAN."""
    return {"authenticated": {"principal_name": _string_match(value, prefix="spiffe://")}}


def _request_principal(value: str) -> dict:
    """``requestPrincipalGenerator``: ``<iss>/<sub>`` split at the last ``/`` (an issuer may be a URL), each
    half matched in the verified payload: ``*`` any, ``*x``/``x*`` a suffix/prefix on the side it is on."""
    any_: dict[str, Any] = {"safe_regex": {"regex": ".+"}}
    match_iss: dict[str, Any]
    match_sub: dict[str, Any]
    iss, found, sub = value.rpartition("/")
    if not found:
        iss, sub = value, ""
    if value == "*":
        match_iss, match_sub = any_, any_
    elif value.startswith("*"):
        if found:
            match_iss = any_ if iss == "*" else {"suffix": iss[1:]}
            match_sub = {"exact": sub}
        else:
            match_iss, match_sub = any_, {"suffix": value[1:]}
    elif value.endswith("*"):
        if found:
            match_iss, match_sub = {"exact": iss}, any_ if sub == "*" else {"prefix": sub[:-1]}
        else:
            match_iss, match_sub = {"prefix": value[:-1]}, any_
    else:
        match_iss, match_sub = {"exact": iss}, {"exact": sub}
    return _and_ids(
        [_payload(["iss"], {"string_match": match_iss}), _payload(["sub"], {"string_match": match_sub})]
    )


def _claim(path: list[str], values: list[str]) -> dict:
    """``requestClaimGenerator`` (``MetadataListValueMatcherForJWTClaims``, extended JWT): the claim is one of
    the values, or a list holding one of them (a ``groups`` claim)."""
    matchers = [{"string_match": _string_match(v)} for v in values]
    value = matchers[0] if len(matchers) == 1 else {"or_match": {"value_matchers": matchers}}
    return _payload(path, {"or_match": {"value_matchers": [{"list_match": {"one_of": value}}, value]}})


def _payload(path: list[str], value: dict) -> dict:
    keys = [{"key": k} for k in (JWT_PAYLOAD, *path)]
    return {"metadata": {"filter": JWT_FILTER, "path": keys, "value": value}}


def _namespace(ns: str) -> dict:
    """``srcNamespaceGenerator``: each ``*`` in the namespace matches any characters."""
    pattern = ".*".join(re.escape(part) for part in ns.split("*"))
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": f".*/ns/{pattern}/.*"}}}}


def _string_match(value: str, prefix: str = "") -> dict:
    """``StringMatcherWithPrefix`` (authz/matcher/string.go): ``*`` any, ``*x`` suffix (a regex after
    ``prefix``), ``x*`` prefix, else exact."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.startswith("*"):
        if not prefix:
            return {"suffix": value[1:]}
        return {"safe_regex": {"regex": prefix + ".*" + re.escape(value[1:])}}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    return {"exact": prefix + value}


def _match(value: str) -> dict:
    """``matcher.HeaderMatcher``: ``present_match`` for ``*``, ``*x`` suffix, ``x*`` prefix, else exact."""
    if value == "*":
        return {"present_match": True}
    return {"string_match": _string_match(value)}


def _or_ids(ids: list[dict]) -> dict:
    return ids[0] if len(ids) == 1 else {"or_ids": {"ids": ids}}


def _and_ids(ids: list[dict]) -> dict:
    if not ids:
        return {"any": True}
    return {"and_ids": {"ids": ids}}


def _or_rules(rules: list[dict]) -> dict:
    return rules[0] if len(rules) == 1 else {"or_rules": {"rules": rules}}
