"""Gateway + VirtualService → the gateway's RouteConfiguration, as istiod's ``buildGatewayHTTPRouteConfig``
(pilot/pkg/networking/core/gateway.go) builds it from the Gateway servers on one listener and the
VirtualServices bound to their Gateways."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.local.routes import catch_all, http_routes, identity_headers, route_config, vhost
from labkit.meshmodel import fqdn as resolve_host

if TYPE_CHECKING:
    from labkit.local.registry import Host
    from labkit.local.topology import Proxy
    from labkit.manifests import Resource


def gateway_route_config(
    proxy: Proxy,
    name: str,
    servers: list[tuple[dict, Resource]],
    virtual_services: list[Resource],
    hosts: list[Host],
) -> dict:
    """Route config ``name`` (``http.<target port>``), as ``buildGatewayHTTPRouteConfig`` (core/gateway.go)
    builds it: per (server, bound VirtualService) the hosts in both (``NamesForNamespace`` honours a server's
    ``ns/`` prefix, ``Names.Intersection`` keeps the narrower name), one vhost per host merging the routes of
    every VirtualService (oldest first) with catch-alls last (``SortVHostRoutes``), vhosts sorted by name;
    ``blackhole:<port>`` (no routes: 404 NR) when none."""
    by_fqdn = {h.fqdn: h for h in hosts}
    vhosts: dict[str, dict] = {}
    built: dict[tuple[str, str], list[dict]] = {}
    for server, gw in servers:
        port = int(server["port"]["number"])
        for vs in virtual_services:
            if not _bound(vs, gw):
                continue
            server_hosts = _names_for_namespace(server.get("hosts") or [], vs.namespace, gw.namespace)
            vs_hosts = [resolve_host(str(h), vs.namespace) for h in vs.spec.get("hosts") or []]
            for hostname in _intersection(server_hosts, vs_hosts):  # ResolveVirtualServiceShortnames
                key = (vs.namespace, vs.name)
                if key not in built:
                    built[key] = http_routes(vs, port, by_fqdn)
                hostname = hostname.lower()
                if hostname in vhosts:
                    vhosts[hostname]["routes"] += built[key]
                else:
                    vhosts[hostname] = vhost(f"{hostname}:{port}", [hostname], list(built[key]))
    if not vhosts:
        port = int(servers[0][0]["port"]["number"])
        return route_config(name, [{"name": f"blackhole:{port}", "domains": ["*"], "routes": []}])
    for v in vhosts.values():
        v["routes"] = sorted(v["routes"], key=catch_all)  # stable: catch-alls last, order kept
    config = route_config(name, sorted(vhosts.values(), key=lambda v: v["name"]))
    config["request_headers_to_add"] = identity_headers(proxy)
    return config


def _bound(vs: Resource, gateway: Resource) -> bool:
    """The VirtualService lists ``gateway`` (``<ns>/<name>``, or a name in the VirtualService's namespace)."""
    refs = [g if "/" in g else f"{vs.namespace}/{g}" for g in vs.spec.get("gateways") or []]
    return f"{gateway.namespace}/{gateway.name}" in refs


def _names_for_namespace(server_hosts: list[str], namespace: str, gateway_namespace: str) -> list[str]:
    """``host.NamesForNamespace`` after ``sanitizeServerHostNamespace``: ``ns/host`` only for VirtualServices
    in ``ns`` (``.`` is the Gateway's namespace), ``*/host`` and ``host`` for all."""
    out = []
    for h in server_hosts:
        ns, sep, name = h.partition("/")
        if sep:
            ns = gateway_namespace if ns == "." else ns
            if ns not in (namespace, "*"):
                continue
            h = name
        out.append(h)
    return out


def _subset_of(a: str, b: str) -> bool:
    """``host.Name.SubsetOf``: every name ``a`` matches is matched by ``b``."""
    if b == "*":
        return True
    if b.startswith("*."):
        return a.endswith(b[1:])
    return a == b


def _intersection(server_hosts: list[str], vs_hosts: list[str]) -> list[str]:
    """``host.Names.Intersection``: for each pair, the narrower of the two when one contains the other."""
    out: list[str] = []
    for s in server_hosts:
        for v in vs_hosts:
            pick = s if _subset_of(s, v) else v if _subset_of(v, s) else None
            if pick is not None and pick not in out:
                out.append(pick)
    return out
