"""The canary's routing object for any weights, in either API: what ``lab.set_weights`` applies, the
widget's slider and the progressive rollout drive. ``istio``: the VirtualService of
mesh/virtual-service-<service>-90-10.yaml (subsets of a DestinationRule); ``gateway``: the HTTPRoute of
gateway-api/http-route-<service>-90-10.yaml (no subsets: one Service per version, ``<service>-<version>``)."""

from __future__ import annotations

from collections.abc import Mapping

from labkit import scenario
from labkit.errors import LabError
from labkit.meshmodel import weights_route_nothing

#: The routing kind of each API; one canary route at a time, so setting one removes the other's.
KINDS = {"istio": "VirtualService", "gateway": "HTTPRoute"}


def route(
    api: str,
    service: str,
    weights: Mapping[str, int],
    namespace: str = scenario.NAMESPACE,
    port: int = scenario.PORT,
) -> dict:
    """The canary route of ``api`` ("istio" or "gateway") for ``{version: weight}``, e.g. v1=90, v2=10."""
    if api not in KINDS:
        raise LabError(f"unknown api {api!r}. What to do: use api='istio' (VirtualService) or api='gateway' "
                       "(HTTPRoute)")  # fmt: skip
    _check(service, weights)
    if api == "gateway":
        return http_route(service, weights, namespace, port)
    return virtual_service(service, weights, namespace)


def _check(service: str, weights: Mapping[str, int]) -> None:
    if not weights:
        raise LabError(f"no weights given for {service}", "pass one per subset, e.g. v1=90, v2=10")
    for subset, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise LabError(
                f"weight of subset {subset!r} is {weight!r}. What to do: use a whole number such as 90"
            )
        if weight < 0:
            raise LabError(f"weight of subset {subset!r} is {weight}. What to do: use a weight of 0 or more")
    if weights_route_nothing(weights.values()):
        raise LabError(
            f"all weights for {service} are 0, so no request could be routed (istiod rejects this). "
            "What to do: give at least one subset a weight above 0"
        )


def virtual_service(service: str, weights: Mapping[str, int], namespace: str = scenario.NAMESPACE) -> dict:
    """The VirtualService for ``{subset: weight}``; subsets keep the order given."""
    _check(service, weights)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": service, "namespace": namespace},
        "spec": {
            "hosts": [service],
            "http": [
                {
                    "route": [
                        {"destination": {"host": service, "subset": subset}, "weight": weight}
                        for subset, weight in weights.items()
                    ]
                }
            ],
        },
    }


def http_route(
    service: str, weights: Mapping[str, int], namespace: str = scenario.NAMESPACE, port: int = scenario.PORT
) -> dict:
    """The mesh (GAMMA) HTTPRoute for ``{version: weight}``: parent the Service callers use, one backendRef
    per version Service ``<service>-<version>``; versions keep the order given."""
    _check(service, weights)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": service, "namespace": namespace},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": service, "port": port}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": f"{service}-{version}", "port": port, "weight": weight}
                        for version, weight in weights.items()
                    ]
                }
            ],
        },
    }
