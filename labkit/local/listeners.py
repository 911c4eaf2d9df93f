"""Envoy listeners for the local proxies, shaped like istiod's: outbound ``0.0.0.0_<port>`` with RDS
``"<port>"``, inbound filter chains per PeerAuthentication mode, the gateway's ``0.0.0.0_<target port>`` with
RDS ``http.<target port>``; inbound and gateway connection managers carry the RBAC filters (config by ECDS).

Every HCM and TCP proxy writes Istio's default TEXT access log to ``proxy.access_log`` and counts Istio's
standard metrics with Envoy's stats access logger (counters.py; upstream Envoy has no Istio stats filter).
The server learns an HTTP caller's labels from headers the caller's proxy adds (routes.py), trusted only over
mTLS, and strips them before the app.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from labkit.local.access_logging import FileLog
from labkit.local.authz import FILTERS, NETWORK_RBAC, RBAC, TCP_FILTERS
from labkit.local.clusters import DOWNSTREAM_TLS, TLS_PARAMS, address, cert_pair
from labkit.local.counters import (
    SOURCE_METADATA,
    destination_tags,
    request_counter,
    source_tags,
    tcp_counters,
)
from labkit.local.requestauthn import FILTER as JWT_FILTER
from labkit.local.requestauthn import JWT_AUTHN
from labkit.local.routes import PEER_HEADERS
from labkit.local.tcp import tcp_proxy

if TYPE_CHECKING:
    from labkit.local.topology import Proxy

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
HEADER_TO_METADATA = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
CEL_FILTER = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
NETWORK_INPUTS = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
#: Where RDS and ECDS resources come from: the control plane's ADS stream (labkit/local/xds), as istiod's
#: ``ConfigSource{ads: {}}`` (pilot/pkg/networking/core/listener.go, extension/wasmplugin.go).
ADS = {"ads": {}, "resource_api_version": "V3"}
#: ``EnvoyServerName`` (core/accesslog.go): the ``server`` header on every response the proxy sends.
SERVER_NAME = "istio-envoy"
#: Istio's default TEXT access-log format (``EnvoyTextLogFormat``), verbatim.
ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" '
    '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% '
    "%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)
ISTIO_ALPNS = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
CIPHERS = [
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
]


def file_loggers(proxy: Proxy, log_file: FileLog | None) -> list[dict]:
    """The file access log (meshConfig.accessLogFile or a Telemetry), with the Telemetry's CEL filter if
    it has one (core/accesslog.go ``buildAccessLogFilterFromTelemetry``); none when logging is off."""
    if log_file is None:
        return []
    logger: dict[str, Any] = {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_LOG,
            "path": str(proxy.access_log),
            "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
        },
    }
    if log_file.filter is not None:
        cel = {"@type": CEL_FILTER, "expression": log_file.filter}
        logger["filter"] = {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": cel,
            }
        }
    return [logger]


def access_logs(proxy: Proxy, log_file: FileLog | None, tags: dict[str, str]) -> list[dict]:
    """An HCM's file access log (``file_loggers``) and request counter."""
    return [*file_loggers(proxy, log_file), request_counter(tags)]


def tcp_access_logs(proxy: Proxy, log_file: FileLog | None, tags: dict[str, str]) -> list[dict]:
    """A ``tcp_proxy``'s file access log and TCP counters."""
    return [*file_loggers(proxy, log_file), tcp_counters(tags)]


def _filter(name: str, type_url: str, **config: Any) -> dict:
    return {"name": name, "typed_config": {"@type": type_url, **config}}


def _hcm(stat_prefix: str, filters: list[dict], logs: list[dict], **routing: Any) -> dict:
    return _filter(
        "envoy.filters.network.http_connection_manager",
        HCM,
        stat_prefix=stat_prefix,
        server_name=SERVER_NAME,
        normalize_path=True,  # meshConfig.pathNormalization BASE, so RBAC paths match what the app sees
        **routing,
        http_filters=[
            *filters,
            _filter("envoy.filters.http.fault", FAULT),
            _filter("envoy.filters.http.router", ROUTER),
        ],
        access_log=logs,
    )


def security_filters() -> list[dict]:
    """The HCM's ``jwt_authn`` filter, then its RBAC filters (DENY, then ALLOW), each configured over ECDS
    (requestauthn.jwt_config, authz.rbac_configs)."""
    return [_ecds(JWT_FILTER, JWT_AUTHN), *(_ecds(name, RBAC) for name in FILTERS.values())]


