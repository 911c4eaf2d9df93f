"""Which instances are ready now: what a cluster's kubelet reports and its EndpointSlice controller turns
into endpoints. The lab probes again whenever it reports status or sends; when it writes config, only the
probes that pass through a sidecar, whose answer the config may change. probes.py runs one probe; a pod's
kubelet (kubelet.py) says whether its container runs and passed its startup probe; a not-ready instance
leaves every Service's endpoints (``Topology.endpoints``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from labkit.local import kubelet, probes

if TYPE_CHECKING:
    from labkit.local.topology import Instance, Topology

#: How many readiness probes run at once (each waits for its app, a few ms; the lab may run 100 instances).
PROBE_WORKERS = 8


def probe_target(inst: Instance, probe: probes.Probe) -> int | Path:
    """Where ``probe`` of ``inst`` lands: pilot-agent's probe reaches the app itself (its gRPC health socket
    for a grpc probe); without the rewrite the kubelet's meets the sidecar's inbound listener for that port
    (no passthrough listener here: a port no Service targets reaches the app, docs/fidelity.md)."""
    app: int | Path = inst.app_socket if inst.app_socket is not None else (inst.app_port or 0)
    if probe.action == "grpc" and probe.port == inst.workload.grpc_port and inst.grpc_socket is not None:
        app = inst.grpc_socket  # one gRPC health port per app: another port's gRPC probe meets its HTTP one
    if inst.proxy is not None and not probes.rewritten(inst.workload.annotations):
        return inst.proxy.inbound_ports.get(probe.port or 0, app)
    return app


def is_ready(inst: Instance) -> bool:
    """Whether ``inst`` may be ready now: its container runs and passed its startup probe (kubelet.py),
    and it passes its readiness probe (probes.py)."""
    if inst.kubelet_file is not None and not kubelet.serving(inst.kubelet_file):
        return False
    probe = inst.workload.readiness
    return probes.ready(probe, probe_target(inst, probe)) if probe is not None else True


def through_sidecar(topo: Topology) -> list[Instance]:
    """The instances whose readiness probe lands on their sidecar's inbound listener (not rewritten): the
    only answers a config change can change (say, STRICT mTLS refusing the kubelet's plain-text probe)."""
    return [
        inst
        for inst in topo.instances
        if inst.workload.readiness is not None
        and inst.proxy is not None
        and probe_target(inst, inst.workload.readiness) in inst.proxy.inbound_ports.values()
    ]


def update(topo: Topology, instances: list[Instance] | None = None) -> bool:
    """Probe ``instances`` (default: every instance) and record it on ``Instance.ready``; True when one
    changed (the endpoints must be written again). All at once, as the kubelet runs one probe worker per
    container (kubernetes pkg/kubelet/prober/worker.go): each probe mostly waits for its app."""
    from concurrent.futures import ThreadPoolExecutor  # imported on first use: keeps `import labkit` fast

    probed = topo.instances if instances is None else instances
    if not probed:
        return False
    with ThreadPoolExecutor(max_workers=PROBE_WORKERS) as pool:
        results = list(pool.map(is_ready, probed))
    changed = False
    for inst, now in zip(probed, results, strict=True):
        changed |= now != inst.ready
        inst.ready = now
    return changed
