"""Notebooks 16 and 17 on the kind backend, contract-tested on the stand-ins (tests/fakes: the fake kind,
docker, istioctl and kubectl, and the stand-in Kubernetes API server): the lessons' Secrets, Gateways,
stand-in and origination rules apply unchanged with kubectl's answers, and the HTTPS ingress address is
kind's https port mapping (cluster-config/kind/cluster.yaml: 127.0.0.1:8443 -> NodePort 30443 -> 443)."""

from __future__ import annotations

import pytest
from fakes import harness

from labkit import edge, paths
from labkit.backends.kind import KubeLab

TASKS = paths.CLUSTER_CONFIG / "tasks"
TLS_FILES = paths.ROOT / "services" / "currency-converter" / "standin-tls"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        _, api = harness.kind_lab(tmp_path_factory.mktemp("kind"), monkeypatch)
        lab = KubeLab("kind")
        lab.up()
        yield lab
        api.stop()


def test_the_secure_ingress_lesson_applies_unchanged_and_finds_the_https_mapping(lab, tmp_path):
    ca = edge.make_ca(tmp_path, "example-ca")
    secret = edge.tls_secret(
        "currency-credential", "istio-system", edge.issue(tmp_path, ca, "currency.example.com")
    )
    steps = [
        paths.MESH / "gateway-currency-converter.yaml",
        TASKS / "virtual-service-currency-converter-edge.yaml",
        secret,
        TASKS / "gateway-currency-converter-https.yaml",
        TASKS / "gateway-currency-converter-mtls.yaml",
    ]
    changes = [str(c) for step in steps for c in lab.apply(step)]
    assert changes == [
        "gateway/currency-gateway (payments-prod) created",
        "virtualservice/currency-converter-edge (payments-prod) created",
        "secret/currency-credential (istio-system) created",
        "gateway/currency-gateway-https (payments-prod) created",
        "gateway/currency-gateway-https (payments-prod) configured",
    ]
    assert edge.address(lab, 443) == ("127.0.0.1", 8443)
    assert edge.address(lab, 80) == ("127.0.0.1", 8080)
    assert [c.action for step in reversed(steps[1:]) for c in lab.delete(step)][-1] == "deleted"


def test_the_tls_origination_lesson_applies_unchanged(lab):
    ca_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "fx-rates-ca", "namespace": "payments-prod"},
        "type": "Opaque",
        "stringData": {"ca.crt": (TLS_FILES / "ca.crt").read_text()},
    }
    steps = [
        TASKS / "fx-rates-tls.yaml",
        TASKS / "service-entry-fx-rates-tls.yaml",
        ca_secret,
        TASKS / "destination-rule-fx-rates-tls-origination.yaml",
        TASKS / "fx-rates-tls-mutual.yaml",
    ]
    changes = [str(c) for step in steps for c in lab.apply(step)]
    assert changes == [
        "service/fx-rates-tls (external) created",
        "deployment/fx-rates-tls (external) created",
        "serviceentry/fx-rates (payments-prod) created",
        "secret/fx-rates-ca (payments-prod) created",
        "destinationrule/fx-rates-tls-origination (payments-prod) created",
        "service/fx-rates-tls (external) unchanged",
        "deployment/fx-rates-tls (external) configured",
    ]
