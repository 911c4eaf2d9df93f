"""Routes the proxy answers itself, as istiod's ``TranslateRoute`` builds them (route/route.go): an HTTP
redirect, or a direct response (what an HTTPRoute rule without any backend of weight > 0 gets: 500)."""

from __future__ import annotations

from typing import Any

#: ``ApplyRedirect``'s response codes (route/route.go); an unset code is 301.
REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}


def answer(http: dict, port: int) -> dict:
    """The Envoy route action of a ``redirect`` or a ``directResponse`` on listener ``port``
    (``ApplyRedirect``, ``ApplyDirectResponse``): ``%PREFIX()%`` rewrites the matched prefix; derivePort
    FROM_REQUEST_PORT is the listener's port, FROM_PROTOCOL_DEFAULT none; :80 for http, :443 for https left
    out."""
    redirect = http.get("redirect")
    if redirect is None:
        return {"direct_response": {"status": int(http["directResponse"]["status"])}}
    out: dict[str, Any] = {"response_code": REDIRECT_CODES[int(redirect.get("redirectCode") or 301)]}
    if redirect.get("authority"):
        out["host_redirect"] = redirect["authority"]
    uri = str(redirect.get("uri", ""))
    if uri.startswith("%PREFIX()%"):
        out["prefix_rewrite"] = uri.removeprefix("%PREFIX()%")
    elif uri:
        out["path_redirect"] = uri
    scheme = redirect.get("scheme") or "http"  # the local lab serves no TLS listener
    if redirect.get("scheme"):
        out["scheme_redirect"] = scheme
    number = redirect.get("port") or (port if redirect.get("derivePort") == "FROM_REQUEST_PORT" else 0)
    if number and (number, scheme) not in ((80, "http"), (443, "https")):
        out["port_redirect"] = int(number)
    return {"redirect": out}
