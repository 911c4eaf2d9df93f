"""Secure ingress without Envoy: what validation rejects (istiod's ``validateTLSOptions``, the API server's
``ValidateSecret``), what the local backend refuses by name, the Envoy config istiod's rules give (one
filter chain per TLS server, SNI, ALPN, RDS names; real Envoy accepts it), and the kind https mapping."""

from __future__ import annotations

import base64

import pytest
import yaml
from support.envoy import configs, envoy_validate, listener, route

from labkit import edge, manifests, paths, validation
from labkit.backends.kind import _ingress
from labkit.errors import UnsupportedError, ValidationError
from labkit.local import credentials
from labkit.local.supported import check_supported

TASKS = paths.CLUSTER_CONFIG / "tasks"


def _gateway(tls: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: payments-prod}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
    - port: {{number: 443, name: https, protocol: HTTPS}}
      hosts: [currency.example.com]
      tls: {tls}
"""


def _secret(tmp_path, ca: bool = False) -> str:
    pki = edge.make_ca(tmp_path, "ca")
    server = edge.issue(tmp_path, pki, "currency.example.com")
    body = edge.tls_secret("cred", "istio-system", server, ca=pki.cert if ca else None)
    return yaml.safe_dump(body)


def test_simple_without_credential_name_or_files_is_rejected_as_istiod_does():
    with pytest.raises(
        ValidationError, match=r"spec.servers\[0\].tls.privateKey.*SIMPLE TLS requires a private"
    ):
        validation.check(manifests.load(_gateway("{mode: SIMPLE}")))


def test_mutual_without_credential_name_needs_a_client_ca():
    with pytest.raises(ValidationError, match=r"tls.caCertificates.*MUTUAL TLS requires a client CA bundle"):
        validation.check(manifests.load(_gateway("{mode: MUTUAL, serverCertificate: /a, privateKey: /b}")))


def test_a_tls_secret_without_its_key_is_rejected_as_the_api_server_does():
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: c, namespace: istio-system}\n"
    secret += "type: kubernetes.io/tls\nstringData: {tls.crt: x}\n"
    with pytest.raises(
        ValidationError, match=r"data\[tls.key\].*kubernetes.io/tls Secret needs the key tls.key"
    ):
        validation.check(manifests.load(secret))


@pytest.mark.parametrize(
    ("tls", "field"),
    [
        ("{mode: PASSTHROUGH}", "spec.servers[0].tls.mode value 'PASSTHROUGH'"),
        (
            "{mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3}",
            "spec.servers[0].tls.minProtocolVersion",
        ),
        ("{mode: SIMPLE, serverCertificate: /a, privateKey: /b}", "spec.servers[0].tls.serverCertificate"),
    ],
)
def test_other_server_tls_settings_are_refused_by_name(tls, field):
    with pytest.raises(UnsupportedError, match=field.replace("[", r"\[").replace("]", r"\]")):
        check_supported(manifests.load(_gateway(tls)))


def test_the_lessons_manifests_are_clean_and_supported():
    for name in ("gateway-currency-converter-https.yaml", "gateway-currency-converter-mtls.yaml"):
        resources = manifests.load(TASKS / name)
        assert validation.validate(resources) == []
        check_supported(resources)


def test_credentials_read_generic_and_tls_keys_and_the_cacert_secret_first():
    def secret(name, data, kind="Opaque"):
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "istio-system"}}
        body["type"] = kind
        body["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        return body

    store = credentials.secrets(
        manifests.load(
            [
                secret("generic", {"cert": "C", "key": "K", "cacert": "A"}),
                secret("tls", {"tls.crt": "C2", "tls.key": "K2", "ca.crt": "A2"}, "kubernetes.io/tls"),
                secret("tls-cacert", {"cacert": "A3"}),
                secret("empty", {"tls.crt": "", "tls.key": "K"}),
            ]
        )
    )
    assert credentials.lookup(store, "istio-system", "generic") == credentials.Credential("C", "K", "A")
    assert credentials.lookup(store, "istio-system", "tls") == credentials.Credential("C2", "K2", "A3")
    assert credentials.lookup(store, "istio-system", "empty") is None  # hasValue: an empty key counts as none
    assert credentials.lookup(store, "payments-prod", "generic") is None  # only the gateway's namespace


def test_each_tls_server_gets_a_chain_with_its_sni_alpn_and_route(tmp_path):
    secret = _secret(tmp_path, ca=True)
    gateway = _gateway("{mode: MUTUAL, credentialName: cred}")
    topo, cfgs = configs(tmp_path / "state", secret, gateway)
    gw = cfgs[topo.gateway.id]
    https = listener(gw, "0.0.0.0_8443")  # port 443 -> the ingress Service's targetPort 8443
    [chain] = https["filter_chains"]
    assert chain["filter_chain_match"] == {"server_names": ["currency.example.com"]}
    context = chain["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is True
    assert context["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    assert "trusted_ca" in context["common_tls_context"]["validation_context"]
    rds = chain["filters"][0]["typed_config"]["rds"]["route_config_name"]
    assert rds == "https.443.https.gw.payments-prod"
    assert route(gw, rds)["virtual_hosts"][0]["name"] == "blackhole:443"  # no VirtualService bound yet
    envoy_validate(topo, {topo.gateway.id: gw}, tmp_path / "validate")


def test_a_missing_secret_leaves_the_port_closed(tmp_path):
    topo, cfgs = configs(tmp_path / "state", _gateway("{mode: SIMPLE, credentialName: nowhere}"))
    assert [x["name"] for x in cfgs[topo.gateway.id].listeners if x["name"] == "0.0.0.0_8443"] == []


def test_mixing_plain_and_tls_servers_on_one_port_is_refused(tmp_path):
    mixed = _gateway("{mode: SIMPLE, credentialName: cred}").replace(
        "  servers:\n",
        "  servers:\n    - port: {number: 443, name: plain, protocol: HTTP}\n      hosts: ['*']\n",
    )
    with pytest.raises(UnsupportedError, match="both plain-text and TLS servers"):
        configs(tmp_path / "state", _secret(tmp_path), mixed)


def test_kind_sends_https_to_the_https_node_port_mapping():
    assert _ingress("https://currency.example.com/convert") == (
        "https://127.0.0.1:8443/convert",
        {"Host": "currency.example.com"},
    )
    assert _ingress("http://currency.example.com/convert")[0] == "http://127.0.0.1:8080/convert"
