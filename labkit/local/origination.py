"""DestinationRule ``tls.mode`` SIMPLE / MUTUAL → the client-side TLS a sidecar originates (egress TLS
origination), as istiod's ``constructUpstreamTLS`` (pilot/pkg/networking/core/cluster_tls.go) builds it:
TLS 1.2 to 1.3 (``defaultUpstreamCommonTLSContext``), ``sni`` as given; without ``sni`` Envoy's auto SNI (the
request's host) with auto SAN validation (``setAutoSniAndAutoSanValidation``). With ``credentialName``
(``ApplyCustomSDSToClientCommonTLSContext``, pilot/pkg/security/model/authentication.go) the CA comes from
``<name>-cacert`` (else the Secret itself) and, for MUTUAL, the client certificate from ``<name>``: Secrets
in the proxy's namespace. Without it the CA is the system's (``caCertificates`` defaults to "system",
VERIFY_CERTIFICATE_AT_CLIENT), so a private CA's server is refused, as on Istio."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from labkit.errors import UnsupportedError
from labkit.local.credentials import ca_of, lookup

UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}


def originate(tls: dict, store: dict, namespace: str) -> tuple[dict | None, bool]:
    """(the cluster's transport socket, whether auto SNI / SAN validation is on); the socket is None when
    the credential is missing: istiod's SDS then serves nothing and the cluster never warms."""
    common: dict[str, Any] = {"tls_params": TLS_PARAMS}
    name = str(tls.get("credentialName") or "")
    if name:
        ca = ca_of(store, namespace, name)
        if not ca:
            return None, False
        common["validation_context"] = {"trusted_ca": {"inline_string": ca}}
        if tls.get("mode") == "MUTUAL":
            credential = lookup(store, namespace, name)
            if credential is None:
                return None, False
            common["tls_certificates"] = [
                {
                    "certificate_chain": {"inline_string": credential.cert},
                    "private_key": {"inline_string": credential.key},
                }
            ]
    else:
        common["validation_context"] = {"trusted_ca": {"filename": _system_roots()}}
    context: dict[str, Any] = {"@type": UPSTREAM_TLS, "common_tls_context": common}
    if tls.get("sni"):
        context["sni"] = str(tls["sni"])
    socket = {"name": "envoy.transport_sockets.tls", "typed_config": context}
    return socket, not tls.get("sni")


def _system_roots() -> str:
    """The system CA bundle a sidecar trusts by default (Istio's proxy image: the OS's bundle)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return candidate
    raise UnsupportedError(
        "DestinationRule tls without credentialName verifies the server against the system's CA bundle, and "
        "this machine has none the local backend can find",
        "set tls.credentialName to a Secret with the server's CA (ca.crt)",
    )
