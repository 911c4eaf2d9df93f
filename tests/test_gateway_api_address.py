"""The Gateway API ingress bound to the lab's ingress gateway (Istio's manual deployment: a Hostname address
naming the istio-ingressgateway Service), on the local translator: the lab's Gateway is served on the ingress
proxy with istiod's status; an address that does not bind is served by nothing and says why in the Gateway's
status, with istiod's reasons and messages (pilot/pkg/config/kube/gateway/conversion.go
``reportGatewayStatus``, gatewaycommon/context.go ``ResolveGatewayInstances``, testdata
invalid.status.yaml.golden); the forms for which istiod would deploy a gateway of its own are refused by
field. Real Envoy validates the configs."""

from __future__ import annotations

import pytest
from support.envoy import MESH, envoy_validate
from test_gateway_api_translate import GATEWAY_API, translated

from labkit import manifests
from labkit.errors import UnsupportedError
from labkit.local.supported import check_supported
from labkit.local.translate import route_status

INGRESS = "istio-ingressgateway.istio-system.svc.cluster.local"
GATEWAY = GATEWAY_API / "gateway-currency-ingress.yaml"
ROUTE = GATEWAY_API / "http-route-currency-converter-ingress.yaml"
GATEWAY_KEY = ("gateway.networking.k8s.io", "Gateway", "istio-system", "currency-ingress")


def gateway(old: str = "", new: str = "") -> str:
    """The lab's Gateway with one edit."""
    return GATEWAY.read_text().replace(old, new)


def served_ports(topo, cfgs) -> set[str]:
    """The route configs of the ingress proxy that carry a route of the HTTPRoute (http.<target port>)."""
    out = set()
    for config in cfgs[topo.gateway.id].routes:
        if any(
            r.get("name", "").startswith("payments-prod.")
            for v in config["virtual_hosts"]
            for r in v["routes"]
        ):
            out.add(config["name"])
    return out


def conditions(status: dict) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


def test_the_lab_gateway_runs_on_the_ingress_gateway_with_istiods_status(tmp_path):
    topo, cfgs, resources = translated(tmp_path, GATEWAY, ROUTE)
    assert served_ports(topo, cfgs) == {"http.8080"}  # Service port 80 -> the pod's 8080
    status = route_status(resources, topo, MESH)[GATEWAY_KEY]
    assert conditions(status) == {
        "Accepted": ("True", "Accepted", "Resource accepted"),
        "Programmed": ("True", "Programmed", f"Resource programmed, assigned to service(s) {INGRESS}:80"),
    }
    assert status["addresses"] == [{"type": "Hostname", "value": INGRESS}]
    assert status["listeners"][0]["attachedRoutes"] == 1
    envoy_validate(topo, cfgs, tmp_path / "validate")


def test_a_short_service_name_is_the_service_in_the_gateways_namespace(tmp_path):
    short = gateway(f"value: {INGRESS}", "value: istio-ingressgateway")
    topo, cfgs, resources = translated(tmp_path, short, ROUTE)
    assert served_ports(topo, cfgs) == {"http.8080"}
    assert conditions(route_status(resources, topo, MESH)[GATEWAY_KEY])["Programmed"][0] == "True"


@pytest.mark.parametrize(
    ("edit", "key", "message"),
    [
        (  # the trainee's likely slip: the Gateway beside the routes, not beside the gateway's Service
            ("namespace: istio-system", "namespace: payments-prod"),
            ("payments-prod", "currency-ingress"),
            f'Failed to assign to any requested addresses: hostname "{INGRESS}" not found in namespace '
            '"payments-prod", but it was found in namespace(s) "istio-system"',
        ),
        (
            (f"value: {INGRESS}", "value: istio-ingresgateway.istio-system.svc.cluster.local"),
            ("istio-system", "currency-ingress"),
            'Failed to assign to any requested addresses: hostname "istio-ingresgateway.istio-system.svc.'
            'cluster.local" not found',
        ),
        (  # the pod's port instead of the Service's
            ("port: 80 ", "port: 8080 "),
            ("istio-system", "currency-ingress"),
            f'Failed to assign to any requested addresses: port 8080 not found for hostname "{INGRESS}" '
            "(hint: the service port should be specified, not the workload port. Did you mean one of these "
            "ports: [80]?)",
        ),
    ],
)
def test_an_address_that_does_not_bind_is_served_by_nothing_and_the_status_says_why(
    tmp_path, edit, key, message
):
    route = ROUTE.read_text().replace("namespace: istio-system", f"namespace: {key[0]}")
    topo, cfgs, resources = translated(tmp_path, gateway(*edit), route)
    assert served_ports(topo, cfgs) == set()  # no listener of the ingress carries the route
    status = route_status(resources, topo, MESH)[("gateway.networking.k8s.io", "Gateway", *key)]
    assert conditions(status) == {
        "Accepted": ("True", "Accepted", "Resource accepted"),
        "Programmed": ("False", "AddressNotUsable", message),
    }
    assert "addresses" not in status


def test_an_address_of_another_type_beside_the_hostname_is_ignored_and_reported(tmp_path):
    mixed = gateway(
        f"value: {INGRESS}\n", f"value: {INGRESS}\n    - type: IPAddress\n      value: 192.0.2.1\n"
    )
    topo, cfgs, resources = translated(tmp_path, mixed, ROUTE)
    assert served_ports(topo, cfgs) == {"http.8080"}  # a soft failure: the Hostname still binds
    status = conditions(route_status(resources, topo, MESH)[GATEWAY_KEY])
    assert status["Accepted"] == (
        "False",
        "UnsupportedAddress",
        "only Hostname is supported, ignoring [192.0.2.1]",
    )
    assert status["Programmed"][:2] == ("True", "Programmed")


def test_addresses_without_a_hostname_assign_to_nothing(tmp_path):
    two = gateway(
        f"- type: Hostname\n      value: {INGRESS}\n",
        "- type: IPAddress\n      value: 192.0.2.1\n    - type: IPAddress\n      value: 192.0.2.2\n",
    )
    topo, cfgs, resources = translated(tmp_path, two, ROUTE)
    assert served_ports(topo, cfgs) == set()
    assert conditions(route_status(resources, topo, MESH)[GATEWAY_KEY]) == {
        "Accepted": (
            "False",
            "UnsupportedAddress",
            "only Hostname is supported, ignoring [192.0.2.1 192.0.2.2]",
        ),
        "Programmed": ("False", "UnsupportedAddress", "Failed to assign to any requested addresses"),
    }


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ((f"  addresses:\n    - type: Hostname\n      value: {INGRESS}\n", ""), "spec.addresses"),
        (
            ("type: Hostname\n      value: " + INGRESS, "type: IPAddress\n      value: 192.0.2.1"),
            "spec.addresses[0].type",
        ),
    ],
)
def test_a_gateway_istiod_would_deploy_itself_is_refused_by_field(edit, field):
    text = gateway(*edit)
    assert text != GATEWAY.read_text()
    with pytest.raises(UnsupportedError) as err:
        check_supported(manifests.load(text))
    message = str(err.value)
    assert f"Gateway/currency-ingress: field {field}: without a Hostname address istiod deploys" in message
    assert "(currency-ingress-istio, Istio's automated deployment)" in message
    assert "What to do: bind the Gateway to the lab's ingress gateway" in message
    assert f"addresses: [{{type: Hostname, value: {INGRESS}}}]" in message


def test_the_lab_gateway_and_route_are_supported():
    check_supported(manifests.load(GATEWAY) + manifests.load(ROUTE))
