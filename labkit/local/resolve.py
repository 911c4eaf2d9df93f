"""Names on the local backend: who sends, how a request reaches a logical URL (no DNS, no iptables here),
and which kind a kubectl-style name means.

A source is any workload (``"shop/web"``, or a bare name when unique), the lesson's aliases
(``labkit.scenario.SOURCES``) or the ingress gateway (``labkit.scenario.INGRESS``). A workload with a sidecar
sends through its sidecar's outbound listener for the URL's port (a Unix socket only the lab's user may open,
as an ``http+unix://`` URL: labkit.unixhttp), so the request carries that workload's identity; one without a
sidecar goes straight to one endpoint of the Service, plaintext, as kube-proxy would
send a pod's request.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from labkit import unixhttp
from labkit.errors import LabError
from labkit.meshmodel import alt_names
from labkit.scenario import INGRESS, SOURCES

if TYPE_CHECKING:
    from labkit.local.topology import Proxy, Topology, Workload
    from labkit.traffic import Resolver

#: kubectl's short names: the ``shortNames`` Istio's CRDs declare, and those of the Kubernetes kinds the local
#: backend runs.
SHORT_NAMES = {
    "vs": "VirtualService",
    "dr": "DestinationRule",
    "se": "ServiceEntry",
    "gw": "Gateway",
    "pa": "PeerAuthentication",
    "svc": "Service",
    "deploy": "Deployment",
    "ns": "Namespace",
    "sa": "ServiceAccount",
    "cm": "ConfigMap",
}
#: A port nothing listens on: where a sidecar without a listener for the URL's port sends you (refused).
CLOSED_PORT = 1


def workload(topo: Topology, name: str) -> Workload:
    """The workload ``name`` means: ``namespace/name``, a bare name unique across namespaces, or an alias."""
    if name in SOURCES:
        name = "/".join(SOURCES[name])
    namespace, _, bare = name.rpartition("/")
    found = [w for w in topo.workloads if w.name == bare and namespace in ("", w.namespace)]
    if len(found) == 1:
        return found[0]
    everyone = [f"{w.namespace}/{w.name}" for w in topo.workloads]
    if found:
        choices = ", ".join(f"{w.namespace}/{w.name}" for w in found)
        raise LabError(f"workload {name!r} is ambiguous", f"name its namespace: one of {choices}")
    aliases = ", ".join([*SOURCES, INGRESS])
    raise LabError(f"no workload {name!r} in the lab", f"use one of {', '.join(everyone)} (or {aliases})")


def proxies(topo: Topology, name: str) -> list[Proxy]:
    """The Envoys of workload ``name`` (its sidecars, or the gateway for ``ingress``/its workload name)."""
    gw = topo.gateway
    if name in (INGRESS, gw.workload, f"{gw.namespace}/{gw.workload}", gw.id):
        return [gw]
    wl = workload(topo, name)
    return [i.proxy for i in topo.instances if i.workload is wl and i.proxy is not None]


def resolver(topo: Topology, source: str) -> Resolver:
    """How ``source`` reaches a logical URL: see the module docstring."""
    if source == INGRESS:
        return lambda url: _via(url, topo.gateway.gateway_ports.get(_port(url), CLOSED_PORT))
    wl = workload(topo, source)
    sidecars = proxies(topo, f"{wl.namespace}/{wl.name}")
    if sidecars:  # any replica: they share the workload's identity
        return lambda url: _via(url, random.choice(sidecars).outbound_sockets.get(_port(url), CLOSED_PORT))
    return lambda url: _via(url, _kube_proxy(topo, url, namespace=wl.namespace))


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _via(url: str, where: int | Path) -> tuple[str, dict[str, str]]:
    """Connect to 127.0.0.1:``where`` or the Unix socket ``where`` with the logical host in the Host header;
    127.0.0.1 URLs pass through."""
    parts = urlsplit(url)
    if parts.hostname == "127.0.0.1":
        return url, {}
    if isinstance(where, Path):
        rest = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        return unixhttp.url(where, rest), {"Host": parts.netloc}
    target = urlunsplit((parts.scheme, f"127.0.0.1:{where}", parts.path, parts.query, ""))
    return target, {"Host": parts.netloc}


def _kube_proxy(topo: Topology, url: str, namespace: str) -> int:
    """One endpoint of the Service ``url`` names (picked at random per call, like kube-proxy's iptables mode):
    the sidecar's inbound port for an injected instance, else the app itself."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host == "127.0.0.1":
        return parts.port or 80
    service = next((s for s in topo.services if host in (s.fqdn, *alt_names(s.fqdn, namespace))), None)
    if service is None:
        raise LabError(
            f"{host}: no such Service (name resolution fails, as DNS would in namespace {namespace})"
        )
    name, ns = service.name, service.namespace
    port = service.port(_port(url))
    if port is None:
        have = ", ".join(str(p.port) for p in service.ports)
        raise LabError(f"Service {name}.{ns} has no port {_port(url)}; its ports: {have}")
    endpoints = [e.port for e in topo.endpoints(service, port)]
    if not endpoints:
        raise LabError(f"Service {name}.{ns} has no endpoints (no running instance matches its selector)")
    return random.choice(endpoints)


def kind(name: str, kinds: set[str]) -> str:
    """The kind ``name`` means, as kubectl reads it: the kind, its lower-case plural or a short name."""
    lowered = name.lower().split(".")[0]  # virtualservices.networking.istio.io
    if lowered in SHORT_NAMES:
        return SHORT_NAMES[lowered]
    for known in kinds:
        low = known.lower()
        plural = low[:-1] + "ies" if low.endswith("y") and low[-2:-1] not in "aeiou" else low + "s"
        if lowered in (low, plural):
            return known
    raise LabError(f"unknown kind {name!r}", f"use one of {', '.join(sorted(kinds))}")
