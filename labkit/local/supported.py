"""What the local backend implements, field by field, so anything else is refused by name instead of being
silently ignored (a trainee must never see "it worked" for a field that did nothing).

It runs after validation (lab.py's pipeline): every field and value reaching it is one Istio accepts, so
"not supported by the local backend" is only ever said of a valid Istio field (a typo such as ``weigth`` or
``mode: STRlCT`` is validation's unknown field or value, with its suggestion)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labkit.errors import UnsupportedError
from labkit.local.gateway_address import ingress_host
from labkit.local.topology import GATEWAY_NAMESPACE, HTTP_PROTOCOLS, port_protocol
from labkit.meshmodel import gateway_is_managed, is_istio

if TYPE_CHECKING:
    from labkit.manifests import Resource

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
KIND_BACKEND = "What to do: use the kind backend (LAB_BACKEND=kind)"

ANY = None  # any value, not inspected further


@dataclass(frozen=True)
class Enum:
    values: tuple[str, ...]


@dataclass(frozen=True)
class MapOf:
    """A map with free keys whose values follow ``schema``."""

    schema: Any


@dataclass(frozen=True)
class Pattern:
    regex: str
    example: str


STRING_MATCH = {"exact": ANY, "prefix": ANY, "regex": ANY}
DESTINATION = {"host": ANY, "subset": ANY, "port": {"number": ANY}}
HEADER_OPS = {"set": ANY, "add": ANY, "remove": ANY}
HEADERS = {"request": HEADER_OPS, "response": HEADER_OPS}
PERCENT = {"value": ANY}
TLS_MODES = Enum(("DISABLE", "ISTIO_MUTUAL", "SIMPLE", "MUTUAL"))
MTLS_MODES = Enum(("UNSET", "DISABLE", "PERMISSIVE", "STRICT"))
TRAFFIC_POLICY = {
    "loadBalancer": {"simple": Enum(("UNSPECIFIED", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM"))},
    "connectionPool": {
        "tcp": {"maxConnections": ANY, "connectTimeout": ANY, "maxConnectionDuration": ANY},
        "http": {
            "http1MaxPendingRequests": ANY,
            "http2MaxRequests": ANY,
            "maxRequestsPerConnection": ANY,
            "maxRetries": ANY,
            "idleTimeout": ANY,
        },
    },
    "outlierDetection": {
        "consecutive5xxErrors": ANY,
        "consecutiveGatewayErrors": ANY,
        "interval": ANY,
        "baseEjectionTime": ANY,
        "maxEjectionPercent": ANY,
        "minHealthPercent": ANY,
    },
    # SIMPLE/MUTUAL: TLS origination (local/origination.py), the CA and client certificate by credentialName
    "tls": {"mode": TLS_MODES, "sni": ANY, "credentialName": ANY},
}

#: The spec schema of every Istio kind the local backend implements.
SCHEMAS: dict[str, dict[str, Any]] = {
    "VirtualService": {
        "hosts": ANY,
        "gateways": ANY,
        "http": [
            {
                "name": ANY,
                "match": [
                    {
                        "name": ANY,
                        "uri": STRING_MATCH,
                        "headers": MapOf(STRING_MATCH),
                        "method": STRING_MATCH,
                        "queryParams": MapOf({"exact": ANY, "regex": ANY}),
                        "ignoreUriCase": ANY,
                    }
                ],
                "route": [{"destination": DESTINATION, "weight": ANY, "headers": HEADERS}],
                "timeout": ANY,
                "retries": {"attempts": ANY, "perTryTimeout": ANY, "retryOn": ANY},
                "fault": {
                    "delay": {"fixedDelay": ANY, "percentage": PERCENT},
                    "abort": {"httpStatus": ANY, "percentage": PERCENT},
                },
                "mirror": DESTINATION,
                "mirrorPercentage": PERCENT,
                "rewrite": {"uri": ANY, "authority": ANY},
                "headers": HEADERS,
            }
        ],
        # tcp.py: the first tcp route for a port, to one cluster or weighted clusters (no sourceLabels,
        # destinationSubnets or gateways in its match)
        "tcp": [{"match": [{"port": ANY}], "route": [{"destination": DESTINATION, "weight": ANY}]}],
    },
    "DestinationRule": {
        "host": ANY,
        "trafficPolicy": TRAFFIC_POLICY,
        "subsets": [{"name": ANY, "labels": ANY, "trafficPolicy": TRAFFIC_POLICY}],
    },
    "PeerAuthentication": {
        "selector": {"matchLabels": ANY},
        "mtls": {"mode": MTLS_MODES},
        "portLevelMtls": MapOf({"mode": MTLS_MODES}),
    },
    "AuthorizationPolicy": {
        "selector": {"matchLabels": ANY},
        "action": Enum(("ALLOW", "DENY")),
        "rules": [
            {
                "from": [{"source": {"principals": ANY, "requestPrincipals": ANY, "namespaces": ANY}}],
                "to": [
                    {
                        "operation": {
                            "methods": ANY,
                            "paths": ANY,
                            "notPaths": ANY,
                            "ports": ANY,
                            "notPorts": ANY,
                        }
                    }
                ],
                "when": [
                    {
                        "key": Pattern(
                            r"request\.headers\[[^\]]+\]|request\.auth\.claims(\[[^\]]+\])+",
                            "request.headers[x-user] or request.auth.claims[groups]",
                        ),
                        "values": ANY,
                        "notValues": ANY,
                    }
                ],
            }
        ],
    },
    "ServiceEntry": {
        "hosts": ANY,
        "ports": [{"number": ANY, "name": ANY, "protocol": ANY, "targetPort": ANY}],
        "resolution": Enum(("STATIC", "DNS")),
        "location": Enum(("MESH_EXTERNAL",)),
        "endpoints": [{"address": ANY, "ports": ANY}],
    },
    # JWT from an inline JWKS (local/requestauthn.py): jwksUri needs istiod to fetch it.
    "RequestAuthentication": {
        "selector": {"matchLabels": ANY},
        "jwtRules": [{"issuer": ANY, "jwks": ANY}],
    },
    # Access logging on or off, with a CEL filter, for the envoy provider (local/access_logging.py).
    "Telemetry": {
        "selector": {"matchLabels": ANY},
        "accessLogging": [
            {"providers": [{"name": Enum(("envoy",))}], "disabled": ANY, "filter": {"expression": ANY}}
        ],
    },
    "Gateway": {
        "selector": ANY,
        "servers": [
            {
                "port": {"number": ANY, "name": ANY, "protocol": Enum(("HTTP", "HTTPS"))},
                "hosts": ANY,
                "name": ANY,
                # secure ingress (local/gateway_tls.py): credentialName, a Secret in the gateway's namespace
                "tls": {"mode": Enum(("SIMPLE", "MUTUAL")), "credentialName": ANY},
            }
        ],
    },
}


BACKEND_REF = {"group": Enum(("",)), "kind": Enum(("Service",)), "name": ANY, "namespace": ANY, "port": ANY}
HEADER_MATCH = {"name": ANY, "value": ANY, "type": Enum(("Exact", "RegularExpression"))}
HEADER_MODIFIER = {"set": [{"name": ANY, "value": ANY}], "add": [{"name": ANY, "value": ANY}], "remove": ANY}
PATH_MODIFIER = {
    "type": Enum(("ReplaceFullPath", "ReplacePrefixMatch")),
    "replaceFullPath": ANY,
    "replacePrefixMatch": ANY,
}

#: The spec schema of the Gateway API kinds the local backend implements (httproute.py converts them).
GATEWAY_API_SCHEMAS: dict[str, dict[str, Any]] = {
    "HTTPRoute": {
        "parentRefs": [
            {
                "group": Enum(("", GATEWAY_API_GROUP)),
                "kind": Enum(("Service", "Gateway")),
                "name": ANY,
                "namespace": ANY,
                "port": ANY,
                "sectionName": ANY,
            }
        ],
        "hostnames": ANY,
        "rules": [
            {
                "name": ANY,
                "matches": [
                    {
                        "path": {"type": Enum(("Exact", "PathPrefix", "RegularExpression")), "value": ANY},
                        "headers": [HEADER_MATCH],
                        "queryParams": [HEADER_MATCH],
                        "method": ANY,
                    }
                ],
                "filters": [
                    {
                        "type": Enum(
                            (
                                "RequestHeaderModifier",
                                "ResponseHeaderModifier",
                                "RequestMirror",
                                "URLRewrite",
                                "RequestRedirect",
                            )
                        ),
                        "requestHeaderModifier": HEADER_MODIFIER,
                        "responseHeaderModifier": HEADER_MODIFIER,
                        "requestMirror": {"backendRef": BACKEND_REF, "percent": ANY},
                        "urlRewrite": {"hostname": ANY, "path": PATH_MODIFIER},
                        "requestRedirect": {
                            "scheme": ANY,
                            "hostname": ANY,
                            "port": ANY,
                            "statusCode": ANY,
                            "path": PATH_MODIFIER,
                        },
                    }
                ],
                "backendRefs": [{**BACKEND_REF, "weight": ANY}],
                "timeouts": {"request": ANY},
            }
        ],
    },
    "Gateway": {
        "gatewayClassName": Enum(("istio",)),
        "addresses": [{"type": ANY, "value": ANY}],  # gateway_address.py: the binding and its status
        "listeners": [
            {
                "name": ANY,
                "port": ANY,
                "protocol": Enum(("HTTP",)),
                "hostname": ANY,
                "allowedRoutes": {"namespaces": {"from": Enum(("Same", "All"))}},
            }
        ],
    },
}


def check_supported(resources: list[Resource]) -> None:
    """Raise UnsupportedError for the first Istio or Gateway API kind, field or value the local backend
    lacks; the resources have passed validation."""
    for r in resources:
        if r.group == GATEWAY_API_GROUP:
            if r.kind not in GATEWAY_API_SCHEMAS:
                raise UnsupportedError(
                    f"{r.where}: kind {r.kind} of {GATEWAY_API_GROUP} is not supported by the local backend "
                    f"(it implements {', '.join(GATEWAY_API_SCHEMAS)}). {KIND_BACKEND}, or remove it"
                )
            _walk(r, r.spec, GATEWAY_API_SCHEMAS[r.kind], "spec")
            if r.kind == "Gateway":
                _check_bound_gateway(r)
            continue
        if is_istio(r.group) and r.kind not in SCHEMAS:
            raise UnsupportedError(
                f"{r.where}: kind {r.kind} is not supported by the local backend (it implements "
                f"{', '.join(SCHEMAS)}). {KIND_BACKEND}, or remove it"
            )
        if r.kind in SCHEMAS and is_istio(r.group):
            _walk(r, r.spec, SCHEMAS[r.kind], "spec")
            if r.kind == "ServiceEntry":
                _check_service_entry_protocols(r)
            if r.kind == "RequestAuthentication":
                _check_inline_jwks(r)
            if r.kind == "VirtualService" and r.spec.get("tcp"):
                _check_tcp_in_mesh(r)


def _walk(r: Resource, value: Any, schema: Any, path: str) -> None:
    if schema is ANY:
        return
    if isinstance(schema, Enum):
        if value not in schema.values:
            raise UnsupportedError(
                f"{r.where}: field {path} value {value!r} is not supported by the local backend (it supports "
                f"{', '.join(schema.values)}). {KIND_BACKEND}, or change it"
            )
    elif isinstance(schema, Pattern):
        if not isinstance(value, str) or not re.fullmatch(schema.regex, value):
            raise UnsupportedError(
                f"{r.where}: field {path} value {value!r} is not supported by the local backend (it supports "
                f"keys like {schema.example}). {KIND_BACKEND}, or change it"
            )
    elif isinstance(schema, MapOf) and isinstance(value, dict):
        for key, item in value.items():
            _walk(r, item, schema.schema, f"{path}.{key}")
    elif isinstance(schema, list) and isinstance(value, list):
        for i, item in enumerate(value):
            _walk(r, item, schema[0], f"{path}[{i}]")
    elif isinstance(schema, dict) and isinstance(value, dict):
        for key, item in value.items():
            if key not in schema:
                raise UnsupportedError(
                    f"{r.where}: field {path}.{key} is not supported by the local backend. "
                    f"{KIND_BACKEND}, or remove it"
                )
            _walk(r, item, schema[key], f"{path}.{key}")


def _check_service_entry_protocols(r: Resource) -> None:
    for i, port in enumerate(r.spec.get("ports") or []):
        protocol = port.get("protocol") or port_protocol(str(port.get("name", "")))
        if str(protocol).upper() not in {p.upper() for p in HTTP_PROTOCOLS}:
            raise UnsupportedError(
                f"{r.where}: field spec.ports[{i}].protocol value {protocol!r} is not supported by the local "
                f"backend (it routes HTTP ServiceEntry ports only). {KIND_BACKEND}, or use protocol: HTTP"
            )


def _check_inline_jwks(r: Resource) -> None:
    """Without ``jwks`` istiod fetches the keys (``jwksUri``, else the issuer's OpenID discovery): no fetch
    here, where the token's keys are the lab's own."""
    for i, rule in enumerate(r.spec.get("jwtRules") or []):
        if not (rule or {}).get("jwks"):
            raise UnsupportedError(
                f"{r.where}: field spec.jwtRules[{i}].jwks is required by the local backend (istiod would "
                "fetch the issuer's keys; the local backend fetches nothing). What to do: inline the "
                "issuer's public JWKS as jwks (labkit.tokens.Issuer.jwks), or use the kind backend "
                "(LAB_BACKEND=kind)"
            )


def _check_bound_gateway(r: Resource) -> None:
    """A Gateway the local backend can serve is bound to its ingress gateway (Istio's manual deployment);
    for the managed forms istiod would deploy a gateway ``<name>-istio`` of its own (gateway_address.py)."""
    if not gateway_is_managed(r.spec):
        return
    field = "spec.addresses[0].type" if r.spec.get("addresses") else "spec.addresses"
    raise UnsupportedError(
        f"{r.where}: field {field}: without a Hostname address istiod deploys a gateway of its own for this "
        f"Gateway ({r.name}-istio, Istio's automated deployment), which the local backend does not run, and "
        "which kind does not map to the host either. What to do: bind the Gateway to the lab's ingress "
        "gateway, as cluster-config/gateway-api/gateway-currency-ingress.yaml does (Istio's manual "
        f"deployment): metadata.namespace: {GATEWAY_NAMESPACE} and addresses: [{{type: Hostname, value: "
        f"{ingress_host()}}}]; or use the kind backend (LAB_BACKEND=kind)"
    )


def _check_tcp_in_mesh(r: Resource) -> None:
    """``tcp`` routes run on sidecars (tcp.py); the gateway's listeners are HTTP only."""
    gateways = [g for g in r.spec.get("gateways") or ["mesh"] if g != "mesh"]
    if gateways:
        raise UnsupportedError(
            f"{r.where}: field spec.tcp is not supported by the local backend for gateways "
            f"({', '.join(gateways)}): its gateway routes HTTP only, tcp routes run on sidecars "
            f"(gateways: [mesh]). {KIND_BACKEND}"
        )
