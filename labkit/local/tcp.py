"""Plain TCP ports (a Service port named ``tcp``, or ``appProtocol: tcp``) as istiod proxies them: whole
connections through ``envoy.filters.network.tcp_proxy``, routed by a VirtualService's ``tcp`` routes.

Outbound (pilot/pkg/networking/core/networkfilter.go, ``buildOutboundNetworkFilters``): the first ``tcp``
route of the host's VirtualService whose ``match`` names this port (or has no match) decides; one
destination is ``tcp_proxy.cluster`` with that cluster as stat prefix
(``buildOutboundNetworkFiltersWithSingleDestination``), several are ``weighted_clusters`` of those with
a weight above 0 and stat prefix ``<vs name>.<namespace>``
(``buildOutboundNetworkFiltersWithWeightedClusters``); no route is the service's default cluster
``outbound|<port>||<fqdn>``. Inbound: ``tcp_proxy`` to ``inbound|<port>||`` on the same mTLS/plaintext
filter chains as HTTP (listeners.py).

Where this differs from a cluster: Istio binds a TCP port's outbound listener to the Service's ClusterIP
(``<ip>_<port>``), so two Services may share a TCP port number; local sidecars have no Service IPs, so the
listener is ``0.0.0.0_<port>`` and one TCP port number belongs to one host (``tcp_hosts`` refuses the rest).
AuthorizationPolicy guards the inbound chains with network RBAC filters (authz.py, listeners.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from labkit.errors import UnsupportedError
from labkit.local.clusters import cluster_name
from labkit.local.routes import _binds, _destination
from labkit.local.topology import TCP

if TYPE_CHECKING:
    from labkit.local.registry import Host
    from labkit.manifests import Resource

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def tcp_hosts(hosts: list[Host]) -> dict[int, Host]:
    """The registry's TCP ports, each with the one host on it; a port number that is TCP for one host and
    used by another (TCP or HTTP) is refused, as there are no Service IPs to tell them apart."""
    out: dict[int, Host] = {}
    for host in hosts:
        for port in host.ports:
            if port.protocol != TCP:
                continue
            others = [h.fqdn for h in hosts if h is not host and h.port(port.port)]
            if others:
                raise UnsupportedError(
                    f"port {port.port} is a TCP port of {host.fqdn} and also a port of {', '.join(others)}; "
                    "the local backend tells TCP services apart by port number only (Istio uses each "
                    "Service's ClusterIP). What to do: give the TCP port a number no other Service uses, or "
                    "use the kind backend (LAB_BACKEND=kind)"
                )
            out[port.port] = host
    return out


def tcp_proxy(
    stat_prefix: str, access_log: list[dict], cluster: str = "", weighted: Sequence[dict] = ()
) -> dict:
    """The ``tcp_proxy`` network filter: one cluster, or ``weighted_clusters``."""
    config: dict = {"@type": TCP_PROXY, "stat_prefix": stat_prefix, "access_log": access_log}
    if weighted:
        config["weighted_clusters"] = {"clusters": list(weighted)}
    else:
        config["cluster"] = cluster
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": config}


def outbound_tcp_proxy(
    host: Host, port: int, virtual_services: list[Resource], hosts: list[Host], access_log: list[dict]
) -> dict:
    """The outbound ``tcp_proxy`` for ``host``'s TCP ``port``, from the first VirtualService binding it."""
    vs = next((v for v in virtual_services if _binds(v, host.fqdn)), None)
    routes = _tcp_route(vs, port) if vs is not None else None
    if not routes:
        default = cluster_name(port, "", host.fqdn)
        return tcp_proxy(default, access_log, cluster=default)
    assert vs is not None
    by_fqdn = {h.fqdn: h for h in hosts}
    clusters = [
        (_destination(vs, r["destination"], port, by_fqdn)[2], int(r.get("weight", 0))) for r in routes
    ]
    if len(clusters) == 1:
        return tcp_proxy(clusters[0][0], access_log, cluster=clusters[0][0])
    weighted = [{"name": name, "weight": weight} for name, weight in clusters if weight > 0]
    return tcp_proxy(f"{vs.name}.{vs.namespace}", access_log, weighted=weighted)


def _tcp_route(vs: Resource, port: int) -> list[dict]:
    """The ``route`` of the first ``tcp`` entry that applies to ``port`` (a match on it, or no match)."""
    for tcp in vs.spec.get("tcp") or []:
        matches = tcp.get("match") or [{}]
        if any(m.get("port") in (None, port) for m in matches):
            return list(tcp.get("route") or [])
    return []
