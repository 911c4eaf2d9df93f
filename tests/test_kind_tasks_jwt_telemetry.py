"""Notebooks 18 and 19 on the kind backend, against the stand-in API server (tests/fakes/apiserver.py): the
same manifests the local backend runs (the RequestAuthentication made by labkit.tokens, the task policies and
the Telemetry) pass the same validation, are server-side applied as kubectl would and come back from
``lab.get``; deleting them leaves nothing. What Istio then does with them is the live test's
(tests/test_kind_live.py, marked ``cluster``)."""

from __future__ import annotations

import pytest
from fakes import harness

from labkit import paths
from labkit.backends.kind import KubeLab
from labkit.tokens import Issuer

TASKS = paths.CLUSTER_CONFIG / "tasks"


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        fake, api = harness.kind_lab(tmp_path_factory.mktemp("running"), monkeypatch)
        lab = KubeLab("kind")
        lab.up()
        yield api, lab
        api.stop()


def test_the_jwt_lessons_objects_are_applied_as_they_are_and_deleted(running):
    api, lab = running
    authn = Issuer().request_authentication()
    sources = [
        authn,
        TASKS / "authorization-policy-currency-converter-require-jwt.yaml",
        TASKS / "telemetry-payments-prod-access-log-off.yaml",
        TASKS / "telemetry-currency-converter-errors-only.yaml",
    ]
    changes = [str(c) for src in sources for c in lab.apply(src)]
    assert changes == [
        "requestauthentication/jwt (payments-prod) created",
        "authorizationpolicy/require-jwt (payments-prod) created",
        "telemetry/namespace-default (payments-prod) created",
        "telemetry/errors-only (payments-prod) created",
    ]
    [live] = lab.get("RequestAuthentication", "payments-prod")
    assert live.spec["jwtRules"] == authn["spec"]["jwtRules"]  # the inline keys, unchanged
    telemetries = {t.name: t.spec for t in lab.get("Telemetry")}
    assert telemetries["errors-only"]["accessLogging"][0]["filter"] == {"expression": "response.code >= 400"}
    group = TASKS / "authorization-policy-currency-converter-jwt-group.yaml"
    assert [c.action for c in lab.apply(group)] == ["configured"]  # same name: replaces require-jwt
    [policy] = lab.get("AuthorizationPolicy", "payments-prod")
    assert policy.spec["rules"][0]["when"] == [{"key": "request.auth.claims[groups]", "values": ["finance"]}]
    lab.delete(group)
    assert not lab.get("AuthorizationPolicy")
    lab.reset("canary-90-10")  # what the next notebook's first cell does: the lesson's objects go
    assert not lab.get("RequestAuthentication") and not lab.get("Telemetry")
