"""What the control plane serves: every proxy's resources by xDS type, with a version per type (pure).

The translator's ``ProxyConfig`` becomes istiod's shapes here: outbound clusters are EDS clusters whose
endpoints travel as ``ClusterLoadAssignment`` resources (pilot/pkg/networking/core/cluster_builder.go sets
``eds_cluster_config`` with an ADS source), so a replica change rewrites endpoints, not clusters; each ECDS
filter config is a ``TypedExtensionConfig``. A type's version is a hash of its resources, so a proxy whose
resources did not change is not pushed and nothing waits for it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.meshmodel import CLUSTER_DOMAIN

if TYPE_CHECKING:
    from labkit.local.topology import Proxy
    from labkit.local.translate import ProxyConfig

PREFIX = "type.googleapis.com/"
CLUSTER = PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = PREFIX + "envoy.config.route.v3.RouteConfiguration"
EXTENSION = PREFIX + "envoy.config.core.v3.TypedExtensionConfig"
#: istiod's push order (pilot/pkg/xds/xdsgen.go ``PushOrder``: CDS, EDS, LDS, RDS), ECDS last, so no listener
#: or route ever names a cluster Envoy does not have yet.
ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, EXTENSION)
SHORT = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", EXTENSION: "ECDS"}
#: Types Envoy subscribes to by wildcard: always requested, even with no resources.
WILDCARD = (CLUSTER, LISTENER)
ADS = {"ads": {}, "resource_api_version": "V3"}


def folder(state_root: Path) -> Path:
    return state_root / "xds"


def snapshot_file(state_root: Path) -> Path:
    """What the lab wants served (written by the lab, read by istiod at start and on SIGHUP)."""
    return folder(state_root) / "snapshot.json"


def sync_file(state_root: Path) -> Path:
    """What istiod sent each proxy and what the proxy ACKed or NACKed (written by istiod)."""
    return folder(state_root) / "sync.json"


def node_id(proxy: Proxy, domain: str = CLUSTER_DOMAIN) -> str:
    """Istio's node id, ``<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`` (pilot/pkg/model
    context.go ``ParseServiceNodeWithMetadata``), ``router`` for a gateway."""
    pod = proxy.id.split("~", 1)[-1]
    kind = "router" if proxy.kind == "gateway" else "sidecar"
    return f"{kind}~127.0.0.1~{pod}~{proxy.namespace}.svc.{domain}"


def node_metadata(proxy: Proxy) -> dict[str, Any]:
    """The node metadata istio-agent sends (pkg/model/proxy.go ``NodeMetadata``), the fields a lab has."""
    return {
        "NAME": proxy.id.split("~", 1)[-1].rsplit(".", 1)[0],
        "NAMESPACE": proxy.namespace,
        "WORKLOAD_NAME": proxy.workload,
        "SERVICE_ACCOUNT": proxy.service_account,
        "LABELS": dict(proxy.labels),
        "CLUSTER_ID": "Kubernetes",
        "MESH_ID": CLUSTER_DOMAIN,
    }


def resources(config: ProxyConfig) -> dict[str, list[dict[str, Any]]]:
    """The proxy's resources by type URL: outbound STATIC clusters split into an EDS cluster plus its
    ``ClusterLoadAssignment``, ECDS configs wrapped as ``TypedExtensionConfig``."""
    clusters, endpoints, listeners = [], [], []
    for listener in config.listeners:  # bind beside istiod's placeholder socket (held_ports)
        listeners.append({**listener, "enable_reuse_port": True} if "address" in listener else listener)
    for cluster in config.clusters:
        if cluster["name"].startswith("outbound|") and "load_assignment" in cluster:
            cluster = copy.copy(cluster)
            assignment = cluster.pop("load_assignment")
            cluster["type"] = "EDS"
            cluster["eds_cluster_config"] = {"eds_config": ADS, "service_name": cluster["name"]}
            endpoints.append({"@type": ENDPOINT, **assignment, "cluster_name": cluster["name"]})
        clusters.append(cluster)
    # only what a listener names: Envoy asks for RDS and ECDS by name, and istiod answers those names
    # (pilot/pkg/xds/rds.go, ecds.go), so a route config no listener uses (a Gateway server whose
    # credential is missing) is never asked for and never ACKed
    named = set(_values(listeners, "route_config_name"))
    extensions = [
        {"@type": EXTENSION, "name": name, "typed_config": typed}
        for name, typed in sorted(config.extensions.items())
        if name in set(_values(listeners, "name"))
    ]
    return {
        CLUSTER: clusters,
        ENDPOINT: endpoints,
        LISTENER: listeners,
        ROUTE: [r for r in config.routes if r["name"] in named],
        EXTENSION: extensions,
    }


def _values(tree: Any, key: str) -> list[Any]:
    """Every value of ``key`` anywhere in a JSON-like tree."""
    if isinstance(tree, dict):
        return [v for k, v in tree.items() if k == key] + [x for v in tree.values() for x in _values(v, key)]
    if isinstance(tree, list):
        return [x for v in tree for x in _values(v, key)]
    return []


def version(items: list[dict[str, Any]]) -> str:
    # the translator builds dicts in a fixed order, so no sort_keys (the slow part of the encoder)
    return hashlib.sha256(json.dumps(items, separators=(",", ":")).encode()).hexdigest()[:12]


def build(proxies: list[Proxy], configs: dict[str, ProxyConfig]) -> dict[str, Any]:
    """The snapshot: ``{"version", "nodes": {node id: {"proxy", "metadata", "types": {type URL: {"version",
    "resources"}}}}}``; ``version`` changes whenever any proxy's config does."""
    nodes: dict[str, dict[str, Any]] = {}
    for proxy in proxies:
        types = {
            url: {"version": version(items), "resources": items}
            for url, items in resources(configs[proxy.id]).items()
        }
        nodes[node_id(proxy)] = {"proxy": proxy.id, "types": types}
    digest = {n: {u: t["version"] for u, t in v["types"].items()} for n, v in nodes.items()}
    return {"version": version([digest]), "nodes": nodes, "hold": held_ports(proxies)}


def held_ports(proxies: list[Proxy]) -> list[int]:
    """Every listener port the lab allocated: istiod keeps each bound (not listening, SO_REUSEPORT), so no
    other program takes one while no listener holds it yet, say the ingress port before any Gateway."""
    return sorted(
        {port for p in proxies for ports in (p.inbound_ports, p.gateway_ports) for port in ports.values()}
    )


def expected(node: dict[str, Any]) -> dict[str, str]:
    """``{type URL: version}`` a proxy is in sync with: wildcard types always, the others only when it has
    resources of that type (Envoy asks for RDS, EDS and ECDS names only once something refers to them)."""
    return {url: t["version"] for url, t in node["types"].items() if url in WILDCARD or t["resources"]}
