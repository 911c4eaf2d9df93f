"""The analysis stage, istioctl-analyze-style: objects the cluster accepts that misbehave at runtime given
the rest of the lab (a subset no DestinationRule defines, a host nothing serves, a selector matching no pod).
Errors here still let ``check`` apply the objects, so a trainee can watch their outcome (503 NC)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from labkit.manifests import Resource
from labkit.meshmodel import Registry, fqdn, selects
from labkit.validation.findings import Finding, finding

STAGE = "analysis"


def findings(r: Resource, registry: Registry) -> list[Finding]:
    """Every analysis finding of one schema-valid object, against what ``registry`` knows."""
    if r.group == "security.istio.io":
        return _selector_findings(r, registry)
    if r.group != "networking.istio.io":
        return []
    if r.kind == "VirtualService":
        return _virtual_service_analysis(r, registry) + _gateway_findings(r, registry)
    if r.kind == "DestinationRule":
        return _destination_rule_analysis(r, registry)
    return []


def _selector_findings(r: Resource, registry: Registry) -> list[Finding]:
    """A policy whose selector matches no workload applies to nothing (istioctl analyze IST0127). Policies in
    istio-system may target the ingress gateway, whose pods istioctl installs: those are not checked."""
    labels = (r.spec.get("selector") or {}).get("matchLabels") or {}
    if not labels or r.namespace == "istio-system":
        return []
    if any(ns == r.namespace and selects(labels, pod) for ns, pod in registry.workloads):
        return []
    return [
        finding(
            r,
            "warning",
            STAGE,
            "spec.selector.matchLabels",
            f"no workload in namespace {r.namespace} has the labels {_labels(labels)}, so this policy "
            "applies to nothing",
            "match the labels of the pods' template (kubectl get pods --show-labels), or drop the selector "
            "to apply the policy to the whole namespace",
        )
    ]


def _gateway_findings(r: Resource, registry: Registry) -> list[Finding]:
    """Gateways a VirtualService binds to must exist (``mesh`` means the sidecars; a bare name is looked up in
    the VirtualService's namespace, ``ns/name`` in ``ns``)."""
    refs = [(f"spec.gateways[{k}]", g) for k, g in enumerate(r.spec.get("gateways") or [])]
    for i, rule in enumerate(r.spec.get("http") or []):
        for k, match in enumerate(rule.get("match") or []):
            refs += [
                (f"spec.http[{i}].match[{k}].gateways[{g}]", n)
                for g, n in enumerate(match.get("gateways") or [])
            ]
    findings = []
    for field, ref in refs:
        namespace, _, name = ref.rpartition("/")
        if ref == "mesh" or (namespace or r.namespace, name) in registry.gateways:
            continue
        findings.append(
            finding(
                r,
                "error",
                STAGE,
                field,
                f"Gateway {name!r} does not exist in namespace {namespace or r.namespace}: these routes "
                "reach no gateway, so requests through the ingress are not routed by them",
                "create the Gateway (e.g. mesh/gateway-currency-converter.yaml) or correct the name; use "
                "<namespace>/<name> for a Gateway in another namespace",
            )
        )
    return findings


def _virtual_service_analysis(r: Resource, registry: Registry) -> list[Finding]:
    findings = []
    if not r.spec.get("hosts") and not r.spec.get("gateways"):
        findings.append(
            finding(
                r,
                "error",
                STAGE,
                "spec.hosts",
                "has no hosts: istiod accepts it as a delegate VirtualService, used only where another "
                "VirtualService's http[].delegate names it, so no sidecar routes by it",
                "list the hosts these routes are for, e.g. hosts: [currency-converter]",
            )
        )
    for field, rule in _vs_rules(r):
        routes = rule.get("route") or []
        for j, route in enumerate(routes):
            findings += _destination_findings(
                r, registry, f"{field}.route[{j}].destination", route["destination"]
            )
        for mirror_field, mirror in _mirrors(field, rule):
            findings += _destination_findings(r, registry, mirror_field, mirror)
        weights = [d.get("weight") or 0 for d in routes]
        total = sum(weights)
        if len(routes) > 1 and total > 0 and total != 100 and min(weights) >= 0:
            shares = ", ".join(
                f"{_label(d)} {100 * w / total:.1f}%" for d, w in zip(routes, weights, strict=True)
            )
            findings.append(
                finding(
                    r,
                    "warning",
                    STAGE,
                    f"{field}.route",
                    f"the weights add up to {total}, not 100; Envoy uses them as relative weights: {shares}",
                    "make the weights add up to 100 so they read as percentages",
                )
            )
    return findings


def _vs_rules(r: Resource) -> Iterator[tuple[str, dict]]:
    for proto in ("http", "tcp", "tls"):
        for i, rule in enumerate(r.spec.get(proto) or []):
            yield f"spec.{proto}[{i}]", rule


def _mirrors(field: str, rule: Mapping) -> Iterator[tuple[str, dict]]:
    if rule.get("mirror"):
        yield f"{field}.mirror", rule["mirror"]
    for k, mirror in enumerate(rule.get("mirrors") or []):
        yield f"{field}.mirrors[{k}].destination", mirror["destination"]


def _label(route: Mapping) -> str:
    destination = route["destination"]
    return destination.get("subset") or destination["host"]


def _destination_findings(r: Resource, registry: Registry, field: str, destination: Mapping) -> list[Finding]:
    host, subset = destination["host"], destination.get("subset")
    full = fqdn(host, r.namespace, registry.domain)
    if not registry.knows(full):
        return [finding(r, "error", STAGE, f"{field}.host", *_unknown_host(host, full, r, registry))]
    defined = registry.subsets.get(full, set())
    if subset and subset not in defined:
        known = (
            f" (defined: {', '.join(sorted(defined))})" if defined else " (no DestinationRule for this host)"
        )
        return [
            finding(
                r,
                "error",
                STAGE,
                f"{field}.subset",
                f"subset {subset!r} of {full} is not defined by any DestinationRule{known}; istiod accepts "
                "it, but every request routed here fails with 503 and flag NC (no cluster)",
                f"add subset {subset!r} to the DestinationRule for {host}, or route to a defined subset"
                if defined
                else f"apply a DestinationRule for {host} first (or validate it together with this file)",
            )
        ]
    return []


def _unknown_host(host: str, full: str, r: Resource, registry: Registry) -> tuple[str, str]:
    message = f"host {host!r} means {full}, which no Service or ServiceEntry defines"
    written_out = f"{host}.svc.{registry.domain}"
    if "." in host and registry.knows(written_out):
        return message, f"write the full name {written_out} (a name with a dot is not expanded)"
    short = host.split(".")[0]
    elsewhere = sorted(h for h in registry.services if h.split(".")[0] == short)
    if elsewhere:
        return (
            message,
            f"write the full name {elsewhere[0]} (a short name resolves in the {r.namespace} namespace)",
        )
    return message, "correct the host, or create the Service (or a ServiceEntry for an external host)"


def _destination_rule_analysis(r: Resource, registry: Registry) -> list[Finding]:
    host = r.spec.get("host", "")
    full = fqdn(host, r.namespace, registry.domain)
    if not registry.knows(full):
        message, fix = _unknown_host(host, full, r, registry)
        return [finding(r, "warning", STAGE, "spec.host", message, fix)]
    service = registry.services.get(full)
    if service is None:  # a ServiceEntry: its endpoints are not workloads we can see
        return []
    pods = registry.pods_of(service)
    findings = []
    for i, subset in enumerate(r.spec.get("subsets") or []):
        labels = subset.get("labels") or {}
        if not any(selects(labels, pod) for pod in pods):
            seen = sorted({f"{k}={v}" for pod in pods for k, v in pod.items() if k in labels})
            found = f"; the pods of {service.name} have {', '.join(seen)}" if seen else ""
            findings.append(
                finding(
                    r,
                    "warning",
                    STAGE,
                    f"spec.subsets[{i}].labels",
                    f"no workload of Service {service.name} has the labels {_labels(labels)}{found}; "
                    "requests routed to this subset fail with 503 and flag UH (no healthy upstream)",
                    "make the subset's labels match the pod template labels of one version",
                )
            )
    return findings


def _labels(labels: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "(none)"
