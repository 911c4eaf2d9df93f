"""Istio YAML the translator tests share: the lesson's service host, small builders of VirtualServices and
PeerAuthentications, and the manifests several test modules apply."""

from __future__ import annotations

CC = "currency-converter.payments-prod.svc.cluster.local"


def vs(http: str, name: str = "currency-converter", extra: str = "") -> str:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: {name}, namespace: payments-prod}}\n"
        f"spec:\n  hosts: [currency-converter]\n{extra}  http:\n{http}"
    )


def pa(name: str, namespace: str, mode: str | None, selector: str = "", port_level: str = "") -> str:
    mtls = f"  mtls: {{mode: {mode}}}\n" if mode else ""
    return (
        f"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{selector}{mtls}{port_level}"
    )


V2_SELECTOR = "  selector: {matchLabels: {app: currency-converter, version: v2}}\n"


POLICY_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: currency-converter, namespace: payments-prod}
spec:
  host: currency-converter
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 1, connectTimeout: 250ms}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool:
        http: {http2MaxRequests: 7}
      tls: {mode: DISABLE}
"""


FEATURES = """\
  - name: canary
    match:
    - name: jason
      uri: {prefix: /convert}
      headers: {end-user: {exact: jason}, x-b: {}}  # {} = present (regex "*" is no RE2: rejected)
      method: {exact: GET}
      queryParams: {debug: {exact: "1"}}
    - uri: {regex: "/v[0-9]+/.*"}
      ignoreUriCase: true
    route:
    - destination: {host: currency-converter, subset: v2}
      headers: {request: {set: {x-canary: "yes"}}}
    timeout: 300ms
    retries: {attempts: 3, perTryTimeout: 100ms, retryOn: "5xx,503"}
    fault:
      delay: {fixedDelay: 500ms, percentage: {value: 10}}
      abort: {httpStatus: 503, percentage: {value: 50.5}}
    mirror: {host: currency-converter, subset: v1}
    mirrorPercentage: {value: 25}
    rewrite: {uri: /rewritten, authority: other.example}
    headers: {response: {add: {x-served-by: mesh}, remove: [server]}}
  - route:
    - destination: {host: currency-converter, subset: v1}
    retries: {attempts: 0}
  - route:
    - destination: {host: currency-converter, subset: v2}
"""


GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: meshlab-gateway, namespace: payments-prod}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"""


INGRESS_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ingress, namespace: payments-prod}
spec:
  hosts: ["*"]
  gateways: [meshlab-gateway]
  http:
  - match: [{uri: {prefix: /convert}}]
    route:
    - destination: {host: currency-converter, port: {number: 8080}, subset: v1}
"""


SERVICE_ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: fx-rates, namespace: payments-prod}
spec:
  hosts: [api.fxrates.example]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: fx-rates.external.svc.cluster.local, ports: {http: 8080}}]
"""


AUTHZ = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: payments-prod}
spec:
  selector: {matchLabels: {app: currency-converter}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin*]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: payments-prod}
spec:
  selector: {matchLabels: {app: currency-converter}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/payments-prod/sa/client]}}]
    to: [{operation: {methods: [GET, HEAD]}}]
    when: [{key: "request.headers[x-team]", values: [payments]}]
  - from: [{source: {namespaces: [istio-system]}}]
"""
