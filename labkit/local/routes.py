"""VirtualService → RouteConfiguration, as istiod's ``TranslateRoute`` does: one route per match, weighted
clusters without 0-weight entries, the mesh's default retry policy, ``timeout: 0s`` unless set, faults as
per-route fault-filter config, mirrors, rewrites and header operations. Sidecars get one config per port
(``"<port>"``, a vhost per host plus the outboundTrafficPolicy catch-all), the gateway one per listener
(``http.<target port>``, built as ``buildGatewayHTTPRouteConfig`` does)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.errors import ManifestError
from labkit.local.answers import answer
from labkit.local.clusters import PEER_KEYS, cluster_name, peer_labels
from labkit.local.httproute import is_gateway_semantics
from labkit.local.registry import Host
from labkit.local.semantics import gateway_route
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
#: Headers a client proxy adds so the server proxy can report the ``source_*`` labels (Istio's metadata
#: exchange sends ``x-envoy-peer-metadata``), by ``peer_labels`` key.
PEER_HEADERS = {key: f"x-lab-source-{key.replace('_', '-')}" for key in PEER_KEYS}


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
        # A VirtualService with no route on this port (a match for another port) leaves the default route
        # (BuildSidecarVirtualHostWrapper skips it).
        routes = (http_routes(vs, port, by_fqdn) if vs else []) or [_default_route(host, port)]
        domains = [host.fqdn, *alt_names(host.fqdn, proxy.namespace)]
        vh = vhost(f"{host.fqdn}:{port}", domains, routes)
        if _in_mesh(host):
            vh["request_headers_to_add"] = identity_headers(proxy)
        vhosts.append(vh)
    block_all = {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}
    vhosts.append(vhost("block_all", ["*"], [block_all]))  # REGISTRY_ONLY (buildCatchAllVirtualHost)
    return route_config(str(port), vhosts)


def _in_mesh(host: Host) -> bool:
    """Some endpoint of ``host`` has a sidecar, which strips the identity headers before its app."""
    return any(e.instance and e.instance.proxy for eps in host.endpoints.values() for e in eps)


def identity_headers(proxy: Proxy) -> list[dict]:
    """The caller's workload for the server's ``source_workload`` label (Istio's metadata exchange does this
    with ``x-envoy-peer-metadata``). Only sent to in-mesh hosts; the server trusts it only over mTLS."""
    peer = peer_labels(proxy.workload, proxy.namespace, proxy.labels)
    return [_header_value(h, peer[k], "OVERWRITE_IF_EXISTS_OR_ADD") for k, h in PEER_HEADERS.items()]


def vhost(name: str, domains: list[str], routes: list[dict]) -> dict:
    """A vhost with ``include_request_attempt_count``, as ``GetProxyHeaders`` defaults it (the upstream
    sees ``x-envoy-attempt-count``)."""
    return {"name": name, "domains": domains, "routes": routes, "include_request_attempt_count": True}


def catch_all(route: dict) -> bool:
    """``IsCatchAllRoute``: prefix ``/`` (or regex ``.*``) with no header or query match."""
    match = route["match"]
    path = match.get("prefix") == "/" or (match.get("safe_regex") or {}).get("regex") == ".*"
    return path and not match.get("headers") and not match.get("query_parameters")


def inbound_route_config(port: int, service: str) -> dict:
    """``inbound|<port>||``: everything to the local app (no timeout); RBAC runs on the HCM (listeners.py)."""
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
        "virtual_hosts": [{"name": f"inbound|http|{port}", "domains": ["*"], "routes": [route]}],
    }


def route_config(name: str, vhosts: list[dict]) -> dict:
    return {
        "@type": ROUTE_CONFIG,
        "name": name,
        "virtual_hosts": vhosts,
        "validate_clusters": False,
        "ignore_port_in_host_matching": True,
    }


def _binds(vs: Resource, fqdn: str) -> bool:
    return any(host_matches(resolve_host(h, vs.namespace), fqdn) for h in vs.spec.get("hosts") or [])


def _default_route(host: Host, port: int) -> dict:
    return {
        "name": "default",
        "match": {"prefix": "/", "case_sensitive": True},
        "decorator": {"operation": f"{host.fqdn}:{port}/*"},
        "metadata": _service_metadata(host.fqdn, {host.fqdn: host}),
        "route": {
            "cluster": cluster_name(port, "", host.fqdn),
            "timeout": "0s",
            "retry_policy": default_retry_policy(),
        },
    }


def _service_metadata(fqdn: str, hosts: dict[str, Host]) -> dict:
    """The destination service, for the request counter: known even when the cluster is not (503 NC).
    Name and namespace as Istio's ``destination_service_name/namespace``: a Kubernetes Service's own, else
    the host itself in its ServiceEntry's namespace (``unknown`` for a host not in the registry)."""
    host = hosts.get(fqdn)
    name = fqdn.split(".")[0] if host is not None and not host.external else fqdn
    namespace = host.namespace if host is not None else "unknown"
    return {"filter_metadata": {"istio": {"service": fqdn, "name": name, "namespace": namespace}}}


