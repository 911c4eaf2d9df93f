"""DestinationRule → Envoy clusters, as istiod's cluster builder makes them: one ``outbound|port||fqdn`` per
registry port plus one per DR subset, with the DR's traffic policy (a subset's policy replaces whole blocks)
and Istio's mTLS: explicit ``tls`` or auto mTLS (``transport_socket_matches`` on endpoint metadata).

Endpoints are STATIC 127.0.0.1 addresses: a sidecar's inbound listener, or the bare app when it has none; a
sidecar's inbound cluster is its own app's Unix socket (``address()``, the one place addresses are shaped).
A ServiceEntry with ``resolution: DNS`` is also STATIC here, because registry.py already resolved it to a
loopback address (the local backend never sends traffic off this machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.local.origination import originate
from labkit.local.registry import Host
from labkit.meshmodel import envoy_duration as duration
from labkit.meshmodel import fqdn as resolve_host
from labkit.meshmodel import host_matches, selects

if TYPE_CHECKING:
    from labkit.local.topology import Endpoint, Proxy
    from labkit.manifests import Resource

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
RAW_BUFFER = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
MAX = 4294967295
CONNECT_TIMEOUT = "10s"  # meshConfig.connectTimeout default
#: What Istio's ``istio.alpn`` filter puts on the wire for HTTP/1.1 upstreams; set statically here.
ISTIO_ALPN = ["istio-http/1.1", "istio", "http/1.1"]
TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}
LB_POLICIES = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
    "UNSPECIFIED": "LEAST_REQUEST",
}
POLICY_BLOCKS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")
CANONICAL_NAME = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
CANONICAL_REVISION = ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")
#: The keys of ``peer_labels``.
PEER_KEYS = (
    "workload",
    "workload_namespace",
    "app",
    "version",
    "canonical_service",
    "canonical_revision",
    "cluster",
)
#: Istio's default cluster ID (``CLUSTER_ID``), the ``*_cluster`` label of a single-cluster mesh.
CLUSTER_ID = "Kubernetes"


#: Mode of the sockets Envoy binds (admin API, outbound listeners): the lab's user only.
SOCKET_MODE = 0o600


def address(where: int | Path) -> dict:
    """An Envoy ``Address``: a 127.0.0.1 port, or a Unix socket (``pipe``) only the lab's user may open.

    Envoy unlinks a stale file at the path before it binds and chmods the socket to ``mode`` right after
    (``SocketImpl::bind``, source/common/network/socket_impl.cc in envoyproxy/envoy); the 0700 folder
    covers the moment between the two."""
    if isinstance(where, Path):
        return {"pipe": {"path": str(where), "mode": SOCKET_MODE}}
    return {"socket_address": {"address": "127.0.0.1", "port_value": where}}


def cluster_name(port: int, subset: str, fqdn: str) -> str:
    """istiod's ``BuildSubsetKey``."""
    return f"outbound|{port}|{subset}|{fqdn}"


def sni(port: int, subset: str, fqdn: str) -> str:
    """istiod's ``BuildDNSSrvSubsetKey``: the SNI a client sends, which the server sees as requested name."""
    return f"outbound_.{port}_.{subset}_.{fqdn}"


def find_destination_rule(drs: list[Resource], host: Host, proxy_namespace: str, root: str) -> dict | None:
    """The DestinationRule spec istiod applies to ``host`` for a proxy in ``proxy_namespace``.

    ``PushContext.destinationRule`` (pilot/pkg/model/push_context.go): the proxy's namespace first (a gateway
    in the root namespace skips this step), then the host's namespace, then the root namespace; within one
    namespace ``MostSpecificHostMatch`` (exact host before the longest matching wildcard). A DR in any other
    namespace never applies. Several DRs for one host in one namespace are one merged rule
    (``mergeDestinationRule``)."""
    order = [proxy_namespace] if proxy_namespace != root else []
    order += [host.namespace, root]
    for ns in dict.fromkeys(order):
        here = [(resolve_host(str(d.spec.get("host", "")), ns), d) for d in drs if d.namespace == ns]
        pattern = _most_specific([h for h, _ in here], host.fqdn)
        if pattern is not None:
            return merge_destination_rules([d for h, d in here if h == pattern])
    return None


