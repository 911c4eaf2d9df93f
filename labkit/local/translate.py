"""Istio resources → Envoy config for every local proxy, the way istiod builds it (pure functions).

The runtime keeps the set of applied Istio resources; after every change it calls ``ensure_ports`` (new
ServiceEntry ports and Gateway servers need listener ports), then ``translate``, and the control plane serves
each ``ProxyConfig`` over xDS (xds/).

outboundTrafficPolicy: REGISTRY_ONLY is implemented as in Istio (the ``block_all`` vhost answers 502 for an
unknown Host on a port that has a listener; a port without a listener is refused). ALLOW_ANY is not: Istio
passes unknown traffic to its *original destination*, which only iptables capture knows; here the app talks to
its sidecar's 127.0.0.1 port, so there is no original destination to pass to, and faking one (DNS from the
Host header) would reach places the kind cluster cannot. ``translate`` refuses it with UnsupportedError.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from labkit.errors import BackendError, UnsupportedError
from labkit.local.access_logging import FileLog, file_log
from labkit.local.authn import namespace_mode, port_mode
from labkit.local.authz import rbac_configs
from labkit.local.clusters import blackhole_cluster, inbound_cluster, outbound_clusters
from labkit.local.counters import source_tags
from labkit.local.credentials import secrets
from labkit.local.gateway_routes import gateway_route_config
from labkit.local.gateway_tls import downstream_tls, route_name, sni_hosts
from labkit.local.httproute import convert, is_gateway_semantics
from labkit.local.listeners import (
    gateway_listener,
    inbound_listener,
    outbound_listener,
    outbound_tcp_listener,
    tcp_access_logs,
)
from labkit.local.registry import Host, build_registry, of_kind
from labkit.local.requestauthn import FILTER as JWT_FILTER
from labkit.local.requestauthn import jwt_config
from labkit.local.routes import inbound_route_config, sidecar_route_config
from labkit.local.tcp import outbound_tcp_proxy, tcp_hosts
from labkit.local.topology import (
    INGRESS_TARGET_PORTS,
    Proxy,
    Topology,
    ensure_gateway_port,
    ensure_outbound_port,
)
from labkit.meshmodel import CLUSTER_DOMAIN, selects

if TYPE_CHECKING:
    from labkit.manifests import Resource
    from labkit.mesh import MeshSettings

__all__ = ["ProxyConfig", "ensure_ports", "gc_paused", "route_status", "translate"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while the lab translates and serves a change. The config of 100 proxies
    is some 100,000 dicts and lists, alive until the snapshot keeps the changed ones and refcounting frees
    the rest; meanwhile they set off collections that walk the whole heap (~35 ms of a push at 100
    sidecars, a full collection there takes ~50 ms). The translator makes no cycles, so nothing waits to be
    collected; GC is left as it was (the user's kernel may have turned it off)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class ProxyConfig:
    """One proxy's Envoy v3 resources (each with ``@type``), ready to write as file-xDS; ``extensions`` are
    ECDS filter configs by filter name (served over ADS by istiod)."""

    listeners: list[dict]
    clusters: list[dict]
    routes: list[dict]
    extensions: dict[str, dict] = field(default_factory=dict)


def ensure_ports(resources: list[Resource], topo: Topology, allocate_port: Callable[[], int]) -> bool:
    """Allocate listeners the applied resources need: every sidecar one (a socket) per ServiceEntry port,
    the gateway one (a port) per server port of a Gateway it runs. True if any was added (the runtime
    persists them)."""
    added = False
    resources = _istio_view(resources, topo)
    for se in of_kind(resources, "ServiceEntry"):
        for p in se.spec.get("ports") or []:
            added |= ensure_outbound_port(topo, int(p["number"]))
    for gw in _gateways_of(resources, topo.gateway):
        for server in gw.spec.get("servers") or []:
            added |= ensure_gateway_port(topo, int(server["port"]["number"]), allocate_port)
    return added


def translate(resources: list[Resource], topo: Topology, mesh: MeshSettings) -> dict[str, ProxyConfig]:
    """The Envoy config of every proxy in ``topo`` (keyed by proxy id) for the applied Istio ``resources``
    (checked by ``supported.check_supported`` once, when they were applied)."""
    if mesh.outbound_policy != "REGISTRY_ONLY":
        raise UnsupportedError(
            f"meshConfig.outboundTrafficPolicy.mode {mesh.outbound_policy} is not supported by the local "
            "backend: Istio forwards unknown hosts to the connection's original destination, which needs "
            "iptables capture; local sidecars have none. Use REGISTRY_ONLY (plus a ServiceEntry per external "
            "host) in cluster-config/istio/install.yaml, or the kind backend (LAB_BACKEND=kind)"
        )
    root = mesh.root_namespace
    resources = _istio_view(resources, topo, mesh.cluster_domain)
    pas = of_kind(resources, "PeerAuthentication")
    aps = of_kind(resources, "AuthorizationPolicy")
    ras = of_kind(resources, "RequestAuthentication")
    drs = of_kind(resources, "DestinationRule")
    vss = of_kind(resources, "VirtualService")
    hosts = build_registry(topo, of_kind(resources, "ServiceEntry"))
    auto_mtls = {
        h.fqdn: not h.external and namespace_mode(pas, h.namespace, root) != "DISABLE" for h in hosts
    }
    mesh_vss = [v for v in vss if "mesh" in (v.spec.get("gateways") or ["mesh"])]
    telemetries = of_kind(resources, "Telemetry")
    ports = sorted({p.port for h in hosts for p in h.ports})
    store = secrets(resources)
    tcp_ports = tcp_hosts(hosts)
    shared: dict[tuple, dict] = {}  # route configs by workload and port: one for all replicas
    out = {}
    for proxy in topo.sidecars:
        log_file = file_log(telemetries, proxy, root, mesh.access_log_file is not None)
        missing = [p for p in ports if p not in proxy.outbound_sockets]
        if missing:
            raise BackendError(
                f"proxy {proxy.id} has no outbound listener for {missing}: call ensure_ports first"
            )
        own = _favour_own_routes(mesh_vss, proxy.namespace)
        listeners = [
            outbound_tcp_listener(
                proxy,
                p,
                outbound_tcp_proxy(tcp_ports[p], p, own, hosts, _tcp_logs(proxy, log_file, tcp_ports[p])),
            )
            if p in tcp_ports
            else outbound_listener(proxy, p, log_file)
            for p in ports
        ]
        clusters = outbound_clusters(proxy, hosts, drs, auto_mtls, root, store)
        instance = topo.instance_of(proxy)
        assert instance is not None
        routes = [_sidecar_routes(shared, proxy, p, hosts, own) for p in ports if p not in tcp_ports]
        for target in sorted(proxy.inbound_ports):
            mode = port_mode(pas, proxy.namespace, proxy.labels, target, root)
            service = _inbound_service(topo, proxy, target)
            tcp = target in instance.tcp_sockets
            listeners.append(inbound_listener(proxy, target, mode, service, log_file, tcp))
            clusters.append(inbound_cluster(target, instance.app_address(target)))
            if not tcp:
                routes.append(inbound_route_config(target, service))
        clusters.append(blackhole_cluster())
        security = _security(ras, aps, proxy, root) if proxy.inbound_ports else {}
        out[proxy.id] = ProxyConfig(listeners, clusters, routes, security)
    out[topo.gateway.id] = _gateway(resources, topo.gateway, hosts, drs, vss, aps, auto_mtls, mesh)
    return out


def _gateway(
    resources: list[Resource],
    proxy: Proxy,
    hosts: list[Host],
    drs: list[Resource],
    vss: list[Resource],
    aps: list[Resource],
    auto_mtls: dict[str, bool],
    mesh: MeshSettings,
) -> ProxyConfig:
    """The ingress gateway (``mergeGateways``, pilot/pkg/model/gateway.go): each Gateway server port resolves
    to the ingress Service's targetPort (``resolvePorts``), which names the listener ``0.0.0.0_<target>`` and
    its route config ``http.<target>``; servers on one target share that route config."""
    servers: dict[int, list[tuple[dict, Resource]]] = {}
    for gw in _gateways_of(resources, proxy):
        for server in gw.spec.get("servers") or []:
            servers.setdefault(int(server["port"]["number"]), []).append((server, gw))
    missing = [p for p in servers if p not in proxy.gateway_ports]
    if missing:
        raise BackendError(
            f"the gateway has no listener port for Gateway server ports {missing}: call ensure_ports"
        )
    telemetries = of_kind(resources, "Telemetry")
    log_file = file_log(telemetries, proxy, mesh.root_namespace, mesh.access_log_file is not None)
    listeners, routes = [], []
    store = secrets(resources)
    for port in sorted(servers):
        target = INGRESS_TARGET_PORTS.get(port, port)
        if not any(server.get("tls") for server, _ in servers[port]):
            listeners.append(gateway_listener(proxy, port, target, log_file))
            routes.append(gateway_route_config(proxy, f"http.{target}", servers[port], vss, hosts))
            continue
        plain = next((gw for server, gw in servers[port] if not server.get("tls")), None)
        if plain is not None:
            raise UnsupportedError(
                f"{plain.where}: Gateway port {port} has both plain-text and TLS servers; the local backend "
                "(like istiod, which reports a conflict) serves one protocol per port. What to do: give the "
                "HTTP server another port number"
            )
        chains = []  # an HTTPS port: one filter chain and route config per server (gateway_tls.py)
        for server, gw in servers[port]:
            socket = downstream_tls(server, store, proxy.namespace)
            if socket is not None:
                name = route_name(server, gw)
                chains.append((name, sni_hosts(server), socket))
                routes.append(gateway_route_config(proxy, name, [(server, gw)], vss, hosts))
        if chains:  # Envoy needs a chain; with no credential at all the port stays closed
            listeners.append(gateway_listener(proxy, port, target, log_file, tls=chains))
    return ProxyConfig(
        listeners=listeners,
        clusters=[
            *outbound_clusters(proxy, hosts, drs, auto_mtls, mesh.root_namespace, secrets(resources)),
            blackhole_cluster(),
        ],
        routes=routes,
        extensions=_security(
            of_kind(resources, "RequestAuthentication"), aps, proxy, mesh.root_namespace, _targets(proxy)
        )
        if servers
        else {},
    )


def _sidecar_routes(
    shared: dict[tuple, dict], proxy: Proxy, port: int, hosts: list[Host], vss: list[Resource]
) -> dict:
    """The outbound route config of ``port``, built once for all replicas of a workload: it depends on the
    proxy's namespace, workload and labels only, and istiod too serves replicas one cached route config
    (pilot/pkg/networking/core/route/route_cache.go ``Cache.Key``; pilot/pkg/model/typed_xds_cache.go).
    Shared between proxies, so never changed in place."""
    key = (proxy.namespace, proxy.workload, tuple(sorted(proxy.labels.items())), port)
    if key not in shared:
        shared[key] = sidecar_route_config(proxy, port, hosts, vss)
    return shared[key]


def _security(
    ras: list[Resource], aps: list[Resource], proxy: Proxy, root: str, ports: dict[int, int] | None = None
) -> dict[str, dict]:
    """The ECDS configs of the security filters: jwt_authn (RequestAuthentication), then RBAC; ``ports``:
    the listener port for each port a policy's ``ports`` may name (authz.rbac_configs)."""
    return {JWT_FILTER: jwt_config(ras, proxy, root), **rbac_configs(aps, proxy, root, ports)}


