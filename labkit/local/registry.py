"""The mesh's service registry as istiod sees it (Kubernetes Services + ServiceEntry hosts), and the name
rules every translator step shares: short-name resolution, selectors, and Istio durations."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from labkit.errors import UnsupportedError
from labkit.local.topology import CLUSTER_DOMAIN, Endpoint, Service, ServicePort, Topology, port_protocol

if TYPE_CHECKING:
    from labkit.manifests import Resource

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
#: A whole Istio duration: one or more number+unit parts (``1m30s``).
DURATION_RE = re.compile(f"(?:{_DURATION_PART.pattern})+")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@dataclass
class Host:
    """One registry entry: a Kubernetes Service, or one host of a ServiceEntry (MESH_EXTERNAL)."""

    fqdn: str
    namespace: str
    ports: list[ServicePort]
    external: bool
    endpoints: dict[int, list[Endpoint]] = field(default_factory=dict)  # service port -> endpoints

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)

    @property
    def service_accounts(self) -> list[str]:
        """SPIFFE ids of the sidecars behind this host: the SANs a client accepts under ISTIO_MUTUAL."""
        return sorted(
            {
                e.instance.proxy.spiffe
                for eps in self.endpoints.values()
                for e in eps
                if e.instance and e.instance.proxy
            }
        )


def resolve_host(name: str, namespace: str) -> str:
    """istiod's ``ResolveShortnameToFQDN``: a name without a dot is in the config's namespace; any dotted name
    (even ``svc.ns``) is taken as already fully qualified."""
    if "." in name or name.startswith("*"):
        return name
    return f"{name}.{namespace}.{CLUSTER_DOMAIN}"


def host_matches(pattern: str, fqdn: str) -> bool:
    """An Istio host pattern (``*``, ``*.example.com`` or exact) against a concrete host."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return fqdn.endswith(pattern[1:])
    return pattern == fqdn


def alt_names(fqdn: str, proxy_namespace: str) -> list[str]:
    """Names a pod in ``proxy_namespace`` may use for a cluster-local host (``GenerateAltVirtualHosts``)."""
    suffix = f".{CLUSTER_DOMAIN}"
    if not fqdn.endswith(suffix):
        return []
    parts = fqdn[: -len(suffix)].split(".")
    if len(parts) != 2:
        return []
    name, ns = parts
    names = [f"{name}.{ns}", f"{name}.{ns}.svc"]
    return [name, *names] if ns == proxy_namespace else names


def duration(value: str | None) -> str | None:
    """An Istio duration (``1s``, ``300ms``, ``1m30s``, vetted by check_supported) as Envoy's ``<n>s``."""
    if value is None:
        return None
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(str(value)))
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def of_kind(resources: list[Resource], kind: str) -> list[Resource]:
    """The resources of one Istio kind, oldest (first applied) first: Istio's tie-break order."""
    return [r for r in resources if r.kind == kind and r.group.endswith("istio.io")]


def build_registry(topo: Topology, service_entries: list[Resource]) -> list[Host]:
    """Every host a sidecar can route to: the apps' Services, then ServiceEntry hosts (first one wins)."""
    hosts = [_service_host(topo, s) for s in topo.services]
    known = {h.fqdn for h in hosts}
    for se in service_entries:
        for i, name in enumerate(se.spec.get("hosts") or []):
            if name in known:
                raise UnsupportedError(
                    f"{se.where}: field spec.hosts[{i}] {name!r} is already a Kubernetes Service or another "
                    "ServiceEntry host; the local backend does not merge them: remove it"
                )
            known.add(name)
            hosts.append(_service_entry_host(topo, se, name))
    return hosts


def _service_host(topo: Topology, s: Service) -> Host:
    return Host(s.fqdn, s.namespace, s.ports, False, {p.port: topo.endpoints(s, p) for p in s.ports})


def _service_entry_host(topo: Topology, se: Resource, name: str) -> Host:
    ports = [
        ServicePort(
            str(p.get("name", "")),
            int(p["number"]),
            int(p.get("targetPort") or p["number"]),
            p.get("protocol") or port_protocol(str(p.get("name", ""))),
        )
        for p in se.spec.get("ports") or []
    ]
    endpoints = se.spec.get("endpoints") or []
    if not endpoints and se.spec.get("resolution") == "DNS":
        endpoints = [{"address": name}]
    host = Host(name, se.namespace, ports, True)
    for port in ports:
        host.endpoints[port.port] = []
        for i, ep in enumerate(endpoints):
            number = int((ep.get("ports") or {}).get(port.name, port.target_port))
            host.endpoints[port.port] += _loopback_endpoints(topo, se, i, str(ep["address"]), number)
    return host


def _loopback_endpoints(topo: Topology, se: Resource, index: int, address: str, port: int) -> list[Endpoint]:
    """A ServiceEntry endpoint on this backend: a lab Service's instances, or a literal 127.x address."""
    if address.startswith("127."):
        return [Endpoint(address, port, None)]
    service = topo.service(address)
    field_path = f"spec.endpoints[{index}].address" if se.spec.get("endpoints") else "spec.hosts"
    if service is None:
        raise UnsupportedError(
            f"{se.where}: field {field_path} {address!r} is neither a lab Service "
            "(<name>.<namespace>.svc.cluster.local) nor a 127.x address; the local backend never leaves this "
            "machine: point it at a lab Service, or use the kind backend (LAB_BACKEND=kind)"
        )
    service_port = service.port(port)
    if service_port is None:
        raise UnsupportedError(
            f"{se.where}: field {field_path} names Service {service.fqdn} on port {port}, which that Service "
            f"does not expose (it has {', '.join(str(p.port) for p in service.ports)}): fix the port"
        )
    return [Endpoint(e.address, e.port, e.instance) for e in topo.endpoints(service, service_port)]