def _most_specific(patterns: list[str], fqdn: str) -> str | None:
    """``MostSpecificHostMatch``: the exact host, else the longest wildcard that matches."""
    if fqdn in patterns:
        return fqdn
    wild = [p for p in patterns if p.startswith("*") and host_matches(p, fqdn)]
    return max(wild, key=len) if wild else None


def merge_destination_rules(drs: list[Resource]) -> dict:
    """``mergeDestinationRule`` (pilot/pkg/model/destination_rule.go), oldest first: subsets are concatenated
    (a later duplicate name is dropped), the first top-level ``trafficPolicy`` wins."""
    merged: dict = {"subsets": []}
    for dr in drs:
        if "trafficPolicy" not in merged and dr.spec.get("trafficPolicy") is not None:
            merged["trafficPolicy"] = dr.spec["trafficPolicy"]
        names = {s.get("name") for s in merged["subsets"]}
        merged["subsets"] += [s for s in dr.spec.get("subsets") or [] if s.get("name") not in names]
    return merged


def outbound_clusters(
    proxy: Proxy,
    hosts: list[Host],
    drs: list[Resource],
    auto_mtls: dict[str, bool],
    root: str,
    store: dict | None = None,
) -> list[dict]:
    """Every outbound cluster ``proxy`` needs: per host port, and per DR subset of that host; ``store``: the
    Secrets a DR's ``tls.credentialName`` reads (credentials.secrets)."""
    store = store or {}
    out = []
    for host in hosts:
        dr = find_destination_rule(drs, host, proxy.namespace, root)
        top = (dr.get("trafficPolicy") or {}) if dr else {}
        for port in host.ports:
            out.append(
                _cluster(
                    proxy, host, port.port, "", host.endpoints[port.port], top, auto_mtls[host.fqdn], store
                )
            )
            for subset in dr["subsets"] if dr else []:
                policy = merge_policy(top, subset.get("trafficPolicy") or {})
                labels = subset.get("labels") or {}
                eps = _subset_endpoints(host, port.port, labels)
                out.append(
                    _cluster(proxy, host, port.port, subset["name"], eps, policy, auto_mtls[host.fqdn], store)
                )
    return out


def merge_policy(top: dict, subset: dict) -> dict:
    """``MergeTrafficPolicy``: each block a subset sets replaces the top-level block whole."""
    merged = dict(top)
    merged.update({k: subset[k] for k in POLICY_BLOCKS if k in subset})
    return merged


