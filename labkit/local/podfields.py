"""The Deployment fields the local backend does not act on, named so `lab.apply` can say which it ignores.

Real-world Deployments (Istio's samples, a team's own) carry fields only a kubelet or the scheduler uses:
volumes, resources, security contexts, placement, probes. Without Kubernetes there is nothing to act on them,
and refusing them would make every such manifest unusable; so they are accepted and named once per apply. The
fields that matter to the mesh (labels, annotations, ports, env, serviceAccountName, the injection label and
annotation) are read by topology.py, and httpGet, tcpSocket and grpc readiness, liveness and startup probes
are run as Istio's injector rewrites them (probes.py, kubelet.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.local import probes, statsmatcher

if TYPE_CHECKING:
    from labkit.manifests import Resource

#: Pod-spec fields for the kubelet or the scheduler (kubernetes api/core/v1 PodSpec).
POD_FIELDS = (
    "volumes",
    "initContainers",
    "securityContext",
    "nodeSelector",
    "nodeName",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "imagePullSecrets",
    "terminationGracePeriodSeconds",
    "dnsPolicy",
    "dnsConfig",
    "hostAliases",
    "runtimeClassName",
    "schedulerName",
    "automountServiceAccountToken",
)
#: Container fields for the kubelet (api/core/v1 Container). A probe the lab runs (probes.HONOURED, first
#: container) is not named; an exec probe is.
CONTAINER_FIELDS = (
    "command",
    "args",
    "workingDir",
    "volumeMounts",
    "resources",
    "securityContext",
    "lifecycle",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
)


def ignored(resource: Resource) -> list[str]:
    """The fields of Deployment ``resource`` the local backend does not act on, by short name."""
    if resource.kind != "Deployment":
        return []
    pod = (resource.spec.get("template") or {}).get("spec") or {}
    found = [f for f in POD_FIELDS if f in pod]
    containers = pod.get("containers") or []
    for i, container in enumerate(containers):
        honoured = {f for f in probes.FIELDS if i == 0 and probes.honoured(container, f)}
        found += [f for f in CONTAINER_FIELDS if f in container and f not in found and f not in honoured]
    if len(containers) > 1:
        found.append("containers[1:] (only the first container runs)")
    annotations = ((resource.spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    config = statsmatcher.proxy_config(annotations, resource.where)  # proxyStatsMatcher is honoured
    found += [f"{statsmatcher.PROXY_CONFIG} {key}" for key in config if key != "proxyStatsMatcher"]
    return found


def note(resources: list[Resource]) -> str | None:
    """One line naming what the local backend ignores in ``resources``, or None when it ignores nothing."""
    fields: list[str] = []
    where: list[str] = []
    for res in resources:
        mine = ignored(res)
        if mine:
            where.append(f"{res.kind}/{res.name}")
            fields += [f for f in mine if f not in fields]
    if not fields:
        return None
    return (
        f"note: the local backend runs no container runtime and ignores {', '.join(fields)} "
        f"(in {', '.join(where)}); they take effect on the kind backend"
    )
