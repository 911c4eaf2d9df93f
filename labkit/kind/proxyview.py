"""What a workload's istio-proxy runs and reports on the Kubernetes backend, read as Istio's own tasks read
it: the pod that has the proxy, its access log (``kubectl logs -c istio-proxy``), its counters (``pilot-agent
request GET stats``), its config, route weights and mTLS mode (istioctl, istio.py). The twin of
``labkit/local/proxyview.py``: the same questions, with the same shapes of answer, asked of a pod.

A workload is named as ``lab.send`` takes a source (podtraffic.find_workload): a lesson alias,
``namespace/name`` or a unique Deployment name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from labkit.command import run
from labkit.errors import BackendError, LabError
from labkit.kind import istio, workloads
from labkit.kind.commands import Target
from labkit.kind.k8s import has_sidecar
from labkit.kind.kube import Kube
from labkit.kind.podtraffic import find_workload
from labkit.meshmodel import service_fqdn
from labkit.metrics import envoy_stats

#: What ``proxy_config`` can ask a proxy for (``istioctl proxy-config <what>``).
PROXY_CONFIG = ("routes", "clusters", "listeners", "endpoints", "secrets")
#: How long set_weights waits for istiod to push a new split to the client's proxy.
PROPAGATION_TIMEOUT = 30.0


def proxy_pod(kube: Kube, workload: str) -> tuple[str, str]:
    """(namespace, pod) of ``workload``'s first pod with an istio-proxy container (the gateway's too)."""
    found = find_workload(kube, workload)
    deployment = kube.get("apps/v1", "Deployment", found.name, found.namespace) or {}
    pods = workloads.pods(kube, deployment)
    where = f"deployment/{found.name} ({found.namespace})"
    if not pods:
        raise BackendError(f"{where} has no pods", f"`kubectl get pods -n {found.namespace}`")
    if not has_sidecar(pods[0]):  # the ingress gateway's own container is called istio-proxy too
        raise BackendError(f"{where} has no sidecar, so no proxy to read", "see lab.status()")
    return found.namespace, pods[0]["metadata"]["name"]


def access_log(kube: Kube, workload: str, tail: int) -> list[str]:
    """The last ``tail`` access-log lines of ``workload``'s istio-proxy (Istio's TEXT format starts with
    the ``[time]``; the proxy's own log lines are left out)."""
    ns, pod = proxy_pod(kube, workload)
    text = kube.logs(ns, pod, "istio-proxy", tail=max(tail * 5, 200))
    return [line for line in text.splitlines() if line.startswith("[")][-tail:]


def proxy_stats(kube: Kube, target: Target, workload: str, contains: str) -> dict[str, int]:
    """``workload``'s Envoy counters, as Istio's tasks read them: ``kubectl exec <pod> -c istio-proxy --
    pilot-agent request GET stats``."""
    ns, pod = proxy_pod(kube, workload)
    argv = ["kubectl", *target.args(), "exec", "-n", ns, pod, "-c", "istio-proxy", "--"]
    argv += ["pilot-agent", "request", "GET", "stats"]
    fix = f"check `kubectl get pods -n {ns}` (lab.status()); lab.up() repairs the lab"
    return envoy_stats(run(argv, env=target.env(), timeout=60, fix=fix).stdout, contains)


def proxy_config(kube: Kube, target: Target, workload: str, what: str) -> Any:
    """What ``workload``'s proxy runs (``istioctl proxy-config <what> <pod>.<ns> -o json``), parsed."""
    if what not in PROXY_CONFIG:
        raise LabError(f"proxy_config cannot show {what!r}", f"choose one of: {', '.join(PROXY_CONFIG)}")
    found = find_workload(kube, workload)
    pod = workloads.first_pod(kube, found.namespace, found.name)
    return istio.proxy_config(target, pod, found.namespace, what)


def route_weights(kube: Kube, target: Target, source: str, service: str, namespace: str) -> dict[str, int]:
    """``{subset: weight}`` for ``service`` (its first port, as on the local backend) as ``source``'s
    sidecar holds them."""
    svc = kube.get("v1", "Service", service, namespace) or {}
    ports = (svc.get("spec") or {}).get("ports") or []
    if not ports:
        raise LabError(
            f"no Service {service!r} with a port in namespace {namespace!r}",
            f"check the name (`kubectl get services -n {namespace}`), or apply the Service first",
        )
    found = find_workload(kube, source)
    pod = workloads.first_pod(kube, found.namespace, found.name)
    fqdn = service_fqdn(service, namespace)
    return istio.route_weights(target, pod, found.namespace, fqdn, int(ports[0]["port"]))


def wait_for_weights(
    held: Callable[[], dict[str, int]], weights: dict[str, int], say: Callable[[str], None]
) -> None:
    """Wait until ``held()`` (the client's proxy) routes by ``weights``: istiod pushes a change within
    seconds, and a split measured before it arrives measures the old one. After ``PROPAGATION_TIMEOUT`` it
    warns with what to look at and returns (the change was applied; only its arrival is late)."""
    wanted = {subset: w for subset, w in weights.items() if w}
    deadline = time.monotonic() + PROPAGATION_TIMEOUT
    while True:
        now = {subset: w for subset, w in held().items() if w}
        if now == wanted:
            return
        if time.monotonic() > deadline:
            say(
                f"warning: after {PROPAGATION_TIMEOUT:g}s the client's proxy still routes {now}, not "
                f"{wanted}. What to do: check lab.analyze() and `istioctl proxy-status`"
            )
            return
        time.sleep(1)


def mtls_mode(kube: Kube, target: Target, workload: str, namespace: str) -> str | None:
    """The workload mTLS mode (STRICT/PERMISSIVE) ``istioctl x describe pod`` reports for ``workload`` (a
    Deployment name in ``namespace``, or ``namespace/name``)."""
    ns, _, name = workload.rpartition("/")
    ns = ns or namespace
    return istio.mtls_mode(target, workloads.first_pod(kube, ns, name), ns)
