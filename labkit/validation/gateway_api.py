"""Gateway API (``gateway.networking.k8s.io/v1``, standard channel) schemas and the rules its CRDs enforce,
checked like Istio's kinds: unknown fields by name with a suggestion, wrong types, limits and enums (the
schema stage runs these through the same validator and wording, schema.py), plus the CRD's CEL rules that a
JSON Schema cannot say (admission), and the VirtualService/HTTPRoute conflict istioctl analyze reports.

No maintained Python package carries these schemas (cloudcoil has no Gateway API models; kubernetes-validate
has only built-in kinds; npm's ``@kubernetes-models/gateway-api`` ships compiled validators, not JSON Schema),
so the fields are written out here from the Go types (sigs.k8s.io/gateway-api ``apis/v1``: shared_types.go,
httproute_types.go, gateway_types.go): names, types, enums and limits only.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

from labkit.meshmodel import CLUSTER_DOMAIN, fqdn, service_fqdn
from labkit.validation.findings import Finding, error, finding

if TYPE_CHECKING:
    from collections.abc import Iterable

    import jsonschema

    from labkit.manifests import Resource

GROUP = "gateway.networking.k8s.io"
API_VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1beta1")
STRING: dict = {"type": "string"}
#: PortNumber: +kubebuilder:validation:Minimum=1, Maximum=65535.
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
#: Duration (GEP-2257, shared_types.go): up to four number+unit pairs.
DURATION = {"type": "string", "pattern": "^([0-9]{1,5}(h|m|s|ms)){1,4}$", "examples": ["500ms", "1m30s"]}
#: The backendRef kinds istiod resolves (conversion.go ``buildDestination``): Services, and Istio's
#: ServiceEntry hosts (networking.istio.io Hostname); any other kind is ResolvedRefs=False, InvalidKind.
#: The parent kinds istiod attaches routes to (conversion.go ``allowedParentReferences``, standard channel).
ISTIO_PARENTS = {("", "Service"), (GROUP, "Gateway"), ("networking.istio.io", "ServiceEntry")}
ISTIO_BACKENDS = {
    ("", "Service"),
    ("networking.istio.io", "Hostname"),
    ("networking.istio.io", "ServiceEntry"),
}


#: AddressType (shared_types.go ``+kubebuilder:validation:Pattern``, anchors as the CRD has them).
ADDRESS_TYPE = (
    r"^Hostname|IPAddress|NamedAddress|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"
)
#: GatewaySpecAddress's CEL rule for a Hostname value (gateway_types.go).
HOSTNAME = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _object(required: tuple[str, ...] = (), **properties: Any) -> dict:
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


def _list(item: dict, max_items: int | None = None) -> dict:
    out: dict[str, Any] = {"type": "array", "items": item}
    if max_items is not None:
        out["maxItems"] = max_items
    return out


def _enum(*values: str) -> dict:
    return {"type": "string", "enum": list(values)}


BACKEND_OBJECT = {"group": STRING, "kind": STRING, "name": STRING, "namespace": STRING, "port": PORT}
#: BackendRef.weight: Minimum=0, Maximum=1000000.
BACKEND_REF = _object(
    ("name",), **BACKEND_OBJECT, weight={"type": "integer", "minimum": 0, "maximum": 1000000}
)
HEADER = _object(("name", "value"), name=STRING, value=STRING)
HEADER_MATCH = _object(("name", "value"), type=_enum("Exact", "RegularExpression"), name=STRING, value=STRING)
HEADER_MODIFIER = _object(
    set=_list(HEADER, 16), add=_list(HEADER, 16), remove={"type": "array", "items": STRING, "maxItems": 16}
)
PATH_MODIFIER = _object(
    ("type",),
    type=_enum("ReplaceFullPath", "ReplacePrefixMatch"),
    replaceFullPath=STRING,
    replacePrefixMatch=STRING,
)
FILTER = _object(
    ("type",),
    type=_enum(
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "RequestRedirect",
        "URLRewrite",
        "CORS",
        "ExtensionRef",
    ),
    requestHeaderModifier=HEADER_MODIFIER,
    responseHeaderModifier=HEADER_MODIFIER,
    requestMirror=_object(
        ("backendRef",),
        backendRef=_object(("name",), **BACKEND_OBJECT),
        percent={"type": "integer", "minimum": 0, "maximum": 100},
        fraction=_object(("numerator",), numerator={"type": "integer"}, denominator={"type": "integer"}),
    ),
    requestRedirect=_object(
        scheme=_enum("http", "https"),
        hostname=STRING,
        path=PATH_MODIFIER,
        port=PORT,
        statusCode={"type": "integer", "enum": [301, 302]},
    ),
    urlRewrite=_object(hostname=STRING, path=PATH_MODIFIER),
    cors={"type": "object"},
    extensionRef=_object(("group", "kind", "name"), group=STRING, kind=STRING, name=STRING),
)
MATCH = _object(
    path=_object(type=_enum("Exact", "PathPrefix", "RegularExpression"), value=STRING),
    headers=_list(HEADER_MATCH, 16),
    queryParams=_list(HEADER_MATCH, 16),
    method=_enum("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"),
)
PARENT_REF = _object(
    ("name",), group=STRING, kind=STRING, namespace=STRING, name=STRING, sectionName=STRING, port=PORT
)
#: CommonRouteSpec.parentRefs: MaxItems=32 (shared_types.go); rules MaxItems=16, matches/filters 64/16.
HTTP_ROUTE_SPEC = _object(
    parentRefs=_list(PARENT_REF, 32),
    hostnames=_list(STRING, 16),
    rules=_list(
        _object(
            name=STRING,
            matches=_list(MATCH, 64),
            filters=_list(FILTER, 16),
            backendRefs=_list(_object(("name",), **BACKEND_REF["properties"], filters=_list(FILTER, 16)), 16),
            timeouts=_object(request=DURATION, backendRequest=DURATION),
            sessionPersistence={"type": "object"},
        ),
        16,
    ),
)
LISTENER = _object(
    ("name", "port", "protocol"),
    name=STRING,
    hostname=STRING,
    port=PORT,
    protocol=STRING,
    tls={"type": "object"},
    allowedRoutes=_object(
        namespaces=_object((), **{"from": _enum("All", "Same", "Selector")}, selector={"type": "object"}),
        kinds=_list(_object(("kind",), group=STRING, kind=STRING), 8),
    ),
)
GATEWAY_SPEC = _object(
    ("gatewayClassName", "listeners"),
    gatewayClassName=STRING,
    listeners=_list(LISTENER, 64),
    addresses=_list(
        _object(
            type={
                "type": "string",
                "maxLength": 253,
                "pattern": ADDRESS_TYPE,
                "examples": ["Hostname", "IPAddress"],
            },
            value={"type": "string", "maxLength": 253},
        ),
        16,
    ),
    infrastructure={"type": "object"},
)
SPECS = {"HTTPRoute": HTTP_ROUTE_SPEC, "Gateway": GATEWAY_SPEC}


@functools.cache
def validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    """The closed schema of a Gateway API kind labkit checks (HTTPRoute, Gateway), or None."""
    if api_version not in API_VERSIONS or kind not in SPECS:
        return None
    from labkit.validation.schemas import validator_class  # the same jsonschema import as every kind

    schema = _object(
        ("spec",),
        apiVersion=STRING,
        kind=STRING,
        metadata={"type": "object"},
        spec=SPECS[kind],
        status={"type": "object"},
    )
    return validator_class()(schema)


def admission(r: Resource) -> list[Finding]:
    """The CRD's CEL rules on a schema-valid HTTPRoute: a Service backend needs a port
    (BackendObjectReference: "Must have port for Service reference"), an Exact or PathPrefix path is absolute
    (HTTPPathMatch: "value must be an absolute path and start with '/'"); on a Gateway, Hostname addresses."""
    if r.group == GROUP and r.kind == "Gateway":
        return _addresses(r)
    if r.group != GROUP or r.kind != "HTTPRoute":
        return []
    out = []
    for i, rule in enumerate(r.spec.get("rules") or []):
        for k, match in enumerate(rule.get("matches") or []):
            path = match.get("path") or {}
            value = str(path.get("value", "/"))
            if path.get("type", "PathPrefix") in ("Exact", "PathPrefix") and not value.startswith("/"):
                out.append(
                    error(
                        r,
                        "admission",
                        f"spec.rules[{i}].matches[{k}].path.value",
                        f"{value!r} is not an absolute path (the CRD rejects it)",
                        f"start it with /, e.g. /{value}",
                    )
                )
        for k, ref in enumerate(rule.get("backendRefs") or []):
            service = ref.get("group", "") == "" and ref.get("kind", "Service") == "Service"
            if service and "port" not in ref:
                out.append(
                    error(
                        r,
                        "admission",
                        f"spec.rules[{i}].backendRefs[{k}].port",
                        "a backendRef to a Service must have a port (the CRD rejects it)",
                        "add the Service port, e.g. port: 8080",
                    )
                )
    return out


def _addresses(r: Resource) -> list[Finding]:
    """GatewaySpecAddress's CEL rule: a Hostname value is a lower-case DNS name (the CRD rejects others)."""
    return [
        error(
            r,
            "admission",
            f"spec.addresses[{i}].value",
            f"{a['value']!r} is not a valid hostname (lower-case letters, digits, '-' and '.'; the CRD "
            "rejects it)",
            "write the Service's name as DNS has it: istio-ingressgateway.istio-system.svc.cluster.local",
        )
        for i, a in enumerate(r.spec.get("addresses") or [])
        if isinstance(a, dict)
        and a.get("type", "IPAddress") == "Hostname"
        and a.get("value")
        and not HOSTNAME.fullmatch(str(a["value"]))
    ]


