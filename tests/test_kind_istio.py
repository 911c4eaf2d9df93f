"""istioctl orchestration against a fake ``istioctl`` (tests/fakes/bin; this machine cannot run Istio): the
commands labkit runs, and how it reads istioctl's documented outputs, including ``analyze`` exiting 79 when it
finds errors, version skew, proxy route weights and the mTLS mode of ``x describe pod``."""

from __future__ import annotations

import json

import pytest
from fakes import harness

from labkit.errors import CommandError
from labkit.kind import istio
from labkit.kind.commands import Target

TARGET = Target(None, "kind-meshlab")

ANALYZE_79 = [
    {
        "code": "IST0101",
        "documentationUrl": "https://istio.io/v1.31/docs/reference/config/analysis/ist0101/?ref=istioctl",
        "level": "Error",
        "message": 'Referenced host+subset in destinationrule not found: "currency-converter+v3"',
        "origin": "VirtualService currency-converter.payments-prod",  # istioctl's <kind> <name>.<namespace>
        "reference": "",
    },
    {
        "code": "IST0102",
        "level": "Info",
        "message": "The namespace is not enabled for Istio injection.",
        "origin": "Namespace default",
    },
]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return harness.install(tmp_path, monkeypatch)


def test_install_uses_the_lab_operator_file_and_the_target_context(fake):
    istio.install(TARGET)
    [call] = fake.calls("istioctl")
    assert call[1:5] == ["install", "-y", "-f", call[4]] and call[4].endswith(
        "cluster-config/istio/install.yaml"
    )
    assert call[-2:] == ["--context", "kind-meshlab"]


def test_analyze_exit_79_becomes_findings_with_the_docs_link(fake):
    fake.respond("istioctl", ["analyze"], stdout=json.dumps(ANALYZE_79), rc=79)
    [finding] = istio.analyze(TARGET, "payments-prod")
    assert (finding.severity, finding.stage, finding.kind, finding.name) == (
        "error",
        "analysis",
        "VirtualService",
        "currency-converter",
    )
    assert finding.message.startswith("IST0101 Referenced host+subset")
    assert "ist0101" in finding.fix
    assert fake.calls("istioctl")[0][1:6] == ["analyze", "-o", "json", "-n", "payments-prod"]


def test_analyze_clean_run_has_no_findings(fake):
    fake.respond(
        "istioctl", ["analyze"], stdout="\u2714 No validation issues found when analyzing namespace: x.\n"
    )
    assert istio.analyze(TARGET) == []


def test_analyze_other_failures_are_errors(fake):
    fake.respond("istioctl", ["analyze"], stderr="Error: failed to fetch: connection refused", rc=1)
    with pytest.raises(CommandError, match="connection refused"):
        istio.analyze(TARGET)


def test_version_skew_between_istioctl_and_control_plane_is_a_problem(fake):
    client, control = istio.versions(TARGET)
    assert (client, control) == ("1.31.1", ["1.31.1"])
    assert istio.skew_problem(client, control) is None
    assert "control plane runs 1.30.3" in istio.skew_problem("1.31.1", ["1.30.3"])
    assert istio.skew_problem("1.31.1", ["1.31.0"]) is None  # patch releases do not matter


def test_route_weights_are_read_from_the_proxy_json(fake):
    weights = istio.route_weights(
        TARGET, "client-7d9", "payments-prod", "currency-converter.payments-prod.svc.cluster.local"
    )
    assert weights == {"v1": 90, "v2": 10}
    call = fake.calls("istioctl")[0]
    assert call[1:4] == ["proxy-config", "routes", "client-7d9.payments-prod"] and "json" in call


def test_route_without_subsets_reports_the_whole_service(fake):
    route = {"route": {"cluster": "outbound|8080||cc.ns.svc.cluster.local"}}
    routes = [{"virtualHosts": [{"domains": ["cc.ns.svc.cluster.local:8080"], "routes": [route]}]}]
    fake.respond("istioctl", ["proxy-config", "routes"], stdout=json.dumps(routes))
    assert istio.route_weights(TARGET, "p", "ns", "cc.ns.svc.cluster.local") == {"(no subset)": 100}


def test_mtls_mode_from_describe(fake):
    assert istio.mtls_mode(TARGET, "currency-converter-v1-abc", "payments-prod") == "STRICT"


def test_addons_are_found_in_istio_home(fake, tmp_path, monkeypatch):
    addons = tmp_path / "istio-1.31.1" / "samples" / "addons"
    addons.mkdir(parents=True)
    assert istio.addons_dir() is None
    for name in istio.ADDONS:
        (addons / name).write_text("")
    monkeypatch.setenv("ISTIO_HOME", str(tmp_path / "istio-1.31.1"))
    assert istio.addons_dir() == addons
