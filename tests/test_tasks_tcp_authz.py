"""AuthorizationPolicy on notebook 20's TCP echo port, through real Envoy and real TCP connections: the
network RBAC filters istiod's ``BuildTCP`` puts before ``tcp_proxy`` (labkit/local/authz.py, after
pilot/pkg/security/authz/builder/builder.go), as Istio's "Authorization for TCP traffic" task shows them.

PERMISSIVE mTLS, so the sidecar-less ``legacy`` client reaches the plaintext chain and has no principal.
One lab for the module; each test deletes what it applied.
"""

from __future__ import annotations

import pytest

from labkit.scenario import NAMESPACE, URL

pytestmark = pytest.mark.mesh

PORT = 9001  # the sample app's TCP echo port, Service tcp-echo (cluster-config/apps/currency-converter.yaml)
TCP_URL = f"tcp://tcp-echo.{NAMESPACE}:{PORT}"
HTTP_URL = URL
CLIENT = f"cluster.local/ns/{NAMESPACE}/sa/client"


def policy(name: str, action: str, rules: list[dict]) -> dict:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "currency-converter"}},
            "action": action,
            "rules": rules,
        },
    }


PERMISSIVE = {
    "apiVersion": "security.istio.io/v1",
    "kind": "PeerAuthentication",
    "metadata": {"name": "default", "namespace": NAMESPACE},
    "spec": {"mtls": {"mode": "PERMISSIVE"}},
}


@pytest.fixture(scope="module")
def tcp_lab(lab):
    lab.apply(PERMISSIVE)
    yield lab
    lab.ensure("canary-90-10")


def echoed(lab, source: str = "client", n: int = 6) -> int:
    """How many of ``n`` connections from ``source`` got their line echoed (a denied one gets nothing)."""
    result = lab.send_tcp(TCP_URL, n, source=source)
    assert set(result.codes()) <= {"echoed", "no echo", "connection reset"}, result.summary()
    return result.codes().get("echoed", 0)


def test_an_allow_on_source_principals_echoes_that_client_only(tcp_lab):
    assert echoed(tcp_lab) == 6 and echoed(tcp_lab, "legacy") == 6  # no policy yet: both served
    only_client = policy("tcp-client", "ALLOW", [{"from": [{"source": {"principals": [CLIENT]}}]}])
    try:
        tcp_lab.apply(only_client)
        assert echoed(tcp_lab) == 6
        assert echoed(tcp_lab, "legacy") == 0  # plaintext: no principal, closed by the network RBAC
        other = policy(
            "tcp-client", "ALLOW", [{"from": [{"source": {"principals": ["cluster.local/ns/x/sa/y"]}}]}]
        )
        tcp_lab.apply(other)
        assert echoed(tcp_lab) == 0  # the client's mTLS principal is the one that mattered
    finally:
        tcp_lab.delete(only_client)
    assert echoed(tcp_lab) == 6


def denied(lab) -> int:
    """The servers' network RBAC ``denied`` counters (stat prefix ``tcp.``, as istiod sets it), summed."""
    stats = [lab.proxy_stats(f"currency-converter-{v}", "tcp.rbac.denied") for v in ("v1", "v2")]
    return sum(s.get("tcp.rbac.denied", 0) for s in stats)


def test_a_deny_on_the_tcp_port_closes_it_and_leaves_http_alone(tcp_lab):
    deny = policy("deny-tcp", "DENY", [{"to": [{"operation": {"ports": [str(PORT)]}}]}])
    try:
        tcp_lab.apply(deny)
        before = denied(tcp_lab)
        assert echoed(tcp_lab) == 0 and echoed(tcp_lab, "legacy") == 0
        assert denied(tcp_lab) - before == 12  # each connection, mTLS and plaintext, closed by the filter
        assert tcp_lab.send(HTTP_URL, 5).codes() == {200: 5}  # the policy names port 9001 only
    finally:
        tcp_lab.delete(deny)
    assert echoed(tcp_lab) == 6


def test_a_deny_on_the_http_port_answers_403_and_leaves_tcp_alone(tcp_lab):
    """``ports`` on an HTTP port: the same ``destination_port`` matcher in the HTTP RBAC filter."""
    deny = policy("deny-http", "DENY", [{"to": [{"operation": {"ports": ["8080"]}}]}])
    try:
        tcp_lab.apply(deny)
        assert tcp_lab.send(HTTP_URL, 5).codes() == {403: 5}
        assert echoed(tcp_lab) == 6
    finally:
        tcp_lab.delete(deny)


def test_an_allow_with_an_http_only_field_denies_tcp_but_serves_http(tcp_lab):
    """``methods`` is HTTP only: istiod drops the rule from the TCP chain, so the ALLOW matches nothing."""
    get_only = policy("get-only", "ALLOW", [{"to": [{"operation": {"methods": ["GET"]}}]}])
    try:
        tcp_lab.apply(get_only)
        assert echoed(tcp_lab) == 0
        assert tcp_lab.send(HTTP_URL, 5).codes() == {200: 5}
    finally:
        tcp_lab.delete(get_only)
