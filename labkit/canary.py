"""The canary's routing object for any weights: what ``lab.set_weights`` applies, the widget's slider and the
progressive rollout drive."""

from __future__ import annotations

from collections.abc import Mapping

from labkit import scenario
from labkit.errors import LabError
from labkit.meshmodel import weights_route_nothing


def virtual_service(service: str, weights: Mapping[str, int], namespace: str = scenario.NAMESPACE) -> dict:
    """The VirtualService of mesh/virtual-service-<service>-90-10.yaml for any weights, e.g.
    ``{"v1": 90, "v2": 10}``; subsets keep the order given."""
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
