"""Istio through istioctl: install (unless it runs), version skew, ``analyze`` findings, route weights as the
proxy holds them, the mTLS mode a pod gets, and where the release's ``samples/addons`` (Prometheus, Kiali)
live."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit import paths, state
from labkit.command import run, which
from labkit.errors import LabError
from labkit.kind import images
from labkit.kind.commands import Target
from labkit.kind.k8s import rollout_complete
from labkit.meshmodel import weighted_version
from labkit.status import ProxyStatus
from labkit.versions import ISTIO_MINOR

if TYPE_CHECKING:
    from labkit.kind.kube import Kube

ADDONS = ("prometheus.yaml", "kiali.yaml")


def install(target: Target) -> None:
    """``istioctl install`` with the lab's IstioOperator; it waits for the control plane to be ready."""
    argv = ["istioctl", "install", "-y", "-f", str(paths.ISTIO_INSTALL), "--readiness-timeout", "600s"]
    argv += images.install_args()  # the pinned images, the ones pre-pull mode loaded into the nodes
    fix = "see istioctl's output above; `kubectl get pods -n istio-system` shows Pending or failing pods"
    run(argv + target.args(), env=target.env(), timeout=900, fix=fix)


def ensure_installed(kube: Kube, target: Target, say: Callable[[str], None]) -> None:
    """Install Istio unless istiod has rolled out already (a second ``up()`` keeps it), wait for istiod and
    the ingress gateway, and warn when istioctl and the control plane are versions apart."""
    istiod = kube.get("apps/v1", "Deployment", "istiod", "istio-system")
    if istiod is None or not rollout_complete(istiod):
        say("installing Istio (istioctl install, about two minutes)")
        install(target)
    for name in ("istiod", "istio-ingressgateway"):
        kube.wait_rollout("istio-system", name, timeout=300)
    problem = skew_problem(*versions(target))
    if problem:
        say(f"warning: {problem}")


def versions(target: Target) -> tuple[str, list[str]]:
    """istioctl's own version and the control plane's (istiod) versions; no control plane, no versions
    (istioctl omits ``meshVersion`` when it finds no istiod: ``omitempty`` in istio/istio
    pkg/version/cobra.go)."""
    out = run(["istioctl", "version", "-o", "json", *target.args()], env=target.env(), timeout=60).stdout
    data = json.loads(out)
    mesh = [c.get("Info", {}).get("version", "") for c in data.get("meshVersion") or []]
    return data["clientVersion"]["version"], sorted({v for v in mesh if v})


def skew_problem(client: str, control_plane: list[str]) -> str | None:
    """A one-line problem when istioctl's minor differs from the control plane's (proxy-config breaks)."""
    minor = ".".join(client.split(".")[:2])
    others = [v for v in control_plane if ".".join(v.split(".")[:2]) != minor]
    if not others:
        return None
    return (
        f"istioctl {client} but the control plane runs {', '.join(others)}: use the matching istioctl "
        "(`labkit tools install`), or reinstall Istio with it: "
        "`istioctl install -y -f cluster-config/istio/install.yaml`"
    )


def analyze(target: Target, namespace: str | None = None) -> list[Any]:
    """``istioctl analyze -o json`` on the live cluster as validation Findings.

    Read as istioctl writes it (istio/istio istioctl/pkg/analyze/analyze.go): with ``-o json`` the exit code
    is 0 even when errors were found (the 79 of cmd/sysexits.go comes only with the log format), the JSON
    array of messages is on stdout, and a clean run prints "No validation issues found ..." on stderr.
    """
    from labkit.validation import Finding  # validation loads schemas: kept out of `import labkit`

    scope = ["-n", namespace] if namespace else ["-A"]
    result = run(["istioctl", "analyze", "-o", "json", *scope, *target.args()], env=target.env(), timeout=120)
    findings = []
    for msg in _json_list(result.stdout):
        level = str(msg.get("level", "")).lower()
        if level not in ("error", "warning"):
            continue
        kind, name = origin(str(msg.get("origin", "")))
        findings.append(
            Finding(
                severity=level,
                stage="analysis",
                source="istioctl analyze",
                index=0,
                kind=kind,
                name=name,
                field="",
                message=f"{msg.get('code', '')} {msg.get('message', '')}".strip(),
                fix=f"see {msg['documentationUrl']}" if msg.get("documentationUrl") else "",
            )
        )
    return findings


def origin(text: str) -> tuple[str, str]:
    """``(kind, name)`` from an analyzer message's origin, istioctl's ``FriendlyName``: ``"<Kind>
    <namespace>/<name>"``, or ``"<Kind> <name>"`` for a cluster-scoped object
    (istio/istio pkg/config/analysis/legacy/source/kube/origin.go)."""
    kind, _, ref = text.partition(" ")
    return kind, ref.rpartition("/")[2]


