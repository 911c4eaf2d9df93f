"""labkit.meshmodel: the mesh rules validation and the local translator share, as istiod applies them."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit import manifests, meshmodel
from labkit.mesh import load_mesh_settings


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("reviews", "reviews.shop.svc.cluster.local"),
        ("reviews.default", "reviews.default"),  # a dotted name is never expanded (ResolveShortnameToFQDN)
        ("*", "*"),
        ("*.example.com", "*.example.com"),
        ("10.0.0.1", "10.0.0.1"),
        ("::1", "::1"),  # an IPv6 address has no dot and is still not a short name
    ],
)
def test_short_names_resolve_as_istiod_resolves_them(host: str, expected: str) -> None:
    assert meshmodel.fqdn(host, "shop") == expected


def test_the_cluster_domain_comes_from_the_install() -> None:
    assert meshmodel.fqdn("reviews", "shop", "corp.example") == "reviews.shop.svc.corp.example"
    assert load_mesh_settings().cluster_domain == "cluster.local"


SERVICE_AND_RULE = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: shop}
spec: {host: HOST}
"""


def test_validation_expands_short_names_in_the_cluster_domain() -> None:
    from labkit import validation  # imported here: only these tests need its schemas

    short = manifests.load(SERVICE_AND_RULE.replace("HOST", "reviews"))
    assert validation.validate(short, domain="corp.example") == []
    dotted = manifests.load(SERVICE_AND_RULE.replace("HOST", "reviews.shop"))
    (unknown,) = validation.validate(dotted, domain="corp.example")
    assert "write the full name reviews.shop.svc.corp.example" in unknown.fix


def test_a_custom_cluster_domain_is_read_from_the_install(tmp_path: Path) -> None:
    path = tmp_path / "install.yaml"
    path.write_text(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: x}\n"
        "spec: {values: {global: {proxy: {clusterDomain: corp.example}}}}\n"
    )
    assert load_mesh_settings(path).cluster_domain == "corp.example"


@pytest.mark.parametrize(
    ("pattern", "host", "covered"),
    [
        ("*", "a.b", True),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.com", "*.example.com", True),  # a wildcard is covered by a wider one
        ("*.example.com", "*.com", False),
        ("api.example.com", "*.example.com", False),
        ("a.b", "a.b", True),
    ],
)
def test_host_matching_is_istios_subset_of(pattern: str, host: str, covered: bool) -> None:
    assert meshmodel.host_matches(pattern, host) is covered


def test_overlapping_hosts_either_way() -> None:
    assert meshmodel.hosts_overlap("api.example.com", "*.example.com")
    assert not meshmodel.hosts_overlap("api.example.com", "web.example.com")


def test_alt_names_of_a_service_host_depend_on_the_callers_namespace() -> None:
    host = "reviews.shop.svc.cluster.local"
    assert meshmodel.alt_names(host, "shop") == ["reviews", "reviews.shop", "reviews.shop.svc"]
    assert meshmodel.alt_names(host, "other") == ["reviews.shop", "reviews.shop.svc"]
    assert meshmodel.alt_names("api.example.com", "shop") == []


@pytest.mark.parametrize(
    ("value", "envoy"),
    [("1s", "1s"), ("0.5s", "0.5s"), ("300ms", "0.3s"), ("1m30s", "90s"), ("1h", "3600s")],
)
def test_istio_durations_become_envoy_seconds(value: str, envoy: str) -> None:
    assert meshmodel.envoy_duration(value) == envoy
    assert meshmodel.duration_problem(value) is None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("5 seconds", "is not a duration"),
        ("1d", "is not a duration"),  # Go has no days
        ("500us", "at least 1ms"),
        ("1.5005s", "finer than milliseconds"),
    ],
)
def test_durations_istiod_rejects(value: str, words: str) -> None:
    problem = meshmodel.duration_problem(value)
    assert problem is not None and words in problem


def test_weights_route_nothing_only_when_several_add_up_to_zero() -> None:
    assert meshmodel.weights_route_nothing([0, 0])
    assert meshmodel.weights_route_nothing([0, None])
    assert not meshmodel.weights_route_nothing([0])  # a single destination takes all traffic
    assert not meshmodel.weights_route_nothing([0, 10])


def test_selection_and_the_registry() -> None:
    assert meshmodel.selects(None, {"app": "a"}) and meshmodel.selects({}, {})
    assert not meshmodel.selects({"app": "a", "version": "v1"}, {"app": "a"})
    world = manifests.load(
        """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  template: {metadata: {labels: {app: reviews, version: v1}}, spec: {containers: [{name: a, image: a}]}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec: {hosts: ["*.example.com", reviews.shop.svc.cluster.local], ports: [{number: 80, name: http}]}
"""
    )
    registry = meshmodel.Registry(world)
    assert registry.knows("reviews.shop.svc.cluster.local") and registry.knows("api.example.com")
    assert not registry.knows("reviews.other.svc.cluster.local")
    assert registry.pods_of(world[0]) == [{"app": "reviews", "version": "v1"}]
    added, repeated = meshmodel.entry_hosts([world[2]], registry.services)
    assert [h.name for h in added] == ["*.example.com"]
    assert [(h.index, h.name) for h in repeated] == [(1, "reviews.shop.svc.cluster.local")]
