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
#: The layout of the snapshot on disk (store.py); part of istiod's process spec, so up() restarts an istiod
#: started by an older labkit that reads another layout.
FORMAT = "3: an index, and one file per resource list named by its version (store.py)"


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


def resources(
    config: ProxyConfig, shared: Encoder | None = None, before: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The proxy's resources by type URL, each ``{"version", "resources"}``: outbound STATIC clusters split
    into an EDS cluster plus its ``ClusterLoadAssignment``, ECDS configs wrapped as ``TypedExtensionConfig``.
    With ``shared`` (one per snapshot), a load assignment the translator shares between proxies becomes one
    shared resource. With ``before`` (the proxy's types in the snapshot served now), a list equal to the one
    served is that one, with its version: nothing encoded again (a weight change at 100 sidecars encodes
    their routes, not their listeners and clusters)."""
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
    served = before or {}
    listening = enc.typed(listeners, served.get(LISTENER))
    # only what a listener names: Envoy asks for RDS and ECDS by name, and istiod answers those names
    # (pilot/pkg/xds/rds.go, ecds.go), so a route config no listener uses (a Gateway server whose
    # credential is missing) is never asked for and never ACKed
    named, filters = enc.refs(listening)
    extensions = [
        {"@type": EXTENSION, "name": name, "typed_config": typed}
        for name, typed in sorted(config.extensions.items())
        if name in filters
    ]
    lists = {
        CLUSTER: clusters,
        ENDPOINT: endpoints,
        ROUTE: [r for r in config.routes if r["name"] in named],
        EXTENSION: extensions,
    }
    return {url: listening if url == LISTENER else enc.typed(lists[url], served.get(url)) for url in ORDER}


def _values(text: str, key: str) -> list[str]:
    """Every string value of ``key`` anywhere in JSON ``text`` (a quote inside a JSON string is escaped, so
    ``"key":"`` only ever starts a member)."""
    found = re.findall(rf'"{re.escape(key)}":("(?:[^"\\]|\\.)*")', text)
    return [json.loads(m) if "\\" in m else m[1:-1] for m in found]


#: The names a listener list refers to (``Encoder.refs``), by its version: immutable, as the version is a
#: hash of the list.
_REFS: dict[str, tuple[frozenset[str], frozenset[str]]] = {}


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

    def typed(self, items: list[dict[str, Any]], served: dict[str, Any] | None) -> dict[str, Any]:
        """``{"version", "resources"}`` of ``items``: ``served`` itself when its resources equal them (a
        comparison is several times cheaper than encoding; JSON values compare as Python's, and the
        translator never turns a field's number into a boolean)."""
        if served is not None and served["resources"] == items:
            return served
        return {"version": self.version(items), "resources": items}

    def refs(self, listeners: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
        """The route configs and filter configs ``listeners`` (``typed``'s answer) name, found once per
        version by this process."""
        found = _REFS.get(listeners["version"])
        if found is None:
            if len(_REFS) > 4096:  # versions of lists no longer served
                _REFS.clear()
            text = self.list_text(listeners["resources"])
            found = _REFS[listeners["version"]] = (
                frozenset(_values(text, "route_config_name")),
                frozenset(_values(text, "name")),
            )
        return found

    def list_text(self, items: list[dict[str, Any]]) -> str:
        return "[" + ",".join(self.text(i) for i in items) + "]"

    def version(self, items: list[dict[str, Any]]) -> str:
        """``version(items)``, from the texts made already."""
        return _digest(self.list_text(items))


def version(items: list[dict[str, Any]]) -> str:
    # the translator builds dicts in a fixed order, so no sort_keys (the slow part of the encoder)
    return _digest(json.dumps(items, separators=(",", ":")))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build(
    proxies: list[Proxy],
    configs: dict[str, ProxyConfig],
    enc: Encoder | None = None,
    served: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The snapshot: ``{"version", "nodes": {node id: {"proxy", "metadata", "types": {type URL: {"version",
    "resources"}}}}}``; ``version`` changes whenever any proxy's config does. Proxies whose resources of a
    type are the same (replicas of one workload) share one list, as store.py stores it once. A list equal
    to the one in ``served`` (the snapshot served now) keeps its version (``resources``)."""
    nodes: dict[str, dict[str, Any]] = {}
    enc = enc or Encoder()
    lists: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for proxy in proxies:
        node = node_id(proxy)
        before = (served or {}).get("nodes", {}).get(node, {}).get("types")
        types = {}
        for url, typed in resources(configs[proxy.id], enc, before).items():
            shared = lists.setdefault((url, typed["version"]), typed["resources"])
            types[url] = typed if shared is typed["resources"] else {**typed, "resources": shared}
        nodes[node] = {"proxy": proxy.id, "types": types}
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
