"""Istio's "Ingress Gateways" and "Secure Gateways" tasks on the local backend, through real Envoy, real TLS
and real HTTP (notebook 16): a Gateway server ``tls.mode`` SIMPLE and MUTUAL whose ``credentialName`` names
a Secret in the gateway's namespace (local/credentials.py, local/gateway_tls.py; istiod's
``BuildListenerTLSContext`` in pilot/pkg/networking/core/listener.go, pilot/pkg/credentials/kube/secrets.go).

One lab for the module at the canary checkpoint; each test deletes what it applied.
"""

from __future__ import annotations

import shutil

import pytest

from labkit import edge, paths

pytestmark = pytest.mark.mesh

TASKS = paths.CLUSTER_CONFIG / "tasks"
MESH = paths.CLUSTER_CONFIG / "mesh"
HTTPS = TASKS / "gateway-currency-converter-https.yaml"
MTLS = TASKS / "gateway-currency-converter-mtls.yaml"
EDGE = TASKS / "virtual-service-currency-converter-edge.yaml"
URL = "https://currency.example.com/convert?from=NOK&to=EUR&amount=100"
GATEWAY_NS = "istio-system"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = edge.make_ca(folder, "example-ca")
    clients = edge.make_ca(folder, "client-ca")
    rogue = edge.make_ca(folder, "rogue-ca")
    return {
        "folder": folder,
        "ca": ca,
        "server": edge.issue(folder, ca, "currency.example.com"),
        "clients": clients,
        "client": edge.issue(folder, clients, "client.example.com", client=True),
        "rogue": edge.issue(folder, rogue, "intruder.example.com", client=True),
    }


def _secret(pki, ca=None, name="currency-credential"):
    return edge.tls_secret(name, GATEWAY_NS, pki["server"], ca=ca)


def test_simple_tls_terminates_with_the_secrets_certificate_and_negotiates_h2(lab, pki):
    try:
        lab.apply(MESH / "destination-rule-currency-converter.yaml")
        lab.apply(_secret(pki))
        lab.apply(HTTPS)
        lab.apply(EDGE)
        at = edge.address(lab)
        reply = edge.get(URL, at, pki["ca"].cert)
        assert (reply.status, reply.alpn) == (200, "http/1.1"), reply
        assert edge.negotiated(URL, at, pki["ca"].cert) == "h2"  # util.ALPNHttp on the gateway's TLS server
        wrong_ca = edge.get(URL, at, pki["clients"].cert)  # the client does not trust the gateway
        assert wrong_ca.status is None and "CERTIFICATE_VERIFY_FAILED" in str(wrong_ca.error)
        other = edge.get("https://other.example.com/convert", at, pki["ca"].cert)  # SNI no chain matches
        assert other.status is None
        if shutil.which("curl"):
            assert edge.curl(URL, at, pki["ca"].cert) == 0
            assert edge.curl("https://other.example.com/convert", at, pki["ca"].cert) == edge.HANDSHAKE_FAILED
    finally:
        for src in (EDGE, HTTPS, _secret(pki)):
            lab.delete(src)


def test_mutual_tls_refuses_no_or_a_foreign_client_certificate(lab, pki):
    try:
        lab.apply(MESH / "destination-rule-currency-converter.yaml")
        lab.apply(_secret(pki, ca=pki["clients"].cert))
        lab.apply(MTLS)
        lab.apply(EDGE)
        at = edge.address(lab)
        assert edge.get(URL, at, pki["ca"].cert, client=pki["client"]).status == 200
        none = edge.get(URL, at, pki["ca"].cert)
        rogue = edge.get(URL, at, pki["ca"].cert, client=pki["rogue"])
        # TLS 1.3: the verdict is an alert after the handshake; Python sees it, or the closed connection
        assert none.status is None and none.error, none
        assert rogue.status is None and rogue.error, rogue
        if shutil.which("curl"):
            assert edge.curl(URL, at, pki["ca"].cert) in edge.REFUSED_AFTER_HANDSHAKE  # 56 in Istio's docs
            assert edge.curl(URL, at, pki["ca"].cert, client=pki["rogue"]) in edge.REFUSED_AFTER_HANDSHAKE
            assert edge.curl(URL, at, pki["ca"].cert, client=pki["client"]) == 0
    finally:
        for src in (EDGE, MTLS, _secret(pki, ca=pki["clients"].cert)):
            lab.delete(src)


def test_the_ca_comes_from_the_cacert_secret_first(lab, pki):
    """``GetCaCert``: ``<name>-cacert`` is looked up before the Secret's own ``ca.crt``."""
    cacert = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "currency-credential-cacert", "namespace": GATEWAY_NS},
        "type": "Opaque",
        "stringData": {"cacert": pki["clients"].cert.read_text()},
    }
    own_rogue_ca = _secret(pki, ca=pki["ca"].cert)  # ca.crt names the wrong CA; the -cacert Secret wins
    try:
        lab.apply(MESH / "destination-rule-currency-converter.yaml")
        lab.apply([own_rogue_ca, cacert])
        lab.apply(MTLS)
        lab.apply(EDGE)
        at = edge.address(lab)
        assert edge.get(URL, at, pki["ca"].cert, client=pki["client"]).status == 200
    finally:
        for src in (EDGE, MTLS, cacert, own_rogue_ca):
            lab.delete(src)


def test_a_missing_credential_closes_the_handshake(lab, pki):
    try:
        lab.apply(HTTPS)
        assert edge.get(URL, edge.address(lab), pki["ca"].cert).status is None
    finally:
        lab.delete(HTTPS)
