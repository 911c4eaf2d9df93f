"""The one public API every backend implements, so the notebooks run unchanged on local Envoy or on kind."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit import canary, manifests, paths
from labkit.errors import BackendError, LabError
from labkit.manifests import TOOL_CONFIGS, load
from labkit.mesh import load_mesh_settings
from labkit.metrics import REQUESTS
from labkit.scenario import CHECKPOINTS, NAMESPACE, NAMESPACES, PORT, SERVICE
from labkit.status import Change, ProxyStatus, Status

if TYPE_CHECKING:
    from labkit.manifests import Resource, Source
    from labkit.metrics import RequestCount
    from labkit.traffic import Outcome, Resolver, TrafficResult
    from labkit.traffic.tcp import TcpResult


def show(message: str) -> None:
    """How the lab tells the user something on the way (a warning, a step): printed, so it appears under the
    notebook cell and in the terminal alike."""
    print(message, flush=True)


def kubectl_line(verb: str, src: Source) -> str:
    """The kubectl command ``lab.apply``/``lab.delete`` of ``src`` stands for on a cluster, as a comment: a
    file or folder by its path from the repository root (folders are read recursively: ``-R``), objects
    held in memory (YAML text, dicts) as ``-f -``, their YAML on kubectl's stdin."""
    if not manifests.is_path(src):
        return f"# on a cluster: kubectl {verb} -f -   (these objects' YAML on stdin)"
    path = Path(src)  # type: ignore[arg-type]  # is_path: a str or a PathLike
    recursive = "-R " if path.is_dir() else ""
    return f"# on a cluster: kubectl {verb} {recursive}-f {manifests.display_source(str(path))}"


def _applicable(src: Source) -> list[Resource]:
    """The objects of ``src`` a backend applies: tool configs (kind's Cluster, the IstioOperator) are read
    by their tools, not applied."""
    return [r for r in load(src) if (r.group, r.kind) not in TOOL_CONFIGS]


