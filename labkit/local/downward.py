"""A pod's identity as the kubelet gives it to the container: ``env`` with ``valueFrom.fieldRef`` filled
in, and ``MESHLAB_POD`` standing in for a downward-API volume, so an app can tell who it is on either backend.

Field paths follow Kubernetes (kubernetes/kubernetes): ``metadata.*`` in ``pkg/fieldpath/fieldpath.go``
(``ExtractFieldPathAsString``), the pod-level ones in ``pkg/kubelet/kubelet_pods.go``
(``podFieldSelectorRuntimeValue``). Here every pod runs on this machine at 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from typing import Any, Protocol

from labkit.errors import UnsupportedError


class _Workload(Protocol):
    """What a pod's identity needs of its workload (``topology.Workload`` has it)."""

    @property
    def namespace(self) -> str: ...
    @property
    def labels(self) -> dict[str, str]: ...
    @property
    def annotations(self) -> dict[str, str]: ...
    @property
    def service_account(self) -> str: ...
    @property
    def env(self) -> dict[str, str]: ...
    @property
    def env_fields(self) -> dict[str, str]: ...


class Instance(Protocol):
    """One pod (``topology.Instance``): its name and its workload."""

    @property
    def name(self) -> str: ...
    @property
    def workload(self) -> _Workload: ...


#: The env var holding the pod's identity as JSON: {"name", "namespace", "labels", "serviceAccount"}.
POD_ENV = "MESHLAB_POD"
POD_IP = "127.0.0.1"
_KEYED = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")
#: The field paths the local backend fills, as Kubernetes spells them.
FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.labels['<key>']",
    "metadata.annotations",
    "metadata.annotations['<key>']",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
    "status.podIPs",
    "status.hostIP",
    "status.hostIPs",
)


def parse_env(where: str, index: int, container: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """A container's ``env`` as (literal values, field paths by name); ``envFrom`` and other ``valueFrom``
    sources are refused by name, since nothing here would fill them."""
    if container.get("envFrom"):
        raise UnsupportedError(
            "is not supported by the local backend (it has no ConfigMaps or Secrets to read)",
            "list the variables under env, or use the kind backend (LAB_BACKEND=kind)",
            where=where,
            field=f"spec.template.spec.containers[{index}].envFrom",
        )
    literal: dict[str, str] = {}
    fields: dict[str, str] = {}
    for i, entry in enumerate(container.get("env") or []):
        name, field = str(entry.get("name", "")), f"spec.template.spec.containers[{index}].env[{i}]"
        source = entry.get("valueFrom")
        if source is None:
            literal[name] = str(entry.get("value", ""))
            continue
        path = (source.get("fieldRef") or {}).get("fieldPath")
        if path is None:
            kinds = ", ".join(sorted(source))
            raise UnsupportedError(
                "is not supported by the local backend (it fills fieldRef only)",
                "give the value literally, or use the kind backend (LAB_BACKEND=kind)",
                where=where,
                field=f"{field}.valueFrom.{kinds}",
            )
        if path not in FIELD_PATHS and not _KEYED.fullmatch(path):
            raise UnsupportedError(
                f"{path!r} is not a pod field Kubernetes fills",
                f"use one of {', '.join(FIELD_PATHS)}",
                where=where,
                field=f"{field}.valueFrom.fieldRef.fieldPath",
            )
        fields[name] = path
    return literal, fields


def pod(inst: Instance) -> dict[str, Any]:
    """The identity ``MESHLAB_POD`` carries (the contract with the sample app: keep these four keys)."""
    w = inst.workload
    return {
        "name": inst.name,
        "namespace": w.namespace,
        "labels": dict(w.labels),
        "serviceAccount": w.service_account,
    }


def field_value(inst: Instance, path: str) -> str:
    """What the kubelet puts in an env var whose ``fieldRef`` is ``path`` (checked by parse_env)."""
    w = inst.workload
    keyed = _KEYED.fullmatch(path)
    if keyed:
        return (w.labels if keyed[1] == "labels" else w.annotations).get(keyed[2], "")
    values = {
        "metadata.name": inst.name,
        "metadata.namespace": w.namespace,
        "metadata.uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{w.namespace}/{inst.name}")),
        "metadata.labels": _format_map(w.labels),
        "metadata.annotations": _format_map(w.annotations),
        "spec.nodeName": socket.gethostname(),
        "spec.serviceAccountName": w.service_account,
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
        "status.hostIP": POD_IP,
        "status.hostIPs": POD_IP,
    }
    return values[path]


def environment(inst: Instance) -> dict[str, str]:
    """The container's env: literal values, field refs filled in, and ``MESHLAB_POD``."""
    env = dict(inst.workload.env)
    env.update({name: field_value(inst, path) for name, path in inst.workload.env_fields.items()})
    env[POD_ENV] = json.dumps(pod(inst), sort_keys=True)
    return env


def _format_map(values: dict[str, str]) -> str:
    """Kubernetes' ``FormatMap``: sorted ``key="value"`` lines (a downward-API labels file reads the same)."""
    return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(values.items()))