def tcp_security_filters() -> list[dict]:
    """A TCP chain's network RBAC filters (DENY, then ALLOW) before ``tcp_proxy``, where istiod's
    ``buildInboundNetworkFilters`` (core/listener_inbound.go) puts ``BuildTCP``'s, configured over ECDS."""
    return [_ecds(name, NETWORK_RBAC) for name in TCP_FILTERS.values()]


def _ecds(name: str, type_url: str) -> dict:
    return {"name": name, "config_discovery": {"config_source": ADS, "type_urls": [type_url]}}


def _rds(name: str) -> dict:
    """RDS over the control plane's ADS stream: a weight change applies even on keep-alive connections."""
    return {"route_config_name": name, "config_source": ADS}


def outbound_listener(proxy: Proxy, port: int, log_file: FileLog | None) -> dict:
    """``0.0.0.0_<port>`` on the proxy's Unix socket for it (mode 0600: only the lab's user may send as
    this workload, as only the pod's own processes reach its sidecar); the Host header picks the service."""
    hcm = _hcm(
        f"outbound_0.0.0.0_{port};",
        [],
        access_logs(proxy, log_file, source_tags(proxy)),
        rds=_rds(str(port)),
    )
    return {
        "@type": LISTENER,
        "name": f"0.0.0.0_{port}",
        "address": address(proxy.outbound_sockets[port]),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [hcm]}],
    }


def outbound_tcp_listener(proxy: Proxy, port: int, tcp_proxy: dict) -> dict:
    """A TCP port's outbound listener: ``tcp_proxy`` for the one host on it (tcp.py; Istio binds it to the
    Service's ClusterIP, ``<ip>_<port>``, which local sidecars do not have), on the proxy's Unix socket."""
    return {
        "@type": LISTENER,
        "name": f"0.0.0.0_{port}",
        "address": address(proxy.outbound_sockets[port]),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [tcp_proxy]}],
    }


def gateway_listener(
    proxy: Proxy,
    server_port: int,
    target: int,
    log_file: FileLog | None,
    tls: list[tuple[str, list[str], dict]] | None = None,
) -> dict:
    """The gateway's ``0.0.0.0_<target>`` for Gateway server port ``server_port``, with RDS ``http.<target>``
    (``resolvePorts``: the listener is on the ingress Service's targetPort) and the HCM's RBAC filters.

    ``tls``: an HTTPS port's servers as (route name, SNI names, transport socket), one filter chain each
    (core/gateway.go ``createGatewayHTTPFilterChainOpts``): matched on SNI (none for ``*``), behind
    ``tls_inspector``; a client whose SNI matches no chain is closed during the handshake."""

    def chain(route: str) -> dict:
        hcm = _hcm(
            f"outbound_0.0.0.0_{target};",
            security_filters(),
            access_logs(proxy, log_file, source_tags(proxy)),
            rds=_rds(route),
            use_remote_address=True,
        )
        return {"filters": [hcm]}

    listener: dict[str, Any] = {
        "@type": LISTENER,
        "name": f"0.0.0.0_{target}",
        "address": address(proxy.gateway_ports[server_port]),
        "traffic_direction": "OUTBOUND",
    }
    if tls is None:
        return listener | {"filter_chains": [chain(f"http.{target}")]}
    chains = []
    for route, names, socket in tls:
        c = chain(route) | {"transport_socket": socket}
        if names and "*" not in names:  # a full wildcard matches any SNI (and none)
            c["filter_chain_match"] = {"server_names": names}
        chains.append(c)
    listener["listener_filters"] = [_filter("envoy.filters.listener.tls_inspector", TLS_INSPECTOR)]
    return listener | {"filter_chains": chains}


