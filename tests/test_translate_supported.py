"""The local backend refuses, by name, every Istio kind, field or value it does not implement."""

from __future__ import annotations

import pytest

from labkit import manifests, paths
from labkit.errors import ManifestError, UnsupportedError
from labkit.local.translate import check_supported

KIND_HINT = "use the kind backend (LAB_BACKEND=kind)"


def refused(text: str) -> str:
    with pytest.raises(UnsupportedError) as err:
        check_supported(manifests.load(text))
    assert KIND_HINT in str(err.value)
    return str(err.value)


def test_every_lab_manifest_is_supported():
    check_supported(manifests.load(paths.MESH))


def test_an_unimplemented_field_is_named_with_file_document_resource_and_path(tmp_path):
    path = tmp_path / "cors.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n"
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: foo, namespace: x}\n"
        "spec:\n  hosts: [foo]\n  http:\n  - route: [{destination: {host: foo}}]\n"
        "    corsPolicy: {allowOrigins: [{exact: '*'}]}\n"
    )
    with pytest.raises(UnsupportedError) as err:
        check_supported(manifests.load(path))
    assert str(err.value) == (
        f"{path} (document 2) VirtualService/foo: field spec.http[0].corsPolicy is not supported by the "
        f"local backend; {KIND_HINT} or remove it"
    )


NET = "networking.istio.io/v1"
SEC = "security.istio.io/v1"
HTTP_ROUTE = "route: [{destination: {host: a}}]"


@pytest.mark.parametrize(
    ("api", "kind", "spec", "expected"),
    [
        (NET, "Sidecar", "{}", "kind Sidecar is not supported"),
        ("networking.istio.io/v1alpha3", "EnvoyFilter", "{}", "kind EnvoyFilter is not supported"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute", "{}", "kind HTTPRoute is not supported"),
        (SEC, "RequestAuthentication", "{}", "kind RequestAuthentication is not supported"),
        (
            NET,
            "VirtualService",
            "{hosts: [a], http: [{delegate: {name: b}}]}",
            "field spec.http[0].delegate is",
        ),
        (
            NET,
            "VirtualService",
            f"{{hosts: [a], tcp: [{{{HTTP_ROUTE}}}]}}",
            "field spec.tcp is not supported",
        ),
        (
            NET,
            "VirtualService",
            f"{{hosts: [a], http: [{{fault: {{delay: {{exponentialDelay: 1s}}}}, {HTTP_ROUTE}}}]}}",
            "field spec.http[0].fault.delay.exponentialDelay is not supported",
        ),
        (
            NET,
            "VirtualService",
            f"{{hosts: [a], http: [{{match: [{{sourceLabels: {{app: x}}}}], {HTTP_ROUTE}}}]}}",
            "field spec.http[0].match[0].sourceLabels is not supported",
        ),
        (
            NET,
            "DestinationRule",
            "{host: a, trafficPolicy: {loadBalancer: {localityLbSetting: {enabled: true}}}}",
            "field spec.trafficPolicy.loadBalancer.localityLbSetting is not supported",
        ),
        (
            NET,
            "DestinationRule",
            "{host: a, subsets: [{name: v1, trafficPolicy: {tls: {mode: SIMPLE}}}]}",
            "field spec.subsets[0].trafficPolicy.tls.mode value 'SIMPLE' is not supported",
        ),
        (SEC, "AuthorizationPolicy", "{action: CUSTOM}", "field spec.action value 'CUSTOM' is not supported"),
        (
            SEC,
            "AuthorizationPolicy",
            "{rules: [{when: [{key: 'request.auth.claims[iss]', values: [x]}]}]}",
            "field spec.rules[0].when[0].key value 'request.auth.claims[iss]' is not supported",
        ),
        (
            SEC,
            "AuthorizationPolicy",
            "{rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}",
            "field spec.rules[0].from[0].source.requestPrincipals is not supported",
        ),
        (
            NET,
            "Gateway",
            "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE}}]}",
            "field spec.servers[0].port.protocol value 'HTTPS' is not supported",
        ),
        (
            NET,
            "ServiceEntry",
            "{hosts: [a.example], ports: [{number: 80, name: http, protocol: HTTP}], resolution: NONE}",
            "field spec.resolution value 'NONE' is not supported",
        ),
        (
            NET,
            "ServiceEntry",
            "{hosts: [a.example], ports: [{number: 443, name: tls, protocol: TLS}], resolution: DNS}",
            "field spec.ports[0].protocol value 'TLS' is not supported",
        ),
    ],
)
def test_unimplemented_istio_features_are_refused_by_name(api, kind, spec, expected):
    text = f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x, namespace: ns}}\nspec: {spec}\n"
    assert f"{kind}/x: " in refused(text)
    assert expected in refused(text)


def test_a_malformed_duration_is_named_with_its_field():
    vs = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: t, namespace: ns}\n"
        "spec: {hosts: [a], http: [{timeout: 5 seconds, route: [{destination: {host: a}}]}]}\n"
    )
    with pytest.raises(
        ManifestError, match=r"VirtualService/t: field spec.http\[0\].timeout value '5 seconds' is not"
    ):
        check_supported(manifests.load(vs))
