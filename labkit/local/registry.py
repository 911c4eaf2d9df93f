"""The mesh's service registry on the local backend: the hosts meshmodel lists (Kubernetes Services, then
ServiceEntry hosts), each with the loopback endpoints its traffic lands on here."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labkit import meshmodel
from labkit.errors import UnsupportedError
from labkit.local.topology import Endpoint, Service, ServicePort, Topology, port_protocol

if TYPE_CHECKING:
    from labkit.manifests import Resource


@dataclass
class Host:
    """One registry entry: a Kubernetes Service, or one host of a ServiceEntry (MESH_EXTERNAL)."""

    fqdn: str
    namespace: str
    ports: list[ServicePort]
    external: bool
    endpoints: dict[int, list[Endpoint]] = field(default_factory=dict)  # service port -> endpoints
    #: what every proxy's clusters derive from this host alone (a subset's endpoints, load assignments),
    #: built once per translation (clusters.py)
    shared: dict[tuple, Any] = field(default_factory=dict, repr=False, compare=False)

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)

    @functools.cached_property
    def service_accounts(self) -> list[str]:
        """SPIFFE ids of the sidecars behind this host: the SANs a client accepts under ISTIO_MUTUAL (once
        per translation: every proxy's clusters to this host ask)."""
        return sorted(
            {
                e.instance.proxy.spiffe
                for eps in self.endpoints.values()
                for e in eps
                if e.instance and e.instance.proxy
            }
        )


def of_kind(resources: list[Resource], kind: str) -> list[Resource]:
    """The resources of one Istio kind, oldest (first applied) first: Istio's tie-break order."""
    return [r for r in resources if r.kind == kind and meshmodel.is_istio(r.group)]


def build_registry(topo: Topology, service_entries: list[Resource]) -> list[Host]:
    """Every host a sidecar can route to: the apps' Services, then ServiceEntry hosts (first one wins)."""
    hosts = [_service_host(topo, s) for s in topo.services]
    added, repeated = meshmodel.entry_hosts(service_entries, (h.fqdn for h in hosts))
    if repeated:
        entry = repeated[0]
        raise UnsupportedError(
            f"{entry.entry.where}: field spec.hosts[{entry.index}] {entry.name!r} is already a Kubernetes "
            "Service or another ServiceEntry host; the local backend does not merge them. What to do: remove "
            "it, or use the kind backend (LAB_BACKEND=kind)"
        )
    return hosts + [_service_entry_host(topo, entry.entry, entry.name) for entry in added]


def _service_host(topo: Topology, s: Service) -> Host:
    return Host(s.fqdn, s.namespace, s.ports, False, {p.port: topo.endpoints(s, p) for p in s.ports})


def _service_entry_host(topo: Topology, se: Resource, name: str) -> Host:
    ports = [
        ServicePort(p.name, p.number, p.target_port, p.protocol or port_protocol(p.name))
        for p in meshmodel.entry_ports(se)
    ]
    endpoints = meshmodel.entry_endpoints(se, name)
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
            f"({meshmodel.service_fqdn('<name>', '<namespace>')}) nor a 127.x address; the local backend "
            "never leaves this machine. What to do: point it at a lab Service, or use the kind backend "
            "(LAB_BACKEND=kind)"
        )
    service_port = service.port(port)
    if service_port is None:
        raise UnsupportedError(
            f"{se.where}: field {field_path} names Service {service.fqdn} on port {port}, which that Service "
            f"does not expose (it has {', '.join(str(p.port) for p in service.ports)}). What to do: fix the "
            "port"
        )
    return [Endpoint(e.address, e.port, e.instance) for e in topo.endpoints(service, service_port)]
