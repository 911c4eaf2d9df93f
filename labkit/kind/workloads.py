"""What the cluster runs: the Deployments outside the system namespaces, their pods, whether each pod has the
sidecar its namespace asks for (and the repair), one status line each and the lab's status from them; the
live objects other objects refer to, and the lab's own objects as the API server holds them (``Lab.reset``
compares the manifests against those)."""

from __future__ import annotations

from collections.abc import Callable

from labkit import manifests, paths, scenario
from labkit.errors import BackendError, LabError
from labkit.kind.k8s import has_sidecar, rollout_complete
from labkit.kind.kube import Kube
from labkit.manifests import Resource
from labkit.status import Status, WorkloadStatus

#: Namespaces of the cluster's own machinery (kind's storage provisioner, Istio, Kubernetes): not workloads.
SYSTEM_NAMESPACES = frozenset(
    {"kube-system", "kube-public", "kube-node-lease", "local-path-storage", "istio-system"}
)

#: Kinds whose live objects other objects refer to: Istio's (subsets, hosts, gateways, mTLS) and the
#: Services and Deployments that hosts and subsets resolve to.
LIVE_KINDS = (
    ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "Gateway"),
    ("networking.istio.io/v1", "ServiceEntry"),
    ("security.istio.io/v1", "PeerAuthentication"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),  # none until the Gateway API CRDs are installed
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
)


def live_objects(kube: Kube) -> list[dict]:
    """The objects other objects refer to, as the cluster holds them (name, namespace, labels, spec), for the
    analysis stage's cross-object checks; Istio's only once Istio is installed."""
    bodies = []
    for api_version, kind in LIVE_KINDS:
        try:
            items = kube.objects(api_version, kind)
        except BackendError:
            continue  # Istio (or this kind) is not installed
        for obj in items:
            if obj["metadata"].get("namespace") in SYSTEM_NAMESPACES and kind in ("Service", "Deployment"):
                continue
            meta = {k: obj["metadata"][k] for k in ("name", "namespace", "labels") if obj["metadata"].get(k)}
            spec = obj.get("spec", {})
            bodies.append({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec})
    return bodies


def lab_objects(kube: Kube) -> list[Resource]:
    """What is live now: the lab's Istio kinds (authorization, JWT and Telemetry included) and the kinds
    of cluster-config/apps, in the lab's namespaces, with metadata and spec as the API server holds them."""
    kinds = {(r.api_version, r.kind) for r in manifests.load(paths.APPS) if r.kind != "Namespace"}
    kinds |= {*LIVE_KINDS, ("security.istio.io/v1", "AuthorizationPolicy")}
    kinds |= {("security.istio.io/v1", "RequestAuthentication"), ("telemetry.istio.io/v1", "Telemetry")}
    bodies = []
    for api_version, kind in sorted(kinds):
        for ns in scenario.NAMESPACES:
            try:
                items = kube.objects(api_version, kind, ns)
            except BackendError:
                break  # this kind is not installed (no Istio CRDs yet): nothing of it is live
            for o in items:
                meta, spec = o["metadata"], o.get("spec", {})
                bodies.append({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec})
    namespaces = [kube.get("v1", "Namespace", ns) for ns in scenario.NAMESPACES]
    bodies += [{"apiVersion": "v1", "kind": "Namespace", "metadata": n["metadata"]} for n in namespaces if n]
    return manifests.load(bodies) if bodies else []


def deployments(kube: Kube) -> list[dict]:
    """Every Deployment outside the system namespaces: the lab's apps and the user's own."""
    found = kube.objects("apps/v1", "Deployment")
    return [d for d in found if d["metadata"].get("namespace") not in SYSTEM_NAMESPACES]


def pods(kube: Kube, deployment: dict) -> list[dict]:
    meta = deployment["metadata"]
    return kube.pods(meta["namespace"], deployment["spec"]["selector"].get("matchLabels") or {})