def _targets(gateway: Proxy) -> dict[int, int]:
    """The gateway's listener port per targetPort: its ``destination.port`` in Istio (``resolvePorts``)."""
    return {INGRESS_TARGET_PORTS.get(p, p): local for p, local in gateway.gateway_ports.items()}


def _tcp_logs(proxy: Proxy, log_file: FileLog | None, host: Host) -> list[dict]:
    """The outbound ``tcp_proxy``'s access log and its TCP counters, reported as ``source``."""
    return tcp_access_logs(proxy, log_file, source_tags(proxy, host))


def _favour_own_routes(vss: list[Resource], namespace: str) -> list[Resource]:
    """``VirtualServicesForGateway`` (pilot/pkg/model/push_context.go): HTTPRoutes (gateway semantics) in
    the proxy's namespace come first, the "consumer override"; the first VirtualService for a host wins."""
    mine = [v for v in vss if v.namespace == namespace and is_gateway_semantics(v)]
    return mine + [v for v in vss if v not in mine]


def _istio_view(resources: list[Resource], topo: Topology, domain: str = CLUSTER_DOMAIN) -> list[Resource]:
    """The resources with Gateway API objects replaced by the Istio ones istiod converts them to."""
    return convert(resources, _services(topo), domain).resources


def route_status(resources: list[Resource], topo: Topology, mesh: MeshSettings) -> dict:
    """The status istiod writes on each HTTPRoute (parents with Accepted and ResolvedRefs) and Gateway
    (Accepted, Programmed, attachedRoutes per listener), by its key."""
    return convert(resources, _services(topo), mesh.cluster_domain).status


def _services(topo: Topology) -> list[tuple[str, str]]:
    return [(s.namespace, s.name) for s in topo.services]


def _gateways_of(resources: list[Resource], gateway: Proxy) -> list[Resource]:
    """The Gateways whose selector picks this gateway's pods (an empty selector picks every gateway)."""
    return [g for g in of_kind(resources, "Gateway") if selects(g.spec.get("selector"), gateway.labels)]


def _inbound_service(topo: Topology, proxy: Proxy, target: int) -> str:
    """The service a request on inbound ``target`` is for (the first Service of the workload targeting it)."""
    for s in topo.services:
        ours = s.namespace == proxy.namespace and s.selector and selects(s.selector, proxy.labels)
        if ours and any(p.target_port == target for p in s.ports):
            return s.fqdn
    return "unknown"
