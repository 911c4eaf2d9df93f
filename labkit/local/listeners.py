"""Envoy listeners for the local proxies, shaped like istiod's: outbound ``0.0.0.0_<port>`` with RDS
``"<port>"``, inbound filter chains per PeerAuthentication mode, the gateway's ``0.0.0.0_<target port>`` with
RDS ``http.<target port>``; inbound and gateway connection managers carry the RBAC filters (config by ECDS).

Every HCM writes Istio's default TEXT access log to ``proxy.access_log`` and counts each request with Envoy's
stats access logger as ``istiolocal.requests_total`` tagged with ``labkit.metrics.LABELS`` (upstream Envoy
has no Istio stats filter). The client side reports ``source``, the server side ``destination``; the server
learns the caller's labels from headers the caller's proxy adds (routes.py), trusted only over mTLS, and
strips them before the app.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.local.authz import FILTERS, RBAC
from labkit.local.clusters import DOWNSTREAM_TLS, PEER_KEYS, TLS_PARAMS, cert_pair, peer_labels
from labkit.local.routes import PEER_HEADERS
from labkit.local.tcp import tcp_proxy
from labkit.metrics import LABELS

if TYPE_CHECKING:
    from labkit.local.topology import Proxy

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
HEADER_TO_METADATA = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
STATS_LOG = "type.googleapis.com/envoy.extensions.access_loggers.stats.v3.Config"
NETWORK_INPUTS = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
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
STATS_PREFIX = "istiolocal"
STATS_COUNTER = "requests_total"
#: Dynamic-metadata namespace where the server side keeps the caller's identity taken from the headers.
SOURCE_METADATA = "istio.lab"
ISTIO_ALPNS = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
CIPHERS = [
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
]


def file_log(proxy: Proxy, log_file: bool) -> list[dict]:
    """The file access log, when meshConfig.accessLogFile (or a Telemetry resource) turns it on."""
    if not log_file:
        return []
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": FILE_LOG,
                "path": str(proxy.access_log),
                "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
            },
        }
    ]


def access_logs(proxy: Proxy, log_file: bool, tags: dict[str, str]) -> list[dict]:
    """The file access log (when meshConfig.accessLogFile is set) and the request counter."""
    logs = file_log(proxy, log_file)
    logs.append(
        {
            "name": "envoy.access_loggers.stats",
            "typed_config": {
                "@type": STATS_LOG,
                "stats_scope": {"prefix": STATS_PREFIX},
                "counters": [
                    {
                        "value_fixed": 1,
                        "stat": {
                            "name": STATS_COUNTER,
                            "tags": [{"name": k, "value_format": v} for k, v in tags.items()],
                        },
                    }
                ],
            },
        }
    )
    return logs


def source_tags(proxy: Proxy) -> dict[str, str]:
    """Labels the calling proxy reports: itself as constants, the destination from endpoint and route
    metadata and the upstream connection's certificates (empty, so ``unknown``, over plaintext)."""
    tags = {f"source_{k}": v for k, v in peer_labels(proxy.workload, proxy.namespace, proxy.labels).items()}
    tags |= {f"destination_{k}": f"%UPSTREAM_METADATA(istio:{k})%" for k in PEER_KEYS}
    tags |= {
        "reporter": "source",
        "source_principal": "%UPSTREAM_LOCAL_URI_SAN%",
        "destination_principal": "%UPSTREAM_PEER_URI_SAN%",
        "destination_service": "%METADATA(ROUTE:istio:service)%",
        "destination_service_name": "%METADATA(ROUTE:istio:name)%",
        "destination_service_namespace": "%METADATA(ROUTE:istio:namespace)%",
        "connection_security_policy": "unknown",
    }
    return _ordered(tags)


def destination_tags(proxy: Proxy, service: str, security: str) -> dict[str, str]:
    """Labels the serving sidecar reports: itself as constants, the caller from the stripped headers."""
    peer = peer_labels(proxy.workload, proxy.namespace, proxy.labels)
    tags = {f"destination_{k}": v for k, v in peer.items()}
    tags |= {f"source_{k}": f"%DYNAMIC_METADATA({SOURCE_METADATA}:{k})%" for k in PEER_KEYS}
    known = service != "unknown"
    tags |= {
        "reporter": "destination",
        "source_principal": "%DOWNSTREAM_PEER_URI_SAN%",  # the caller's certificate; empty when plaintext
        "destination_principal": "%DOWNSTREAM_LOCAL_URI_SAN%",
        "destination_service": service,
        "destination_service_name": service.split(".")[0] if known else "unknown",
        "destination_service_namespace": proxy.namespace if known else "unknown",
        "connection_security_policy": security,
    }
    return _ordered(tags)