def references(r: Resource) -> list[Finding]:
    """References the API server accepts and Istio cannot follow: a parentRef ``kind: Service`` without
    ``group: ""`` (the group defaults to the Gateway API's, where no Service kind exists), and a backendRef
    of a kind istiod cannot resolve (the route's status says ResolvedRefs=False, InvalidKind; its share of
    requests answers 500)."""
    if r.group != GROUP or r.kind != "HTTPRoute":
        return []
    out = [
        finding(
            r,
            "warning",
            "analysis",
            f"spec.parentRefs[{i}].group",
            f"{ref.get('group', GROUP) or 'core'}/{ref.get('kind', 'Gateway')} is no parent Istio attaches "
            f"routes to (an unset group means {GROUP}), so the route attaches to nothing (Accepted=False)",
            'for a Service write group: "" (the core API group); for a Gateway leave group and kind out',
        )
        for i, ref in enumerate(r.spec.get("parentRefs") or [])
        if isinstance(ref, dict)
        and (ref.get("group", GROUP), ref.get("kind", "Gateway")) not in ISTIO_PARENTS
    ]
    for i, rule in enumerate(r.spec.get("rules") or []):
        for k, ref in enumerate(rule.get("backendRefs") or []):
            group, kind = ref.get("group", ""), ref.get("kind", "Service")
            if (group, kind) not in ISTIO_BACKENDS:
                out.append(
                    finding(
                        r,
                        "warning",
                        "analysis",
                        f"spec.rules[{i}].backendRefs[{k}].kind",
                        f"Istio does not route to a backend of group {group!r} kind {kind!r}: the route's "
                        "status says ResolvedRefs=False (InvalidKind) and its share of requests answers 500",
                        'point the backendRef at a Service (group: "", kind: Service)',
                    )
                )
    return out


