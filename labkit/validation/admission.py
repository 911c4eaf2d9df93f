"""The admission stage: what the Kubernetes API server or istiod's validating webhook rejects, each rule
following istio/istio pkg/config/validation (validation.go, virtualservice.go, agent/validation.go) or
Kubernetes' ValidateObjectMeta. Objects reach it only once their schema is clean."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from labkit import manifests
from labkit.manifests import TOOL_CONFIGS, Resource
from labkit.meshmodel import is_istio
from labkit.validation import authn_telemetry, authorization, names, virtualservice
from labkit.validation import tls as tls_rules
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
        problems = [*_workload_selector(r.spec.get("selector")), *(rules(r.spec) if rules else [])]
        out += [_as_finding(r, p) for p in problems]
    if (r.group, r.kind) == ("", "Secret"):
        out += [_as_finding(r, p) for p in tls_rules.secret_problems(r.body)]
    return out


def _workload_selector(selector: Mapping | None) -> Problems:
    """istiod's validateWorkloadSelector (and the CRDs' "wildcard is not supported in selector"): no empty
    key, no ``*`` in a key or value; a selector without labels selects every workload (a warning)."""
    if not isinstance(selector, Mapping) or "matchLabels" not in selector:
        return
    labels = selector.get("matchLabels") or {}
    for key, value in labels.items():
        if not key or "*" in str(key) or "*" in str(value):
            yield (
                f"spec.selector.matchLabels.{key}",
                f"{key}={value}: an empty key or a wildcard is not supported in a selector; istiod "
                "rejects it",
                "match exact label values, e.g. app: currency-converter",
            )
    if not labels:
        yield (
            "warning",
            "spec.selector.matchLabels",
            "workload selector specified without labels: it selects every workload in the namespace",
            "name the workload's labels, or drop the selector to say 'the whole namespace' plainly",
        )


def _as_finding(r: Resource, problem: tuple[str, str, str] | tuple[str, str, str, str]) -> Finding:
    """A rule yields (field, message, fix) for an error, or ("warning", field, message, fix)."""
    if len(problem) == 4:
        return finding(r, problem[0], STAGE, *problem[1:])
    return error(r, STAGE, *problem)


def _metadata(r: Resource) -> Iterator[Finding]:
    """Kubernetes' ValidateObjectMeta: the name (a DNS-1123 subdomain; a DNS-1035 label for a Service) and
    the namespace (a DNS-1123 label), as the API server checks them before any webhook."""
    problem = names.object_name_problem(r.kind, r.name)
    if not problem and is_istio(r.group) and r.kind == "Gateway" and "." in r.name:  # ValidateGateway
        problem = f"Gateway name {r.name!r} must be a DNS-1123 label (no dots)"
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
    yield from _traffic_policy("spec.trafficPolicy", spec.get("trafficPolicy"))
    subsets = spec.get("subsets") or []
    yield from _repeated_names("spec.subsets", subsets, "subset")
    for i, subset in enumerate(subsets):
        yield from names.subset_name_problems(f"spec.subsets[{i}].name", str(subset.get("name", "")))
        yield from _traffic_policy(f"spec.subsets[{i}].trafficPolicy", subset.get("trafficPolicy"))


def _repeated_names(field: str, items: list, what: str) -> Problems:
    """A name used twice in one list: istiod's "duplicate subset names" (ValidateDestinationRule) and
    "service entry port name already defined" (ValidateServiceEntry)."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        name = str(item.get("name", ""))
        if name in seen:
            yield (
                f"{field}[{i}].name",
                f"duplicate {what} name {name!r}; istiod rejects it",
                f"give every {what} its own name",
            )
        seen.add(name)


