"""Traffic that leaves from inside a pod on the Kubernetes backend, so it goes through that pod's sidecar (the
VirtualService weights apply to the caller's proxy, not to the laptop): which workload a source names, how the
lab's load tool (services/currency-converter/load.py) runs there, and its JSON lines as traffic outcomes.

load.py runs with ``kubectl exec``: in the pod's own container when it runs the lab's image (the lesson's
client), else in an ephemeral container with the lab's image added to the pod once (the
``ephemeralcontainers`` subresource, as ``kubectl debug`` adds one), which shares the pod's network namespace
and so its sidecar's iptables redirect."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from labkit import scenario
from labkit.command import run
from labkit.errors import BackendError, LabError
from labkit.kind import cluster
from labkit.kind.commands import Target
from labkit.kind.kube import Kube

if TYPE_CHECKING:
    from labkit.traffic import Outcome, TrafficResult

#: The ephemeral container's name prefix, and what it runs between sends: load.py is exec'ed into it, in
#: the image's WORKDIR /app (services/currency-converter/Dockerfile).
LOAD_CONTAINER = "labkit-load"
IDLE = ["python", "-c", "import time; time.sleep(10**9)"]
#: The ephemeral load container runs as the image's own non-root user (10001), never as istio-proxy's UID
#: 1337, whose traffic Istio's iptables rules let out unredirected (istio/istio
#: tools/istio-iptables/pkg/constants/constants.go DefaultProxyUID); the rest is what Pod Security's
#: "restricted" level asks, so it starts in a restricted namespace too.
LOAD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclasses.dataclass(frozen=True)
class Workload:
    """A Deployment that sends: its namespace and name, and the container that has load.py (None: none)."""

    namespace: str
    name: str
    container: str | None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def find_workload(kube: Kube, source: str) -> Workload:
    """The Deployment ``source`` names: a lesson alias (``client``), ``namespace/name``, or a bare name that
    is unique in the cluster."""
    if source in scenario.SOURCES:
        namespace, name = scenario.SOURCES[source]
    elif "/" in source:
        namespace, _, name = source.partition("/")
    else:
        found = [d for d in kube.objects("apps/v1", "Deployment") if d["metadata"]["name"] == source]
        if len(found) != 1:
            where = ", ".join(sorted(f"{d['metadata']['namespace']}/{source}" for d in found))
            raise LabError(
                f"no Deployment named {source!r} in the cluster"
                if not found
                else f"{source!r} names several Deployments ({where})",
                "name the workload as namespace/name (`kubectl get deployments -A` lists them), or use one "
                f"of the lesson's: {', '.join(scenario.SOURCES)}, {scenario.INGRESS}",
            )
        namespace, name = found[0]["metadata"]["namespace"], source
    deployment = kube.get("apps/v1", "Deployment", name, namespace)
    if deployment is None:
        raise LabError(
            f"no Deployment {namespace}/{name} for source {source!r}",
            f"name a workload as "
            f"namespace/name (see `kubectl get deployments -A`), or one of: {', '.join(scenario.SOURCES)}, "
            f"{scenario.INGRESS}",
        )
    containers = deployment["spec"]["template"]["spec"].get("containers") or []
    with_tool = [c["name"] for c in containers if c.get("image") == cluster.IMAGE]
    return Workload(namespace, name, with_tool[0] if with_tool else None)


def load_argv(
    url: str,
    n: int,
    concurrency: int,
    qps: float | None,
    headers: Mapping[str, str] | None,
    open_loop: float | None = None,
) -> list[str]:
    """load.py's arguments; ``open_loop`` (a duration in seconds) times each request from when it was due
    and ends the run on time, as labkit.traffic's open loop does."""
    argv = ["--url", url, "--n", str(n), "--concurrency", str(concurrency)]
    if qps:
        argv += ["--qps", f"{qps:g}"]
    if open_loop:
        argv += ["--open-loop", "--duration", f"{open_loop:g}"]
    for key, value in (headers or {}).items():
        argv += ["--header", f"{key}: {value}"]
    return argv


