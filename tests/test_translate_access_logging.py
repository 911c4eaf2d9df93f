"""Telemetry accessLogging → each proxy's file access log, in istiod's order: workload > namespace > mesh."""

from __future__ import annotations

import pytest
from support.envoy import configs, envoy_validate, hcms

from labkit import manifests, paths, validation
from labkit.errors import UnsupportedError, ValidationError
from labkit.local import listeners
from labkit.local.supported import check_supported
from labkit.mesh import MeshSettings

V1 = "sidecar~currency-converter-v1-0.payments-prod"
CLIENT = "sidecar~client-0.payments-prod"
OFF = "telemetry-access-log-off.yaml"
ERRORS_ONLY = paths.CLUSTER_CONFIG / "tasks" / "telemetry-currency-converter-errors-only.yaml"
GATEWAY = "gateway-currency-converter.yaml"  # gives the ingress gateway a listener, hence a log to check


def telemetry(namespace: str, disabled: bool, selector: str = "", name: str = "logs") -> str:
    return (
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{selector}  accessLogging:\n"
        f"    - providers: [{{name: envoy}}]\n      disabled: {str(disabled).lower()}\n"
    )


def file_logs(cfg) -> set[bool]:
    """For every HTTP connection manager of a proxy: does it write the file access log?"""
    return {
        any(log["name"] == "envoy.access_loggers.file" for log in hcm.get("access_log", []))
        for lst in cfg.listeners
        for hcm in hcms(lst)
    }


def test_without_telemetry_the_mesh_config_decides(tmp_path):
    _, cfgs = configs(tmp_path, GATEWAY)
    assert all(file_logs(cfg) == {True} for cfg in cfgs.values())
    _, quiet = configs(tmp_path, GATEWAY, mesh=MeshSettings(access_log_file=None))
    assert all(file_logs(cfg) == {False} for cfg in quiet.values())


def test_the_mesh_wide_telemetry_turns_every_log_off_and_envoy_accepts_it(tmp_path):
    topo, cfgs = configs(tmp_path, GATEWAY, OFF)
    assert all(file_logs(cfg) == {False} for cfg in cfgs.values())  # sidecars and the gateway
    # the request counter (istio_requests_total) is another logger and stays
    assert all(
        any(log["name"] == "envoy.access_loggers.stats" for log in hcm["access_log"])
        for lst in cfgs[V1].listeners
        for hcm in hcms(lst)
        if "tcp_proxy" not in hcm["@type"]
    )  # fmt: skip  (TCP connections are not requests)
    envoy_validate(topo, cfgs, tmp_path / "validate")


def test_a_workload_telemetry_beats_the_namespace_one_which_beats_the_mesh(tmp_path):
    v1_on = telemetry(
        "payments-prod",
        False,
        "  selector: {matchLabels: {app: currency-converter, version: v1}}\n",
        name="v1",
    )
    _, cfgs = configs(tmp_path, OFF, v1_on)
    assert file_logs(cfgs[V1]) == {True} and file_logs(cfgs[CLIENT]) == {False}
    topo, cfgs = configs(
        tmp_path, GATEWAY, telemetry("payments-prod", True), telemetry("istio-system", False, name="m")
    )
    assert file_logs(cfgs[V1]) == {False}
    assert file_logs(cfgs[topo.gateway.id]) == {True}  # istio-system: the mesh-wide one applies


def test_another_provider_is_refused_by_name(tmp_path):
    other = telemetry("istio-system", True).replace("name: envoy", "name: otel")
    with pytest.raises(UnsupportedError, match=r"spec.accessLogging\[0\].providers\[0\].name value 'otel'"):
        check_supported(manifests.load(other))  # what Lab.apply's capability check runs


def test_a_workload_telemetry_with_a_filter_logs_through_envoys_cel_filter_and_envoy_accepts_it(tmp_path):
    """core/accesslog.go ``buildAccessLogFilterFromTelemetry``: the expression as a CEL ExpressionFilter on
    the file logger only (the request counter counts every request); the mesh-wide off holds elsewhere."""
    topo, cfgs = configs(tmp_path, OFF, ERRORS_ONLY.read_text())
    assert file_logs(cfgs[V1]) == {True} and file_logs(cfgs[CLIENT]) == {False}
    for lst in cfgs[V1].listeners:
        for hcm in hcms(lst):
            [file_log] = [log for log in hcm["access_log"] if log["name"] == "envoy.access_loggers.file"]
            assert file_log["filter"] == {
                "extension_filter": {
                    "name": "envoy.access_loggers.extension_filters.cel",
                    "typed_config": {
                        "@type": listeners.CEL_FILTER,
                        "expression": "response.code >= 400",
                    },
                }
            }
            stats = [log for log in hcm["access_log"] if log["name"] == "envoy.access_loggers.stats"]
            assert stats and "filter" not in stats[0]
    envoy_validate(topo, cfgs, tmp_path / "validate")


def test_an_expression_that_is_not_cel_is_refused_by_validation_and_match_is_refused_by_name():
    bad = manifests.load(ERRORS_ONLY.read_text().replace('"response.code >= 400"', '"response.code >= "'))
    with pytest.raises(
        ValidationError, match=r"spec\.accessLogging\[0\]\.filter\.expression: must be a valid CEL"
    ):
        validation.check(bad)
    body = manifests.load(ERRORS_ONLY)[0].body
    body["spec"]["accessLogging"][0]["match"] = {"mode": "SERVER"}
    with pytest.raises(UnsupportedError, match=r"spec\.accessLogging\[0\]\.match is not supported"):
        check_supported(manifests.load(body))
