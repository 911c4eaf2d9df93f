"""VirtualService → RouteConfiguration, as istiod's ``TranslateRoute`` does: one route per match, weighted
clusters without 0-weight entries, the mesh's default retry policy, ``timeout: 0s`` unless set, faults as
per-route fault-filter config, mirrors, rewrites and header operations. Sidecars get one config per port
(``"<port>"``, a vhost per host plus the outboundTrafficPolicy catch-all), the gateway one per server port
(``http.<port>``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.errors import ManifestError
from labkit.local.clusters import cluster_name
from labkit.local.registry import Host
from labkit.meshmodel import alt_names, host_matches, weights_route_nothing
from labkit.meshmodel import envoy_duration as duration
from labkit.meshmodel import fqdn as resolve_host

if TYPE_CHECKING:
    from labkit.local.topology import Proxy
    from labkit.manifests import Resource

ROUTE_CONFIG = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HTTP_FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
#: Headers a client proxy adds so the server proxy can report ``source_workload`` (no metadata exchange here).
SOURCE_WORKLOAD_HEADER = "x-lab-source-workload"
SOURCE_NAMESPACE_HEADER = "x-lab-source-namespace"


def default_retry_policy() -> dict:
    """The mesh default when a route sets no ``retries``: 2 retries on connection failures, not on a 503."""
    return {
        "retry_on": DEFAULT_RETRY_ON,
        "num_retries": 2,
        "retry_host_predicate": [
            {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": PREVIOUS_HOSTS}}
        ],
        "host_selection_retry_max_attempts": 5,
    }


def sidecar_route_config(
    proxy: Proxy, port: int, hosts: list[Host], virtual_services: list[Resource]
) -> dict:
    """Route config ``"<port>"``: a vhost ``<fqdn>:<port>`` per registry host on it, then a catch-all."""
    by_fqdn = {h.fqdn: h for h in hosts}
    vhosts = []
    for host in sorted((h for h in hosts if h.port(port)), key=lambda h: h.fqdn):
        vs = next((v for v in virtual_services if _binds(v, host.fqdn)), None)
        routes = http_routes(vs, port, by_fqdn) if vs else [_default_route(host, port)]
        domains = [host.fqdn, *alt_names(host.fqdn, proxy.namespace)]
        vhosts.append({"name": f"{host.fqdn}:{port}", "domains": domains, "routes": routes})
    block_all = {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}
    vhosts.append({"name": "block_all", "domains": ["*"], "routes": [block_all]})  # REGISTRY_ONLY
    return _route_config(str(port), vhosts, proxy)


def gateway_route_config(
    proxy: Proxy,
    port: int,
    server_hosts: list[str],
    virtual_services: list[Resource],
    hosts: list[Host],
    rbac: dict[str, dict],
) -> dict:
    """Route config ``http.<port>``: a vhost ``<host>:<port>`` per VirtualService host the server accepts;
    ``blackhole:<port>`` (no routes, so 404 NR) when no VirtualService binds. ``rbac``: per-route RBAC."""
    by_fqdn = {h.fqdn: h for h in hosts}
    vhosts, seen = [], set()
    for vs in virtual_services:
        for name in vs.spec.get("hosts") or []:
            if name in seen or not any(host_matches(s, name) or host_matches(name, s) for s in server_hosts):
                continue
            seen.add(name)
            routes = [_with_filters(r, rbac) for r in http_routes(vs, port, by_fqdn)]
            vhosts.append({"name": f"{name}:{port}", "domains": [name], "routes": routes})
    if not vhosts:
        vhosts.append({"name": f"blackhole:{port}", "domains": ["*"], "routes": []})
    return _route_config(f"http.{port}", vhosts, proxy)


def inbound_route_config(port: int, service: str, rbac: dict[str, dict]) -> dict:
    """``inbound|<port>||``: everything to the local app (no timeout), under the proxy's RBAC rules."""
    cluster = f"inbound|{port}||"
    route = {
        "name": "default",
        "match": {"prefix": "/"},
        "decorator": {"operation": f"{service}:{port}/*"},
        "route": {
            "cluster": cluster,
            "timeout": "0s",
            "retry_policy": {"retry_on": "reset-before-request", "num_retries": 2},
        },
    }
    return {
        "@type": ROUTE_CONFIG,
        "name": cluster,
        "validate_clusters": False,
        "virtual_hosts": [
            {"name": f"inbound|http|{port}", "domains": ["*"], "routes": [_with_filters(route, rbac)]}
        ],
    }


def _with_filters(route: dict, per_filter: dict[str, dict]) -> dict:
    """``route`` with more per-filter config (e.g. RBAC) merged into what it has (e.g. a fault)."""
    if not per_filter:
        return route
    return {**route, "typed_per_filter_config": {**route.get("typed_per_filter_config", {}), **per_filter}}


