"""The local backend: real Envoy sidecars and an ingress gateway on 127.0.0.1, configured from the same Istio
YAML as the kind backend by translating it the way istiod does (topology → translate → file-xDS)."""
