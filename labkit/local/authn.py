"""PeerAuthentication → the mTLS mode of each inbound port, resolved the way istiod composes policies
(``ComposePeerAuthentication``): mesh < namespace < workload, the oldest policy wins at each level, UNSET
inherits, and a workload policy's ``portLevelMtls`` (keyed by target port) overrides per port."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.meshmodel import selects

if TYPE_CHECKING:
    from labkit.manifests import Resource

DEFAULT_MODE = "PERMISSIVE"


def _has_selector(pa: Resource) -> bool:
    return bool((pa.spec.get("selector") or {}).get("matchLabels"))


def _mode(spec: dict | None) -> str:
    return str((spec or {}).get("mode") or "UNSET")


def namespace_mode(pas: list[Resource], namespace: str, root_namespace: str) -> str:
    """The mode from the mesh- and namespace-wide policies only: what auto mTLS looks at for a destination."""
    mode = DEFAULT_MODE
    for ns in (root_namespace, namespace):
        policy = next((p for p in pas if p.namespace == ns and not _has_selector(p)), None)
        if policy is not None and _mode(policy.spec.get("mtls")) != "UNSET":
            mode = _mode(policy.spec.get("mtls"))
    return mode


def port_mode(
    pas: list[Resource], namespace: str, labels: dict[str, str], port: int, root_namespace: str
) -> str:
    """The effective mode of a workload's inbound ``port`` (a target port)."""
    mode = namespace_mode(pas, namespace, root_namespace)
    if namespace == root_namespace:
        return mode
    policy = next(
        (
            p
            for p in pas
            if p.namespace == namespace
            and _has_selector(p)
            and selects(p.spec["selector"]["matchLabels"], labels)
        ),
        None,
    )
    if policy is None:
        return mode
    if _mode(policy.spec.get("mtls")) != "UNSET":
        mode = _mode(policy.spec.get("mtls"))
    port_level = (policy.spec.get("portLevelMtls") or {}).get(port) or (
        policy.spec.get("portLevelMtls") or {}
    ).get(str(port))
    if port_level is not None and _mode(port_level) != "UNSET":
        mode = _mode(port_level)
    return mode
