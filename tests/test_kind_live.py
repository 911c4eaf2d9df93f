"""The whole lab on a real kind cluster: Docker, kind, kubectl and istioctl 1.31 must be installed (the
instructors' workflow .github/workflows/lab-on-kind.yml runs it). Skipped elsewhere by tests/conftest.py.
Nothing is faked here. Set LAB_KEEP=1 to leave the cluster running afterwards."""

from __future__ import annotations

import os
import time

import pytest

import labkit
from labkit import lesson, metrics, paths
from labkit.backends.kind import KubeLab

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def lab():
    lab = labkit.open("kind")
    assert isinstance(lab, KubeLab)
    status = lab.up()
    assert status.healthy, str(status)
    yield lab
    if not os.environ.get("LAB_KEEP"):
        lab.down()


def _eventually(check, timeout: float = 90.0):
    """Istio config reaches the proxies a few seconds after apply; Prometheus scrapes every 15 s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(3)


def test_every_app_pod_runs_with_its_sidecar(lab):
    status = lab.status()
    assert status.healthy, str(status)
    mesh = [w for w in status.workloads if w.namespace == "payments-prod"]
    assert mesh and all(w.sidecar for w in mesh)


def test_strict_mtls_is_in_effect(lab):
    lab.ensure("mtls-strict")
    assert _eventually(lambda: lab.mtls_mode("currency-converter-v1") == "STRICT")
    legacy = lab.send(lesson.URL, n=10, source="legacy")
    assert all(o.status is None or o.status >= 500 for o in legacy.outcomes), legacy.summary()


def test_canary_90_10_reaches_the_proxy_and_the_traffic(lab):
    lab.ensure("canary-90-10")
    assert _eventually(lambda: lab.route_weights() == {"v1": 90, "v2": 10}), lab.route_weights()
    result = lab.send(lesson.URL, n=400, qps=50)
    assert result.report({"v1": 90, "v2": 10}).consistent, result.summary({"v1": 90, "v2": 10})
    assert not [e for e in lab.analyze() if e.severity == "error"]


def test_prometheus_counts_mutual_tls_requests_by_version(lab):
    lab.send(lesson.URL, n=100, qps=50)

    def counted():
        samples = lab.metrics()
        return metrics.total(samples, reporter="destination", connection_security_policy="mutual_tls") > 0

    assert _eventually(counted, timeout=120)


def test_ingress_on_host_port_8080(lab):
    lab.apply(paths.MESH / "gateway-currency-converter.yaml")
    lab.apply(paths.MESH / "virtual-service-currency-converter-ingress.yaml")

    def answered():
        result = lab.send("http://localhost/convert?from=NOK&to=EUR&amount=1", n=5, source="ingress")
        return all(o.status == 200 for o in result.outcomes)

    assert _eventually(answered), "the gateway on 127.0.0.1:8080 did not answer 200 within 90 s"
    assert lab.access_log("currency-converter-v1"), "the sidecar's access log has lines"
