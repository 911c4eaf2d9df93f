"""Which stats a sidecar makes: istio-proxy's inclusion list plus the pod's own (labkit/local/statsmatcher.py,
pkg/bootstrap/config.go getStatsOptions). Through real Envoy: tests/test_xds.py."""

from __future__ import annotations

import pytest

from labkit import manifests, paths
from labkit.errors import LabError
from labkit.local import podfields, statsmatcher
from labkit.local.statsmatcher import PROXY_CONFIG

CONFIG = {
    PROXY_CONFIG: "proxyStatsMatcher:\n  inclusionPrefixes: [cluster.outbound]\n  inclusionSuffixes: [x]"
}


def patterns(annotations: dict) -> list[dict]:
    return statsmatcher.stats_matcher(annotations)["inclusion_list"]["patterns"]


def test_without_annotations_a_sidecar_makes_istios_families_only_in_its_bootstrap_order():
    got = patterns({})
    assert got[0] == {"prefix": "reporter="} and got[-2:] == [{"prefix": "component"}, {"prefix": "istio"}]
    assert {"prefix": "cluster_manager"} in got and {"suffix": "rbac.denied"} in got
    assert {"safe_regex": {"regex": r"vhost\..*\.route\..*"}} in got
    assert not [p for p in got if p.get("prefix", "").startswith("cluster.outbound")]


def test_the_proxy_config_adds_its_patterns_before_the_required_ones():
    got = patterns(CONFIG)
    assert got.index({"prefix": "cluster.outbound"}) < got.index({"prefix": "cluster_manager"})
    assert {"suffix": "x"} in got and {"suffix": "rbac.allowed"} in got


def test_an_annotation_wins_over_the_proxy_config_for_its_kind_only_never_merged():
    got = patterns({**CONFIG, statsmatcher.ANNOTATIONS["prefix"]: "http.,tcp."})
    assert {"prefix": "http."} in got and {"prefix": "tcp."} in got
    assert {"prefix": "cluster.outbound"} not in got  # the annotation replaced the ProxyConfig's prefixes
    assert {"suffix": "x"} in got  # the ProxyConfig's suffixes stay: no suffix annotation


def test_the_labs_client_asks_for_its_outbound_cluster_counters_as_istios_circuit_breaking_client():
    client = next(r for r in manifests.load(paths.APPS / "client.yaml") if r.kind == "Deployment")
    annotations = client.spec["template"]["metadata"]["annotations"]
    assert {"prefix": "cluster.outbound"} in patterns(annotations)
    assert not [f for f in podfields.ignored(client) if PROXY_CONFIG in f]  # proxyStatsMatcher is honoured


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[not, a, mapping]", f"[{PROXY_CONFIG}]"),
        ("proxyStatsMatcher: {inclusionPrefixes: cluster.outbound}", "proxyStatsMatcher.inclusionPrefixes"),
        ("proxyStatsMatcher: [", f"[{PROXY_CONFIG}]"),
    ],
)
def test_a_bad_proxy_config_names_the_resource_and_the_field(text, field):
    with pytest.raises(LabError) as err:
        statsmatcher.stats_matcher({PROXY_CONFIG: text}, "web.yaml (document 2) Deployment/web")
    assert err.value.where == "web.yaml (document 2) Deployment/web" and field in err.value.field
    assert "What to do:" in str(err.value)


def test_other_proxy_config_fields_are_named_as_ignored_by_the_local_backend():
    text = "concurrency: 4\nproxyStatsMatcher: {inclusionPrefixes: [cluster.outbound]}"
    body = {"template": {"metadata": {"annotations": {PROXY_CONFIG: text}}, "spec": {"containers": []}}}
    doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": body}
    assert podfields.ignored(manifests.load([doc])[0]) == [f"{PROXY_CONFIG} concurrency"]
