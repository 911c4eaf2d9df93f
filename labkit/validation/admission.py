"""The admission stage: what the Kubernetes API server or istiod's validating webhook rejects, each rule
following istio/istio pkg/config/validation (validation.go, virtualservice.go, agent/validation.go) or
Kubernetes' ValidateObjectMeta. Objects reach it only once their schema is clean."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from labkit import manifests
from labkit.manifests import TOOL_CONFIGS, Resource
from labkit.meshmodel import is_istio
from labkit.validation import names, virtualservice
from labkit.validation.findings import Finding, error, finding
from labkit.validation.names import Problems, duration_problems

STAGE = "admission"


def duplicates(resources: list[Resource]) -> list[Finding]:
    """One object twice in one file is an error (the second overwrites the first); in two files, the files
    are alternatives (a warning: applied together, only the last stays)."""
    out: list[Finding] = []
    seen: dict[tuple[str, str, str, str], Resource] = {}
    for r in resources:
        if (r.group, r.kind) in TOOL_CONFIGS:
            continue
        first = seen.setdefault(r.key, r)
        if first is r:
            continue
        earlier = f"{manifests.display_source(first.source)} (document {first.index + 1})"
        if first.source == r.source:
            out.append(
                error(
                    r,
                    STAGE,
                    "metadata.name",
                    f"{r.kind}/{r.name} (namespace {r.namespace or '-'}) is already defined in {earlier}",
                    "give one of them another name, or delete the copy",
                )
            )
        else:
            out.append(
                finding(
                    r,
                    "warning",
                    STAGE,
                    "metadata.name",
                    f"also defined in {earlier}; applied together, only the last one stays",
                    "apply these files one at a time (they are alternatives), or rename one",
                )
            )
    return out


def findings(r: Resource) -> list[Finding]:
    """Every admission error of one schema-valid object."""
    if (r.group, r.kind) in TOOL_CONFIGS:
        return []
    out = list(_metadata(r))
    if is_istio(r.group):
        rules = _RULES.get(r.kind)
        out += [_as_finding(r, f) for f in rules(r.spec)] if rules else []
    return out


def _as_finding(r: Resource, problem: tuple[str, str, str] | tuple[str, str, str, str]) -> Finding:
    """A rule yields (field, message, fix) for an error, or ("warning", field, message, fix)."""
    if len(problem) == 4:
        return finding(r, problem[0], STAGE, *problem[1:])
    return error(r, STAGE, *problem)


def _metadata(r: Resource) -> Iterator[Finding]:
    """Kubernetes' ValidateObjectMeta: the name (a DNS-1123 subdomain; a DNS-1035 label for a Service) and
    the namespace (a DNS-1123 label), as the API server checks them before any webhook."""
    problem = names.object_name_problem(r.kind, r.name)
    if problem:
        yield error(
            r,
            STAGE,
            "metadata.name",
            f"{problem}; the API server rejects it",
            "rename it, e.g. " + _slug(r.name),
        )
    namespace = r.metadata.get("namespace")
    if namespace and r.namespace and names.object_name_problem("Namespace", str(namespace)):
        yield error(
            r,
            STAGE,
            "metadata.namespace",
            f"{namespace!r} is not a valid namespace name (a DNS-1123 label); the API server rejects it",
            "use lower-case letters, digits and '-', e.g. " + _slug(str(namespace)),
        )


def _slug(name: str) -> str:
    """A name the API server accepts that reads like ``name``."""
    slug = "".join(c if c.isalnum() or c in ".-" else "-" for c in name.lower()).strip("-.")
    return slug or "my-name"


# --- DestinationRule, ServiceEntry, PeerAuthentication ----------------------------------------------------


def _destination_rule(spec: Mapping) -> Problems:
    """istiod's ValidateDestinationRule (validation.go)."""
    yield from names.host_problems("spec.host", str(spec.get("host", "")))
    yield from traffic_policy("spec.trafficPolicy", spec.get("trafficPolicy"))
    seen: set[str] = set()
    for i, subset in enumerate(spec.get("subsets") or []):
        name = str(subset.get("name", ""))
        if name in seen:
            yield (
                f"spec.subsets[{i}].name",
                f"duplicate subset name {name!r}; istiod rejects it (duplicate subset names)",
                "give every subset its own name",
            )
        seen.add(name)
        yield from names.subset_name_problems(f"spec.subsets[{i}].name", name)
        yield from traffic_policy(f"spec.subsets[{i}].trafficPolicy", subset.get("trafficPolicy"))


