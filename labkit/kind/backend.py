"""``KubeLab``: the Lab API on a real Istio mesh. ``kind`` mode builds and owns a kind cluster; ``kube``
mode uses an existing cluster (``context=``) and never creates or deletes it."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from labkit import paths
from labkit.command import run
from labkit.errors import BackendError, LabError
from labkit.kind import cluster, doctor, istio
from labkit.kind.commands import Target
from labkit.kind.kube import Kube, has_sidecar, rollout_complete
from labkit.lab import Change, Lab, Status, WorkloadStatus
from labkit.metrics import RequestCount

if TYPE_CHECKING:
    from labkit.manifests import Resource, Source
    from labkit.traffic import Outcome, Resolver, TrafficResult

#: Namespaces the lab's apps live in (cluster-config/apps).
LAB_NAMESPACES = ("payments-prod", "legacy", "external")
#: kind/cluster.yaml publishes the ingress gateway's NodePort here.
INGRESS_URL = "http://127.0.0.1:8080"
#: How long set_weights waits for istiod to push a new split to the client's proxy.
PROPAGATION_TIMEOUT = 30.0
#: In-cluster traffic sources: namespace, Deployment and container that run load.py.
POD_SOURCES = {
    "client": ("payments-prod", "client", "client"),
    "legacy": ("legacy", "legacy-client", "legacy-client"),
}
#: Istio kinds whose live objects other objects refer to (subsets, hosts, gateways, mTLS).
LIVE_KINDS = (
    ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "Gateway"),
    ("networking.istio.io/v1", "ServiceEntry"),
    ("security.istio.io/v1", "PeerAuthentication"),
)
#: Applied first so the objects inside them can be created in the same call.
_FIRST = ("CustomResourceDefinition", "Namespace", "ServiceAccount")


def _say(message: str) -> None:
    print(f"[kind] {message}", flush=True)


class KubeLab(Lab):
    """The mesh on Kubernetes: ``labkit.open("kind")`` or ``labkit.open("kube", context="my-cluster")``."""

    def __init__(self, mode: str = "kind", context: str | None = None, name: str = cluster.NAME) -> None:
        if mode not in ("kind", "kube"):
            raise BackendError(f"unknown mode {mode!r} for the Kubernetes backend; use kind or kube")
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
                raise BackendError(f"kind cluster {self.name} has no kubeconfig yet; run lab.up() first")
            self._kube = Kube(self.target.kubeconfig, self.target.context)
        return self._kube

    # --- lifecycle ----------------------------------------------------------------------------------------

    def up(self) -> Status:
        """Preflight, create or reuse the cluster, build and load the image, install Istio and the addons,
        apply the apps and wait until every pod is ready with its sidecar."""
        self._preflight()
        if self.backend == "kind":
            _say(f"cluster {self.name}: creating or reusing (the first time takes a few minutes)")
            cluster.create(self.name)
            self._kube = None
            # kubectl/istioctl cells in this kernel reach the lab's cluster; ~/.kube/config stays untouched
            os.environ["KUBECONFIG"] = str(self.target.kubeconfig)
            _say(f"building {cluster.IMAGE} and loading it into the cluster")
            cluster.build_image()
            cluster.load_image(cluster.IMAGE, self.name)
        else:
            _say(f"kube mode: the nodes must be able to pull {cluster.IMAGE} (push it to their registry)")
        self._install_istio()
        self.addons()
        _say("applying cluster-config/apps")
        self.apply(paths.APPS)
        self._wait_apps()
        return self.status()

    def _preflight(self) -> None:
        if self.backend == "kind":
            try:
                exists = cluster.exists(self.name)
            except LabError:
                exists = False  # kind or docker is missing; the checks say which
            checks = doctor.run_checks(cluster_exists=exists)
        else:
            checks = doctor.check_tools(("kubectl", "istioctl"))  # an existing cluster: no kind, no docker
        for check in checks:
            if check.level == "warning":
                _say(str(check))
        errors = [str(c) for c in checks if c.level == "error"]
        if errors:
            raise BackendError("the kind backend cannot start (`labkit doctor`):\n  " + "\n  ".join(errors))

    def _install_istio(self) -> None:
        istiod = self.kube.get("apps/v1", "Deployment", "istiod", "istio-system")
        if istiod is None or not rollout_complete(istiod):
            _say("installing Istio (istioctl install, about two minutes)")
            istio.install(self.target)
        for name in ("istiod", "istio-ingressgateway"):
            self.kube.wait_rollout("istio-system", name, timeout=300)
        problem = istio.skew_problem(*istio.versions(self.target))
        if problem:
            _say(f"warning: {problem}")

    def addons(self) -> str:
        """Install Prometheus and Kiali from the Istio release's samples/addons; returns Kiali's URL."""
        folder = istio.addons_dir()
        if folder is None:
            raise BackendError(
                "Istio's samples/addons (prometheus.yaml, kiali.yaml) were not found next to istioctl; run "
                "`labkit tools install`, or set ISTIO_HOME to the unpacked Istio release"
            )
        for name in istio.ADDONS:
            self._apply_resources(self._load(folder / name))
        for name in ("prometheus", "kiali"):
            self.kube.wait_rollout("istio-system", name, timeout=300)
        return self.dashboard_url()

    def dashboard_url(self) -> str:
        """Where Kiali answers once ``istioctl dashboard kiali`` (a port-forward) runs in a terminal."""
        return "http://localhost:20001/kiali  (run `istioctl dashboard kiali` in a terminal to open it)"

    def _wait_apps(self) -> None:
        """Wait for every app Deployment; restart once the ones whose pods started without a sidecar."""
        deployments = self._deployments()
        for d in deployments:
            self.kube.wait_rollout(d["metadata"]["namespace"], d["metadata"]["name"])
        missing = [d for d in deployments if self._injection_problem(d)]
        for d in missing:
            _say(f"deployment/{d['metadata']['name']} has pods without a sidecar: rollout restart")
            self.kube.restart(d["metadata"]["namespace"], d["metadata"]["name"])
        for d in missing:
            self.kube.wait_rollout(d["metadata"]["namespace"], d["metadata"]["name"])
            problem = self._injection_problem(d)
            if problem:
                raise BackendError(problem)

    def down(self) -> None:
        """Delete the kind cluster (kind mode); an existing cluster (kube mode) is left as it is."""
        if self.backend == "kind":
            cluster.delete(self.name)
            self._kube = None
        else:
            _say(f"kube mode: cluster {self.target.context or '(current context)'} left running (not ours)")

    # --- manifests ----------------------------------------------------------------------------------------

    def apply(self, src: Source) -> list[Change]:
        """Validate (against the apps and the Istio objects live in the cluster), then server-side apply every
        object, namespaces first; tool configs (IstioOperator, kind Cluster) are skipped."""
        from labkit import validation

        resources = self._load(src)
        keys = {r.key for r in resources}
        context = [r for r in self._load(paths.APPS) + self._live_istio() if r.key not in keys]
        for warning in validation.check(resources, context=context):
            _say(f"warning: {warning}")
        changes = self._apply_resources(resources)
        # As on the local backend: return once a changed workload runs with its new settings.
        for change in changes:
            if change.kind == "Deployment" and change.action in ("created", "configured"):
                self.kube.wait_rollout(change.namespace, change.name)
        return changes

    def _live_istio(self) -> list[Resource]:
        """The cluster's Istio routing and policy objects, for the cross-object checks of ``apply``."""
        bodies = []
        for api_version, kind in LIVE_KINDS:
            try:
                items = self.kube.objects(api_version, kind)
            except BackendError:
                continue  # Istio (or this kind) is not installed
            for obj in items:
                meta = {
                    k: obj["metadata"].get(k)
                    for k in ("name", "namespace", "labels")
                    if obj["metadata"].get(k)
                }
                bodies.append(
                    {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": obj.get("spec", {})}
                )
        return self._load(bodies) if bodies else []

    def applied(self) -> list[Resource]:
        """What is live now: the lab's Istio kinds (authorization included) and the kinds of
        cluster-config/apps, in the lab's namespaces, with their metadata and spec as the API server holds
        them (``Lab.reset`` compares the manifests against these)."""
        kinds = {(r.api_version, r.kind) for r in self._load(paths.APPS) if r.kind != "Namespace"}
        kinds |= {*LIVE_KINDS, ("security.istio.io/v1", "AuthorizationPolicy")}
        bodies = []
        for api_version, kind in sorted(kinds):
            for ns in LAB_NAMESPACES:
                try:
                    items = self.kube.objects(api_version, kind, ns)
                except BackendError:
                    break  # this kind is not installed (no Istio CRDs yet): nothing of it is live
                for o in items:
                    meta, spec = o["metadata"], o.get("spec", {})
                    bodies.append({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec})
        namespaces = [self.kube.get("v1", "Namespace", ns) for ns in LAB_NAMESPACES]
        bodies += [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": n["metadata"]} for n in namespaces if n
        ]
        return self._load(bodies) if bodies else []

    def _apply_resources(self, resources: list[Resource]) -> list[Change]:
        return [Change(r.kind, r.namespace, r.name, self.kube.apply(r.body)) for r in _ordered(resources)]

    def delete(self, src: Source) -> list[Change]:
        """Delete the objects ``src`` names, in reverse order (namespaces last)."""
        ordered = _ordered(self._load(src))
        return [Change(r.kind, r.namespace, r.name, self.kube.delete(r.body)) for r in reversed(ordered)]

    @staticmethod
    def _load(src: Source) -> list[Resource]:
        from labkit import manifests, validation

        return [r for r in manifests.load(src) if (r.group, r.kind) not in validation.TOOL_CONFIGS]

    # --- state ----------------------------------------------------------------------------------------------

    def _deployments(self) -> list[dict]:
        return [d for ns in LAB_NAMESPACES for d in self.kube.objects("apps/v1", "Deployment", ns)]

    def _pods(self, deployment: dict) -> list[dict]:
        meta = deployment["metadata"]
        return self.kube.pods(meta["namespace"], deployment["spec"]["selector"].get("matchLabels") or {})

    def _injection_problem(self, deployment: dict) -> str | None:
        """Why ``deployment``'s pods lack the sidecar their namespace asks for, and the fix; None if fine."""
        name, ns = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
        namespace = self.kube.get("v1", "Namespace", ns) or {}
        if (namespace.get("metadata", {}).get("labels") or {}).get("istio-injection") != "enabled":
            return None
        bare = [p["metadata"]["name"] for p in self._pods(deployment) if not has_sidecar(p)]
        if not bare:
            return None
        return (
            f"pod {bare[0]} of deployment/{name} ({ns}) has no istio-proxy container (1/1, not 2/2): it "
            f"started before namespace {ns} was labelled istio-injection=enabled or before istiod was ready: "
            f"`kubectl rollout restart deployment/{name} -n {ns}` (lab.up() does it for you)"
        )

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
        try:
            deployments = self._deployments()
        except BackendError as exc:
            return Status(self.backend, False, problems=[str(exc)])
        status = Status(self.backend, True, ingress_url=INGRESS_URL if self.backend == "kind" else None)
        for d in deployments:
            pods = self._pods(d)
            st = d.get("status") or {}
            try:
                done = rollout_complete(d)
            except BackendError as exc:  # the progress deadline passed: it will not finish by itself
                done = False
                status.problems.append(str(exc))
            status.workloads.append(
                WorkloadStatus(
                    name=d["metadata"]["name"],
                    namespace=d["metadata"]["namespace"],
                    version=(d["spec"]["template"]["metadata"].get("labels") or {}).get("version"),
                    replicas=d["spec"].get("replicas", 1),
                    ready=st.get("readyReplicas", 0),
                    sidecar=bool(pods) and all(has_sidecar(p) for p in pods),
                    detail="" if done else "(rolling out)",
                )
            )
            problem = self._injection_problem(d)
            if problem:
                status.problems.append(problem)
        return status

    def metrics(self) -> list[RequestCount]:
        """``istio_requests_total`` from the addon Prometheus (scraped every 15 s, so recent requests lag)."""
        return [
            RequestCount(labels=dict(s["metric"]), value=float(s["value"][1]))
            for s in self.kube.prometheus("istio_requests_total")
        ]

    def access_log(self, workload: str, tail: int = 50) -> list[str]:
        """The last ``tail`` access-log lines of ``workload``'s istio-proxy (lines in Istio's TEXT format)."""
        for ns in (*LAB_NAMESPACES, "istio-system"):
            deployment = self.kube.get("apps/v1", "Deployment", workload, ns)
            if deployment is not None:
                break
        else:
            names = ", ".join(d["metadata"]["name"] for d in self._deployments())
            raise LabError(
                f"no workload {workload!r} in the lab; choose one of: {names}, istio-ingressgateway"
            )
        pods = self._pods(deployment)
        if not pods:
            raise BackendError(f"deployment/{workload} ({ns}) has no pods; see `kubectl get pods -n {ns}`")
        if not has_sidecar(pods[0]):  # the ingress gateway's own container is called istio-proxy too
            raise BackendError(
                f"deployment/{workload} ({ns}) has no sidecar, so no access log; see lab.status()"
            )
        text = self.kube.logs(ns, pods[0]["metadata"]["name"], "istio-proxy", tail=max(tail * 5, 200))
        return [line for line in text.splitlines() if line.startswith("[")][-tail:]

    # --- Istio's view ---------------------------------------------------------------------------------------

    def analyze(self, namespace: str | None = "payments-prod") -> list[Any]:
        """``istioctl analyze`` on the cluster as validation Findings (errors and warnings)."""
        return istio.analyze(self.target, namespace)

    def route_weights(
        self, service: str = "currency-converter", namespace: str = "payments-prod", source: str = "client"
    ) -> dict[str, int]:
        """``{subset: weight}`` as ``source``'s sidecar holds them: the VirtualService reached the proxy."""
        ns, deploy, _ = POD_SOURCES[source]
        pod = self._first_pod(ns, deploy)
        return istio.route_weights(self.target, pod, ns, f"{service}.{namespace}.svc.cluster.local")

    def set_weights(self, service: str, namespace: str = "payments-prod", **weights: int) -> list[Change]:
        """Apply the canary split, then wait until the client's proxy holds it (``proxy-config routes``)."""
        changes = super().set_weights(service, namespace, **weights)
        wanted = {subset: w for subset, w in weights.items() if w}
        deadline = time.monotonic() + PROPAGATION_TIMEOUT
        while True:
            held = {subset: w for subset, w in self.route_weights(service, namespace).items() if w}
            if held == wanted:
                return changes
            if time.monotonic() > deadline:
                _say(
                    f"warning: after {PROPAGATION_TIMEOUT:g}s the client's proxy still routes {held}, not "
                    f"{wanted}; check lab.analyze() and `istioctl proxy-status`"
                )
                return changes
            time.sleep(1)

    def mtls_mode(
        self, workload: str = "currency-converter-v1", namespace: str = "payments-prod"
    ) -> str | None:
        """The workload mTLS mode (STRICT/PERMISSIVE) ``istioctl x describe pod`` reports for ``workload``."""
        return istio.mtls_mode(self.target, self._first_pod(namespace, workload), namespace)

    def _first_pod(self, namespace: str, deployment: str) -> str:
        d = self.kube.get("apps/v1", "Deployment", deployment, namespace)
        pods = self._pods(d) if d else []
        if not pods:
            raise BackendError(f"deployment/{deployment} ({namespace}) has no pods; run lab.up()")
        return pods[0]["metadata"]["name"]

    # --- traffic --------------------------------------------------------------------------------------------

    def resolver(self, source: str) -> Resolver:
        """ "ingress": the gateway on 127.0.0.1:8080 with the URL's host as Host header. In-cluster sources
        ("client", "legacy") cannot be reached from here: ``send()`` runs them inside their pod."""
        if source == "ingress":
            if self.backend != "kind":
                raise BackendError(
                    "source='ingress' needs the kind port mapping; use source='client' in kube mode"
                )
            return _ingress
        if source in POD_SOURCES:
            raise BackendError(
                f"requests from {source!r} run inside its pod on the Kubernetes backend; use "
                f"lab.send(url, n=..., source={source!r}) instead of a resolver"
            )
        raise LabError(f"unknown traffic source {source!r}; choose one of: client, legacy, ingress")

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
        """Background traffic for the live chart; from "client"/"legacy" it runs inside that pod."""
        if source not in POD_SOURCES:
            return super().stream(
                url,
                source=source,
                qps=qps,
                on_batch=on_batch,
                concurrency=concurrency,
                headers=headers,
                method=method,
            )
        if method != "GET":
            raise LabError(f"load.py in the {source} pod sends GET only, not {method}")
        return PodStream(
            self, url, source=source, qps=qps, on_batch=on_batch, concurrency=concurrency, headers=headers
        )

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
        """Like ``Lab.send``; for "client" and "legacy" the requests leave from inside that pod (load.py)."""
        if source not in POD_SOURCES:
            return super().send(
                url, n, duration=duration, qps=qps, concurrency=concurrency, source=source,
                headers=headers, method=method, progress=progress,
            )  # fmt: skip
        from labkit.traffic import TrafficResult

        if method != "GET":
            raise LabError(f"load.py in the {source} pod sends GET only, not {method}")
        if n is None:
            if duration is not None and not qps:
                raise LabError("load.py counts requests: give n=, or duration= together with qps=")
            n = math.ceil(duration * qps) if duration is not None and qps else 100
        ns, deploy, container = POD_SOURCES[source]
        argv = ["kubectl", *self.target.args(), "exec", "-n", ns, f"deploy/{deploy}", "-c", container, "--"]
        argv += ["python", "load.py", "--url", url, "--n", str(n), "--concurrency", str(concurrency)]
        if qps:
            argv += ["--qps", f"{qps:g}"]
        for key, value in (headers or {}).items():
            argv += ["--header", f"{key}: {value}"]
        expected = n / qps if qps else 2.0 * n / max(concurrency, 1)
        fix = f"check `kubectl get pods -n {ns}` (lab.status()); lab.up() repairs the lab"
        result = run(argv, env=self.target.env(), timeout=120 + expected, fix=fix)
        outcomes = parse_load_output(result.stdout)
        if n and not outcomes:
            raise BackendError(
                f"load.py in deploy/{deploy} ({ns}) printed no results:\n{result.stdout[-500:]}"
            )
        elapsed = max((o.t + o.latency for o in outcomes), default=0.0)
        return TrafficResult(outcomes, source=source, url=url, elapsed=elapsed)


class PodStream:
    """Background traffic from inside a pod, for the live chart: load.py runs in chunks of ``chunk`` seconds
    and each chunk's outcomes arrive as one batch. Same interface as ``traffic.Stream``, coarser batches."""

    def __init__(
        self,
        lab: KubeLab,
        url: str,
        *,
        source: str,
        qps: float,
        on_batch: Callable[[list[Outcome]], None],
        chunk: float = 2.0,
        concurrency: int = 8,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.lab, self.url, self.source, self.qps, self.on_batch = lab, url, source, qps, on_batch
        self.chunk, self.concurrency, self.headers = chunk, concurrency, headers
        self.started = 0.0
        self.error: BaseException | None = None  # the last failure of a chunk or of on_batch
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopped.is_set()

    def start(self) -> None:
        """Start sending (a no-op when already running)."""
        if self.running:
            return
        self._stopped = threading.Event()
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"pod-stream-{self.source}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the chunk in flight, waiting up to ``timeout`` seconds for its batch."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        n = max(1, round(self.qps * self.chunk))
        while not self._stopped.is_set():
            begin = time.monotonic() - self.started
            try:
                result = self.lab.send(
                    self.url,
                    n,
                    qps=self.qps,
                    source=self.source,
                    concurrency=self.concurrency,
                    headers=self.headers,
                )
                self.on_batch([dataclasses.replace(o, t=o.t + begin) for o in result.outcomes])
            except Exception as exc:  # noqa: BLE001 - reported through .error, as traffic.Stream does
                self.error = exc
                if isinstance(exc, LabError):
                    self._stopped.set()  # the pod cannot send: retrying every chunk would only repeat it


def parse_load_output(text: str) -> list[Outcome]:
    """load.py's JSON lines (``{"t","status","version","latency","error","flags"}``, ``t`` a wall-clock
    time) as traffic Outcomes, ``t`` counted from the first request as TrafficResult expects."""
    from labkit.traffic import Outcome

    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # kubectl or Python warnings between the results
        if isinstance(row, dict) and "latency" in row:
            rows.append(row)
    start = min((float(row.get("t") or 0.0) for row in rows), default=0.0)
    return [
        Outcome(
            t=float(row.get("t") or start) - start,
            status=row.get("status"),
            version=row.get("version"),
            latency=float(row["latency"]),
            error=row.get("error"),
            flags=row.get("flags"),
        )
        for row in sorted(rows, key=lambda row: float(row.get("t") or start))
    ]


def _ingress(url: str) -> tuple[str, dict[str, str]]:
    """Send ``url`` to the kind-mapped ingress gateway, keeping its host as the Host header."""
    parts = urlsplit(url)
    target = urlsplit(INGRESS_URL)
    return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, "")), {"Host": parts.netloc}


def _ordered(resources: list[Resource]) -> list[Resource]:
    """Namespaces (and CRDs, service accounts) first, so the objects inside them can follow in one call."""
    return sorted(resources, key=lambda r: _FIRST.index(r.kind) if r.kind in _FIRST else len(_FIRST))