def conflicts(r: Resource, world: Iterable[Resource], domain: str = CLUSTER_DOMAIN) -> list[Finding]:
    """A VirtualService and a mesh HTTPRoute for the same Service: both are accepted, but a sidecar applies
    one route table per host (istioctl analyze reports such host conflicts, IST0109
    ConflictingMeshGatewayVirtualServiceHosts for two VirtualServices). Which one: istiod puts HTTPRoutes
    in the caller's own namespace first (``VirtualServicesForGateway``, pilot/pkg/model/push_context.go),
    else the older object wins."""
    hosts = _hosts(r, domain)
    if not hosts:
        return []
    others = [o for o in world if o.key != r.key and _is_route(o) != _is_route(r)]
    out = []
    for other in others:
        shared = sorted(hosts & _hosts(other, domain))
        if shared:
            what = f"{other.kind}/{other.namespace}/{other.name}"
            out.append(
                finding(
                    r,
                    "warning",
                    "analysis",
                    "spec.parentRefs" if _is_route(r) else "spec.hosts",
                    f"{what} also routes mesh traffic for {', '.join(shared)}; a sidecar applies only one of "
                    "them per host: the HTTPRoute for callers in its namespace, the older one elsewhere",
                    f"route {shared[0]} with one API: delete {what}, or this one",
                )
            )
    return out


def _is_route(r: Resource) -> bool:
    return r.group == GROUP and r.kind == "HTTPRoute"


def _hosts(r: Resource, domain: str) -> set[str]:
    """The mesh hosts a VirtualService (bound to ``mesh``) or an HTTPRoute (Service parents) routes."""
    if _is_route(r):
        return {
            service_fqdn(str(p.get("name")), p.get("namespace") or r.namespace, domain)
            for p in r.spec.get("parentRefs") or []
            if isinstance(p, dict) and p.get("kind") == "Service" and p.get("group", None) == ""
        }
    if r.group == "networking.istio.io" and r.kind == "VirtualService":
        if "mesh" not in (r.spec.get("gateways") or ["mesh"]):
            return set()
        return {fqdn(str(h), r.namespace, domain) for h in r.spec.get("hosts") or []}
    return set()
