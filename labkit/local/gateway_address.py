"""Which gateway a Gateway API ``Gateway`` runs on, and the Accepted/Programmed status istiod writes for it.

Without ``spec.addresses`` (or with one IPAddress) istiod deploys a gateway of its own for the Gateway,
``<name>-istio`` ("automated deployment": pilot/pkg/config/kube/gatewaycommon/gateway_utils.go ``IsManaged``,
deploymentcontroller.go ``configureIstioGateway``). A ``Hostname`` address instead binds the Gateway to an
existing gateway's Service ("manual deployment", istio.io tasks/traffic-management/ingress/gateway-api): that
is how the lab's Gateway API ingress runs on ``istio-ingressgateway``, the gateway kind's host port mapping
reaches, on both backends. The local backend implements only that binding (supported.py refuses the managed
forms); a Hostname that does not resolve is served by nothing, and the status says why, as istiod reports it:
conversion.go ``extractGatewayServices``, ``reportGatewayStatus`` and ``setProgrammedCondition``, and
gatewaycommon/context.go ``ResolveGatewayInstances`` (a Service only in the Gateway's own namespace: the
internal Gateway applies to that namespace's instances, pilot/pkg/model/push_context.go ``mergeGateways``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from labkit.local.topology import GATEWAY_NAMESPACE, GATEWAY_WORKLOAD, INGRESS_TARGET_PORTS
from labkit.meshmodel import CLUSTER_DOMAIN, service_fqdn

if TYPE_CHECKING:
    from labkit.manifests import Resource

HOSTNAME = "Hostname"
#: The CRD's default address type (GatewaySpecAddress ``+kubebuilder:default=IPAddress``).
DEFAULT_TYPE = "IPAddress"


def ingress_host(domain: str = CLUSTER_DOMAIN) -> str:
    """The lab's ingress gateway Service, the one host a Gateway binds to on both backends."""
    return service_fqdn(GATEWAY_WORKLOAD, GATEWAY_NAMESPACE, domain)


@dataclass
class Binding:
    """Where a Gateway runs: the listener ports the lab's ingress serves for it (none: nothing serves it)
    and its status conditions and addresses, as istiod writes them."""

    ports: set[int] = field(default_factory=set)
    conditions: list[dict] = field(default_factory=list)
    addresses: list[dict] = field(default_factory=list)


def bind(gw: Resource, services: set[tuple[str, str]], domain: str = CLUSTER_DOMAIN) -> Binding:
    """The binding of a Hostname-addressed Gateway (``services``: the lab's (namespace, name) Services)."""
    hosts, skipped = [], []
    for address in gw.spec.get("addresses") or []:
        value = str(address.get("value", ""))
        if address.get("type", DEFAULT_TYPE) != HOSTNAME:
            skipped.append(value)
        else:  # a short name is a Service in the Gateway's namespace
            hosts.append(value if "." in value else service_fqdn(value, gw.namespace, domain))
    ports = sorted({int(lis["port"]) for lis in gw.spec.get("listeners") or []})
    internal, warnings = _resolve(gw.namespace, hosts, ports, services, domain)
    out = Binding()
    accepted = ("Accepted", "Resource accepted")
    if skipped:  # a soft failure: the Hostname ones still bind
        accepted = ("UnsupportedAddress", f"only Hostname is supported, ignoring [{' '.join(skipped)}]")
    out.conditions.append(condition("Accepted", not skipped, *accepted))
    if not hosts:
        programmed = ("UnsupportedAddress", "Failed to assign to any requested addresses")
    elif warnings:
        head = "Failed to assign to any requested addresses"
        if internal:
            head = (
                f"Assigned to service(s) {_join(internal)}, but failed to assign to all requested addresses"
            )
        programmed = ("AddressNotUsable", f"{head}: {'; '.join(warnings)}")
    elif internal:
        programmed = ("Programmed", f"Resource programmed, assigned to service(s) {_join(internal)}")
    else:
        programmed = ("Programmed", "Resource programmed")
    out.conditions.append(condition("Programmed", programmed[0] == "Programmed", *programmed))
    out.ports = {int(i.rsplit(":", 1)[1]) for i in internal}
    if internal:
        out.addresses = [{"type": HOSTNAME, "value": ingress_host(domain)}]
    return out


def _resolve(
    namespace: str, hosts: list[str], ports: list[int], services: set[tuple[str, str]], domain: str
) -> tuple[list[str], list[str]]:
    """``ResolveGatewayInstances``: ``host:port`` of every listener port the ingress Service has, and the
    warnings for the rest (sorted, as istiod sorts them)."""
    ingress = ingress_host(domain)
    known = {service_fqdn(n, ns, domain): ns for ns, n in services} | {ingress: GATEWAY_NAMESPACE}
    internal, warnings = [], []
    for host in hosts:
        if host not in known:
            warnings.append(f"hostname {_quote(host)} not found")
        elif known[host] != namespace:
            warnings.append(
                f"hostname {_quote(host)} not found in namespace {_quote(namespace)}, but it was found in "
                f'namespace(s) "{known[host]}"'
            )
        else:
            service_ports = INGRESS_TARGET_PORTS if host == ingress else {}
            for port in ports:
                if port in service_ports:
                    internal.append(f"{host}:{port}")
                    continue
                hint = sorted(str(p) for p, target in service_ports.items() if target == port)
                warnings.append(
                    f"port {port} not found for hostname {_quote(host)} (hint: the service port should be "
                    f"specified, not the workload port. Did you mean one of these ports: [{' '.join(hint)}]?)"
                    if hint
                    else f"port {port} not found for hostname {_quote(host)}"
                )
    return sorted(internal), sorted(warnings)


def _join(items: list[str]) -> str:
    """``humanReadableJoin``: a, a and b, a, b, and c."""
    if len(items) < 3:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def _quote(text: str) -> str:
    """Go's ``%q`` for the plain names here."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def condition(kind: str, ok: bool, reason: str, message: str) -> dict:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}
