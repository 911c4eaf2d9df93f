"""Istio's "Explicit Deny" task on the local backend, through real Envoy and real HTTP (notebook 15): DENY
with ``notValues`` and ``notPaths`` (authz/model/model.go ``New``, ``rule.permission``/``rule.principal``: the
negated values are one ``not_id``/``not_rule`` around their OR), and a DENY policy at the ingress gateway.

One lab for the module at the canary checkpoint; each test deletes what it applied.
"""

from __future__ import annotations

import pytest

from labkit import lesson, manifests, paths
from labkit.errors import UnsupportedError
from labkit.local import authz
from labkit.local.supported import check_supported

pytestmark = pytest.mark.mesh

TASKS = paths.CLUSTER_CONFIG / "tasks"
MESH = paths.CLUSTER_CONFIG / "mesh"
URL = lesson.URL
BASE = URL.split("/convert")[0]
DENY_WITHOUT_TOKEN = TASKS / "authorization-policy-currency-converter-deny-without-token.yaml"


def test_deny_unless_the_token_is_admin_except_the_health_check(lab):
    try:
        lab.apply(DENY_WITHOUT_TOKEN)
        assert lab.send(URL, n=10, progress=False).codes() == {403: 10}  # no x-token: "not admin"
        guest = lab.send(URL, n=10, headers={"x-token": "guest"}, progress=False)
        assert guest.codes() == {403: 10}
        assert {o.flags for o in guest.outcomes} == {"RBAC"}
        assert lab.send(URL, n=10, headers={"x-token": "admin"}, progress=False).codes() == {200: 10}
        assert lab.send(BASE + "/healthz", n=5, progress=False).codes() == {200: 5}  # notPaths
        assert lab.send(BASE + "/headers", n=5, progress=False).codes() == {403: 5}
    finally:
        lab.delete(DENY_WITHOUT_TOKEN)
    assert lab.send(URL, n=5, progress=False).codes() == {200: 5}


def test_values_and_not_values_of_one_condition_are_both_required(lab):
    """model.go ``rule.principal``: values ORed, AND the notValues' OR negated."""
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-team-but-admin", "namespace": "payments-prod"},
        "spec": {
            "selector": {"matchLabels": {"app": "currency-converter"}},
            "action": "DENY",
            "rules": [
                {"when": [{"key": "request.headers[x-team]", "values": ["ops*"], "notValues": ["ops-admin"]}]}
            ],
        },
    }
    try:
        lab.apply(policy)

        def code(team: str) -> int:
            [(status, _)] = lab.send(URL, n=1, headers={"x-team": team}, progress=False).codes().items()
            return status

        assert (code("ops-night"), code("ops-admin"), code("dev")) == (403, 200, 200)
    finally:
        lab.delete(policy)


def test_not_paths_and_not_values_translate_to_negated_ors():
    """The RBAC shape istiod generates: ``not_rule`` around the paths' OR, ``not_id`` around the values'."""
    policy = authz._policy(
        {
            "to": [{"operation": {"notPaths": ["/a", "/b*"]}}],
            "when": [{"key": "request.headers[x-token]", "notValues": ["admin", "root"]}],
        }
    )
    [permission] = policy["permissions"]
    assert permission == {
        "and_rules": {
            "rules": [
                {
                    "not_rule": {
                        "or_rules": {
                            "rules": [
                                {"url_path": {"path": {"exact": "/a"}}},
                                {"url_path": {"path": {"prefix": "/b"}}},
                            ]
                        }
                    }
                }
            ]
        }
    }
    [principal] = policy["principals"]
    headers = [{"header": {"name": "x-token", "string_match": {"exact": v}}} for v in ("admin", "root")]
    assert principal == {"and_ids": {"ids": [{"not_id": {"or_ids": {"ids": headers}}}]}}


def test_a_deny_policy_at_the_ingress_gateway_guards_the_edge_only(lab):
    """A policy in istio-system selecting istio=ingressgateway: paths other than /convert and /healthz get 403
    at the gateway, before routing; the same paths inside the mesh are not affected."""
    edge = "http://payments.example"
    applied = [
        MESH / "gateway-currency-converter.yaml",
        TASKS / "virtual-service-currency-converter-ingress-all.yaml",
    ]
    policy = TASKS / "authorization-policy-ingress-only-convert.yaml"
    try:
        for path in applied:
            lab.apply(path)
        assert lab.send(edge + "/headers", n=5, source="ingress", progress=False).codes() == {200: 5}
        lab.apply(policy)
        denied = lab.send(edge + "/headers", n=5, source="ingress", progress=False)
        assert denied.codes() == {403: 5} and {o.flags for o in denied.outcomes} == {"RBAC"}
        convert = edge + "/convert?from=NOK&to=EUR&amount=1"
        assert lab.send(convert, n=5, source="ingress", progress=False).codes() == {200: 5}
        assert lab.send(edge + "/healthz", n=5, source="ingress", progress=False).codes() == {200: 5}
        assert lab.send(edge + "/nowhere", n=2, source="ingress", progress=False).codes() == {403: 2}
        assert lab.send(BASE + "/headers", n=5, progress=False).codes() == {200: 5}  # inside the mesh
    finally:
        for path in (policy, *reversed(applied)):
            lab.delete(path)


def test_the_task_manifests_are_supported_and_the_other_negations_are_refused_by_name():
    """Only what the lessons need is implemented (notPaths, notValues): notMethods, say, is refused."""
    check_supported(manifests.load(TASKS))
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "payments-prod"},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"notMethods": ["GET"]}}]}]},
    }
    with pytest.raises(
        UnsupportedError, match=r"spec\.rules\[0\]\.to\[0\]\.operation\.notMethods is not supported"
    ):
        check_supported(manifests.load(policy))
