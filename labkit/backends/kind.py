"""``KubeLab``: the Lab API on a real Istio mesh. ``kind`` mode builds and owns a kind cluster; ``kube``
mode uses an existing cluster (``context=``) and never creates or deletes it.

``KubeLab`` keeps the order of ``up()`` and the apply pipeline's hooks; every other call is one call into the
engine that owns it: traffic from inside pods in ``podtraffic``, what a proxy runs in ``proxyview``, what the
cluster runs in ``workloads``, the Kubernetes API in ``kube``, istioctl in ``istio``, preflight in
``doctor``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from labkit import manifests, paths, scenario
from labkit.errors import BackendError, LabError
from labkit.kind import cluster, doctor, gatewayapi, images, istio, podtraffic, proxyview, workloads
from labkit.kind.commands import Target
from labkit.kind.kube import Kube
from labkit.lab import Change, Lab, Status
from labkit.metrics import RequestCount
from labkit.status import ProxyStatus

if TYPE_CHECKING:
    from labkit.manifests import Resource
    from labkit.traffic import Outcome, Resolver, TrafficResult
    from labkit.traffic.tcp import TcpResult

#: kind/cluster.yaml publishes the ingress gateway's NodePort here.
INGRESS_URL = "http://127.0.0.1:8080"
INGRESS_HTTPS_URL = "https://127.0.0.1:8443"  # the https NodePort 30443 (gateway port 443)
#: How long up() waits for the nodes to be Ready after ``kind create`` (whose --wait may expire silently).
NODE_READY_TIMEOUT = 300.0
#: Applied first so the objects inside them can be created in the same call.
_FIRST = ("CustomResourceDefinition", "Namespace", "ServiceAccount")


def _say(message: str) -> None:
    print(f"[kind] {message}", flush=True)


class KubeLab(Lab):
    """The mesh on Kubernetes: ``labkit.open("kind")`` or ``labkit.open("kube", context="my-cluster")``."""

    telemetry_lag = 45.0  # the addon Prometheus scrapes every 15 s; a telemetry-measured split waits for it

    def __init__(self, mode: str = "kind", context: str | None = None, name: str = cluster.NAME) -> None:
        if mode not in ("kind", "kube"):
            raise BackendError(f"unknown mode {mode!r} for the Kubernetes backend", "use kind or kube")
        self.backend, self.name = mode, name
        if mode == "kind":
            self.target = Target(cluster.kubeconfig(name), context or cluster.context(name))
        else:
            self.target = Target(None, context)
        self._kube: Kube | None = None

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            if self.target.kubeconfig and not self.target.kubeconfig.exists():
                raise BackendError(f"kind cluster {self.name} has no kubeconfig yet", "run lab.up()")
            self._kube = Kube(self.target.kubeconfig, self.target.context)
        return self._kube

    # --- lifecycle ----------------------------------------------------------------------------------------

    def up(self) -> Status:
        """Preflight, create or reuse the cluster, build and load the image, install the Gateway API CRDs,
        Istio and the addons, apply the apps and wait until every pod is ready with its sidecar."""
        doctor.preflight(self.backend, self.name, _say)
        if self.backend == "kind":
            _say(f"cluster {self.name}: creating or reusing (the first time takes a few minutes)")
            created = cluster.create(self.name)
            problem = None if created else cluster.port_mapping_problem(self.name)
            if problem:
                raise BackendError(problem)
            self._kube = None
            # kubectl/istioctl cells in this kernel reach the lab's cluster; ~/.kube/config stays untouched
            os.environ["KUBECONFIG"] = str(self.target.kubeconfig)
            self.kube.wait_nodes_ready(
                NODE_READY_TIMEOUT
            )  # `kind create --wait` exits 0 even when it timed out
            _say(f"building {cluster.IMAGE} and loading it into the cluster")
            cluster.build_image()
            cluster.load_image(cluster.IMAGE, self.name)
            if images.prepull():
                wanted = images.istio_images() + images.addon_images(istio.addons_dir())
                _say(f"pre-pull mode: pulling {len(wanted)} images on this host and loading them")
                images.pull_and_load(wanted, self.name)
        else:
            _say(f"kube mode: the nodes must be able to pull {cluster.IMAGE} (push it to their registry)")
        gatewayapi.ensure(self.kube, _say)  # before istiod starts, so it watches the Gateway API kinds
        istio.ensure_installed(self.kube, self.target, _say)
        self.addons()
        _say("applying cluster-config/apps")
        self.apply(paths.APPS, quiet=True)  # said just above
        workloads.wait_ready(self.kube, _say)
        return self.status()

    def addons(self) -> str:
        """Install Prometheus and Kiali from the Istio release's samples/addons; returns Kiali's URL."""
        folder = istio.addons_dir()
        if folder is None:
            raise BackendError(
                "Istio's samples/addons (prometheus.yaml, kiali.yaml) were not found next to istioctl",
                "run `labkit tools install`, or set ISTIO_HOME to the unpacked Istio release",
            )
        for name in istio.ADDONS:
            self._apply(manifests.load(folder / name))  # Istio's own addons: applied as shipped
        for name in ("prometheus", "kiali"):
            self.kube.wait_rollout("istio-system", name, timeout=300)
        return self.dashboard_url()

    def dashboard_url(self) -> str:
        """Where Kiali answers once ``istioctl dashboard kiali`` (a port-forward) runs in a terminal."""
        return "http://localhost:20001/kiali  (run `istioctl dashboard kiali` in a terminal to open it)"

    def down(self) -> None:
        """Delete the kind cluster (kind mode); an existing cluster (kube mode) is left as it is."""
        if self.backend == "kind":
            cluster.delete(self.name)
            self._kube = None
        else:
            _say(f"kube mode: cluster {self.target.context or '(current context)'} left running (not ours)")

    # --- manifests: the apply pipeline's hooks (lab.py loads, validates and shows warnings) ----------------

    def _context(self, incoming: list[Resource]) -> list[Resource]:
        """The lab's apps and what the cluster holds (Istio objects, Services, Deployments), minus those
        ``incoming`` replaces: what the analysis stage checks references (subsets, hosts) against."""
        keys = {r.key for r in incoming}
        found = {r.key: r for r in manifests.load(paths.APPS)}
        found.update((r.key, r) for r in manifests.load(workloads.live_objects(self.kube)))  # live wins
        return [r for r in found.values() if r.key not in keys]

    def _apply(self, resources: list[Resource]) -> list[Change]:
        """Server-side apply every object, namespaces first; return once a changed Deployment has rolled out
        (as on the local backend: the workload runs with its new settings)."""
        changes = [Change(r.kind, r.namespace, r.name, self.kube.apply(r.body)) for r in _ordered(resources)]
        for change in changes:
            if change.kind == "Deployment" and change.action in ("created", "configured"):
                self.kube.wait_rollout(change.namespace, change.name)
        return changes

    def _delete(self, resources: list[Resource]) -> list[Change]:
        """Delete the objects, in reverse order (namespaces last)."""
        ordered = _ordered(resources)
        return [Change(r.kind, r.namespace, r.name, self.kube.delete(r.body)) for r in reversed(ordered)]

    def get(self, kind: str, namespace: str | None = None) -> list[Resource]:
        """The live objects of ``kind`` ("virtualservices", "VirtualService", "vs", ...), in ``namespace`` or
        in all namespaces, as the API server holds them (managedFields left out), like ``kubectl get``."""
        api_version, kind_name = self.kube.kind_named(kind)
        items = self.kube.objects(api_version, kind_name, namespace)
        for item in items:
            item.get("metadata", {}).pop("managedFields", None)
        return manifests.load(items)

    def applied(self) -> list[Resource]:
        """What is live now: the lab's kinds in the lab's namespaces, as the API server holds them
        (``Lab.reset`` compares the manifests against these; workloads.py)."""
        return workloads.lab_objects(self.kube)

    # --- state ----------------------------------------------------------------------------------------------

    def status(self) -> Status:
        """Every app Deployment's readiness and sidecar, and each problem with what to do."""
        if self.backend == "kind":
            try:
                exists = cluster.exists(self.name)
            except LabError as exc:
                return Status(self.backend, False, problems=[str(exc).splitlines()[0]])
            if not exists:
                return Status(
                    self.backend, False, problems=[f"kind cluster {self.name} does not exist: run lab.up()"]
                )
        ingress_url = INGRESS_URL if self.backend == "kind" else None
        return workloads.lab_status(self.kube, self.backend, ingress_url)

    def promql(self, query: str) -> list[dict[str, Any]]:
        """The query on Istio's Prometheus addon (installed by up()), via the API server's service proxy."""
        return self.kube.prometheus(query)

    def metrics(self) -> list[RequestCount]:
        """``istio_requests_total`` from the addon Prometheus (scraped every 15 s, so recent requests lag)."""
        return [
            RequestCount(labels=dict(s["metric"]), value=float(s["value"][1]))
            for s in self.kube.prometheus("istio_requests_total")
        ]

    def access_log(self, workload: str, tail: int = 50) -> list[str]:
        """The last ``tail`` access-log lines of ``workload``'s istio-proxy (lines in Istio's TEXT format);
        ``workload`` as ``send`` takes a source (``currency-converter-v1``, ``shop/web``)."""
        return proxyview.access_log(self.kube, workload, tail)

    def proxy_stats(self, workload: str, contains: str = "") -> dict[str, int]:
        """``workload``'s Envoy counters, as Istio's tasks read them (``pilot-agent request GET stats``)."""
        return proxyview.proxy_stats(self.kube, self.target, workload, contains)

    # --- Istio's view ---------------------------------------------------------------------------------------

    def analyze(self, namespace: str | None = scenario.NAMESPACE) -> list[Any]:
        """``istioctl analyze`` on the cluster as validation Findings (errors and warnings)."""
        return istio.analyze(self.target, namespace)

    def route_weights(
        self, service: str = scenario.SERVICE, namespace: str = scenario.NAMESPACE, source: str = "client"
    ) -> dict[str, int]:
        """``{subset: weight}`` for ``service`` (its first port, as on the local backend) as ``source``'s
        sidecar holds them: the VirtualService reached the proxy. Any workload with a sidecar can be
        ``source`` (``shop/web``, ``web``), any Service and port the route of."""
        return proxyview.route_weights(self.kube, self.target, source, service, namespace)

    def set_weights(
        self,
        service: str,
        namespace: str = scenario.NAMESPACE,
        *,
        api: str = "istio",
        port: int = scenario.PORT,
        **weights: int,
    ) -> list[Change]:
        """Apply the canary split (either API), then wait until the client's proxy holds it (``proxy-config
        routes``)."""
        changes = super().set_weights(service, namespace, api=api, port=port, **weights)
        proxyview.wait_for_weights(lambda: self.route_weights(service, namespace), weights, _say)
        return changes

    def mtls_mode(
        self, workload: str = "currency-converter-v1", namespace: str = scenario.NAMESPACE
    ) -> str | None:
        """The workload mTLS mode (STRICT/PERMISSIVE) ``istioctl x describe pod`` reports for ``workload``
        (a Deployment name in ``namespace``, or ``namespace/name``)."""
        return proxyview.mtls_mode(self.kube, self.target, workload, namespace)

    def pod_urls(self, workload: str, namespace: str = scenario.NAMESPACE) -> list[str]:
        """Each pod IP with each port its app containers declare: a dial there lands in the pod's sidecar
        through Istio's iptables capture (workloads.py)."""
        return workloads.pod_urls(self.kube, workload, namespace)

    def proxy_status(self) -> list[ProxyStatus]:
        """``istioctl proxy-status``, parsed: each proxy's CDS/LDS/EDS/RDS/ECDS state (SYNCED, STALE ...)."""
        return istio.proxy_status(self.target)

    def proxy_config(self, workload: str, what: str = "routes") -> Any:
        """What ``workload``'s proxy runs (``istioctl proxy-config <what> <pod>.<ns> -o json``), parsed:
        ``workload`` is a lesson alias, ``namespace/name`` or a unique Deployment name."""
        return proxyview.proxy_config(self.kube, self.target, workload, what)

    def _workload(self, source: str) -> podtraffic.Workload:
        return podtraffic.find_workload(self.kube, source)

    # --- traffic --------------------------------------------------------------------------------------------

    def resolver(self, source: str) -> Resolver:
        """ "ingress": the gateway on 127.0.0.1:8080 with the URL's host as Host header. Workloads in the
        cluster cannot be reached from here: ``send()`` runs load.py inside their pod."""
        if source == scenario.INGRESS:
            if self.backend != "kind":
                raise BackendError(
                    "source='ingress' needs the kind port mapping", "use source='client' in kube mode"
                )
            return _ingress
        raise BackendError(
            f"requests from {source!r} run inside its pod on the Kubernetes backend",
            f"use lab.send(url, n=..., source={source!r}) instead of a resolver",
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
        """Background traffic for the live chart; from a workload it runs inside that workload's pod."""
        if source == scenario.INGRESS:
            return super().stream(
                url, source=source, qps=qps, on_batch=on_batch, concurrency=concurrency, headers=headers,
                method=method,
            )  # fmt: skip
        _get_only(source, method)
        from labkit import traffic  # here: aiohttp's import would slow `import labkit`

        stream = podtraffic.PodStream(
            self.send,
            url,
            source=source,
            qps=qps,
            on_batch=on_batch,
            concurrency=concurrency,
            headers=headers,
        )
        traffic.register(stream)  # lab.reset (traffic.stop_all) stops it, as it stops a local stream
        return stream

    def _send(self, url: str, *, source: str, **load: Any) -> TrafficResult:
        """From a workload (``client``, ``legacy``, ``shop/web``, ``web``) the requests leave from inside one
        of its pods, through its sidecar (``podtraffic``); from ``ingress``, through the NodePort."""
        if source == scenario.INGRESS:
            return super()._send(url, source=source, **load)
        _get_only(source, load.get("method", "GET"))
        return podtraffic.send(
            self.kube, self.target, self._workload(source), url, n=load["n"], duration=load["duration"],
            qps=load["qps"], concurrency=load["concurrency"], headers=load["headers"], source=source,
            open_loop=load["open_loop"],
        )  # fmt: skip

    def send_tcp(self, url: str, n: int = 200, *, source: str = "client", concurrency: int = 8) -> TcpResult:
        """The connections leave from inside a pod of ``source``, through its sidecar (load.py's tcp://)."""
        from labkit.traffic.tcp import TcpResult  # imported lazily: keeps `import labkit` fast

        result = podtraffic.send(
            self.kube, self.target, self._workload(source), url, n=n, duration=None, qps=None,
            concurrency=concurrency, headers=None, source=source,
        )  # fmt: skip
        return TcpResult(result.outcomes, source, url, result.elapsed)


def _get_only(source: str, method: str) -> None:
    if method != "GET":
        raise LabError(f"load.py in the {source} pod sends GET only, not {method}", "send GET, or "
                       "send from source='ingress'")  # fmt: skip


def _ingress(url: str) -> tuple[str, dict[str, str]]:
    """Send ``url`` to the kind-mapped ingress gateway, keeping its host as the Host header: https (port
    443) to the https NodePort's mapping, anything else to the http one."""
    parts = urlsplit(url)
    secure = parts.scheme == "https" or parts.port == 443
    target = urlsplit(INGRESS_HTTPS_URL if secure else INGRESS_URL)
    return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, "")), {"Host": parts.netloc}


def _ordered(resources: list[Resource]) -> list[Resource]:
    """Namespaces (and CRDs, service accounts) first, so the objects inside them can follow in one call."""
    return sorted(resources, key=lambda r: _FIRST.index(r.kind) if r.kind in _FIRST else len(_FIRST))