def traffic_policy(field: str, policy: Mapping | None) -> Problems:
    """istiod's validateTrafficPolicy: connection pool and outlier detection durations and percentages, for
    the policy and each of its portLevelSettings."""
    if not policy:
        return
    pool = policy.get("connectionPool") or {}
    outlier = policy.get("outlierDetection") or {}
    durations = {
        "connectionPool.tcp.connectTimeout": (pool.get("tcp") or {}).get("connectTimeout"),
        "connectionPool.tcp.maxConnectionDuration": (pool.get("tcp") or {}).get("maxConnectionDuration"),
        "connectionPool.http.idleTimeout": (pool.get("http") or {}).get("idleTimeout"),
        "outlierDetection.interval": outlier.get("interval"),
        "outlierDetection.baseEjectionTime": outlier.get("baseEjectionTime"),
    }
    for name, value in durations.items():
        yield from duration_problems(f"{field}.{name}", value)
    for name in ("maxEjectionPercent", "minHealthPercent"):  # ValidatePercent
        if outlier.get(name) is not None and not 0 <= outlier[name] <= 100:
            yield (
                f"{field}.outlierDetection.{name}",
                f"percentage {outlier[name]} is not in range 0..100; istiod rejects it",
                "use a whole number from 0 to 100",
            )
    for i, port_policy in enumerate(policy.get("portLevelSettings") or []):
        yield from traffic_policy(f"{field}.portLevelSettings[{i}]", port_policy)


def _service_entry(spec: Mapping) -> Problems:
    """istiod's ValidateServiceEntry (validation.go): hosts, ports, and endpoints per resolution."""
    hosts = spec.get("hosts") or []
    if not hosts:
        yield "spec.hosts", "a ServiceEntry must have at least one host; istiod rejects it", "add a host"
    for i, host in enumerate(hosts):
        if host == "*":
            yield (
                f"spec.hosts[{i}]",
                "host '*' is not allowed in a ServiceEntry; istiod rejects it (invalid host *)",
                "name the external host, e.g. api.example.com (or *.example.com for a domain)",
            )
        else:
            yield from names.host_problems(f"spec.hosts[{i}]", str(host))
    port_names: set[str] = set()
    for i, port in enumerate(spec.get("ports") or []):
        name = str(port.get("name", ""))
        if name in port_names:
            yield (
                f"spec.ports[{i}].name",
                f"port name {name!r} is already defined",
                "give each port its own name",
            )
        port_names.add(name)
    resolution = spec.get("resolution") or "NONE"
    for i, endpoint in enumerate(spec.get("endpoints") or []):
        yield from _endpoint(f"spec.endpoints[{i}]", endpoint, resolution, port_names)


def _endpoint(field: str, endpoint: Mapping, resolution: str, port_names: set[str]) -> Problems:
    """One ServiceEntry endpoint (istiod's validateWorkloadEntry for STATIC, the DNS branch otherwise)."""
    if resolution == "NONE":
        yield (
            field,
            "a ServiceEntry with resolution NONE takes no endpoints; istiod rejects it (no endpoints "
            "should be provided for resolution type none)",
            "remove the endpoints, or set resolution: STATIC (IP addresses) or DNS (host names)",
        )
        return
    address = str(endpoint.get("address", ""))
    if resolution == "STATIC" and not (names.is_ip(address) or address.startswith("unix://")):
        yield (
            f"{field}.address",
            f"endpoint address {address!r} is not an IP address, which resolution STATIC needs; istiod "
            "rejects it",
            "write an IP address, or set resolution: DNS for a host name",
        )
    elif resolution != "STATIC" and address and not names.is_ip(address) and names.fqdn_problem(address):
        yield (
            f"{field}.address",
            f"endpoint address {address!r} is not a valid FQDN or an IP address; istiod rejects it",
            "write a host name such as api.example.com, or an IP address",
        )
    for name in endpoint.get("ports") or {}:
        if name not in port_names:
            yield (
                f"{field}.ports.{name}",
                f"endpoint port {name!r} is not defined by the ServiceEntry's ports; istiod rejects it",
                f"use one of the port names in spec.ports ({', '.join(sorted(port_names)) or 'none yet'})",
            )


def _peer_authentication(spec: Mapping) -> Problems:
    """istiod's ValidatePeerAuthentication: port-level mTLS needs a selector with labels."""
    selector = spec.get("selector")
    if spec.get("portLevelMtls") and not (selector or {}).get("matchLabels"):
        yield (
            "spec.portLevelMtls",
            "portLevelMtls needs a workload selector with labels; istiod rejects it on namespace/mesh-wide "
            "policies (mesh/namespace peer authentication cannot have port level mTLS)",
            "add spec.selector.matchLabels naming the workload whose ports these are",
        )


_RULES = {
    "VirtualService": virtualservice.problems,
    "DestinationRule": _destination_rule,
    "ServiceEntry": _service_entry,
    "PeerAuthentication": _peer_authentication,
}
