"""The one public API every backend implements, so the notebooks run unchanged on local Envoy or on kind."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labkit import paths
from labkit.scenario import CHECKPOINTS, NAMESPACES

if TYPE_CHECKING:
    from labkit.manifests import Resource, Source
    from labkit.metrics import RequestCount
    from labkit.traffic import Outcome, Resolver, TrafficResult


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
            lines.append(
                f"  {w.namespace}/{w.name}: {w.ready}/{w.replicas} ready, {side} {w.detail}".rstrip()
            )
        if self.ingress_url:
            lines.append(f"  ingress: {self.ingress_url}")
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


class Lab(abc.ABC):
    """A running (or startable) mesh. Obtain one with ``labkit.open()``."""

    backend: str = "abstract"

    @abc.abstractmethod
    def up(self) -> Status:
        """Start (or reuse, or repair) the mesh and the lab's workloads; idempotent."""

    @abc.abstractmethod
    def down(self) -> None:
        """Stop everything this lab started; leaves no process behind."""

    @abc.abstractmethod
    def apply(self, src: Source) -> list[Change]:
        """Validate, then apply manifests (path, folder, YAML text, dict or list)."""

    @abc.abstractmethod
    def delete(self, src: Source) -> list[Change]:
        """Remove the resources named by ``src``."""

    @abc.abstractmethod
    def status(self) -> Status:
        """What runs, what is ready, and what is wrong."""

    @abc.abstractmethod
    def metrics(self) -> list[RequestCount]:
        """``istio_requests_total`` samples, same labels on every backend."""

    @abc.abstractmethod
    def access_log(self, workload: str, tail: int = 50) -> list[str]:
        """The last ``tail`` access-log lines of ``workload``'s proxy (Istio's default TEXT format)."""

    @abc.abstractmethod
    def resolver(self, source: str) -> Resolver:
        """How a request from ``source`` ("client", "legacy", "ingress") reaches a URL on this backend."""

    # --- shared behaviour, built on the methods above -------------------------------------------------

    def set_weights(self, service: str, namespace: str = "payments-prod", **weights: int) -> list[Change]:
        """Render the canary VirtualService for ``{subset: weight}`` and apply it (one-integer revert)."""
        from labkit.manifests import canary_virtual_service

        return self.apply(canary_virtual_service(service, weights, namespace=namespace))

    def send(
        self,
        url: str,
        n: int | None = None,
        *,
        duration: float | None = None,
        qps: float | None = None,
        concurrency: int = 8,
        source: str = "client",
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        progress: bool | None = None,
    ) -> TrafficResult:
        """Send ``n`` requests (or for ``duration`` s) from ``source`` to ``url``; record each outcome."""
        from labkit import traffic

        return traffic.send(
            self.resolver(source),
            url,
            n=n,
            duration=duration,
            qps=qps,
            concurrency=concurrency,
            headers=headers,
            method=method,
            progress=progress,
            source=source,
        )

    def stream(
        self,
        url: str,
        *,
        source: str = "client",
        qps: float = 50,
        on_batch: Callable[[list[Outcome]], None],
        concurrency: int = 8,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
    ) -> Any:
        """Background traffic for a live chart (``start()``/``stop()``); a backend may send it another way."""
        from labkit import traffic

        return traffic.Stream(
            self.resolver(source), url, qps=qps, on_batch=on_batch, concurrency=concurrency, headers=headers,
            method=method,
        )  # fmt: skip

    # --- back to a checkpoint, declaratively (reset, ensure) ------------------------------------------------

    @abc.abstractmethod
    def applied(self) -> list[Resource]:
        """What is applied now: every Istio object, and the lab's Kubernetes objects as they run."""

    def ensure(self, checkpoint: str) -> list[Change]:
        """Bring the lab to exactly the named checkpoint, so a trainee can start at any notebook (reset)."""
        return self.reset(checkpoint)

    def reset(self, checkpoint: str | None = None) -> list[Change]:
        """Start the lab if needed and make it exactly ``checkpoint`` (None: no Istio configuration).

        Background traffic and rollouts of this kernel stop; Istio objects the checkpoint lacks are deleted,
        edited objects (a Deployment with FAIL_RATE set) go back to their manifests, and the checkpoint's
        objects are applied where they differ. What already matches is left alone, so this takes seconds.
        """
        from labkit import manifests, traffic

        traffic.stop_all()
        wanted = checkpoint_resources(checkpoint)
        self.up()
        live = {r.key: r for r in self.applied()}
        keys = {r.key for r in wanted}
        leftover = [
            r.body
            for r in live.values()
            if r.group.endswith("istio.io") and r.namespace in NAMESPACES and r.key not in keys
        ]
        changes = self.delete(leftover) if leftover else []
        apps = {r.key: r for r in manifests.load(paths.APPS)}
        apps.update({r.key: r for r in wanted})
        drifted = [r.body for r in apps.values() if r.key not in live or not in_sync(live[r.key], r)]
        return changes + (self.apply(drifted) if drifted else [])

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.down()


def checkpoint_resources(checkpoint: str | None) -> list[Resource]:
    """The objects of ``checkpoint`` (cumulative, from cluster-config/); None is the bare apps."""
    from labkit import manifests
    from labkit.errors import LabError

    if checkpoint is None:
        return []
    if checkpoint not in CHECKPOINTS:
        raise LabError(
            f"unknown checkpoint {checkpoint!r}. What to do: choose one of {', '.join(CHECKPOINTS)} "
            "(labkit/scenario.py), or None for the apps without Istio configuration"
        )
    return [r for rel in CHECKPOINTS[checkpoint] for r in manifests.load(paths.CLUSTER_CONFIG / rel)]


def in_sync(live: Resource, wanted: Resource) -> bool:
    """``live`` runs as ``wanted`` says: an Istio spec exactly (a leftover ``fault`` is drift), a Kubernetes
    object in every field the manifest sets (the API server adds defaults)."""
    if wanted.group.endswith("istio.io"):
        return live.spec == wanted.spec and covers(live.metadata, wanted.metadata)
    return covers(live.body, wanted.body)


def covers(live: Any, wanted: Any) -> bool:
    """Every field ``wanted`` sets has that value in ``live`` (which may add defaults, status, metadata).

    Lists must match item by item, so an extra env variable (FAIL_RATE) counts as drift."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(k in live and covers(live[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(covers(a, b) for a, b in zip(live, wanted, strict=True))
        )
    return live == wanted