def inbound_listener(
    proxy: Proxy, target_port: int, mode: str, service: str, log_file: FileLog | None, tcp: bool = False
) -> dict:
    """``virtualInbound_<port>``: Istio's inbound filter chains for one target port (filterchain_options.go).

    STRICT: TLS only; PERMISSIVE: TLS with an Istio ALPN, or plaintext; DISABLE: plaintext only. A client that
    matches no chain is reset, as on Istio. Both chains are always there and a ``filter_chain_matcher`` picks
    one per mode: a mode change then only swaps the matcher, Envoy keeps the unchanged chains (and the request
    counters their access loggers hold) instead of draining them."""
    mtls = f"0.0.0.0_{target_port}"
    plain = f"0.0.0.0_{target_port}_plaintext"
    by_transport: dict[str, dict] = {}
    if mode == "STRICT":
        by_transport["tls"] = _to_chain(mtls)
    elif mode == "PERMISSIVE":
        alpn = "|".join(re.escape(a) for a in ISTIO_ALPNS)
        by_transport["tls"] = {
            "matcher": {
                "matcher_list": {
                    "matchers": [
                        {
                            "predicate": {
                                "single_predicate": {
                                    "input": _input("application-protocol", "ApplicationProtocolInput"),
                                    "value_match": {
                                        "safe_regex": {"google_re2": {}, "regex": f".*'({alpn})'.*"}
                                    },
                                }
                            },
                            "on_match": _to_chain(mtls),
                        }
                    ]
                }
            }
        }
    if mode in ("PERMISSIVE", "DISABLE"):
        by_transport["raw_buffer"] = _to_chain(plain)
    chains = [
        _inbound_chain(proxy, target_port, mtls, True, service, log_file, tcp),
        _inbound_chain(proxy, target_port, plain, False, service, log_file, tcp),
    ]
    return {
        "@type": LISTENER,
        "name": f"virtualInbound_{target_port}",
        "address": address(proxy.inbound_ports[target_port]),
        "traffic_direction": "INBOUND",
        "listener_filters": [_filter("envoy.filters.listener.tls_inspector", TLS_INSPECTOR)],
        "continue_on_listener_filters_timeout": True,
        "filter_chains": chains,
        "filter_chain_matcher": {
            "matcher_tree": {
                "input": _input("transport-protocol", "TransportProtocolInput"),
                "exact_match_map": {"map": by_transport},
            }
        },
    }


def _input(name: str, kind: str) -> dict:
    return {"name": name, "typed_config": {"@type": f"{NETWORK_INPUTS}.{kind}"}}


def _to_chain(name: str) -> dict:
    """istiod's ``match.ToChain``: a matcher action naming a filter chain."""
    return {"action": {"name": name, "typed_config": {"@type": STRING_VALUE, "value": name}}}


def _inbound_chain(
    proxy: Proxy, port: int, name: str, mtls: bool, service: str, log_file: FileLog | None, tcp: bool
) -> dict:
    """One inbound filter chain: an HCM with the RBAC filters, or for a TCP port the network RBAC filters and
    ``tcp_proxy`` to the app."""
    if tcp:
        inbound = f"inbound|{port}||"
        security = "mutual_tls" if mtls else "none"
        logs = tcp_access_logs(proxy, log_file, destination_tags(proxy, service, security, tcp=True))
        filters = [*tcp_security_filters(), tcp_proxy(inbound, logs, cluster=inbound)]
    else:
        filters = [_inbound_hcm(proxy, port, mtls, service, log_file)]
    chain: dict[str, Any] = {"name": name, "filters": filters}
    if mtls:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": DOWNSTREAM_TLS,
                "require_client_certificate": True,
                "common_tls_context": {
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_params": {**TLS_PARAMS, "cipher_suites": CIPHERS},
                    "tls_certificates": [cert_pair(proxy)],
                    "validation_context": {"trusted_ca": {"filename": str(proxy.ca_file)}},
                },
            },
        }
    return chain


def _inbound_hcm(proxy: Proxy, port: int, mtls: bool, service: str, log_file: FileLog | None) -> dict:
    source = _filter(
        "envoy.filters.http.header_to_metadata",
        HEADER_TO_METADATA,
        request_rules=[_source_rule(header, key, mtls) for key, header in PEER_HEADERS.items()],
    )
    security = "mutual_tls" if mtls else "none"
    return _hcm(
        f"inbound_0.0.0.0_{port};",
        [source, *security_filters()],
        access_logs(proxy, log_file, destination_tags(proxy, service, security)),
        rds=_rds(f"inbound|{port}||"),
        forward_client_cert_details="APPEND_FORWARD",
        set_current_client_cert_details={"subject": True, "dns": True, "uri": True},
    )


def _source_rule(header: str, key: str, trusted: bool) -> dict:
    """Move a caller-identity header into dynamic metadata, always removing it before the app. Trusted only
    on the mTLS chain (only mesh sidecars hold a certificate); a plaintext caller could forge it, so there
    the value is ``unknown`` whatever it sent (as Istio, which learns the peer only from mTLS metadata)."""
    unknown = {"metadata_namespace": SOURCE_METADATA, "key": key, "value": "unknown", "type": "STRING"}
    present = {"metadata_namespace": SOURCE_METADATA, "key": key, "type": "STRING"} if trusted else unknown
    return {"header": header, "on_header_present": present, "on_header_missing": unknown, "remove": True}