def first_pod(kube: Kube, namespace: str, name: str) -> str:
    deployment = kube.get("apps/v1", "Deployment", name, namespace)
    found = pods(kube, deployment) if deployment else []
    if not found:
        raise BackendError(f"deployment/{name} ({namespace}) has no pods", "run lab.up()")
    return found[0]["metadata"]["name"]


def injection_problem(kube: Kube, deployment: dict) -> str | None:
    """Why ``deployment``'s pods lack the sidecar their namespace asks for, and the fix; None if fine."""
    name, ns = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
    namespace = kube.get("v1", "Namespace", ns) or {}
    if (namespace.get("metadata", {}).get("labels") or {}).get("istio-injection") != "enabled":
        return None
    bare = [p["metadata"]["name"] for p in pods(kube, deployment) if not has_sidecar(p)]
    if not bare:
        return None
    return (
        f"pod {bare[0]} of deployment/{name} ({ns}) has no istio-proxy container (1/1, not 2/2): it "
        f"started before namespace {ns} was labelled istio-injection=enabled or before istiod was ready\n"
        f"What to do: `kubectl rollout restart deployment/{name} -n {ns}` (lab.up() does it for you)"
    )


def wait_ready(kube: Kube, say: Callable[[str], None]) -> None:
    """Wait for every Deployment; restart once the ones whose pods started without a sidecar."""
    found = deployments(kube)
    for d in found:
        kube.wait_rollout(d["metadata"]["namespace"], d["metadata"]["name"])
    missing = [d for d in found if injection_problem(kube, d)]
    for d in missing:
        say(f"deployment/{d['metadata']['name']} has pods without a sidecar: rollout restart")
        kube.restart(d["metadata"]["namespace"], d["metadata"]["name"])
    for d in missing:
        kube.wait_rollout(d["metadata"]["namespace"], d["metadata"]["name"])
        problem = injection_problem(kube, d)
        if problem:
            raise BackendError(problem)


def status(kube: Kube, deployment: dict) -> tuple[WorkloadStatus, list[str]]:
    """One Deployment's status line and its problems (a rollout past its deadline, a missing sidecar)."""
    found, st, problems = pods(kube, deployment), deployment.get("status") or {}, []
    try:
        done = rollout_complete(deployment)
    except BackendError as exc:  # the progress deadline passed: it will not finish by itself
        done = False
        problems.append(str(exc))
    problem = injection_problem(kube, deployment)
    if problem:
        problems.append(problem)
    line = WorkloadStatus(
        name=deployment["metadata"]["name"],
        namespace=deployment["metadata"]["namespace"],
        version=(deployment["spec"]["template"]["metadata"].get("labels") or {}).get("version"),
        replicas=deployment["spec"].get("replicas", 1),
        ready=st.get("readyReplicas", 0),
        sidecar=bool(found) and all(has_sidecar(p) for p in found),
        detail="" if done else "(rolling out)",
    )
    return line, problems


def lab_status(kube: Kube, backend: str, ingress_url: str | None) -> Status:
    """Every app Deployment's readiness and sidecar, and each problem with what to do; not up when the API
    server does not answer."""
    try:
        found = deployments(kube)
    except BackendError as exc:
        return Status(backend, False, problems=[str(exc)])
    lab = Status(backend, True, ingress_url=ingress_url)
    for d in found:
        line, problems = status(kube, d)
        lab.workloads.append(line)
        lab.problems += problems
    return lab


def pod_urls(kube: Kube, workload: str, namespace: str) -> list[str]:
    """Each pod IP with each port its app containers declare (the sidecar's own ports left out): a dial
    there lands in the pod's sidecar through Istio's iptables capture, as the app never sees it."""
    deployment = kube.get("apps/v1", "Deployment", workload, namespace)
    if deployment is None:
        raise LabError(f"no Deployment {workload!r} in namespace {namespace!r}", "check the name")
    return [
        f"http://{pod['status']['podIP']}:{port['containerPort']}/"
        for pod in pods(kube, deployment)
        if (pod.get("status") or {}).get("podIP")
        for container in pod["spec"]["containers"]
        if container["name"] != "istio-proxy"
        for port in container.get("ports") or []
    ]
