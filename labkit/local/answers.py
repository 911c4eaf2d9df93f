"""Routes the proxy answers itself, as istiod's ``TranslateRoute`` builds them (route/route.go): an HTTP
redirect, or a direct response (what an HTTPRoute rule without any backend of weight > 0 gets: 500)."""

from __future__ import annotations

from typing import Any

#: translateRedirectResponseCode (route/route.go).
REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}


def answer(http: dict) -> dict:
    """The Envoy route action of a ``redirect`` (``%PREFIX()%`` rewrites the matched prefix; derivePort
    FROM_PROTOCOL_DEFAULT sets the scheme's port) or a ``directResponse``."""
    route: dict[str, Any] = {}
    redirect = http.get("redirect")
    if redirect is None:
        route["direct_response"] = {"status": int(http["directResponse"]["status"])}
        return route
    out: dict[str, Any] = {"response_code": REDIRECT_CODES[int(redirect.get("redirectCode", 301))]}
    if redirect.get("authority"):
        out["host_redirect"] = redirect["authority"]
    if redirect.get("scheme"):
        out["scheme_redirect"] = redirect["scheme"]
    if redirect.get("port"):
        out["port_redirect"] = int(redirect["port"])
    elif redirect.get("derivePort") == "FROM_PROTOCOL_DEFAULT":
        out["port_redirect"] = 443 if redirect.get("scheme") == "https" else 80
    uri = str(redirect.get("uri", ""))
    if uri.startswith("%PREFIX()%"):
        out["prefix_rewrite"] = uri.removeprefix("%PREFIX()%")
    elif uri:
        out["path_redirect"] = uri
    route["redirect"] = out
    return route