def _route_config(name: str, vhosts: list[dict], proxy: Proxy) -> dict:
    return {
        "@type": ROUTE_CONFIG,
        "name": name,
        "virtual_hosts": vhosts,
        "validate_clusters": False,
        "ignore_port_in_host_matching": True,
        "request_headers_to_add": [
            _header_value(SOURCE_WORKLOAD_HEADER, proxy.workload, "OVERWRITE_IF_EXISTS_OR_ADD"),
            _header_value(SOURCE_NAMESPACE_HEADER, proxy.namespace, "OVERWRITE_IF_EXISTS_OR_ADD"),
        ],
    }


def _binds(vs: Resource, fqdn: str) -> bool:
    return any(host_matches(resolve_host(h, vs.namespace), fqdn) for h in vs.spec.get("hosts") or [])


def _default_route(host: Host, port: int) -> dict:
    return {
        "name": "default",
        "match": {"prefix": "/", "case_sensitive": True},
        "decorator": {"operation": f"{host.fqdn}:{port}/*"},
        "metadata": _service_metadata(host.fqdn),
        "route": {
            "cluster": cluster_name(port, "", host.fqdn),
            "timeout": "0s",
            "retry_policy": default_retry_policy(),
        },
    }


def _service_metadata(fqdn: str) -> dict:
    """The destination service, for the request counter: known even when the cluster is not (503 NC)."""
    return {"filter_metadata": {"istio": {"service": fqdn}}}


def http_routes(vs: Resource, port: int, hosts: dict[str, Host]) -> list[dict]:
    """The Envoy routes of a VirtualService's ``http`` list; a catch-all match ends the list."""
    routes: list[dict] = []
    for i, http in enumerate(vs.spec.get("http") or []):
        path = f"spec.http[{i}]"
        action = _action(vs, http, path, port, hosts)
        for match in http.get("match") or [None]:
            route = dict(action)
            route["match"] = _match(match or {})
            name = http.get("name", "")
            if match and match.get("name"):
                name = f"{name}.{match['name']}"
            if name:
                route["name"] = name
            routes.append(route)
            if route["match"] == {"prefix": "/", "case_sensitive": True}:
                return routes
    return routes


def _destination(vs: Resource, dest: dict, port: int, hosts: dict[str, Host]) -> tuple[str, int, str]:
    """(fqdn, port, cluster) of a destination; port defaults to the host's only port, else the listener's."""
    fqdn = resolve_host(str(dest["host"]), vs.namespace)
    number = (dest.get("port") or {}).get("number")
    if number is None:
        host = hosts.get(fqdn)
        number = host.ports[0].port if host is not None and len(host.ports) == 1 else port
    return fqdn, int(number), cluster_name(int(number), dest.get("subset", ""), fqdn)


def _action(vs: Resource, http: dict, path: str, port: int, hosts: dict[str, Host]) -> dict:
    """Everything of one ``http`` entry except the match: route action, fault, mirror, headers, decorator."""
    where = vs.where
    dests = http.get("route") or []
    if not dests:
        raise ManifestError(f"{where}: field {path}.route is empty; add at least one destination")
    action: dict[str, Any] = {"timeout": duration(http.get("timeout")) or "0s"}
    route: dict[str, Any] = {}
    targets = [(d, _destination(vs, d["destination"], port, hosts)) for d in dests]
    if weights_route_nothing(d.get("weight") for d in dests):
        raise ManifestError(
            f"{where}: field {path}.route has several destinations whose weights total 0; give at least "
            "one a positive weight"
        )
    if len(targets) > 1:
        targets = [(d, t) for d, t in targets if int(d.get("weight", 0)) > 0]
    if len(targets) == 1:
        d, (_, _, name) = targets[0]
        action["cluster"] = name
        route.update(_header_ops(d.get("headers") or {}))
    else:
        action["weighted_clusters"] = {
            "clusters": [
                {"name": t[2], "weight": int(d["weight"]), **_header_ops(d.get("headers") or {})}
                for d, t in targets
            ]
        }
    fqdn, number, _ = targets[0][1]
    retry = _retry_policy(http.get("retries"))
    if retry is not None:
        action["retry_policy"] = retry
    mirror = _mirror(vs, http, port, hosts)
    if mirror is not None:
        action["request_mirror_policies"] = [mirror]
    rewrite = http.get("rewrite") or {}
    if "uri" in rewrite:
        action["prefix_rewrite"] = rewrite["uri"]
    if "authority" in rewrite:
        action["host_rewrite_literal"] = rewrite["authority"]
    route["route"] = action
    route["decorator"] = {"operation": f"{fqdn}:{number}/*"}
    route["metadata"] = _service_metadata(fqdn)
    fault = _fault(http.get("fault"))
    if fault is not None:
        route["typed_per_filter_config"] = {"envoy.filters.http.fault": fault}
    for key, value in _header_ops(http.get("headers") or {}).items():
        route[key] = route.get(key, []) + value
    return route


