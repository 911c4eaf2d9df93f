"""TLS origination without traffic: the client cluster istiod's ``constructUpstreamTLS`` gives
(pilot/pkg/networking/core/cluster_tls.go; real Envoy accepts it), and the fields the local backend
refuses."""

from __future__ import annotations

import pytest
import yaml
from support.envoy import client, cluster, configs, envoy_validate

from labkit import manifests, paths
from labkit.errors import UnsupportedError
from labkit.local.supported import check_supported

TASKS = paths.CLUSTER_CONFIG / "tasks"
TLS_FILES = paths.ROOT / "services" / "currency-converter" / "standin-tls"
CLUSTER = "outbound|80||api.fxrates.example"


def _texts(tls: str, secret: dict | None = None) -> list[str]:
    entry = (TASKS / "service-entry-fx-rates-tls.yaml").read_text()
    texts = [entry.replace("fx-rates-tls.external.svc.cluster.local", "127.0.0.1")]  # no stand-in here
    texts.append(f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: fx, namespace: payments-prod}}
spec: {{host: api.fxrates.example, trafficPolicy: {{tls: {tls}}}}}
""")
    if secret is not None:
        texts.append(yaml.safe_dump(secret))
    return texts


def _secret(name: str, **data: str) -> dict:
    meta = {"name": name, "namespace": "payments-prod"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": data}


CA = _secret("fx-ca", **{"ca.crt": (TLS_FILES / "ca.crt").read_text()})


def _socket(c: dict) -> dict:
    return c["transport_socket"]["typed_config"]


def test_simple_trusts_the_credentials_ca_with_auto_sni_and_san_validation(tmp_path):
    topo, cfgs = configs(tmp_path / "s", *_texts("{mode: SIMPLE, credentialName: fx-ca}", CA))
    c = cluster(client(cfgs), CLUSTER)
    context = _socket(c)["common_tls_context"]
    assert context["validation_context"]["trusted_ca"]["inline_string"].startswith("-----BEGIN CERTIFICATE")
    assert "tls_certificates" not in context and "sni" not in _socket(c)
    options = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["upstream_http_protocol_options"] == {"auto_sni": True, "auto_san_validation": True}
    envoy_validate(topo, {"sidecar~client-0.payments-prod": client(cfgs)}, tmp_path / "v")


def test_an_explicit_sni_turns_auto_sni_off_and_mutual_adds_the_client_certificate(tmp_path):
    pair = {
        "tls.crt": (TLS_FILES / "server.crt").read_text(),
        "tls.key": (TLS_FILES / "server.key").read_text(),
    }
    secret = _secret("fx-client", **pair, **{"ca.crt": (TLS_FILES / "ca.crt").read_text()})
    tls = "{mode: MUTUAL, credentialName: fx-client, sni: api.fxrates.example}"
    _, cfgs = configs(tmp_path / "s", *_texts(tls, secret))
    c = cluster(client(cfgs), CLUSTER)
    assert _socket(c)["sni"] == "api.fxrates.example"
    assert "typed_extension_protocol_options" not in c
    [certificate] = _socket(c)["common_tls_context"]["tls_certificates"]
    assert certificate["private_key"]["inline_string"] == pair["tls.key"]


def test_a_missing_credential_leaves_the_cluster_without_endpoints(tmp_path):
    _, cfgs = configs(tmp_path / "s", *_texts("{mode: SIMPLE, credentialName: nowhere}"))
    c = cluster(client(cfgs), CLUSTER)
    assert c["load_assignment"]["endpoints"] == [] and "transport_socket" not in c


@pytest.mark.parametrize(
    "field", ["caCertificates: /ca.pem", "subjectAltNames: [a]", "insecureSkipVerify: true"]
)
def test_other_client_tls_fields_are_refused_by_name(field):
    [dr] = manifests.load(_texts(f"{{mode: SIMPLE, {field}}}")[1])
    with pytest.raises(
        UnsupportedError, match=rf"spec.trafficPolicy.tls.{field.split(':')[0]} is not supported"
    ):
        check_supported([dr])


@pytest.mark.parametrize(
    ("tls", "says"),
    [
        ("{mode: MUTUAL}", r"tls.clientCertificate: client certificate required for mutual tls"),
        (
            "{mode: SIMPLE, credentialName: c, caCertificates: /a}",
            r"tls.caCertificates: cannot specify client",
        ),
    ],
)
def test_client_tls_is_validated_as_istiod_does(tls, says):
    from labkit import validation
    from labkit.errors import ValidationError

    with pytest.raises(ValidationError, match=says):
        validation.check(manifests.load(_texts(tls)[1]))
