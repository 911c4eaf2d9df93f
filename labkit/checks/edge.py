"""Checks of secure ingress (notebook 16): a call over TLS to the gateway was answered, or refused in the
handshake, and HTTP/2 is what the gateway negotiates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.checks.report import fail, passed

if TYPE_CHECKING:
    from labkit.edge import Reply

#: Where a secure-ingress problem usually is, as the troubleshooting section lists it.
LOOK_AT = (
    "the Gateway's tls (mode, credentialName), the Secret it names (in istio-system, with tls.crt, tls.key "
    "and for MUTUAL ca.crt), and the server's hosts (the SNI the client sends); `lab.get('Gateway')`"
)


def https_ok(reply: Reply, what: str = "the call") -> None:
    """The gateway completed the TLS handshake and answered 200."""
    if reply.status != 200:
        got = f"it was refused ({reply.error})" if reply.error else f"it answered HTTP {reply.status}"
        raise fail(f"expected HTTP 200 for {what} over TLS, but {got}", LOOK_AT)
    passed(f"{what}: HTTP 200 over TLS (ALPN {reply.alpn})")


def tls_refused(reply: Reply, what: str = "the call") -> None:
    """The gateway refused the connection during or right after the TLS handshake (no HTTP answer)."""
    if reply.error is None:
        raise fail(
            f"expected the gateway to refuse {what} in the TLS handshake, but it answered {reply.status}",
            "the Gateway's tls.mode (MUTUAL requires a client certificate signed by the Secret's ca.crt) and "
            "which Gateway is applied (`lab.get('Gateway')`)",
        )
    passed(f"{what}: refused by the gateway ({reply.error})")


def negotiates_h2(protocol: str | None) -> None:
    """The gateway picked HTTP/2 from the client's ALPN offer ``h2, http/1.1``, as Istio's gateways do."""
    if protocol != "h2":
        raise fail(f"expected the gateway to negotiate h2, but it picked {protocol!r}", LOOK_AT)
    passed("the gateway negotiated HTTP/2 (ALPN h2), as Istio's TLS servers do")
