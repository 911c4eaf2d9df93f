"""What Kubernetes' objects and answers mean, without a connection: kubectl's rollout-complete rule, the
shapes of Istio's sidecar (classic and native), the API server's refusals as ``ApiError``, and the client
versions ``kube`` is written for."""

from __future__ import annotations

import json

import kubernetes

from labkit.errors import BackendError, LabError

#: The official client's majors ``kube`` is written for (pyproject pins the same range): 37.x is the
#: OpenAPI Generator v7 regeneration whose ``call_api(method, url, header_params, ...)`` and
#: ``param_serialize`` it calls; 31-36 have neither (kubernetes-client/python#2631, #2647).
CLIENT_MAJORS = range(37, 38)
SIDECAR = "istio-proxy"


class ApiError(LabError):
    """The API server refused a request: ``status`` (404, 409, 422, ...) and ``reason`` (NotFound, Conflict,
    Invalid, ...) as it answered, with its own words in the message and what to do as ``fix``."""

    def __init__(self, what: str, status: int, reason: str, message: str, fix: str) -> None:
        self.what, self.status, self.reason = what, status, reason
        super().__init__(f"{what}: {message} ({status} {reason})", fix)


#: What to do, by the API server's status code, when the caller has nothing more precise to say.
_FIXES = {
    403: "the kubeconfig's user may not do this; use the kind cluster's own kubeconfig (lab.up()) or ask "
    "the cluster's admin for the permission",
    404: "create what it refers to first (its Namespace, or install Istio for Istio kinds: lab.up())",
    409: "another client changed it at the same time, or owns these fields; apply it again",
    422: "fix the field the message names in the manifest and apply it again (`labkit validate FILE`)",
}


def check_client_version(version: str = kubernetes.__version__) -> None:
    """Refuse a ``kubernetes`` client outside CLIENT_MAJORS before its first call fails with a TypeError."""
    major = version.split(".")[0]
    if not (major.isdigit() and int(major) in CLIENT_MAJORS):
        wanted = f">={CLIENT_MAJORS.start},<{CLIENT_MAJORS.stop}"
        raise LabError(
            f"the kind backend needs the kubernetes Python client {wanted}, but {version} is installed",
            f"pip install 'kubernetes{wanted}' (or `make install`, which pins it)",
        )


def rollout_complete(deployment: dict) -> bool:
    """kubectl's ``rollout status`` rule: the new ReplicaSet has every replica available, no old pod left.

    Raises BackendError when the Deployment exceeded its progress deadline (kubectl reports a failure).
    """
    meta, spec, status = (
        deployment.get("metadata", {}),
        deployment.get("spec", {}),
        deployment.get("status") or {},
    )
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return False
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            name = f"deployment/{meta.get('name')} ({meta.get('namespace')})"
            raise BackendError(
                f"{name} exceeded its progress deadline: {cond.get('message', '')}",
                f"look at its pods with `kubectl get pods -n {meta.get('namespace')}` and "
                "`kubectl describe pod ...`",
            )
    replicas = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    return (
        updated >= replicas
        and status.get("replicas", 0) <= updated
        and status.get("availableReplicas", 0) >= updated
    )


def has_sidecar(pod: dict) -> bool:
    """Whether the pod runs Istio's proxy: a container, or an init container with ``restartPolicy: Always``
    - a native sidecar (KEP-753), which Istio injects where its ``ENABLE_NATIVE_SIDECARS=auto`` finds the
    cluster supports it (istio/istio pilot/pkg/features/pilot.go, pkg/kube/inject/inject.go), as on
    Kubernetes 1.36 with Istio 1.31. A plain init container named istio-proxy would exit before the app
    starts, so it does not count."""
    spec = pod.get("spec", {})
    if any(c.get("name") == SIDECAR for c in spec.get("containers") or []):
        return True
    return any(
        c.get("name") == SIDECAR and c.get("restartPolicy") == "Always"
        for c in spec.get("initContainers") or []
    )


def api_error(what: str, exc: Exception, fix: str = "") -> ApiError:
    """The server's Status (code, reason, message) from a client exception, with what to do."""
    status = int(getattr(exc, "status", 0) or 0)
    reason, message = str(getattr(exc, "reason", "") or ""), ""
    try:
        payload = json.loads(getattr(exc, "body", None) or "")
        reason, message = payload.get("reason") or reason, payload.get("message") or ""
    except (TypeError, ValueError, AttributeError):
        pass
    return ApiError(what, status, reason, message or reason, fix or _FIXES.get(status, "retry; lab.status()"))
