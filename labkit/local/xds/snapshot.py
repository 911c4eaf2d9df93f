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
import re
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
#: The layout of snapshot.json (``dump``); part of istiod's process spec, so up() restarts an istiod started
#: by an older labkit that reads another layout.
FORMAT = "2: resource lists stored once by version"


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


def resources(config: ProxyConfig, shared: Encoder | None = None) -> dict[str, list[dict[str, Any]]]:
    """The proxy's resources by type URL: outbound STATIC clusters split into an EDS cluster plus its
    ``ClusterLoadAssignment``, ECDS configs wrapped as ``TypedExtensionConfig``. With ``shared`` (one per
    snapshot), a load assignment the translator shares between proxies becomes one shared resource."""
    enc = shared or Encoder()
    clusters, endpoints, listeners = [], [], []
    for listener in config.listeners:  # bind beside istiod's placeholder socket (held_ports)
        listeners.append({**listener, "enable_reuse_port": True} if "address" in listener else listener)
    for cluster in config.clusters:
        if cluster["name"].startswith("outbound|") and "load_assignment" in cluster:
            cluster = copy.copy(cluster)
            assignment = cluster.pop("load_assignment")
            cluster["type"] = "EDS"
            cluster["eds_cluster_config"] = {"eds_config": ADS, "service_name": cluster["name"]}
            endpoints.append(enc.assignment(assignment, cluster["name"]))
        clusters.append(cluster)
    # only what a listener names: Envoy asks for RDS and ECDS by name, and istiod answers those names
    # (pilot/pkg/xds/rds.go, ecds.go), so a route config no listener uses (a Gateway server whose
    # credential is missing) is never asked for and never ACKed
    text = "".join(enc.text(listener) for listener in listeners)
    named = set(_values(text, "route_config_name"))
    filters = set(_values(text, "name"))
    extensions = [
        {"@type": EXTENSION, "name": name, "typed_config": typed}
        for name, typed in sorted(config.extensions.items())
        if name in filters
    ]
    return {
        CLUSTER: clusters,
        ENDPOINT: endpoints,
        LISTENER: listeners,
        ROUTE: [r for r in config.routes if r["name"] in named],
        EXTENSION: extensions,
    }


def _values(text: str, key: str) -> list[str]:
    """Every string value of ``key`` anywhere in JSON ``text`` (a quote inside a JSON string is escaped, so
    ``"key":"`` only ever starts a member)."""
    found = re.findall(rf'"{re.escape(key)}":("(?:[^"\\]|\\.)*")', text)
    return [json.loads(m) if "\\" in m else m[1:-1] for m in found]


class Encoder:
    """JSON text of each resource, made once per snapshot however many proxies receive it: istiod caches a
    resource it built for one proxy and serves it to every proxy with the same inputs (its XdsCache,
    pilot/pkg/model/typed_xds_cache.go). Keyed by object identity; it holds each object: no id is reused."""

    def __init__(self) -> None:
        self._texts: dict[int, tuple[Any, str]] = {}
        self._assignments: dict[tuple[int, str], tuple[Any, dict[str, Any]]] = {}

    def text(self, resource: Any) -> str:
        found = self._texts.get(id(resource))
        if found is None:
            found = self._texts[id(resource)] = (resource, json.dumps(resource, separators=(",", ":")))
        return found[1]

    def assignment(self, assignment: dict[str, Any], name: str) -> dict[str, Any]:
        """The ``ClusterLoadAssignment`` of cluster ``name``: one object for every proxy that shares it."""
        key = (id(assignment), name)
        if key not in self._assignments:
            self._assignments[key] = (assignment, {"@type": ENDPOINT, **assignment, "cluster_name": name})
        return self._assignments[key][1]

    def version(self, items: list[dict[str, Any]]) -> str:
        """``version(items)``, from the texts made already."""
        return _digest("[" + ",".join(self.text(i) for i in items) + "]")


def version(items: list[dict[str, Any]]) -> str:
    # the translator builds dicts in a fixed order, so no sort_keys (the slow part of the encoder)
    return _digest(json.dumps(items, separators=(",", ":")))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build(
    proxies: list[Proxy], configs: dict[str, ProxyConfig], enc: Encoder | None = None
) -> dict[str, Any]:
    """The snapshot: ``{"version", "nodes": {node id: {"proxy", "metadata", "types": {type URL: {"version",
    "resources"}}}}}``; ``version`` changes whenever any proxy's config does. Proxies whose resources of a
    type are the same (replicas of one workload) share one list, as ``dump`` stores it once."""
    nodes: dict[str, dict[str, Any]] = {}
    enc = enc or Encoder()
    lists: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for proxy in proxies:
        types = {}
        for url, items in resources(configs[proxy.id], enc).items():
            ver = enc.version(items)
            types[url] = {"version": ver, "resources": lists.setdefault((url, ver), items)}
        nodes[node_id(proxy)] = {"proxy": proxy.id, "types": types}
    digest = {n: {u: t["version"] for u, t in v["types"].items()} for n, v in nodes.items()}
    return {"version": version([digest]), "nodes": nodes, "hold": held_ports(proxies)}


def dump(snap: dict[str, Any], enc: Encoder | None = None) -> str:
    """The snapshot as JSON text, each type's resource list once by its version however many proxies have
    it (a 100-replica workload's endpoints are written once, not 100 times); ``parse`` reverses it. With
    the ``Encoder`` that built it, no resource is encoded again."""
    enc = enc or Encoder()
    table: dict[str, dict[str, str]] = {}
    nodes = {}
    for node, data in snap["nodes"].items():
        for url, typed in data["types"].items():
            lists = table.setdefault(url, {})
            if typed["version"] not in lists:
                lists[typed["version"]] = "[" + ",".join(enc.text(r) for r in typed["resources"]) + "]"
        nodes[node] = {**data, "types": {url: typed["version"] for url, typed in data["types"].items()}}
    resources = ",".join(
        json.dumps(url) + ":{" + ",".join(f"{json.dumps(v)}:{text}" for v, text in lists.items()) + "}"
        for url, lists in table.items()
    )
    head = json.dumps({**snap, "nodes": nodes}, separators=(",", ":"))
    return head[:-1] + ',"resources":{' + resources + "}}"


def parse(text: str) -> dict[str, Any]:
    """``build``'s shape from ``dump``'s text (ValueError if it is not one)."""
    body = json.loads(text)
    try:
        table = body.pop("resources")
        for data in body["nodes"].values():
            data["types"] = {u: {"version": v, "resources": table[u][v]} for u, v in data["types"].items()}
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"not a snapshot: {err!r}") from err
    return body


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
