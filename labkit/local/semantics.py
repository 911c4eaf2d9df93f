"""What istiod builds differently for a route of an internal VirtualService with gateway semantics (one made
from an HTTPRoute, httproute.py), in core/route/route.go ``TranslateRouteMatch`` and
``applyHTTPRouteDestination``: PathPrefix matches whole segments, a backend that does not resolve answers
500 instead of 503, and rewriting a prefix to ``/`` removes it without leaving ``//``."""

from __future__ import annotations

#: The characters Go's ``regexp.QuoteMeta`` escapes.
_META = set("\\.+*?()|[]{}^$")


def gateway_route(route: dict) -> dict:
    """``route`` (match and action already built) with the gateway-semantics differences applied."""
    match = dict(route["match"])
    if match.get("prefix", "/") != "/":
        match["path_separated_prefix"] = match.pop("prefix")
    out = {**route, "match": match}
    action = route.get("route")
    if action is None:  # a redirect or a direct response
        return out
    action = {**action, "cluster_not_found_response_code": "INTERNAL_SERVER_ERROR"}
    if action.get("prefix_rewrite") == "/":
        del action["prefix_rewrite"]
        prefix = "".join(f"\\{c}" if c in _META else c for c in match.get("path_separated_prefix", ""))
        action["regex_rewrite"] = {"pattern": {"regex": f"^{prefix}(/?)(.*)"}, "substitution": "/\\2"}
    out["route"] = action
    return out