def _cluster(
    proxy: Proxy,
    host: Host,
    port: int,
    subset: str,
    endpoints: list[Endpoint],
    policy: dict,
    auto_mtls: bool,
    store: dict,
) -> dict:
    name = cluster_name(port, subset, host.fqdn)
    cluster: dict[str, Any] = {
        "@type": CLUSTER,
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": LB_POLICIES[(policy.get("loadBalancer") or {}).get("simple", "UNSPECIFIED")],
        "alt_stat_name": f"{name};",
        "circuit_breakers": {"thresholds": [_thresholds(policy.get("connectionPool") or {})]},
        "common_lb_config": {},
        "metadata": {"filter_metadata": {"istio": {"service": host.fqdn, "subset": subset, "port": port}}},
        "load_assignment": _assignment(host, name, endpoints),
    }
    pool = policy.get("connectionPool") or {}
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    if "connectTimeout" in tcp:
        cluster["connect_timeout"] = duration(tcp["connectTimeout"])
    common = {
        key: value
        for key, value in (
            ("max_requests_per_connection", int(http.get("maxRequestsPerConnection") or 0) or None),
            ("idle_timeout", duration(http.get("idleTimeout"))),
            (
                "max_connection_duration",
                duration(tcp.get("maxConnectionDuration")),
            ),
        )
        if value is not None
    }
    tls_mode = (policy.get("tls") or {}).get("mode")
    auto_sni = False
    if tls_mode in ("SIMPLE", "MUTUAL"):  # TLS origination (origination.py)
        socket, auto_sni = originate(policy["tls"], store, proxy.namespace)
        if socket is None:  # its credential is missing: the cluster never warms, no endpoint serves
            cluster["load_assignment"] = {"cluster_name": name, "endpoints": []}
        else:
            cluster["transport_socket"] = socket
    if common or auto_sni:
        options: dict[str, Any] = {
            "@type": HTTP_OPTIONS,
            "explicit_http_config": {"http_protocol_options": {}},
        }
        if common:
            options["common_http_protocol_options"] = common
        if auto_sni:
            options["upstream_http_protocol_options"] = {"auto_sni": True, "auto_san_validation": True}
        cluster["typed_extension_protocol_options"] = {HTTP_OPTIONS_KEY: options}
    if policy.get("outlierDetection") is not None:
        _outlier(cluster, policy["outlierDetection"])
    if tls_mode == "ISTIO_MUTUAL":
        cluster["transport_socket"] = istio_mutual(proxy, host, port, subset)
    elif tls_mode is None and auto_mtls:
        cluster["transport_socket_matches"] = [
            {
                "name": "tlsMode-istio",
                "match": {"tlsMode": "istio"},
                "transport_socket": istio_mutual(proxy, host, port, subset),
            },
            {
                "name": "tlsMode-disabled",
                "match": {},
                "transport_socket": {
                    "name": "envoy.transport_sockets.raw_buffer",
                    "typed_config": {"@type": RAW_BUFFER},
                },
            },
        ]
    return cluster


def _thresholds(pool: dict) -> dict:
    """``applyConnectionPool`` (cluster_traffic_policy.go): a field counts only when ``> 0`` (0 means unset);
    ``track_remaining`` off, as ``getDefaultCircuitBreakerThresholds`` sets it
    (DISABLE_TRACK_REMAINING_CB_METRICS defaults to true in features/pilot.go)."""
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}

    def limit(value: Any) -> int:
        return int(value) if value is not None and int(value) > 0 else MAX

    return {
        "max_connections": limit(tcp.get("maxConnections")),
        "max_pending_requests": limit(http.get("http1MaxPendingRequests")),
        "max_requests": limit(http.get("http2MaxRequests")),
        "max_retries": limit(http.get("maxRetries")),
        "track_remaining": False,
    }


def _outlier(cluster: dict, od: dict) -> None:
    """``applyOutlierDetection``: success-rate ejection off, consecutive-error counters enforced at 100%, and
    the panic threshold set to minHealthPercent (0 by default: panic mode off, as in Istio)."""
    out: dict[str, Any] = {"enforcing_success_rate": 0}
    if "consecutive5xxErrors" in od:
        n = int(od["consecutive5xxErrors"])
        out |= {"consecutive_5xx": n, "enforcing_consecutive_5xx": 100 if n > 0 else 0}
    if "consecutiveGatewayErrors" in od:
        n = int(od["consecutiveGatewayErrors"])
        out |= {
            "consecutive_gateway_failure": n,
            "enforcing_consecutive_gateway_failure": 100 if n > 0 else 0,
        }
    for istio_field, envoy_field in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time")):
        if istio_field in od:
            out[envoy_field] = duration(od[istio_field])
    if int(od.get("maxEjectionPercent", 0)) > 0:
        out["max_ejection_percent"] = int(od["maxEjectionPercent"])
    cluster["outlier_detection"] = out
    cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": float(od.get("minHealthPercent", 0))}}


