"""Mesh-wide settings, read from the same IstioOperator overlay istioctl installs, so both backends agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labkit import manifests, paths
from labkit.errors import ManifestError

OUTBOUND_POLICIES = ("REGISTRY_ONLY", "ALLOW_ANY")


@dataclass(frozen=True)
class MeshSettings:
    """The meshConfig fields the local backend honours (the file falls back to Istio's defaults)."""

    outbound_policy: str = "REGISTRY_ONLY"
    access_log_file: str | None = None
    root_namespace: str = "istio-system"
    trust_domain: str = "cluster.local"


def load_mesh_settings(path: Path = paths.ISTIO_INSTALL) -> MeshSettings:
    """Read ``spec.meshConfig`` of the IstioOperator in ``path``; absent fields keep Istio's defaults."""
    operator = next((r for r in manifests.load(Path(path)) if r.kind == "IstioOperator"), None)
    if operator is None:
        raise ManifestError(f"{path}: no IstioOperator document; the local backend reads meshConfig from it")
    mesh = operator.spec.get("meshConfig") or {}
    policy = (mesh.get("outboundTrafficPolicy") or {}).get("mode", "ALLOW_ANY")
    if policy not in OUTBOUND_POLICIES:
        raise ManifestError(
            f"{operator.where}: field spec.meshConfig.outboundTrafficPolicy.mode is {policy!r}; "
            f"use one of {', '.join(OUTBOUND_POLICIES)}"
        )
    return MeshSettings(
        outbound_policy=policy,
        access_log_file=mesh.get("accessLogFile") or None,
        root_namespace=mesh.get("rootNamespace", "istio-system"),
        trust_domain=mesh.get("trustDomain", "cluster.local"),
    )
