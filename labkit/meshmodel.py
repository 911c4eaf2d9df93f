"""The mesh rules validation and the local translator share, each written once, as istiod applies them:
the cluster domain, which kinds are Istio's, short names and their FQDNs, host matching, label selection,
Istio durations, route weights, and the service registry (Services and ServiceEntry hosts)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import durationpy

if TYPE_CHECKING:
    from labkit.manifests import Resource

#: istiod's default domain suffix (``constants.DefaultClusterLocalDomain``; the install's
#: ``values.global.proxy.clusterDomain``, read by labkit.mesh): Services are ``<name>.<ns>.svc.<domain>``.
CLUSTER_DOMAIN = "cluster.local"

#: Kinds whose pod template (or the pod itself) carries the labels that Services and subsets select on.
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod"})


def is_istio(group: str) -> bool:
    """An Istio API group (networking, security, telemetry, extensions ... ``.istio.io``)."""
    return group.endswith("istio.io")


def service_fqdn(name: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    """The host of a Kubernetes Service: ``<name>.<namespace>.svc.<domain>``."""
    return f"{name}.{namespace}.svc.{domain}"


def fqdn(host: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    """istiod's ``ResolveShortnameToFQDN`` (pilot/pkg/model/config.go): ``*``, an IP and any dotted name
    (even ``reviews.default``) stay as written; a name without a dot is a Service in ``namespace``."""
    if not host or host == "*" or "." in host or is_ip(host):
        return host
    return service_fqdn(host, namespace, domain)


def is_service_host(host: str, domain: str = CLUSTER_DOMAIN) -> bool:
    """Whether ``host`` has the shape of a Kubernetes Service's FQDN (``<name>.<ns>.svc.<domain>``)."""
    suffix = f".svc.{domain}"
    return host.endswith(suffix) and host[: -len(suffix)].count(".") == 1


def alt_names(host: str, proxy_namespace: str, domain: str = CLUSTER_DOMAIN) -> list[str]:
    """The other names a pod in ``proxy_namespace`` may use for a Service host: ``name`` (same namespace
    only), ``name.ns`` and ``name.ns.svc`` (istiod's ``generateAltVirtualHostsForKubernetesService`` in
    pilot/pkg/networking/core/httproute.go); none for other hosts."""
    if not is_service_host(host, domain):
        return []
    name, namespace = host[: -len(f".svc.{domain}")].split(".")
    names = [f"{name}.{namespace}", f"{name}.{namespace}.svc"]
    return [name, *names] if namespace == proxy_namespace else names


def host_matches(pattern: str, host: str) -> bool:
    """``host`` is covered by ``pattern`` (``*``, ``*.example.com`` or exact): istiod's ``Name.SubsetOf``
    (pkg/config/host/name.go); a wildcard host is covered only by an equal or wider wildcard."""
    if host.startswith("*"):
        return pattern.startswith("*") and len(host) >= len(pattern) and host[1:].endswith(pattern[1:])
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    return host == pattern


def hosts_overlap(a: str, b: str) -> bool:
    """Either host pattern covers the other: istiod's ``Name.Matches`` (pkg/config/host/name.go)."""
    return host_matches(a, b) or host_matches(b, a)


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """A label selector (``matchLabels``); an empty or missing one selects every workload."""
    return dict(selector or {}).items() <= dict(labels).items()


def parse_duration(value: object) -> timedelta:
    """An Istio duration (Go's syntax: ``1s``, ``0.5s``, ``300ms``, ``1m30s``); ValueError if it is none."""
    if not isinstance(value, str) or not value or any(unit in value for unit in "dw"):
        raise ValueError(f"{value!r} is not a duration")  # Go has no days or weeks; durationpy does
    return durationpy.from_str(value)  # its DurationError is a ValueError


