"""Gateway API validation: the lab's own Gateway API manifests pass, and each mistake in
tests/broken/gateway-api/ is reported with its file, document, resource and field, in the lab's wording."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit import manifests, paths, validation
from labkit.errors import ValidationError

BROKEN = Path(__file__).parent / "broken" / "gateway-api"
GATEWAY_API = paths.CLUSTER_CONFIG / "gateway-api"


@pytest.fixture(scope="module")
def context() -> list[manifests.Resource]:
    """The lab's apps and the per-version Services the routes point at."""
    return manifests.load(paths.APPS) + manifests.load(
        GATEWAY_API / "service-currency-converter-versions.yaml"
    )


@pytest.mark.parametrize("path", sorted(GATEWAY_API.glob("*.yaml")), ids=lambda p: p.name)
def test_the_labs_gateway_api_manifests_are_clean(path: Path, context) -> None:
    assert validation.validate(manifests.load(path), context=context) == []


CASES = [
    (
        "http-route-unknown-field-weigth.yaml",
        "error",
        1,
        "HTTPRoute/currency-converter",
        "spec.rules[0].backendRefs[1].weigth",
        "unknown field 'weigth' (did you mean 'weight'?). What to do: rename it to 'weight'",
    ),
    (
        "http-route-weight-out-of-range.yaml",
        "error",
        1,
        "HTTPRoute/currency-converter",
        "spec.rules[0].backendRefs[0].weight",
        "1000001 is out of range. What to do: use a number at most 1000000",
    ),
    (
        "http-route-weight-not-a-number.yaml",
        "error",
        1,
        "HTTPRoute/currency-converter",
        "spec.rules[0].backendRefs[0].weight",
        "'90' is not a whole number",
    ),
    (
        "http-route-backend-without-port.yaml",
        "error",
        1,
        "HTTPRoute/currency-converter",
        "spec.rules[0].backendRefs[0].port",
        "a backendRef to a Service must have a port",
    ),
    (
        "http-route-path-type-prefix.yaml",
        "error",
        1,
        "HTTPRoute/currency-converter",
        "spec.rules[0].matches[0].path.type",
        "'Prefix' is not an allowed value. What to do: use one of: Exact, PathPrefix, RegularExpression",
    ),
    (
        "http-route-too-many-parent-refs.yaml",
        "error",
        1,
        "HTTPRoute/currency-converter",
        "spec.parentRefs",
        "has 33 items, more than the 32 allowed",
    ),
    (
        "http-route-timeout-not-a-duration.yaml",
        "error",
        1,
        "HTTPRoute/currency-converter",
        "spec.rules[0].timeouts.request",
        "'0.5s' is not in the expected format. What to do: write it like 500ms or 1m30s",
    ),
    (
        "http-route-relative-path.yaml",
        "error",
        1,
        "HTTPRoute/currency-converter",
        "spec.rules[0].matches[0].path.value",
        "'convert' is not an absolute path",
    ),
    (
        "http-route-backend-kind-deployment.yaml",
        "warning",
        1,
        "HTTPRoute/currency-converter",
        "spec.rules[0].backendRefs[0].kind",
        "ResolvedRefs=False (InvalidKind)",
    ),
    (
        "http-route-parent-service-without-group.yaml",
        "warning",
        1,
        "HTTPRoute/currency-converter",
        "spec.parentRefs[0].group",
        "gateway.networking.k8s.io/Service is no parent Istio attaches routes to",
    ),
    (
        "gateway-listener-without-protocol.yaml",
        "error",
        1,
        "Gateway/currency-ingress",
        "spec.listeners[0].protocol",
        "required field is missing. What to do: add protocol",
    ),
    (
        "gateway-address-unknown-field.yaml",
        "error",
        1,
        "Gateway/currency-ingress",
        "spec.addresses[0].adress",
        "unknown field 'adress'",
    ),
    (
        "gateway-address-hostname-upper-case.yaml",
        "error",
        1,
        "Gateway/currency-ingress",
        "spec.addresses[0].value",
        "'Istio-IngressGateway.istio-system.svc.cluster.local' is not a valid hostname",
    ),
    (
        "gateway-address-type-lower-case.yaml",
        "error",
        1,
        "Gateway/currency-ingress",
        "spec.addresses[0].type",
        "'hostname' is not in the expected format. What to do: write it like Hostname or IPAddress",
    ),
    (
        "http-route-and-virtual-service-same-host.yaml",
        "warning",
        2,
        "HTTPRoute/currency-converter",
        "spec.parentRefs",
        "VirtualService/payments-prod/currency-converter also routes mesh traffic for "
        "currency-converter.payments-prod.svc.cluster.local",
    ),
]


@pytest.mark.parametrize(
    ("name", "severity", "document", "obj", "field", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_broken_gateway_api_manifest_is_reported_precisely(
    name, severity, document, obj, field, message, context
):
    found = [str(f) for f in validation.validate(manifests.load(BROKEN / name), context=context)]
    where = f"{severity}: tests/broken/gateway-api/{name} (document {document}) {obj} {field}: "
    assert any(line.startswith(where) and message in line for line in found), found


def test_every_broken_gateway_api_file_is_covered() -> None:
    assert {c[0] for c in CASES} == {p.name for p in BROKEN.glob("*.yaml")}


def test_schema_errors_block_the_apply_and_the_conflict_only_warns(context) -> None:
    with pytest.raises(ValidationError, match="weigth"):
        validation.check(manifests.load(BROKEN / "http-route-unknown-field-weigth.yaml"), context=context)
    both = manifests.load(BROKEN / "http-route-and-virtual-service-same-host.yaml")
    conflicts = [f for f in validation.check(both, context=context) if "also routes mesh" in f.message]
    assert {f.kind for f in conflicts} == {"VirtualService", "HTTPRoute"}  # each names the other
    assert all(f.severity == "warning" and f.stage == "analysis" for f in conflicts)


@pytest.mark.parametrize(("v1", "v2"), [(100, 0), (90, 10), (50, 50), (0, 100)])
def test_http_route_canaries_replace_each_other_and_carry_the_weights_in_their_name(v1, v2):
    (route,) = manifests.load(GATEWAY_API / f"http-route-currency-converter-{v1}-{v2}.yaml")
    assert (route.name, route.namespace) == ("currency-converter", "payments-prod")
    (parent,) = route.spec["parentRefs"]
    assert parent == {"group": "", "kind": "Service", "name": "currency-converter", "port": 8080}
    (rule,) = route.spec["rules"]
    weights = {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}
    assert weights == {"currency-converter-v1": v1, "currency-converter-v2": v2}
