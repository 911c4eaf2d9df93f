"""A Gateway server's ``tls`` (SIMPLE or MUTUAL with ``credentialName``) → the gateway's
DownstreamTlsContext, as istiod's ``BuildListenerTLSContext`` (pilot/pkg/networking/core/listener.go) makes
it: ALPN ``h2, http/1.1`` (``util.ALPNHttp``, so HTTP/2 is negotiated with a client offering it), a client
certificate required only for MUTUAL, validated against the credential's CA
(``ApplyCredentialSDSToServerCommonTLSContext``, pilot/pkg/security/model/authentication.go: SDS
``kubernetes://<name>`` and ``kubernetes://<name>-cacert``); TLS versions left to Envoy (1.2 to 1.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.local.clusters import DOWNSTREAM_TLS
from labkit.local.credentials import lookup

if TYPE_CHECKING:
    from labkit.manifests import Resource

#: ``util.ALPNHttp``.
ALPN_HTTP = ["h2", "http/1.1"]


def route_name(server: dict, gateway: Resource) -> str:
    """``gatewayRDSRouteName`` (pilot/pkg/model/gateway.go) of an HTTPS server."""
    port = server["port"]
    return f"https.{port['number']}.{port.get('name', '')}.{gateway.name}.{gateway.namespace}"


def sni_hosts(server: dict) -> list[str]:
    """``GetSNIHostsForServer``: the server's hosts without their ``ns/`` prefix, sorted, once each."""
    return sorted({str(h).rpartition("/")[2] for h in server.get("hosts") or []})


def downstream_tls(server: dict, store: dict, namespace: str) -> dict | None:
    """The transport socket of one TLS server, or None when its credential is not there: istiod's SDS then
    serves nothing (xds/sds.go "failed to fetch key and certificate"), so that server's handshakes fail;
    here its filter chain is left out, with the same outcome for the client (closed during the handshake)."""
    tls = server.get("tls") or {}
    credential = lookup(store, namespace, str(tls.get("credentialName", "")))
    if credential is None:
        return None
    mutual = tls.get("mode") == "MUTUAL"
    if mutual and not credential.ca:
        return None  # the -cacert SDS resource is missing: no handshake completes
    common: dict[str, Any] = {
        "alpn_protocols": ALPN_HTTP,
        "tls_certificates": [
            {
                "certificate_chain": {"inline_string": credential.cert},
                "private_key": {"inline_string": credential.key},
            }
        ],
    }
    if mutual:
        common["validation_context"] = {"trusted_ca": {"inline_string": credential.ca}}
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "require_client_certificate": mutual,
            "common_tls_context": common,
        },
    }
