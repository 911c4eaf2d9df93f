"""What the lab reports about itself, the same on every backend: what ``apply``/``delete`` did to each object
(``Change``, as kubectl prints it) and what runs (``Status`` with a ``WorkloadStatus`` per workload)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Change:
    """What ``apply``/``delete`` did to one resource, as kubectl would print it."""

    kind: str
    namespace: str
    name: str
    action: str  # created | configured | unchanged | deleted | not found

    def __str__(self) -> str:
        where = f" ({self.namespace})" if self.namespace else ""  # cluster-scoped kinds have no namespace
        return f"{self.kind.lower()}/{self.name}{where} {self.action}"


@dataclass
class WorkloadStatus:
    name: str
    namespace: str
    version: str | None
    replicas: int
    ready: int
    sidecar: bool
    detail: str = ""
    restarts: int = 0  # container restarts of its pods, as ``kubectl get pods``' RESTARTS


@dataclass
class Status:
    backend: str
    up: bool
    workloads: list[WorkloadStatus] = field(default_factory=list)
    ingress_url: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.up and not self.problems and all(w.ready == w.replicas for w in self.workloads)

    def __str__(self) -> str:
        lines = [f"backend {self.backend}: {'up' if self.up else 'down'}"]
        for w in self.workloads:
            side = "+sidecar" if w.sidecar else "no sidecar"
            restarts = f", {w.restarts} restart{'s' * (w.restarts != 1)}" if w.restarts else ""
            line = f"  {w.namespace}/{w.name}: {w.ready}/{w.replicas} ready{restarts}, {side} {w.detail}"
            lines.append(line.rstrip())
        if self.ingress_url:
            lines.append(f"  ingress: {self.ingress_url}")
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


@dataclass(frozen=True)
class ProxyStatus:
    """One row of ``istioctl proxy-status``: a proxy and, per xDS type, SYNCED (it ACKed the newest config),
    STALE (sent, no answer yet, or not sent the newest), NACK (it rejected the newest: ``errors`` holds
    Envoy's message and it keeps serving its last accepted config) or NOT SENT (nothing of that type)."""

    proxy: str
    types: dict[str, str]  # "CDS", "LDS", "EDS", "RDS", "ECDS" -> state
    version: str = ""
    connected: bool = True
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def synced(self) -> bool:
        return self.connected and all(v in ("SYNCED", "NOT SENT") for v in self.types.values())


def proxy_status_table(rows: list[ProxyStatus]) -> str:
    """The rows as ``istioctl proxy-status`` prints them, each NACK's message below its proxy."""
    columns = ("CDS", "LDS", "EDS", "RDS", "ECDS")
    width = max([len("NAME"), *(len(r.proxy) for r in rows)])
    lines = [f"{'NAME':<{width}}  " + "  ".join(f"{c:<8}" for c in columns) + "  VERSION"]
    for r in rows:
        cells = "  ".join(f"{r.types.get(c, 'NOT SENT'):<8}" for c in columns)
        lines.append(f"{r.proxy:<{width}}  {cells}  {r.version}{'' if r.connected else '  (disconnected)'}")
        lines += [f"  {t} NACK: {msg.strip()}" for t, msg in r.errors.items()]
    return "\n".join(lines)