def send(
    kube: Kube,
    target: Target,
    workload: Workload,
    url: str,
    *,
    n: int | None,
    duration: float | None,
    qps: float | None,
    concurrency: int,
    headers: Mapping[str, str] | None,
    source: str,
    open_loop: bool = False,
) -> TrafficResult:
    """Run load.py from a pod of ``workload`` and return what it measured (``open_loop``: at ``qps`` for
    ``duration`` seconds, each latency from the request's scheduled time)."""
    from labkit.traffic import TrafficResult  # engines import each other lazily: keeps `import labkit` fast

    if open_loop and not (qps and duration):
        raise LabError("open_loop=True from a pod needs a rate and a length", "give qps= and duration=")
    if n is None:
        if duration is not None and not qps:
            raise LabError("load.py counts requests: give n=, or duration= together with qps=")
        n = math.ceil(duration * qps) if duration is not None and qps else 100
    args = load_argv(url, n, concurrency, qps, headers, duration if open_loop else None)
    timeout = 120 + (n / qps if qps else 2.0 * n / max(concurrency, 1))
    if workload.container:  # the pod already has the load tool: exec into that container
        where, container = f"deploy/{workload.name}", workload.container
    else:
        pod, container = load_container(kube, workload)
        where = f"pod/{pod}"
    argv = ["kubectl", *target.args(), "exec", "-n", workload.namespace, where, "-c", container]
    argv += ["--", "python", "load.py", *args]
    fix = f"check `kubectl get pods -n {workload.namespace}` (lab.status()); lab.up() repairs the lab"
    text = run(argv, env=target.env(), timeout=timeout, fix=fix).stdout
    outcomes = parse_load_output(text)
    if n and not outcomes:
        raise BackendError(f"load.py in deploy/{workload.name} ({workload.namespace}) printed no results:\n"
                           f"{text[-500:]}", f"run `{shlex.join(argv)}` by hand")  # fmt: skip
    elapsed = max((o.t + o.latency for o in outcomes), default=0.0)
    if open_loop and duration:  # the run lasted its length, even when the last requests were never sent
        elapsed = max(elapsed, duration)
    return TrafficResult(outcomes, source=source, url=url, elapsed=elapsed)


def load_container(kube: Kube, workload: Workload) -> tuple[str, str]:
    """A running pod of ``workload`` and its ephemeral container with the lab's load tool, added once per pod
    and then reused (ephemeral containers cannot be removed; one idle process per pod is the whole cost)."""
    deployment = kube.get("apps/v1", "Deployment", workload.name, workload.namespace) or {}
    selector = deployment.get("spec", {}).get("selector", {}).get("matchLabels") or {}
    pods = kube.pods(workload.namespace, selector)
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    if not running:
        raise BackendError(
            f"deployment/{workload.name} ({workload.namespace}) has no running pod to send from",
            f"`kubectl get pods -n {workload.namespace}`; wait for the rollout (lab.status())",
        )
    pod = running[0]
    pod_name = pod["metadata"]["name"]
    statuses = (pod.get("status") or {}).get("ephemeralContainerStatuses") or []
    for st in statuses:
        if st.get("name", "").startswith(LOAD_CONTAINER) and "running" in (st.get("state") or {}):
            return pod_name, st["name"]
    name = f"{LOAD_CONTAINER}-{len(pod['spec'].get('ephemeralContainers') or []) + 1}"
    container = {
        "name": name,
        "image": cluster.IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": IDLE,
        "securityContext": LOAD_SECURITY,
    }
    kube.add_ephemeral_container(workload.namespace, pod_name, container)
    kube.wait_ephemeral_running(workload.namespace, pod_name, name, timeout=120)
    return pod_name, name


class PodStream:
    """Background traffic from inside a pod, for the live chart: load.py runs in chunks of ``chunk`` seconds
    and each chunk's outcomes arrive as one batch. Same interface as ``traffic.Stream``, coarser batches."""

    def __init__(
        self,
        send: Callable[..., TrafficResult],
        url: str,
        *,
        source: str,
        qps: float,
        on_batch: Callable[[list[Outcome]], None],
        chunk: float = 2.0,
        concurrency: int = 8,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send, self.url, self.source, self.qps, self.on_batch = send, url, source, qps, on_batch
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

    def __enter__(self) -> PodStream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:  # an interrupted cell stops its traffic, as traffic.Stream
        self.stop()

    def _loop(self) -> None:
        n = max(1, round(self.qps * self.chunk))
        while not self._stopped.is_set():
            begin = time.monotonic() - self.started
            try:
                result = self.send(
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
    from labkit.traffic import Outcome  # engines import each other lazily: keeps `import labkit` fast

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
