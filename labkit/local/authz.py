"""AuthorizationPolicy → ``envoy.filters.http.rbac`` filters for one proxy, as istiod's authz builder emits
them: a DENY filter, then an ALLOW filter, one policy per rule named ``ns[<ns>]-policy[<name>]-rule[<i>]``.

An ALLOW policy with no rules still emits the ALLOW filter (nothing matches, so everything is denied); with no
ALLOW policy at all there is no ALLOW filter. Envoy answers a denied request ``403 RBAC: access denied``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from labkit.local.registry import selects

if TYPE_CHECKING:
    from labkit.local.topology import Proxy
    from labkit.manifests import Resource

RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
_HEADER_KEY = re.compile(r"request\.headers\[([^\]]+)\]")


def applies(policy: Resource, proxy: Proxy, root_namespace: str) -> bool:
    """A policy applies in its own namespace, or mesh-wide from the root one; its selector must match."""
    if policy.namespace not in (proxy.namespace, root_namespace):
        return False
    return selects((policy.spec.get("selector") or {}).get("matchLabels"), proxy.labels)


def rbac_filters(
    policies: list[Resource], proxy: Proxy, root_namespace: str, trust_domain: str
) -> list[dict]:
    """The RBAC HTTP filters for ``proxy``: DENY first, then ALLOW; empty when no policy applies."""
    mine = [p for p in policies if applies(p, proxy, root_namespace)]
    filters = []
    for action in ("DENY", "ALLOW"):
        group = [p for p in mine if (p.spec.get("action") or "ALLOW") == action]
        if not group:
            continue
        rules: dict[str, Any] = {}
        for p in group:
            for i, rule in enumerate(p.spec.get("rules") or []):
                rules[f"ns[{p.namespace}]-policy[{p.name}]-rule[{i}]"] = _policy(rule or {}, trust_domain)
        filters.append(
            {
                "name": "envoy.filters.http.rbac",
                "typed_config": {"@type": RBAC, "rules": {"action": action, "policies": rules}},
            }
        )
    return filters


def _policy(rule: dict, trust_domain: str) -> dict:
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
