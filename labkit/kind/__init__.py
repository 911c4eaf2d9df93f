"""The kind backend: a real Istio mesh on a kind cluster (or an existing cluster), driven through kind,
docker, istioctl and kubectl subprocesses and the Kubernetes API. Start with ``labkit.open("kind")``."""
