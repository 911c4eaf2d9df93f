"""``lab.set_weights(..., api="gateway")`` and the canary control in Gateway API mode on the local backend,
through real Envoy and real HTTP: the HTTPRoute replaces the VirtualService (and back), the client's sidecar
holds the new weights, the split follows, and ``lab.reset`` removes an HTTPRoute left behind."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from labkit import canary, checks, lesson, manifests, paths, stats
from labkit.errors import LabError
from labkit.lab import Lab
from labkit.widgets import canary_control

GATEWAY_API = paths.CLUSTER_CONFIG / "gateway-api"
SERVICE = "currency-converter"


def test_an_unknown_api_is_refused_with_what_to_do():
    with pytest.raises(LabError, match=r"unknown api 'gamma'.*What to do: use api='istio'"):
        canary.route("gamma", SERVICE, {"v1": 90, "v2": 10})


def test_the_gateway_route_is_the_90_10_manifest_for_those_weights():
    (manifest,) = manifests.load(GATEWAY_API / "http-route-currency-converter-90-10.yaml")
    assert canary.route("gateway", SERVICE, {"v1": 90, "v2": 10}) == manifest.body


@pytest.fixture
def gw(lab: Lab) -> Iterator[Lab]:
    """The shared lab with the per-version Services; afterwards back to the Istio canary at 90/10."""
    lab.apply(GATEWAY_API / "service-currency-converter-versions.yaml")
    try:
        yield lab
    finally:
        lab.set_weights(SERVICE, v1=90, v2=10)


def _kinds(changes) -> list[tuple[str, str]]:
    return [(c.kind, c.action) for c in changes if c.name == SERVICE]


@pytest.mark.mesh
def test_set_weights_in_gateway_mode_replaces_the_virtual_service_and_the_split_follows(gw: Lab) -> None:
    changes = gw.set_weights(SERVICE, api="gateway", v1=70, v2=30)
    assert _kinds(changes) == [("VirtualService", "deleted"), ("HTTPRoute", "created")]
    assert gw.route_weights() == {"v1": 70, "v2": 30}  # the version Services' clusters, as versions
    result = gw.send(lesson.URL, n=1000, concurrency=8, progress=False)
    checks.split_matches(result, {"v1": 70, "v2": 30})
    changes = gw.set_weights(SERVICE, v1=90, v2=10)
    assert _kinds(changes) == [("HTTPRoute", "deleted"), ("VirtualService", "created")]
    assert gw.get("httproutes", "payments-prod") == [] and gw.route_weights() == {"v1": 90, "v2": 10}


@pytest.mark.mesh
def test_the_control_in_gateway_api_mode_moves_the_http_route_and_the_split_converges(gw: Lab) -> None:
    ctrl = canary_control(gw, qps=100, api="gateway")
    try:
        ctrl.start()
        ctrl.slider.value = 30
        assert ("HTTPRoute", "created") in _kinds(ctrl.apply())
        assert ctrl.state.api == "gateway" and ctrl.state.log[-1].endswith("v2 30 % (HTTPRoute)")
        (route,) = gw.get("httproutes", "payments-prod")
        assert [b["weight"] for b in route.spec["rules"][0]["backendRefs"]] == [70, 30]
        time.sleep(ctrl.window + 1.0)  # the window then holds only answers sent after the change
        deadline = time.monotonic() + 10
        while not stats.split_report(ctrl.state.counts, {"v1": 70, "v2": 30}).consistent:
            assert time.monotonic() < deadline, ctrl.state
            time.sleep(0.5)
        ctrl.api_toggle.value = "istio"  # the toggle: the next Apply writes the VirtualService again
        assert _kinds(ctrl.apply(10)) == [("HTTPRoute", "deleted"), ("VirtualService", "created")]
    finally:
        ctrl.close()


@pytest.mark.mesh
def test_reset_removes_an_http_route_left_by_an_earlier_notebook(gw: Lab) -> None:
    gw.set_weights(SERVICE, api="gateway", v1=0, v2=100)
    gw.reset("canary-90-10")
    assert gw.get("httproutes", "payments-prod") == []
    assert gw.route_weights() == {"v1": 90, "v2": 10}


def test_tables_show_an_http_routes_parents_and_weighted_backends():
    from labkit import tables

    (route,) = manifests.load(GATEWAY_API / "http-route-currency-converter-90-10.yaml")
    [header, row] = tables.resources([route])
    assert header.split() == ["NAMESPACE", "NAME", "DETAIL"]
    assert row.split(None, 2)[2] == (
        "parents Service/currency-converter  backends currency-converter-v1 90, currency-converter-v2 10"
    )


@pytest.mark.mesh
def test_labkit_weights_with_api_gateway_writes_the_http_route(gw: Lab, monkeypatch, capsys) -> None:
    from labkit import cli

    monkeypatch.setattr(cli, "_lab", lambda args: gw)  # the shared lab, not one opened from LAB_STATE
    assert cli.main(["weights", SERVICE, "v1=80", "v2=20", "--api", "gateway"]) == 0
    assert "httproute/currency-converter (payments-prod) created" in capsys.readouterr().out
    assert gw.route_weights() == {"v1": 80, "v2": 20}