def peer_labels(workload: str, namespace: str, labels: dict[str, str]) -> dict[str, str]:
    """What Istio's stats report about a workload, keyed as the ``source_``/``destination_`` label suffixes:
    app and version from the pod labels, canonical service and revision as ``CanonicalService``
    (pkg/kube/labels/labels.go) derives them."""
    name = next((labels[k] for k in CANONICAL_NAME if k in labels), workload)
    revision = next((labels[k] for k in CANONICAL_REVISION if k in labels), "latest")
    return {
        "workload": workload,
        "workload_namespace": namespace,
        "app": labels.get("app", "unknown"),
        "version": labels.get("version", "unknown"),
        "canonical_service": name,
        "canonical_revision": revision,
        "cluster": CLUSTER_ID,
    }


def _assignment(host: Host, name: str, endpoints: list[Endpoint]) -> dict:
    """Cluster ``name``'s endpoints, built once per translation for every proxy that has the cluster, as
    istiod builds a cluster's endpoints once per push and serves them from its cache to every proxy
    (pilot/pkg/xds/eds.go ``Cache.Get(&builder)``, pilot/pkg/xds/endpoints/endpoint_builder.go). Shared
    between proxies, so never changed in place."""
    key = ("assignment", name, *map(id, endpoints))  # the endpoints live as long as ``host``: no id reused
    found = host.shared.get(key)
    if found is None:
        lb_endpoints = [_lb_endpoint(e, host) for e in endpoints]
        found = host.shared[key] = {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]}
    return found


def _subset_endpoints(host: Host, port: int, labels: dict) -> list[Endpoint]:
    """The endpoints of ``host`` on ``port`` whose workload has a subset's ``labels`` (once a translation)."""
    key = ("subset", port, *sorted(labels.items()))
    found = host.shared.get(key)
    if found is None:
        found = host.shared[key] = [
            e
            for e in host.endpoints[port]
            if e.instance is not None and selects(labels, e.instance.workload.labels)
        ]
    return found


def _lb_endpoint(e: Endpoint, host: Host) -> dict:
    """An endpoint; in-mesh instances carry the metadata auto mTLS and the request counter read."""
    lb: dict[str, Any] = {
        "endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}}
    }
    if e.instance is None or host.external:
        return lb
    w = e.instance.workload
    metadata: dict[str, Any] = {"istio": peer_labels(w.name, w.namespace, w.labels)}
    if e.instance.proxy is not None:
        metadata["envoy.transport_socket_match"] = {"tlsMode": "istio"}
    lb["metadata"] = {"filter_metadata": metadata}
    return lb


def istio_mutual(proxy: Proxy, host: Host, port: int, subset: str) -> dict:
    """The ISTIO_MUTUAL client socket: the proxy's SPIFFE cert, the mesh root, SAN = the host's identities."""
    validation: dict[str, Any] = {"trusted_ca": {"filename": str(proxy.ca_file)}}
    if host.service_accounts:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": sa}} for sa in host.service_accounts
        ]
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS,
            "sni": sni(port, subset, host.fqdn),
            "common_tls_context": {
                "alpn_protocols": ISTIO_ALPN,
                "tls_params": TLS_PARAMS,
                "tls_certificates": [cert_pair(proxy)],
                "validation_context": validation,
            },
        },
    }


def cert_pair(proxy: Proxy) -> dict:
    return {
        "certificate_chain": {"filename": str(proxy.cert_file)},
        "private_key": {"filename": str(proxy.key_file)},
    }


def inbound_cluster(target_port: int, app: Path | int) -> dict:
    """``inbound|<port>||``: the sidecar's own app, on its Unix socket (on a pod, 127.0.0.1 inside the pod's
    network namespace: no one outside reaches it but through the sidecar)."""
    name = f"inbound|{target_port}||"
    return {
        "@type": CLUSTER,
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "alt_stat_name": f"{name};",
        "circuit_breakers": {"thresholds": [_thresholds({})]},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(app)}}]}],
        },
    }


def blackhole_cluster() -> dict:
    """``BlackHoleCluster``: STATIC with no endpoints, as istiod always sends it."""
    return {
        "@type": CLUSTER,
        "name": "BlackHoleCluster",
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
    }
