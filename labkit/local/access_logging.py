"""Telemetry ``accessLogging`` → whether a proxy writes its file access log, as istiod decides it
(pilot/pkg/model/telemetry.go in istio/istio, ``Telemetries.AccessLogging`` and ``mergeLogs``): a workload's
own Telemetry (selector) over its namespace's (no selector) over the mesh's (root namespace, no selector);
with none, the legacy ``meshConfig.accessLogFile`` decides. Only the ``envoy`` provider exists here
(supported.py), so "most specific wins" is istiod's per-provider merge."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.local.topology import selects

if TYPE_CHECKING:
    from labkit.local.topology import Proxy
    from labkit.manifests import Resource


def _selector(t: Resource) -> dict:
    return (t.spec.get("selector") or {}).get("matchLabels") or {}


def applies(telemetries: list[Resource], proxy: Proxy, root_namespace: str) -> Resource | None:
    """The most specific Telemetry with ``accessLogging`` for ``proxy``, or None."""
    logging = [t for t in telemetries if t.spec.get("accessLogging")]
    workload = [
        t
        for t in logging
        if t.namespace == proxy.namespace and _selector(t) and selects(_selector(t), proxy.labels)
    ]
    namespace = [t for t in logging if t.namespace == proxy.namespace and not _selector(t)]
    mesh = [t for t in logging if t.namespace == root_namespace and not _selector(t)]
    return next(iter(workload or namespace or mesh), None)


def access_log_on(telemetries: list[Resource], proxy: Proxy, root_namespace: str, mesh_default: bool) -> bool:
    """True when ``proxy`` writes access-log lines: ``disabled: true`` turns them off, ``false`` on."""
    telemetry = applies(telemetries, proxy, root_namespace)
    if telemetry is None:
        return mesh_default
    return not any(entry.get("disabled") is True for entry in telemetry.spec["accessLogging"])
