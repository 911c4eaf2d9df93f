"""The lesson's scenario in one place: its namespace, service, URL, traffic sources and checkpoints.

Everything else in labkit is scenario-free: it takes namespaces, services and workloads as arguments, and the
notebooks, the tour and the CLI fill them in from here (or from the manifests themselves)."""

from __future__ import annotations

#: The namespace the lesson's service lives in (cluster-config/apps/currency-converter.yaml).
NAMESPACE = "payments-prod"
#: The lesson's service, its port and its two versions (the DestinationRule's subsets).
SERVICE = "currency-converter"
PORT = 8080
BASELINE, CANARY = "v1", "v2"
#: The mesh URL the lessons send to (short name + namespace, as a pod in another namespace would write it).
URL = f"http://{SERVICE}.{NAMESPACE}:{PORT}/convert?from=NOK&to=EUR&amount=100"

#: The lesson's traffic sources: alias -> (namespace, workload). ``ingress`` is the ingress gateway.
SOURCES: dict[str, tuple[str, str]] = {
    "client": (NAMESPACE, "client"),
    "legacy": ("legacy", "legacy-client"),
}
INGRESS = "ingress"
#: Namespaces the lab's own apps live in (cluster-config/apps).
NAMESPACES = (NAMESPACE, "legacy", "external")

#: Checkpoints a notebook can reach in one call (``lab.ensure("mtls-strict")``): cumulative manifest lists,
#: relative to cluster-config/.
CHECKPOINTS: dict[str, list[str]] = {
    "deployed": ["apps/currency-converter.yaml"],
    "mtls-strict": ["apps/currency-converter.yaml", "mesh/peer-authentication-strict.yaml"],
    "canary-90-10": [
        "apps/currency-converter.yaml",
        "mesh/peer-authentication-strict.yaml",
        "mesh/destination-rule-currency-converter.yaml",
        "mesh/virtual-service-currency-converter-90-10.yaml",
    ],
    # notebook 20's end state: the 90/10 canary, and tcp-echo's connections 80/20
    "tcp-80-20": [
        "apps/currency-converter.yaml",
        "mesh/peer-authentication-strict.yaml",
        "mesh/destination-rule-currency-converter.yaml",
        "mesh/virtual-service-currency-converter-90-10.yaml",
        "tasks/virtual-service-tcp-echo-80-20.yaml",
    ],
}