def _traffic_policy(field: str, policy: Mapping | None) -> Problems:
    """istiod's validateTrafficPolicy: connection pool and outlier detection durations and percentages, for
    the policy and each of its portLevelSettings."""
    if not policy:
        return
    pool = policy.get("connectionPool") or {}
    outlier = policy.get("outlierDetection") or {}
    tcp = pool.get("tcp") or {}
    durations = {
        "connectionPool.tcp.connectTimeout": tcp.get("connectTimeout"),
        "connectionPool.tcp.maxConnectionDuration": tcp.get("maxConnectionDuration"),
        "connectionPool.tcp.idleTimeout": tcp.get("idleTimeout"),
        "connectionPool.tcp.tcpKeepalive.time": (tcp.get("tcpKeepalive") or {}).get("time"),
        "connectionPool.tcp.tcpKeepalive.interval": (tcp.get("tcpKeepalive") or {}).get("interval"),
        "connectionPool.http.idleTimeout": (pool.get("http") or {}).get("idleTimeout"),
        "outlierDetection.interval": outlier.get("interval"),
        "outlierDetection.baseEjectionTime": outlier.get("baseEjectionTime"),
        "loadBalancer.warmupDurationSecs": (policy.get("loadBalancer") or {}).get("warmupDurationSecs"),
    }
    for name, value in durations.items():
        yield from duration_problems(f"{field}.{name}", value)
    yield from tls_rules.client_problems(f"{field}.tls", policy.get("tls") or {})
    for name in ("maxEjectionPercent", "minHealthPercent"):  # ValidatePercent
        if outlier.get(name) is not None and not 0 <= outlier[name] <= 100:
            yield (
                f"{field}.outlierDetection.{name}",
                f"percentage {outlier[name]} is not in range 0..100; istiod rejects it",
                "use a whole number from 0 to 100",
            )
    for i, port_policy in enumerate(policy.get("portLevelSettings") or []):
        yield from _traffic_policy(f"{field}.portLevelSettings[{i}]", port_policy)


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
    ports = spec.get("ports") or []
    yield from _repeated_names("spec.ports", ports, "port")
    numbers: set[object] = set()
    for i, port in enumerate(ports):
        if port.get("number") in numbers:
            yield (
                f"spec.ports[{i}].number",
                f"port {port['number']} is already defined; istiod rejects it",
                "list each port number once",
            )
        numbers.add(port.get("number"))
        yield from names.port_problems(f"spec.ports[{i}].number", port.get("number"))
        yield from names.port_problems(f"spec.ports[{i}].targetPort", port.get("targetPort"))
    port_names = {str(port.get("name", "")) for port in ports}
    resolution = spec.get("resolution") or "NONE"
    endpoints = spec.get("endpoints") or []
    for i, endpoint in enumerate(endpoints):
        yield from _endpoint(f"spec.endpoints[{i}]", endpoint, resolution, port_names)
    if resolution in ("DNS", "DNS_ROUND_ROBIN") and not endpoints:
        for i, host in enumerate(hosts):
            if host != "*" and names.fqdn_problem(str(host)):
                yield (
                    f"spec.hosts[{i}]",
                    f"host {host!r} is not a full name, which resolution {resolution} without endpoints "
                    "resolves itself; istiod rejects it",
                    "name the host exactly (no wildcard), or add endpoints",
                )
    if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
        yield (
            "spec.endpoints",
            "resolution DNS_ROUND_ROBIN takes 0 or 1 endpoint; istiod rejects it",
            "keep one",
        )
    plain_tcp = [p for p in ports if str(p.get("protocol") or "TCP").upper() not in _HTTP_OR_TLS]
    if resolution != "NONE" and len(hosts) > 1 and plain_tcp:
        yield (
            "spec.hosts",
            "several hosts with a non-HTTP, non-TLS port cannot be told apart; istiod rejects it",
            "use one ServiceEntry per host, or HTTP/TLS ports",
        )


#: Protocols istiod can tell hosts apart on (Host header or SNI): protocol.IsHTTP() or IsTLS().
_HTTP_OR_TLS = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB", "HTTPS", "TLS"})


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
    for name, number in (endpoint.get("ports") or {}).items():
        yield from names.port_problems(f"{field}.ports.{name}", number)
        if name not in port_names:
            yield (
                f"{field}.ports.{name}",
                f"endpoint port {name!r} is not defined by the ServiceEntry's ports; istiod rejects it",
                f"use one of the port names in spec.ports ({', '.join(sorted(port_names)) or 'none yet'})",
            )