def http_routes(vs: Resource, port: int, hosts: dict[str, Host]) -> list[dict]:
    """The Envoy routes of a VirtualService's ``http`` list; a catch-all match ends the list."""
    routes: list[dict] = []
    gateway_semantics = is_gateway_semantics(vs)
    for i, http in enumerate(vs.spec.get("http") or []):
        path = f"spec.http[{i}]"
        action = _action(vs, http, path, port, hosts)
        for match in http.get("match") or [None]:
            if match and match.get("port") not in (None, port):
                continue  # translateRoute: a match for another port yields no route here
            route = dict(action)
            route["match"] = _match(match or {})
            if gateway_semantics:
                route = gateway_route(route)
            name = http.get("name", "")
            if match and match.get("name"):
                name = f"{name}.{match['name']}"
            if name:
                route["name"] = name
            routes.append(route)
            if catch_all(route):  # BuildHTTPRoutesForVirtualService: nothing after it can match
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
    """``TranslateRoute`` + ``applyHTTPRouteDestination`` (route/route.go) for one ``http`` entry, except the
    match: route-level header operations first, the destination's appended after them (so its ``set`` wins);
    ``host``/``:authority`` in set/add become ``host_rewrite_literal`` (``rewrite.authority`` first, a
    destination's only when the route has none); several destinations are always ``weighted_clusters``,
    without 0-weight entries."""
    where = vs.where
    if http.get("redirect") or http.get("directResponse"):
        answered = _header_ops(http.get("headers") or {})  # response headers still apply
        answered.pop("authority", None)
        return {**answered, **answer(http, port)}
    dests = http.get("route") or []
    if not dests:
        raise ManifestError(f"{where}: field {path}.route is empty; add at least one destination")
    route: dict[str, Any] = _header_ops(http.get("headers") or {})
    authority = route.pop("authority", None)
    action: dict[str, Any] = {"timeout": duration(http.get("timeout")) or "0s"}
    rewrite = http.get("rewrite") or {}
    if "uri" in rewrite:
        action["prefix_rewrite"] = rewrite["uri"]
    if "uriRegexRewrite" in rewrite:
        regex = rewrite["uriRegexRewrite"]
        action["regex_rewrite"] = {"pattern": {"regex": regex["match"]}, "substitution": regex["rewrite"]}
    authority = rewrite.get("authority") or authority
    if authority:
        action["host_rewrite_literal"] = authority
    mirrors = [(http.get("mirror"), http.get("mirrorPercentage"))] + [
        (m.get("destination"), m.get("percentage")) for m in http.get("mirrors") or []
    ]  # applyHTTPRouteDestination: ``mirror`` first, then each of ``mirrors``
    policies = [p for dest, pct in mirrors if dest and (p := _mirror(vs, dest, pct, port, hosts))]
    if policies:
        action["request_mirror_policies"] = policies
    targets = [(d, _destination(vs, d["destination"], port, hosts)) for d in dests]
    if len(targets) == 1:
        d, (_, _, name) = targets[0]
        action["cluster"] = name
        ops = _header_ops(d.get("headers") or {})
        if ops.get("authority") and "host_rewrite_literal" not in action:
            action["host_rewrite_literal"] = ops["authority"]
        for key, value in ops.items():
            if key != "authority":
                route[key] = route.get(key, []) + value
    else:
        if weights_route_nothing(d.get("weight") for d in dests):
            raise ManifestError(
                f"{where}: field {path}.route has several destinations whose weights total 0; give at least "
                "one a positive weight"
            )
        targets = [(d, t) for d, t in targets if int(d.get("weight", 0)) > 0]
        action["weighted_clusters"] = {
            "clusters": [_weighted(t[2], int(d["weight"]), d.get("headers") or {}) for d, t in targets]
        }
    fqdn, number, _ = targets[0][1]
    retry = _retry_policy(http.get("retries"))
    if retry is not None:
        action["retry_policy"] = retry
    route["route"] = action
    route["decorator"] = {"operation": f"{fqdn}:{number}/*"}
    route["metadata"] = _service_metadata(fqdn, hosts)
    fault = _fault(http.get("fault"))
    if fault is not None:
        route["typed_per_filter_config"] = {"envoy.filters.http.fault": fault}
    return route


