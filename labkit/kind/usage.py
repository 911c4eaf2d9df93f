"""A container's CPU time and memory on the kind backend, read from its own cgroup through the API server
(``kubectl exec`` into it): for the sidecar-cost lesson, the figures psutil gives on the local backend.

``kubectl top pod --containers`` needs metrics-server, which kind does not install, and it (like the kubelet's
``/stats/summary``) reports a rate averaged over a scrape window of 10 s or more, longer than one measured
point. A container's cgroup counters are exact when read. With cgroup v2 (kind on any current Docker or
Podman) a container sees its own cgroup at /sys/fs/cgroup (containerd's private cgroup namespace):
``cpu.stat`` ``usage_usec`` is its CPU time, and its working set is ``memory.current`` minus
``memory.stat`` ``inactive_file``, as the kubelet's cAdvisor computes it for ``kubectl top`` (google/cadvisor
container/libcontainer/handler.go ``setMemoryStats``)."""

from __future__ import annotations

from dataclasses import dataclass

from labkit.command import run
from labkit.errors import BackendError
from labkit.kind.commands import Target
from labkit.kind.kube import Kube

FILES = ("/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat")
#: One read is one ``kubectl exec``: short, but the API server may be busy serving the load's own exec.
TIMEOUT = 30


@dataclass(frozen=True)
class ContainerUsage:
    """One container of one pod, whose cgroup ``usage()`` reads."""

    target: Target
    namespace: str
    pod: str
    container: str

    def usage(self) -> tuple[float, float]:
        """CPU seconds the container has used so far, and its working set now, in MB (2**20 bytes)."""
        argv = ["kubectl", *self.target.args(), "exec", "-n", self.namespace, f"pod/{self.pod}"]
        argv += ["-c", self.container, "--", "cat", *FILES]
        fix = (
            f"the proxy needs cgroup v2 and `cat` (Istio's default proxyv2 image); check `{' '.join(argv)}`, "
            "or read `kubectl top pod --containers` with metrics-server installed"
        )
        return parse(run(argv, env=self.target.env(), timeout=TIMEOUT, fix=fix).stdout, self.where)

    @property
    def where(self) -> str:
        return f"pod/{self.pod} container {self.container} ({self.namespace})"


def parse(text: str, where: str) -> tuple[float, float]:
    """``cat cpu.stat memory.current memory.stat``: CPU seconds and working-set MB."""
    keyed: dict[str, int] = {}
    current = None
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit():
            keyed.setdefault(words[0], int(words[1]))
        elif len(words) == 1 and words[0].isdigit():
            current = int(words[0])
    if "usage_usec" not in keyed or current is None:
        raise BackendError(
            f"{where}: no cgroup v2 counters (cpu.stat usage_usec, memory.current) in {text[:200]!r}",
            "run kind on a cgroup v2 host (any current Docker or Podman), or read `kubectl top pod "
            "--containers` with metrics-server installed",
        )
    working_set = max(0, current - keyed.get("inactive_file", 0))
    return keyed["usage_usec"] / 1e6, working_set / 2**20


def sidecar(kube: Kube, target: Target, namespace: str, deployment: str) -> ContainerUsage:
    """The ``istio-proxy`` container of ``deployment``'s first running pod."""
    found = kube.get("apps/v1", "Deployment", deployment, namespace) or {}
    selector = found.get("spec", {}).get("selector", {}).get("matchLabels") or {}
    running = [p for p in kube.pods(namespace, selector) if (p.get("status") or {}).get("phase") == "Running"]
    if not selector or not running:
        raise BackendError(
            f"deployment/{deployment} ({namespace}) has no running pod whose proxy could be measured",
            f"`kubectl get pods -n {namespace}`; wait for the rollout (lab.status())",
        )
    return ContainerUsage(target, namespace, running[0]["metadata"]["name"], "istio-proxy")