def envoy_duration(value: str | None) -> str | None:
    """An Istio duration as Envoy's protobuf JSON form ``<seconds>s`` (None stays None)."""
    if value is None:
        return None
    seconds = parse_duration(value).total_seconds()
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def duration_problem(value: object) -> str | None:
    """What istiod's ``agent.ValidateDuration`` (pkg/config/validation/agent/validation.go) rejects: not a
    duration, shorter than 1ms, or finer than milliseconds; None if the duration is valid."""
    try:
        parsed = parse_duration(value)
    except ValueError:
        return f"{value!r} is not a duration"
    if parsed < timedelta(milliseconds=1):
        return f"duration {value} must be at least 1ms"
    if parsed.microseconds % 1000:
        return f"duration {value} is finer than milliseconds; only ms precision is supported"
    return None


def weights_route_nothing(weights: Iterable[int | None]) -> bool:
    """Several destinations whose weights add up to 0 route no request: istiod rejects them ("total
    destination weight = 0", ``validateHTTPRouteDestinations``); a single destination takes all traffic."""
    listed = [w or 0 for w in weights]
    return len(listed) > 1 and sum(listed) == 0


def weighted_version(cluster: str, host: str) -> str:
    """The version a weighted cluster of ``host``'s route stands for, as the split counts it: its subset
    (``outbound|<port>|<subset>|<fqdn>``, istio/istio pilot/pkg/model/service.go ``BuildSubsetKey``), else
    for a Gateway API backend Service ``<service>-<version>`` (no subsets there) that suffix."""
    parts = cluster.split("|")
    if len(parts) != 4:
        return "(no subset)"
    service, backend = host.split(".")[0], parts[3].split(".")[0]
    if not parts[2] and backend.startswith(f"{service}-"):
        return backend[len(service) + 1 :]
    return parts[2] or "(no subset)"


@functools.lru_cache(maxsize=4096)  # asked of the same few hosts for every proxy of every push
def is_ip(host: str) -> bool:
    """An IPv4 or IPv6 address (istiod's netutil.IsValidIPAddress)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --- the service registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryPort:
    """One port of a ServiceEntry; ``protocol`` as written ("" when only the port name says it)."""

    name: str
    number: int
    target_port: int
    protocol: str


def entry_ports(entry: Resource) -> list[EntryPort]:
    """A ServiceEntry's ports; ``targetPort`` defaults to the port number."""
    return [
        EntryPort(
            str(p.get("name", "")),
            int(p["number"]),
            int(p.get("targetPort") or p["number"]),
            str(p.get("protocol") or ""),
        )
        for p in entry.spec.get("ports") or []
    ]


def entry_endpoints(entry: Resource, host: str) -> list[Mapping]:
    """A ServiceEntry's endpoints; with ``resolution: DNS`` and none listed, the host itself is resolved."""
    endpoints = entry.spec.get("endpoints") or []
    if not endpoints and entry.spec.get("resolution") == "DNS":
        return [{"address": host}]
    return list(endpoints)


@dataclass(frozen=True)
class EntryHost:
    """One host of a ServiceEntry, at ``spec.hosts[index]``."""

    entry: Resource
    index: int
    name: str


def entry_hosts(entries: Iterable[Resource], known: Iterable[str]) -> tuple[list[EntryHost], list[EntryHost]]:
    """The ServiceEntry hosts added to a registry that already holds ``known`` hosts, and the ones that were
    already in it (a Service's host or an earlier ServiceEntry's): the first definition wins."""
    taken = set(known)
    added: list[EntryHost] = []
    repeated: list[EntryHost] = []
    for entry in entries:
        for i, name in enumerate(entry.spec.get("hosts") or []):
            if not isinstance(name, str):
                continue
            (repeated if name in taken else added).append(EntryHost(entry, i, name))
            taken.add(name)
    return added, repeated


