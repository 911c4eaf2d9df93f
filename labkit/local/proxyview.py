"""What a local Envoy actually runs, read from its admin API, in the shapes ``istioctl proxy-config ... -o
json`` gives on kind: lists of RouteConfiguration, Cluster and Listener from ``/config_dump``, the cluster
statuses of ``/clusters?format=json`` for endpoints. Field names stay Envoy's own (snake_case, as
``/config_dump`` prints them; istioctl re-encodes them camelCase).

Secrets: local sidecars read their certificates from files (no SDS), so ``/config_dump`` has no secrets
section; ``/certs`` reports the certificates Envoy loaded (SPIFFE URI SAN, serial, expiry), which is what
``istioctl proxy-config secret`` is used to check.

A workload is named as ``lab.send`` takes a source (resolve.py); which Service and port a route is read for
comes from the topology, so ``lab.route_weights`` asks the same route config a request to that Service takes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from labkit.errors import LabError
from labkit.local import envoy, resolve
from labkit.meshmodel import weighted_version

if TYPE_CHECKING:
    from labkit.local.topology import Proxy, Topology

ADMIN_TYPE = "type.googleapis.com/envoy.admin.v3."
#: What ``proxy_config`` can show: the ``/config_dump`` sections, then what other admin endpoints report.
SECTIONS = {
    "routes": "RoutesConfigDump",
    "clusters": "ClustersConfigDump",
    "listeners": "ListenersConfigDump",
}
KINDS = (*SECTIONS, "endpoints", "secrets")


def sidecar(topo: Topology, workload: str) -> Proxy:
    """The (first) Envoy of ``workload``; an error saying what to do when it has none."""
    found = resolve.proxies(topo, workload)
    if not found:
        raise LabError(
            f"workload {workload!r} has no sidecar, so no Envoy config to show",
            "pick an injected workload (lab.status() shows +sidecar), or label its namespace "
            "istio-injection=enabled",
        )
    return found[0]


def service_route_weights(topo: Topology, source: str, service: str, namespace: str) -> dict[str, int]:
    """``{subset: weight}`` as ``source``'s sidecar holds them for ``service`` (its first port)."""
    svc = next((s for s in topo.services if (s.name, s.namespace) == (service, namespace)), None)
    if svc is None or not svc.ports:
        raise LabError(f"no Service {service!r} with a port in namespace {namespace!r}")
    routes = proxy_config(sidecar(topo, source), "routes")
    return route_weights(routes, svc.fqdn, svc.ports[0].port)


def workload_mtls_mode(topo: Topology, workload: str) -> str | None:
    """The inbound mTLS mode ``workload``'s (first) sidecar enforces; None without a sidecar."""
    found = resolve.proxies(topo, workload)
    return mtls_mode(proxy_config(found[0], "listeners")) if found else None


def proxy_config(proxy: Proxy, what: str) -> list[dict[str, Any]]:
    """``what`` (routes, clusters, listeners, endpoints, secrets) as ``proxy`` reports it."""
    if what not in KINDS:
        raise LabError(f"unknown proxy config {what!r}", f"use one of {', '.join(KINDS)}")
    if what == "endpoints":
        return envoy.clusters(proxy).get("cluster_statuses", [])
    if what == "secrets":
        return json.loads(envoy.admin_get(proxy, "/certs")).get("certificates", [])
    dump: dict[str, Any] = next(
        (c for c in envoy.config_dump(proxy)["configs"] if c.get("@type") == ADMIN_TYPE + SECTIONS[what]), {}
    )
    if what == "routes":
        entries = dump.get("static_route_configs", []) + dump.get("dynamic_route_configs", [])
        return [e["route_config"] for e in entries]
    if what == "clusters":
        entries = dump.get("static_clusters", []) + dump.get("dynamic_active_clusters", [])
        return [e["cluster"] for e in entries]
    active = [e.get("active_state") or {} for e in dump.get("dynamic_listeners", [])]
    return [e["listener"] for e in dump.get("static_listeners", []) + active if "listener" in e]


def route_weights(routes: list[dict[str, Any]], host: str, port: int) -> dict[str, int]:
    """``{subset: weight}`` of the catch-all route for ``host`` in route config ``"<port>"`` (the route a
    request without special headers takes), like the kind backend reads istioctl's routes."""
    weights: dict[str, int] = {}
    for config in routes:
        if config.get("name") != str(port):
            continue
        for vhost in config.get("virtual_hosts") or []:
            if host not in (vhost.get("domains") or []) or not vhost.get("routes"):
                continue
            action = vhost["routes"][-1].get("route") or {}
            clusters = (action.get("weighted_clusters") or {}).get("clusters") or []
            if "cluster" in action:
                clusters = [{"name": action["cluster"], "weight": 100}]
            for cluster in clusters:
                version = weighted_version(cluster["name"], host)
                weights[version] = weights.get(version, 0) + int(cluster.get("weight", 0))
    return weights


def mtls_mode(listeners: list[dict[str, Any]]) -> str | None:
    """The inbound mTLS mode the listeners enforce: STRICT (TLS only), PERMISSIVE (TLS and plaintext), DISABLE
    (plaintext only); None without an inbound listener. Reads which transports the inbound listener accepts,
    from its ``filter_chain_matcher`` (as istiod builds it, pilot/pkg/networking/core/filterchain_options.go)
    or else its chains' ``filter_chain_match``; one ``virtualInbound_<port>`` per port here."""
    modes = []
    for listener in sorted(listeners, key=lambda x: x.get("name", "")):
        if listener.get("traffic_direction") != "INBOUND":
            continue
        tree = (listener.get("filter_chain_matcher") or {}).get("matcher_tree") or {}
        kinds = set((tree.get("exact_match_map") or {}).get("map") or {}) or {
            (c.get("filter_chain_match") or {}).get("transport_protocol")
            for c in listener.get("filter_chains") or []
        }
        modes.append(
            "PERMISSIVE" if kinds >= {"tls", "raw_buffer"} else "STRICT" if "tls" in kinds else "DISABLE"
        )
    return modes[0] if modes else None