class Lab(abc.ABC):
    """A running (or startable) mesh. Obtain one with ``labkit.open()``."""

    backend: str = "abstract"
    #: How long ``metrics()`` may take to count a request just answered (a telemetry split waits for it).
    telemetry_lag: float = 2.0
    #: How often the lab's Prometheus scrapes the proxies (``promql``; Istio's addon: every 15 s).
    scrape_interval: float = 15.0

    @abc.abstractmethod
    def up(self) -> Status:
        """Start (or reuse, or repair) the mesh and the lab's workloads; idempotent."""

    @abc.abstractmethod
    def down(self) -> None:
        """Stop everything this lab started; leaves no process behind."""

    # --- the one apply pipeline: every backend goes through it, so a typo reads the same everywhere --------

    def apply(self, src: Source, *, quiet: bool = False) -> list[Change]:
        """Print the kubectl command this stands for on a cluster (not when ``quiet``, for scripts), load
        ``src`` (path, folder, YAML text, dict or list), validate it, check that this backend runs what it
        asks for, show the warnings, then apply it. Schema and admission errors raise ValidationError and
        apply nothing; analysis findings (a subset no DestinationRule defines) are warnings, shown here
        once, because the lab's job is to let you see their runtime outcome."""
        if not quiet:
            show(kubectl_line("apply", src))
        resources = _applicable(src)
        # imported here, not at module level: its schemas take seconds to load; `import labkit` stays fast
        from labkit import validation

        warnings = validation.check(resources, context=self._context(resources))
        self._check_capabilities(resources)
        for finding in warnings:
            show(str(finding))  # a Finding reads "warning: <file> (document N) Kind/name field: ..."
        return self._apply(resources)

    def delete(self, src: Source, *, quiet: bool = False) -> list[Change]:
        """Remove the resources ``src`` names (only their kind, namespace and name matter), printing the
        kubectl command this stands for unless ``quiet``."""
        if not quiet:
            show(kubectl_line("delete", src))
        resources = _applicable(src)
        self._check_capabilities(resources, deleting=True)
        return self._delete(resources)

    # --- what each backend implements ---------------------------------------------------------------------

    def _context(self, incoming: list[Resource]) -> list[Resource]:
        """The lab's other objects (applied or live), minus those ``incoming`` replaces: what the analysis
        stage checks references against (subsets, hosts, gateways)."""
        return []

    def _check_capabilities(self, resources: list[Resource], deleting: bool = False) -> None:  # noqa: B027
        """Refuse, by name, a valid resource or field this backend does not run (UnsupportedError); a backend
        that runs everything Istio accepts (kind) keeps this default."""

    @abc.abstractmethod
    def _apply(self, resources: list[Resource]) -> list[Change]:
        """Apply validated resources; on an error nothing changes."""

    @abc.abstractmethod
    def _delete(self, resources: list[Resource]) -> list[Change]:
        """Delete the named resources."""

    @abc.abstractmethod
    def status(self) -> Status:
        """What runs, what is ready, and what is wrong."""

    @abc.abstractmethod
    def metrics(self, name: str = REQUESTS) -> list[RequestCount]:
        """The samples of Istio's metric ``name`` (``metrics.METRICS``: ``istio_requests_total``, or an
        ``istio_tcp_*`` counter), same labels on every backend."""

    @abc.abstractmethod
    def access_log(self, workload: str, tail: int = 50) -> list[str]:
        """The last ``tail`` access-log lines of ``workload``'s proxy (Istio's default TEXT format)."""

    @abc.abstractmethod
    def resolver(self, source: str) -> Resolver:
        """How a request from ``source`` (a workload, ``namespace/workload``, an alias of
        ``scenario.SOURCES``, or ``scenario.INGRESS``) reaches a URL on this backend."""

    # Looking at what the mesh runs. Not abstract until every backend has them; a backend without one says so.

    def get(self, kind: str, namespace: str | None = None) -> list[Resource]:
        """The objects of ``kind`` (as kubectl names it: VirtualService, virtualservices, vs) the lab runs,
        in ``namespace`` or in all namespaces, like ``kubectl get``."""
        raise self._missing("get")

    def proxy_config(self, workload: str, what: str = "routes") -> list[dict[str, Any]]:
        """What ``workload``'s Envoy runs: "routes", "clusters", "listeners", "endpoints" or "secrets"."""
        raise self._missing("proxy_config")

    def proxy_status(self) -> list[ProxyStatus]:
        """Per proxy, whether it runs the control plane's newest config, per xDS type (SYNCED, STALE, NACK
        with Envoy's message), like ``istioctl proxy-status``."""
        raise self._missing("proxy_status")

    def route_weights(
        self, service: str = SERVICE, namespace: str = NAMESPACE, source: str = "client"
    ) -> dict[str, int]:
        """``{subset: weight}`` for ``service`` as ``source``'s sidecar holds them."""
        raise self._missing("route_weights")

    def proxy_stats(self, workload: str, contains: str = "") -> dict[str, int]:
        """``workload``'s Envoy counters and gauges whose names contain ``contains``, from its admin
        ``/stats`` (on kind ``pilot-agent request GET stats`` in its istio-proxy container, as Istio's tasks
        read them), e.g. ``upstream_rq_pending_overflow`` of a circuit breaker."""
        raise NotImplementedError(f"lab.proxy_stats on the {self.backend} backend")

    def promql(self, query: str) -> list[dict[str, Any]]:
        """An instant PromQL query on the lab's Prometheus (kind: Istio's addon; local: the ``prometheus``
        binary scraping every proxy): the HTTP API's ``data.result``,
        ``[{"metric": {...}, "value": [t, v]}]``."""
        raise self._missing("promql")

    def mtls_mode(self, workload: str, namespace: str = NAMESPACE) -> str | None:
        """The inbound mTLS mode (STRICT, PERMISSIVE, ...) of ``workload``'s sidecar; None without one."""
        raise self._missing("mtls_mode")

    def pod_urls(self, workload: str, namespace: str = NAMESPACE) -> list[str]:
        """An ``http://`` URL for every TCP address the pods of ``workload`` listen on, as a caller that
        skips the Service (a pod IP from ``kubectl get pod -o wide``, a port from ``ss -ltn``) would dial
        them: under STRICT none of them may answer plaintext."""
        raise self._missing("pod_urls")

    def _missing(self, method: str) -> Exception:
        return BackendError(
            f"lab.{method} is not available on the {self.backend} backend", "use the local backend"
        )

    # --- shared behaviour, built on the methods above -------------------------------------------------

    def set_weights(
        self,
        service: str,
        namespace: str = NAMESPACE,
        *,
        api: str = "istio",
        port: int = PORT,
        **weights: int,
    ) -> list[Change]:
        """Render the canary route for ``{version: weight}`` and apply it (one-integer revert): a
        VirtualService (``api="istio"``) or an HTTPRoute (``api="gateway"``, to ``<service>-<version>``
        Services). The other API's canary route of that name is deleted first: a sidecar applies one of the
        two, never both (validation.gateway_api ``conflicts``)."""
        body = canary.route(api, service, weights, namespace=namespace, port=port)
        other = [kind for a, kind in canary.KINDS.items() if a != api]
        stale = [r.body for kind in other for r in self._existing(kind, namespace) if r.name == service]
        # quiet: a rollout sets weights every step; the trainee sees the weights, not a YAML on stdin
        return (self.delete(stale, quiet=True) if stale else []) + self.apply(body, quiet=True)

    def _existing(self, kind: str, namespace: str) -> list[Resource]:
        """``get(kind, namespace)``, or nothing where the kind is not installed (no Gateway API CRDs)."""
        try:
            return self.get(kind, namespace)
        except LabError:
            return []

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
        open_loop: bool = False,
    ) -> TrafficResult:
        """Send ``n`` requests (or for ``duration`` s) from ``source`` to ``url``; record each outcome.

        ``open_loop`` (with ``qps``): each latency counts from the request's scheduled time, so a queue is not
        hidden by coordinated omission (``traffic.send``). When no answer says its version, the split comes
        from mesh telemetry (``result.measured_by``)."""
        from labkit import telemetry_split  # here: aiohttp's import would slow `import labkit`

        meter = telemetry_split.Meter(self.metrics, source=source, url=url, lag=self.telemetry_lag)
        return meter.finish(self._send(
            url, n=n, duration=duration, qps=qps, concurrency=concurrency, source=source, headers=headers,
            method=method, progress=progress, open_loop=open_loop,
        ))  # fmt: skip

    def _send(self, url: str, *, source: str, **load: Any) -> TrafficResult:
        """How this backend's requests leave ``source``: here through its resolver (a backend may send them
        from inside the workload instead)."""
        from labkit import traffic  # here: aiohttp's import would slow `import labkit`

        return traffic.send(self.resolver(source), url, source=source, **load)

    def send_tcp(self, url: str, n: int = 200, *, source: str = "client", concurrency: int = 8) -> TcpResult:
        """Open ``n`` TCP connections from ``source`` to ``url`` (``tcp://host:port``), each sending one line
        and reading its echo, as Istio's tcp-echo task does with ``nc``: the split is per connection."""
        from labkit.traffic import tcp  # here: aiohttp's import would slow `import labkit`

        return tcp.send_tcp(self.resolver(source), url, n, concurrency=concurrency, source=source)

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
        """Background traffic for a live chart: ``start()``/``stop()``, or ``with lab.stream(...) as s:``,
        which stops it when the block ends or the cell is interrupted; a backend may send it another way."""
        from labkit import traffic  # here: aiohttp's import would slow `import labkit`

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
        from labkit import traffic  # here: aiohttp's import would slow `import labkit`

        traffic.stop_all()
        wanted = checkpoint_resources(checkpoint)
        self.up()
        live = {r.key: r for r in self.applied()}
        keys = {r.key for r in wanted}
        # the lessons' namespaces and Istio's root one, where mesh-wide objects (a Telemetry, the edge's
        # AuthorizationPolicy, the https Gateway) live
        namespaces = {*NAMESPACES, load_mesh_settings().root_namespace}
        leftover = [
            r.body
            for r in live.values()
            if is_mesh_config(r) and r.namespace in namespaces and r.key not in keys
        ]
        changes = self.delete(leftover, quiet=True) if leftover else []  # the changes say what happened
        apps = {r.key: r for r in manifests.load(paths.APPS)}
        apps.update({r.key: r for r in wanted})
        drifted = [r.body for r in apps.values() if r.key not in live or not in_sync(live[r.key], r)]
        return changes + (self.apply(drifted, quiet=True) if drifted else [])

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.down()


def checkpoint_resources(checkpoint: str | None) -> list[Resource]:
    """The objects of ``checkpoint`` (cumulative, from cluster-config/); None is the bare apps."""

    if checkpoint is None:
        return []
    if checkpoint not in CHECKPOINTS:
        raise LabError(
            f"unknown checkpoint {checkpoint!r}. What to do: choose one of {', '.join(CHECKPOINTS)} "
            "(labkit/scenario.py), or None for the apps without Istio configuration"
        )
    return [r for rel in CHECKPOINTS[checkpoint] for r in manifests.load(paths.CLUSTER_CONFIG / rel)]


def is_mesh_config(r: Resource) -> bool:
    """Istio's configuration kinds and the Gateway API's: what a checkpoint holds exactly (reset deletes the
    rest, so an HTTPRoute left by an earlier notebook cannot shadow a VirtualService)."""
    return r.group.endswith("istio.io") or r.group == "gateway.networking.k8s.io"


def in_sync(live: Resource, wanted: Resource) -> bool:
    """``live`` runs as ``wanted`` says: an Istio spec exactly (a leftover ``fault`` is drift), a Kubernetes
    object in every field the manifest sets (the API server adds defaults)."""
    if is_mesh_config(wanted):
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