def _weighted(cluster: str, weight: int, headers: dict) -> dict:
    """``processWeightedDestination``: the cluster's own header operations and authority rewrite."""
    ops = _header_ops(headers)
    authority = ops.pop("authority", None)
    out: dict[str, Any] = {"name": cluster, "weight": weight, **ops}
    if authority:
        out["host_rewrite_literal"] = authority
    return out


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
    params = [_header_match(name, m) for name, m in sorted((match.get("queryParams") or {}).items())]
    if params:
        out["query_parameters"] = params
    return out


def _present(m: dict) -> bool:
    """``canBeConvertedToPresentMatch``: an empty match, or regex ``*`` (not RE2, read as presence)."""
    return not any(k in m for k in ("exact", "prefix", "regex")) or m.get("regex") == "*"


def _string_match(m: dict) -> dict:
    if "exact" in m:
        return {"exact": m["exact"]}
    if "prefix" in m:
        return {"prefix": m["prefix"]}
    return {"safe_regex": {"regex": m["regex"]}}


def _header_match(name: str, m: dict) -> dict:
    """``translateHeaderMatch`` and ``translateQueryParamMatch`` (the same shape)."""
    if _present(m or {}):
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
    """``TranslateFault``: a delay without ``fixedDelay`` or an abort without ``httpStatus`` is dropped (no
    fault at all when both are); a delay without percentage is 0% (the deprecated integer ``percent``, 0),
    an abort without percentage stays unset, which Envoy reads as 0%."""
    if not fault:
        return None
    out: dict[str, Any] = {"@type": HTTP_FAULT}
    delay = fault.get("delay") or {}
    if delay.get("fixedDelay") is not None:
        percent = _percent(delay.get("percentage")) or {"numerator": 0, "denominator": "HUNDRED"}
        out["delay"] = {"fixed_delay": duration(delay["fixedDelay"]), "percentage": percent}
    abort = fault.get("abort") or {}
    if abort.get("httpStatus") is not None:
        out["abort"] = {"http_status": int(abort["httpStatus"])}
        if abort.get("percentage") is not None:
            out["abort"]["percentage"] = _percent(abort["percentage"])
    return out if len(out) > 1 else None


def _mirror(
    vs: Resource, dest: dict, percentage: dict | None, port: int, hosts: dict[str, Host]
) -> dict | None:
    """One mirror destination and its percentage (unset = 100%, 0 = no mirror)."""
    _, _, name = _destination(vs, dest, port, hosts)
    percent = _percent(percentage) or {"numerator": 1000000, "denominator": "MILLION"}
    if percent["numerator"] == 0:
        return None
    # TranslateRequestMirrorPolicy: DISABLE_SHADOW_HOST_SUFFIX defaults to true (features/pilot.go), so the
    # mirrored request keeps the original Host instead of Envoy's ``<host>-shadow``.
    return {
        "cluster": name,
        "runtime_fraction": {"default_value": percent},
        "trace_sampled": False,
        "disable_shadow_host_suffix_append": True,
    }


def _header_value(key: str, value: str, append: str) -> dict:
    return {"header": {"key": key, "value": str(value)}, "append_action": append}


def _header_ops(headers: dict) -> dict[str, Any]:
    """``TranslateHeadersOperations``: set (overwrite) then add (append), each sorted by name; ``:``-headers
    and ``host`` are left out, ``host``/``:authority`` returned as ``authority`` (set wins over add)."""
    out: dict[str, Any] = {}
    for side in ("request", "response"):
        ops = headers.get(side) or {}
        add = []
        for key, append in (("set", "OVERWRITE_IF_EXISTS_OR_ADD"), ("add", "APPEND_IF_EXISTS_OR_ADD")):
            values = ops.get(key) or {}
            if side == "request":
                auth = [v for k, v in values.items() if k.lower() in ("host", ":authority")]
                if auth and (key == "set" or "authority" not in out):
                    out["authority"] = str(auth[-1])
            add += [_header_value(k, v, append) for k, v in sorted(values.items()) if not _internal(k)]
        if add:
            out[f"{side}_headers_to_add"] = add
        remove = [k for k in ops.get("remove") or [] if not _internal(k)]
        if remove:
            out[f"{side}_headers_to_remove"] = remove
    return out


def _internal(key: str) -> bool:
    """``isInternalHeader``: pseudo-headers and ``host`` cannot be mutated by Envoy."""
    return key.startswith(":") or key.lower() == "host"
