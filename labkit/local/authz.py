"""AuthorizationPolicy → Envoy RBAC for one proxy, as istiod's authz builder emits it: DENY rules, then ALLOW
rules, one policy per rule named ``ns[<ns>]-policy[<name>]-rule[<i>]``.

An ALLOW policy with no rules still yields ALLOW rules (nothing matches, so everything is denied); with no
ALLOW policy at all there are no ALLOW rules. Envoy answers a denied request ``403 RBAC: access denied``.

Unlike istiod, the rules ride on the routes (``RBACPerRoute``) of file-based RDS, not on the listener: the HCM
always carries two rule-less RBAC filters, so applying a policy rewrites a route file, which Envoy applies to
keep-alive connections at once (a listener change would only reach new connections, reference §9).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from labkit.meshmodel import selects

if TYPE_CHECKING:
    from labkit.local.topology import Proxy
    from labkit.manifests import Resource

RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
#: One filter per action, in istiod's order; distinct names, because per-route config is keyed by filter name.
FILTERS = {"DENY": "envoy.filters.http.rbac.deny", "ALLOW": "envoy.filters.http.rbac.allow"}
_HEADER_KEY = re.compile(r"request\.headers\[([^\]]+)\]")


def applies(policy: Resource, proxy: Proxy, root_namespace: str) -> bool:
    """A policy applies in its own namespace, or mesh-wide from the root one; its selector must match."""
    if policy.namespace not in (proxy.namespace, root_namespace):
        return False
    return selects((policy.spec.get("selector") or {}).get("matchLabels"), proxy.labels)


def rbac_filters() -> list[dict]:
    """The HCM's RBAC filters, DENY then ALLOW, rule-less (enforcing nothing) unless a route overrides."""
    return [{"name": name, "typed_config": {"@type": RBAC}} for name in FILTERS.values()]


def rbac_per_route(policies: list[Resource], proxy: Proxy, root_namespace: str) -> dict[str, dict]:
    """``typed_per_filter_config`` entries enforcing the policies that apply to ``proxy`` (empty: none do)."""
    mine = [p for p in policies if applies(p, proxy, root_namespace)]
    out = {}
    for action, filter_name in FILTERS.items():
        group = [p for p in mine if (p.spec.get("action") or "ALLOW") == action]
        if not group:
            continue
        rules: dict[str, Any] = {}
        for p in group:
            for i, rule in enumerate(p.spec.get("rules") or []):
                rules[f"ns[{p.namespace}]-policy[{p.name}]-rule[{i}]"] = _policy(rule or {})
        out[filter_name] = {"@type": RBAC_PER_ROUTE, "rbac": {"rules": {"action": action, "policies": rules}}}
    return out


def _policy(rule: dict) -> dict:
    """One rule: permissions = one per ``to`` (OR), principals = one per ``from`` (OR), ``when`` ANDed into
    each principal (header conditions are principal matchers in istiod)."""
    when = []
    for condition in rule.get("when") or []:
        header = _HEADER_KEY.fullmatch(condition["key"])  # check_supported admits request.headers[...] only
        if header and condition.get("values"):
            when.append(_or_ids([_header(header.group(1), v) for v in condition["values"]]))
    principals = []
    for f in rule.get("from") or [{}]:
        source = (f or {}).get("source") or {}
        ids = []
        if source.get("principals"):
            ids.append(_or_ids([_principal(p) for p in source["principals"]]))
        if source.get("namespaces"):
            ids.append(_or_ids([_namespace(ns) for ns in source["namespaces"]]))
        principals.append(_and_ids(ids + when))
    permissions = []
    for t in rule.get("to") or [{}]:
        op = (t or {}).get("operation") or {}
        rules = []
        if op.get("methods"):
            rules.append(_or_rules([{"header": {"name": ":method", **_match(m)}} for m in op["methods"]]))
        if op.get("paths"):
            rules.append(_or_rules([{"url_path": {"path": _string_match(p)}} for p in op["paths"]]))
        permissions.append({"and_rules": {"rules": rules}} if rules else {"any": True})
    return {"permissions": permissions, "principals": principals}


def _header(name: str, value: str) -> dict:
    return {"header": {"name": name, **_match(value)}}


def _principal(value: str) -> dict:
    """``cluster.local/ns/x/sa/y`` is matched as the peer certificate's ``spiffe://`` URI SAN."""
    if value == "*":
        return {"authenticated": {"principal_name": {"safe_regex": {"regex": ".+"}}}}
    return {"authenticated": {"principal_name": _string_match(value, prefix="spiffe://")}}


def _namespace(ns: str) -> dict:
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": f".*/ns/{re.escape(ns)}/.*"}}}}


def _string_match(value: str, prefix: str = "") -> dict:
    """Istio's wildcard strings: ``*`` any, ``x*`` prefix, ``*x`` suffix, else exact."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    if value.startswith("*"):
        return {"suffix": value[1:]}
    return {"exact": prefix + value}


def _match(value: str) -> dict:
    """A header matcher body (``present_match`` for ``*``)."""
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
