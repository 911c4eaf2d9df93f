"""Mesh-wide settings, read from the same IstioOperator overlay istioctl installs, so both backends agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labkit import manifests, paths
from labkit.errors import ManifestError
from labkit.meshmodel import CLUSTER_DOMAIN

OUTBOUND_POLICIES = ("REGISTRY_ONLY", "ALLOW_ANY")


#: Istio's meshConfig.outboundTrafficPolicy.mode when the install file does not set it.
ISTIO_DEFAULT_OUTBOUND = "ALLOW_ANY"


@dataclass(frozen=True)
class MeshSettings:
    """The install choices the lab honours. The defaults are Istio's, except ``outbound_policy``: the local
    backend implements only REGISTRY_ONLY (ALLOW_ANY is refused), so a ``MeshSettings()`` must be runnable;
    ``load_mesh_settings`` falls back to Istio's ALLOW_ANY instead."""

    outbound_policy: str = "REGISTRY_ONLY"
    access_log_file: str | None = None
    root_namespace: str = "istio-system"
    trust_domain: str = "cluster.local"
    profile: str = "default"  # the IstioOperator's spec.profile
    cluster_domain: str = CLUSTER_DOMAIN  # spec.values.global.proxy.clusterDomain: Services' DNS suffix


def load_mesh_settings(path: Path = paths.ISTIO_INSTALL) -> MeshSettings:
    """Read ``spec.profile``, ``spec.meshConfig`` and the cluster domain of the IstioOperator in ``path``;
    absent fields take Istio's defaults."""
    operator = next((r for r in manifests.load(Path(path)) if r.kind == "IstioOperator"), None)
    if operator is None:
        raise ManifestError(
            f"{path}: no IstioOperator document; the local backend reads meshConfig from it. What to do: "
            "restore cluster-config/istio/install.yaml (kind: IstioOperator)"
        )
    mesh = operator.spec.get("meshConfig") or {}
    policy = (mesh.get("outboundTrafficPolicy") or {}).get("mode", ISTIO_DEFAULT_OUTBOUND)
    if policy not in OUTBOUND_POLICIES:
        raise ManifestError(
            f"{operator.where}: field spec.meshConfig.outboundTrafficPolicy.mode is {policy!r}; "
            f"use one of {', '.join(OUTBOUND_POLICIES)}"
        )
    proxy = ((operator.spec.get("values") or {}).get("global") or {}).get("proxy") or {}
    defaults = MeshSettings()
    return MeshSettings(
        outbound_policy=policy,
        access_log_file=mesh.get("accessLogFile") or defaults.access_log_file,
        root_namespace=mesh.get("rootNamespace", defaults.root_namespace),
        trust_domain=mesh.get("trustDomain", defaults.trust_domain),
        profile=operator.spec.get("profile", defaults.profile),
        cluster_domain=proxy.get("clusterDomain") or defaults.cluster_domain,
    )
