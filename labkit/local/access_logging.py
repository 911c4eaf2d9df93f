"""Telemetry ``accessLogging`` → whether a proxy writes its file access log, as istiod decides it
(pilot/pkg/model/telemetry.go in istio/istio, ``Telemetries.AccessLogging`` and ``mergeLogs``): a workload's
own Telemetry (selector) over its namespace's (no selector) over the mesh's (root namespace, no selector);
with none, the legacy ``meshConfig.accessLogFile`` decides. Only the ``envoy`` provider exists here
(supported.py), so "most specific wins" is istiod's per-provider merge: that entry's ``filter.expression``
(CEL, e.g. ``response.code >= 400``) is the one the log keeps (``mergeLogs`` takes the filter of the most
specific entry naming the provider; listeners.py puts it on the file logger as Envoy's CEL filter)."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class FileLog:
    """A proxy's file access log: ``filter`` is a CEL expression a request must match to be logged."""

    filter: str | None = None


def file_log(
    telemetries: list[Resource], proxy: Proxy, root_namespace: str, mesh_default: bool
) -> FileLog | None:
    """The file access log ``proxy`` writes, or None: ``disabled: true`` turns it off, ``false`` on."""
    telemetry = applies(telemetries, proxy, root_namespace)
    if telemetry is None:
        return FileLog() if mesh_default else None
    entries = telemetry.spec["accessLogging"]
    if any(entry.get("disabled") is True for entry in entries):
        return None
    expressions = [e["filter"]["expression"] for e in entries if (e.get("filter") or {}).get("expression")]
    return FileLog(expressions[-1] if expressions else None)