class Registry:
    """What the mesh knows once ``world`` is applied: Service and ServiceEntry hosts, the subsets every
    DestinationRule defines, workload labels and Gateways."""

    def __init__(self, world: Iterable[Resource], domain: str = CLUSTER_DOMAIN) -> None:
        world = list(world)
        self.domain = domain
        self.services: dict[str, Resource] = {}  # FQDN -> Service
        self.subsets: dict[str, set[str]] = {}  # FQDN -> subset names from every DestinationRule
        self.workloads: list[tuple[str, dict[str, str]]] = []  # (namespace, pod labels)
        self.gateways: set[tuple[str, str]] = set()  # (namespace, name) of Istio Gateways
        for r in world:
            if r.group == "" and r.kind == "Service":
                self.services.setdefault(service_fqdn(r.name, r.namespace, domain), r)
            elif r.group == "networking.istio.io" and r.kind == "DestinationRule":
                names = {str(s.get("name")) for s in r.spec.get("subsets") or [] if isinstance(s, Mapping)}
                host = fqdn(str(r.spec.get("host", "")), r.namespace, domain)
                self.subsets.setdefault(host, set()).update(names)
            elif r.group == "networking.istio.io" and r.kind == "Gateway":
                self.gateways.add((r.namespace, r.name))
            elif r.kind in WORKLOAD_KINDS:
                self.workloads.append((r.namespace, r.labels if r.kind == "Pod" else _template_labels(r)))
        entries = [r for r in world if r.group == "networking.istio.io" and r.kind == "ServiceEntry"]
        self.entry_hosts, _ = entry_hosts(entries, self.services)

    def knows(self, host: str) -> bool:
        """Some Service or ServiceEntry host covers ``host`` (wildcard ServiceEntry hosts included)."""
        if host in self.services:
            return True
        return any(host_matches(h.name, host) for h in self.entry_hosts)

    def pods_of(self, service: Resource) -> list[dict[str, str]]:
        """The pod labels of the workloads a Service selects (none for a Service without a selector)."""
        selector = service.spec.get("selector") or {}
        return [
            labels
            for namespace, labels in self.workloads
            if namespace == service.namespace and selector and selects(selector, labels)
        ]


def _template_labels(r: Resource) -> dict[str, str]:
    template = r.spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels")
    return dict(labels) if isinstance(labels, Mapping) else {}


def gateway_is_managed(spec: Mapping) -> bool:
    """A Gateway API Gateway istiod deploys a gateway of its own for (``<name>-istio``): no address, or a
    single one of type IPAddress, the CRD's default type (pilot/pkg/config/kube/gatewaycommon/
    gateway_utils.go ``IsManaged``); a Hostname address binds it to an existing gateway's Service instead."""
    addresses = spec.get("addresses") or []
    if len(addresses) != 1:
        return not addresses
    return (addresses[0] or {}).get("type", "IPAddress") == "IPAddress"


#: How a Gateway API Gateway reaches the host on both backends: bound to the lab's ingress gateway, whose
#: Service kind's port mapping (cluster-config/kind/cluster.yaml) and the local ingress URL reach.
BIND_TO_INGRESS = (
    "bind it to the lab's ingress gateway as cluster-config/gateway-api/gateway-currency-ingress.yaml does: "
    "metadata.namespace istio-system and spec.addresses [{type: Hostname, value: "
    f"{service_fqdn('istio-ingressgateway', 'istio-system')}}}]"
)


def unreachable_gateways(gateways: Iterable[Mapping]) -> list[str]:
    """A problem line for each ``istio``-class Gateway API Gateway the host cannot reach: one istiod deploys
    a gateway of its own for (``<name>-istio``, whose LoadBalancer Service kind neither gives an address nor
    publishes on the host), or one whose status (istiod's) says it is not Programmed, with its reason."""
    out = []
    for gw in gateways:
        spec, meta = gw.get("spec") or {}, gw.get("metadata") or {}
        if spec.get("gatewayClassName") != "istio":
            continue
        where = f"Gateway {meta.get('namespace')}/{meta.get('name')} (gateway.networking.k8s.io)"
        if gateway_is_managed(spec):
            out.append(
                f"{where} has no Hostname address, so istiod deployed {meta.get('name')}-istio for it, which "
                f"kind does not publish on the host. What to do: {BIND_TO_INGRESS}"
            )
            continue
        conditions = (gw.get("status") or {}).get("conditions") or []
        programmed: Mapping = next((c for c in conditions if c.get("type") == "Programmed"), {})
        if programmed.get("status") == "False":
            out.append(
                f"{where} is not programmed ({programmed.get('reason')}: {programmed.get('message')}). "
                f"What to do: {BIND_TO_INGRESS}"
            )
    return out