def _ordered(tags: dict[str, str]) -> dict[str, str]:
    """Every label of ``metrics.LABELS`` in its order; HTTP is all the local proxies speak."""
    common = {"request_protocol": "http", "response_code": "%RESPONSE_CODE%"}
    common["response_flags"] = "%RESPONSE_FLAGS%"
    return {k: {**tags, **common}[k] for k in LABELS}


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


def rbac_filters(proxy: Proxy) -> list[dict]:
    """The HCM's RBAC filters (DENY, then ALLOW), each configured by its ECDS file (authz.rbac_configs)."""
    return [
        {
            "name": name,
            "config_discovery": {
                "config_source": _file_source(proxy, extension_file(proxy, name)),
                "type_urls": [RBAC],
            },
        }
        for name in FILTERS.values()
    ]


def extension_file(proxy: Proxy, name: str) -> Path:
    """Where an ECDS resource lives: beside the route files, in the directory watched for RDS."""
    return proxy.route_file(f"ecds.{name}")


def _file_source(proxy: Proxy, path: Path) -> dict:
    return {
        "resource_api_version": "V3",
        "path_config_source": {"path": str(path), "watched_directory": {"path": str(proxy.rds_dir)}},
    }


def _rds(proxy: Proxy, name: str) -> dict:
    """File-based RDS in its own watched directory: a weight change applies even on keep-alive connections."""
    return {"route_config_name": name, "config_source": _file_source(proxy, proxy.route_file(name))}


def _address(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def outbound_listener(proxy: Proxy, port: int, log_file: bool) -> dict:
    """``0.0.0.0_<port>`` on the proxy's 127.0.0.1 port for it; the Host header picks the service (vhost)."""
    hcm = _hcm(
        f"outbound_0.0.0.0_{port};",
        [],
        access_logs(proxy, log_file, source_tags(proxy)),
        rds=_rds(proxy, str(port)),
    )
    return {
        "@type": LISTENER,
        "name": f"0.0.0.0_{port}",
        "address": _address(proxy.outbound_ports[port]),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [hcm]}],
    }


def outbound_tcp_listener(proxy: Proxy, port: int, tcp_proxy: dict) -> dict:
    """A TCP port's outbound listener: ``tcp_proxy`` for the one host on it (tcp.py; Istio binds it to the
    Service's ClusterIP, ``<ip>_<port>``, which local sidecars do not have)."""
    return {
        "@type": LISTENER,
        "name": f"0.0.0.0_{port}",
        "address": _address(proxy.outbound_ports[port]),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [tcp_proxy]}],
    }


def gateway_listener(proxy: Proxy, server_port: int, target: int, log_file: bool) -> dict:
    """The gateway's ``0.0.0.0_<target>`` for Gateway server port ``server_port``, with RDS ``http.<target>``
    (``resolvePorts``: the listener is on the ingress Service's targetPort) and the HCM's RBAC filters."""
    hcm = _hcm(
        f"outbound_0.0.0.0_{target};",
        rbac_filters(proxy),
        access_logs(proxy, log_file, source_tags(proxy)),
        rds=_rds(proxy, f"http.{target}"),
        use_remote_address=True,
    )
    return {
        "@type": LISTENER,
        "name": f"0.0.0.0_{target}",
        "address": _address(proxy.gateway_ports[server_port]),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [hcm]}],
    }


def inbound_listener(
    proxy: Proxy, target_port: int, mode: str, service: str, log_file: bool, tcp: bool = False
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
        "address": _address(proxy.inbound_ports[target_port]),
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
    proxy: Proxy, port: int, name: str, mtls: bool, service: str, log_file: bool, tcp: bool
) -> dict:
    """One inbound filter chain: an HCM with the RBAC filters, or for a TCP port ``tcp_proxy`` to the app."""
    if tcp:
        inbound = f"inbound|{port}||"
        filters = [tcp_proxy(inbound, file_log(proxy, log_file), cluster=inbound)]
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


def _inbound_hcm(proxy: Proxy, port: int, mtls: bool, service: str, log_file: bool) -> dict:
    source = _filter(
        "envoy.filters.http.header_to_metadata",
        HEADER_TO_METADATA,
        request_rules=[_source_rule(header, key, mtls) for key, header in PEER_HEADERS.items()],
    )
    security = "mutual_tls" if mtls else "none"
    return _hcm(
        f"inbound_0.0.0.0_{port};",
        [source, *rbac_filters(proxy)],
        access_logs(proxy, log_file, destination_tags(proxy, service, security)),
        rds=_rds(proxy, f"inbound|{port}||"),
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
