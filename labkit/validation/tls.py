"""TLS settings istiod and the API server reject: a Gateway server's ``tls`` and a DestinationRule's
(istio/istio pkg/config/validation ``validateTLSOptions``, agent/validation.go ``ValidateTLS``) and a
``kubernetes.io/tls`` Secret (Kubernetes' ValidateSecret). Each rule yields (field, message, fix)."""

from __future__ import annotations

from collections.abc import Mapping

from labkit.validation.names import Problems


def server_problems(field: str, tls: Mapping) -> Problems:
    """``validateTLSOptions`` (validation.go): SIMPLE and MUTUAL need a credentialName, or the certificate
    files (serverCertificate and privateKey, plus caCertificates for MUTUAL)."""
    mode = tls.get("mode", "PASSTHROUGH")
    if mode not in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") or tls.get("credentialName"):
        return
    needed = [("serverCertificate", "a server certificate"), ("privateKey", "a private key")]
    if mode != "SIMPLE":
        needed.append(("caCertificates", "a client CA bundle"))
    for key, what in needed:
        if not tls.get(key):
            yield (
                f"{field}.{key}",
                f"{mode} TLS requires {what} when no credentialName is set; istiod rejects it",
                "set tls.credentialName to a Secret in the gateway's namespace (kubernetes.io/tls, with "
                "ca.crt for MUTUAL)",
            )


def client_problems(field: str, tls: Mapping) -> Problems:
    """``ValidateTLS`` (pkg/config/validation/agent/validation.go): with a credentialName no certificate
    files; MUTUAL without one needs clientCertificate and privateKey."""
    mode = tls.get("mode")
    if mode not in ("SIMPLE", "MUTUAL"):
        return
    files = ("clientCertificate", "privateKey", "caCertificates", "caCrl")
    if tls.get("credentialName"):
        for key in (k for k in files if tls.get(k)):
            yield (
                f"{field}.{key}",
                "cannot specify client certificates or CA certificate or CA CRL if credentialName is set; "
                "istiod rejects it",
                f"remove {key}: the Secret named by credentialName holds the certificates",
            )
        return
    for key, what in (("clientCertificate", "client certificate"), ("privateKey", "private key")):
        if mode == "MUTUAL" and not tls.get(key):
            yield (
                f"{field}.{key}",
                f"{what} required for mutual tls; istiod rejects it",
                "set tls.credentialName: a Secret with tls.crt, tls.key and ca.crt in the client's namespace",
            )


def secret_problems(body: Mapping) -> Problems:
    """Kubernetes' ValidateSecret (pkg/apis/core/validation): a ``kubernetes.io/tls`` Secret must hold
    ``tls.crt`` and ``tls.key`` (in ``data`` or ``stringData``)."""
    if body.get("type") != "kubernetes.io/tls":
        return
    keys = set(body.get("data") or {}) | set(body.get("stringData") or {})
    for key in ("tls.crt", "tls.key"):
        if key not in keys:
            yield (
                f"data[{key}]",
                f"a kubernetes.io/tls Secret needs the key {key}; the API server rejects it",
                "create it with `kubectl create secret tls NAME --cert=FILE --key=FILE`, which sets both",
            )
