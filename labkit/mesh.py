"""Mesh-wide settings, read from the same IstioOperator overlay istioctl installs, so both backends agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from labkit import paths
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
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    except (OSError, yaml.YAMLError) as e:
        raise ManifestError(f"{path}: cannot read the Istio install overlay: {e}") from e
    operators = [d for d in docs if isinstance(d, dict) and d.get("kind") == "IstioOperator"]
    if not operators:
        raise ManifestError(f"{path}: no IstioOperator document; the local backend reads meshConfig from it")
    where = f"{path} (document {docs.index(operators[0])}) IstioOperator/{operators[0]['metadata']['name']}"
    mesh = (operators[0].get("spec") or {}).get("meshConfig") or {}
    policy = (mesh.get("outboundTrafficPolicy") or {}).get("mode", "ALLOW_ANY")
    if policy not in OUTBOUND_POLICIES:
        raise ManifestError(
            f"{where}: field spec.meshConfig.outboundTrafficPolicy.mode is {policy!r}; "
            f"use one of {', '.join(OUTBOUND_POLICIES)}"
        )
    return MeshSettings(
        outbound_policy=policy,
        access_log_file=mesh.get("accessLogFile") or None,
        root_namespace=mesh.get("rootNamespace", "istio-system"),
        trust_domain=mesh.get("trustDomain", "cluster.local"),
    )