def _peer_authentication(spec: Mapping) -> Problems:
    """istiod's ValidatePeerAuthentication: port-level mTLS needs a selector with labels."""
    selector = spec.get("selector")
    for port in spec.get("portLevelMtls") or {}:
        yield from names.port_problems(
            f"spec.portLevelMtls.{port}", int(port) if str(port).isdigit() else port
        )
    if spec.get("portLevelMtls") and not (selector or {}).get("matchLabels"):
        yield (
            "spec.portLevelMtls",
            "portLevelMtls needs a workload selector with labels; istiod rejects it on namespace/mesh-wide "
            "policies (mesh/namespace peer authentication cannot have port level mTLS)",
            "add spec.selector.matchLabels naming the workload whose ports these are",
        )


def _gateway(spec: Mapping) -> Problems:
    """istiod's ValidateGateway and validateServer (validation.go): servers with hosts (``ns/host`` allowed),
    a named port in range, TLS settings exactly for HTTPS/TLS servers, port names unique."""
    servers = spec.get("servers") or []
    if not servers:
        yield "spec.servers", "a Gateway must have at least one server; istiod rejects it", "add a server"
    port_names: set[str] = set()
    for i, server in enumerate(servers):
        field = f"spec.servers[{i}]"
        if not server.get("hosts"):
            yield (
                f"{field}.hosts",
                "a server must list at least one host; istiod rejects it",
                "add hosts: ['*']",
            )
        for k, host in enumerate(server.get("hosts") or []):
            yield from _gateway_host(f"{field}.hosts[{k}]", str(host))
        port = server.get("port") or {}
        yield from names.port_problems(f"{field}.port.number", port.get("number"))
        name = str(port.get("name") or "")
        if not name or name in port_names:
            yield (
                f"{field}.port.name",
                f"port name {name!r} is {'already used by another server' if name else 'missing'}; istiod "
                "rejects it (port names in servers must be unique)",
                "give each server's port its own name, e.g. http or https",
            )
        port_names.add(name)
        tls_protocol = str(port.get("protocol", "")).upper() in ("HTTPS", "TLS")
        tls = server.get("tls")
        if tls_protocol and not tls:
            yield (
                f"{field}.tls",
                "an HTTPS/TLS server needs TLS settings; istiod rejects it",
                "add tls: {mode: SIMPLE, credentialName: <secret>}",
            )
        elif tls and not tls_protocol and set(tls) - {"httpsRedirect"}:
            yield (
                f"{field}.tls",
                "a plain-text server cannot have TLS settings (only httpsRedirect); istiod rejects it",
                "set port.protocol: HTTPS, or keep only tls.httpsRedirect",
            )
        elif tls:
            yield from tls_rules.server_problems(f"{field}.tls", tls)


def _gateway_host(field: str, host: str) -> Problems:
    """agent.ValidateNamespaceSlashWildcardHostname: ``[namespace/]host``; the namespace is ``*``, ``.`` or
    a DNS-1123 label."""
    namespace, _, name = host.rpartition("/")
    if namespace and namespace not in ("*", ".") and not names.is_dns1123_label(namespace):
        yield (
            field,
            f"namespace {namespace!r} in {host!r} is not valid; istiod rejects it",
            "write <namespace>/<host>",
        )
    yield from names.host_problems(field, name)


_RULES = {
    "VirtualService": virtualservice.problems,
    "DestinationRule": _destination_rule,
    "ServiceEntry": _service_entry,
    "PeerAuthentication": _peer_authentication,
    "Gateway": _gateway,
    "AuthorizationPolicy": authorization.problems,
    "RequestAuthentication": authn_telemetry.request_authentication,
    "Telemetry": authn_telemetry.telemetry,
}