def _json_list(text: str) -> list[dict]:
    """The JSON array istioctl printed (``[]`` or nothing when there was no message)."""
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LabError(
            f"istioctl analyze -o json printed something that is not JSON: {text[:200]!r}",
            f"check `istioctl version` (the lab is written for Istio {ISTIO_MINOR}); run the command by hand",
        ) from exc
    return data if isinstance(data, list) else []


def route_weights(target: Target, pod: str, namespace: str, host: str, port: int) -> dict[str, int]:
    """``{version: weight}`` for ``host`` as pod's proxy holds them (``proxy-config routes -o json``):
    subsets, or the versions of Gateway API backends (``meshmodel.weighted_version``), in the route
    configuration named after the Service's ``port``: an outbound HTTP listener's RDS name is the port number
    (istio/istio pilot/pkg/networking/core/listener.go, buildSidecarOutboundHTTPListenerOpts)."""
    argv = ["istioctl", "proxy-config", "routes", f"{pod}.{namespace}", "--name", str(port), "-o", "json"]
    out = run(argv + target.args(), env=target.env(), timeout=60).stdout
    weights: dict[str, int] = {}
    for route_config in json.loads(out) or []:
        for vhost in route_config.get("virtualHosts") or []:
            routes = vhost.get("routes") or []
            if not routes or not any(d.split(":")[0] == host for d in vhost.get("domains") or []):
                continue
            # The last route is the catch-all that requests without special headers take.
            action = routes[-1].get("route") or {}
            clusters = (action.get("weightedClusters") or {}).get("clusters") or []
            if "cluster" in action:
                clusters = [{"name": action["cluster"], "weight": 100}]
            for cluster in clusters:
                version = weighted_version(cluster["name"], host)
                weights[version] = weights.get(version, 0) + int(cluster.get("weight", 0))
    return weights


def proxy_config(target: Target, pod: str, namespace: str, what: str) -> Any:
    """``istioctl proxy-config <what> <pod>.<namespace> -o json``, parsed: what that proxy runs."""
    argv = ["istioctl", "proxy-config", what, f"{pod}.{namespace}", "-o", "json", *target.args()]
    fix = f"the pod needs a sidecar (`kubectl get pod {pod} -n {namespace}` shows 2/2); lab.status()"
    return json.loads(run(argv, env=target.env(), timeout=60, fix=fix).stdout or "null")


#: ``istioctl proxy-status`` columns that hold an xDS type's state (istioctl/pkg/writer/pilot/status.go).
XDS_COLUMNS = ("CDS", "LDS", "EDS", "RDS", "ECDS")


def proxy_status(target: Target) -> list[ProxyStatus]:
    """``istioctl proxy-status``, parsed: a row per proxy with each type's state."""
    argv = ["istioctl", "proxy-status", *target.args()]
    return parse_proxy_status(run(argv, env=target.env(), timeout=60).stdout)


def parse_proxy_status(text: str) -> list[ProxyStatus]:
    """Rows of istioctl's tabwriter table, cut at the header's column starts (cells hold spaces: "SYNCED
    (3m)", "STALE (Never Acknowledged)", "NOT SENT"); the state is the cell's first word, ERROR (a NACK in
    the CSDS status) reads NACK, IGNORED (a type the proxy does not use) NOT SENT."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("NAME"):
        return []
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = {
            name: line[start : (starts[i + 1] if i + 1 < len(starts) else None)].strip()
            for i, (name, start) in enumerate(zip(names, starts, strict=True))
        }
        types = {c: _state(cells[c]) for c in XDS_COLUMNS if c in cells}
        rows.append(ProxyStatus(cells["NAME"], types, version=cells.get("VERSION", "")))
    return rows


def _state(cell: str) -> str:
    if cell.startswith("NOT SENT") or cell.startswith("IGNORED") or not cell:
        return "NOT SENT"
    word = cell.split()[0]
    return "NACK" if word in ("ERROR", "NACK") else word


def mtls_mode(target: Target, pod: str, namespace: str) -> str | None:
    """The workload mTLS mode ``istioctl x describe pod`` reports (STRICT, PERMISSIVE), None if not shown."""
    argv = ["istioctl", "x", "describe", "pod", pod, "-n", namespace, *target.args()]
    out = run(argv, env=target.env(), timeout=60).stdout
    match = re.search(r"Workload mTLS mode:\s*(\w+)", out)
    return match[1] if match else None


def addons_dir() -> Path | None:
    """The release's ``samples/addons``: in ISTIO_HOME, beside the istioctl in use, or the state folder."""
    candidates = [Path(os.environ["ISTIO_HOME"])] if os.environ.get("ISTIO_HOME") else []
    with contextlib.suppress(LabError):  # no istioctl: the other places may still hold the addons
        candidates.append(Path(which("istioctl")).resolve().parent.parent)
    candidates.append(state.istio_dir())
    for root in candidates:
        if all((root / "samples" / "addons" / name).is_file() for name in ADDONS):
            return root / "samples" / "addons"
    return None