def _match(match: dict) -> dict:
    """``TranslateRouteMatch``: uri, headers (sorted by name), method, queryParams; always case_sensitive."""
    out: dict[str, Any] = {}
    uri = match.get("uri") or {}
    if "exact" in uri:
        out["path"] = uri["exact"]
    elif "prefix" in uri:
        out["prefix"] = uri["prefix"]
    elif "regex" in uri:
        out["safe_regex"] = {"regex": uri["regex"]}
    else:
        out["prefix"] = "/"
    out["case_sensitive"] = not match.get("ignoreUriCase", False)
    headers = [_header_match(name, m) for name, m in sorted((match.get("headers") or {}).items())]
    if match.get("method"):
        headers.append(_header_match(":method", match["method"]))
    if headers:
        out["headers"] = headers
    params = [
        {"name": name, "string_match": _string_match(m)}
        for name, m in sorted((match.get("queryParams") or {}).items())
    ]
    if params:
        out["query_parameters"] = params
    return out


def _string_match(m: dict) -> dict:
    if "exact" in m:
        return {"exact": m["exact"]}
    if "prefix" in m:
        return {"prefix": m["prefix"]}
    return {"safe_regex": {"regex": m["regex"]}}


def _header_match(name: str, m: dict) -> dict:
    if m.get("regex") == "*":
        return {"name": name, "present_match": True}
    return {"name": name, "string_match": _string_match(m)}


def _retry_policy(retries: dict | None) -> dict | None:
    """``retry.ConvertPolicy``: unset → the default; ``attempts: 0`` → none; else the default, overridden."""
    if retries is None:
        return default_retry_policy()
    attempts = int(retries.get("attempts", 0))
    if attempts <= 0:
        return None
    policy = default_retry_policy()
    policy["num_retries"] = attempts
    if retries.get("retryOn"):
        words = [w.strip() for w in str(retries["retryOn"]).split(",") if w.strip()]
        codes = [int(w) for w in words if w.isdigit()]
        on = [w for w in words if not w.isdigit()]
        if codes:
            policy["retriable_status_codes"] = codes
            if "retriable-status-codes" not in on:
                on.append("retriable-status-codes")
        policy["retry_on"] = ",".join(on)
    if retries.get("perTryTimeout"):
        policy["per_try_timeout"] = duration(retries["perTryTimeout"])
    return policy


def _percent(p: dict | None) -> dict | None:
    """An Istio percentage (0–100, fractional) as a FractionalPercent per million."""
    if p is None:
        return None
    return {"numerator": round(float(p.get("value", 0)) * 10000), "denominator": "MILLION"}


def _fault(fault: dict | None) -> dict | None:
    """``TranslateFault``; an unset percentage stays unset, which Envoy reads as 0% (as in Istio)."""
    if not fault:
        return None
    out: dict[str, Any] = {"@type": HTTP_FAULT}
    if "delay" in fault:
        delay = fault["delay"]
        out["delay"] = {"fixed_delay": duration(delay.get("fixedDelay"))}
        if delay.get("percentage") is not None:
            out["delay"]["percentage"] = _percent(delay["percentage"])
    if "abort" in fault:
        abort = fault["abort"]
        out["abort"] = {"http_status": int(abort["httpStatus"])}
        if abort.get("percentage") is not None:
            out["abort"]["percentage"] = _percent(abort["percentage"])
    return out


def _mirror(vs: Resource, http: dict, port: int, hosts: dict[str, Host]) -> dict | None:
    """``mirror`` + ``mirrorPercentage`` (unset = 100%, 0 = no mirror)."""
    if not http.get("mirror"):
        return None
    _, _, name = _destination(vs, http["mirror"], port, hosts)
    percent = _percent(http.get("mirrorPercentage")) or {"numerator": 1000000, "denominator": "MILLION"}
    if percent["numerator"] == 0:
        return None
    return {"cluster": name, "runtime_fraction": {"default_value": percent}, "trace_sampled": False}


def _header_value(key: str, value: str, append: str) -> dict:
    return {"header": {"key": key, "value": str(value)}, "append_action": append}


def _header_ops(headers: dict) -> dict[str, list]:
    """``headers.request/response`` set/add/remove as Envoy's header mutation fields."""
    out: dict[str, list] = {}
    for side in ("request", "response"):
        ops = headers.get(side) or {}
        add = [_header_value(k, v, "OVERWRITE_IF_EXISTS_OR_ADD") for k, v in (ops.get("set") or {}).items()]
        add += [_header_value(k, v, "APPEND_IF_EXISTS_OR_ADD") for k, v in (ops.get("add") or {}).items()]
        if add:
            out[f"{side}_headers_to_add"] = add
        if ops.get("remove"):
            out[f"{side}_headers_to_remove"] = list(ops["remove"])
    return out
