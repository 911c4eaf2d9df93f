"""Istio's "Egress TLS Origination" task on the local backend, through real Envoy and real TLS (notebook 17):
a ServiceEntry whose HTTP port 80 targets 443, and a DestinationRule ``tls`` SIMPLE / MUTUAL with
``credentialName`` (local/origination.py; istiod's ``constructUpstreamTLS`` in
pilot/pkg/networking/core/cluster_tls.go). The HTTPS stand-in is the sample app with its own CA
(cluster-config/tasks/fx-rates-tls.yaml, services/currency-converter/standin-tls/).

One lab for the module at the canary checkpoint; each test deletes the Istio objects it applied.
"""

from __future__ import annotations

import copy

import pytest

from labkit import edge, manifests, paths

pytestmark = pytest.mark.mesh

TASKS = paths.CLUSTER_CONFIG / "tasks"
STANDIN = TASKS / "fx-rates-tls.yaml"
ENTRY = TASKS / "service-entry-fx-rates-tls.yaml"
ORIGINATE = TASKS / "destination-rule-fx-rates-tls-origination.yaml"
TLS_FILES = paths.ROOT / "services" / "currency-converter" / "standin-tls"
RATES = "http://api.fxrates.example/rates"


def _secret(name: str, **data: str) -> dict:
    meta = {"name": name, "namespace": "payments-prod"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "stringData": data}


CA_SECRET = _secret("fx-rates-ca", **{"ca.crt": (TLS_FILES / "ca.crt").read_text()})


@pytest.fixture(scope="module")
def standin(lab):
    lab.apply(STANDIN)  # the HTTPS-only provider; the local backend keeps apps running until down()
    return lab


def test_tls_origination_reaches_the_https_standin_and_plain_http_to_443_fails(standin):
    lab = standin
    try:
        lab.apply(ENTRY)
        plain = lab.send(RATES, n=5, progress=False)  # the app's HTTP reaches an HTTPS port as it is
        assert plain.codes() == {503: 5}, plain.summary()
        lab.apply([CA_SECRET, manifests.load(ORIGINATE)[0].body])
        originated = lab.send(RATES, n=10, progress=False)
        assert originated.codes() == {200: 10}, originated.summary()
        blocked = lab.send("http://api.elsewhere.example/rates", n=3, progress=False)
        assert blocked.codes() == {502: 3}  # REGISTRY_ONLY still blocks every other host
    finally:
        for src in (ORIGINATE, CA_SECRET, ENTRY):
            lab.delete(src)


def test_without_the_providers_ca_the_sidecar_refuses_the_server(standin):
    """No credentialName: the system roots (VERIFY_CERTIFICATE_AT_CLIENT), which never signed the stand-in."""
    lab = standin
    system = manifests.load(ORIGINATE)[0].body
    del system["spec"]["trafficPolicy"]["tls"]["credentialName"]
    try:
        lab.apply([manifests.load(ENTRY)[0].body, system])
        assert lab.send(RATES, n=5, progress=False).codes() == {503: 5}
    finally:
        lab.delete([system, manifests.load(ENTRY)[0].body])


def test_mutual_origination_presents_the_client_certificate(standin, tmp_path):
    lab = standin
    [service, deployment] = manifests.load(STANDIN)
    mutual = copy.deepcopy(deployment.body)
    env = mutual["spec"]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "TLS_CLIENT_CA", "value": "standin-tls/client-ca.crt"})
    client_ca = edge.Pair(TLS_FILES / "client-ca.crt", TLS_FILES / "client-ca.key")
    client = edge.issue(tmp_path, client_ca, "client.payments-prod.example", client=True)
    credential = _secret(
        "fx-rates-client",
        **{"tls.crt": client.cert.read_text(), "tls.key": client.key.read_text()},
    )
    credential["stringData"]["ca.crt"] = (TLS_FILES / "ca.crt").read_text()
    dr = copy.deepcopy(manifests.load(ORIGINATE)[0].body)
    try:
        lab.apply(mutual)  # the provider now requires a client certificate from its client CA
        lab.apply([manifests.load(ENTRY)[0].body, CA_SECRET, dr])
        assert lab.send(RATES, n=5, progress=False).codes() == {503: 5}  # SIMPLE: no client certificate
        dr["spec"]["trafficPolicy"]["tls"] = {"mode": "MUTUAL", "credentialName": "fx-rates-client"}
        lab.apply([credential, dr])
        assert lab.send(RATES, n=10, progress=False).codes() == {200: 10}
    finally:
        lab.delete([dr, credential, CA_SECRET, manifests.load(ENTRY)[0].body])
        lab.apply(deployment.body)
