"""The local backend refuses, by name, every Istio kind, field or value it does not implement, and only
those: a field Istio itself rejects (a typo) is validation's, with its suggestion."""

from __future__ import annotations

import pytest

from labkit import manifests, paths, validation
from labkit.errors import UnsupportedError, ValidationError
from labkit.local.supported import check_supported

KIND_HINT = "What to do: use the kind backend (LAB_BACKEND=kind)"


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
        f"local backend. {KIND_HINT}, or remove it"
    )


NET = "networking.istio.io/v1"
SEC = "security.istio.io/v1"
HTTP_ROUTE = "route: [{destination: {host: a}}]"


@pytest.mark.parametrize(
    ("api", "kind", "spec", "expected"),
    [
        (NET, "Sidecar", "{}", "kind Sidecar is not supported"),
        ("networking.istio.io/v1alpha3", "EnvoyFilter", "{}", "kind EnvoyFilter is not supported"),
        (
            "gateway.networking.k8s.io/v1",
            "GRPCRoute",
            "{}",
            "kind GRPCRoute of gateway.networking.k8s.io is not",
        ),
        (
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "{rules: [{filters: [{type: CORS, cors: {}}]}]}",
            "field spec.rules[0].filters[0].type value 'CORS' is not supported by the local backend",
        ),
        (
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "{rules: [{timeouts: {backendRequest: 1s}}]}",
            "field spec.rules[0].timeouts.backendRequest is not supported by the local backend",
        ),
        (
            "gateway.networking.k8s.io/v1",
            "Gateway",
            "{gatewayClassName: istio, listeners: [{name: https, port: 443, protocol: HTTPS}]}",
            "field spec.listeners[0].protocol value 'HTTPS' is not supported",
        ),
        (
            SEC,
            "RequestAuthentication",
            "{jwtRules: [{issuer: a, jwksUri: 'https://a.example/jwks'}]}",
            "field spec.jwtRules[0].jwksUri is not supported",
        ),
        (
            NET,
            "VirtualService",
            "{hosts: [a], http: [{delegate: {name: b}}]}",
            "field spec.http[0].delegate is",
        ),
        (
            NET,
            "VirtualService",
            f"{{hosts: [a], tcp: [{{match: [{{port: 9001, sourceLabels: {{app: x}}}}], {HTTP_ROUTE}}}]}}",
            "field spec.tcp[0].match[0].sourceLabels is not supported",
        ),
        (
            NET,
            "VirtualService",
            f"{{hosts: [a], gateways: [gw], tcp: [{{{HTTP_ROUTE}}}]}}",
            "field spec.tcp is not supported by the local backend for gateways (gw)",
        ),
        (
            NET,
            "VirtualService",
            "{hosts: [a], http: [{redirect: {uri: /elsewhere}}]}",
            "field spec.http[0].redirect is not supported",
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
            "{host: a, subsets: [{name: v1, trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /ca.pem}}}]}",
            "field spec.subsets[0].trafficPolicy.tls.caCertificates is not supported",
        ),
        (
            SEC,
            "AuthorizationPolicy",
            "{action: CUSTOM, provider: {name: ext-authz}, rules: [{to: [{operation: {paths: [/admin]}}]}]}",
            "field spec.action value 'CUSTOM' is not supported",
        ),
        (
            SEC,
            "AuthorizationPolicy",
            "{rules: [{when: [{key: 'request.auth.presenter', values: [x]}]}]}",
            "field spec.rules[0].when[0].key value 'request.auth.presenter' is not supported",
        ),
        (
            SEC,
            "AuthorizationPolicy",
            "{rules: [{from: [{source: {notRequestPrincipals: ['*']}}]}]}",
            "field spec.rules[0].from[0].source.notRequestPrincipals is not supported",
        ),
        (
            NET,
            "Gateway",
            "{servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*'], "
            "tls: {mode: PASSTHROUGH}}]}",
            "field spec.servers[0].port.protocol value 'TLS' is not supported",
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
    if kind != "GRPCRoute":  # labkit has Gateway API schemas for HTTPRoute and Gateway only
        validation.check(manifests.load(text))  # Istio accepts it: only the local backend lacks it
    assert f"{kind}/x: " in refused(text)
    assert expected in refused(text)


TYPOS = "tests/broken/{}"


@pytest.mark.parametrize(
    ("name", "field", "words"),
    [
        (
            "unknown-field-weigth.yaml",
            "spec.http[0].route[1].weigth",
            "unknown field 'weigth' (did you mean 'weight'?)",
        ),
        (
            "unknown-kind.yaml",
            "kind",
            "unknown kind 'VirtualServce' in networking.istio.io/v1 (did you mean VirtualService?)",
        ),
        ("peer-authentication-strlct.yaml", "spec.mtls.mode", "'STRlCT' is not an allowed value"),
    ],
)
def test_a_typo_is_a_validation_error_with_its_suggestion_not_unsupported(name, field, words):
    """validation runs before check_supported (lab.py's pipeline), so a misspelled field, kind or value gets
    Istio's unknown-field answer and a suggestion, never "use the kind backend"."""
    resources = manifests.load(paths.ROOT / TYPOS.format(name))
    with pytest.raises(ValidationError) as err:
        validation.check(resources, context=manifests.load(paths.APPS))
    (finding,) = [f for f in err.value.findings if f.field == field]
    assert (finding.stage, finding.severity) == ("schema", "error")
    assert words in finding.message
    assert "kind backend" not in str(finding)
    if name.startswith("peer-authentication"):
        assert finding.fix == "use one of: UNSET, DISABLE, PERMISSIVE, STRICT"
