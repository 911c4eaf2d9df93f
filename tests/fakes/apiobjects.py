"""What the stand-in API server serves and how it names things: the kinds (a kind node's, plus Istio's CRDs
once installed), object paths, discovery documents, and the objects a test or the fake kubelet creates."""

from __future__ import annotations

from typing import Any

#: (group/version path, kind, plural, namespaced): what a kind node's API server serves, plus Istio's CRDs.
CORE = [
    ("api/v1", "Namespace", "namespaces", False),
    ("api/v1", "Node", "nodes", False),
    ("api/v1", "Pod", "pods", True),
    ("api/v1", "Service", "services", True),
    ("api/v1", "ServiceAccount", "serviceaccounts", True),
    ("api/v1", "ConfigMap", "configmaps", True),
    ("api/v1", "Secret", "secrets", True),
    ("apis/apps/v1", "Deployment", "deployments", True),
    ("apis/rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
    ("apis/rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False),
    ("apis/rbac.authorization.k8s.io/v1", "Role", "roles", True),
    ("apis/rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    ("apis/apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
    ("apis/admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy",
     "validatingadmissionpolicies", False),
    ("apis/admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding",
     "validatingadmissionpolicybindings", False),
]  # fmt: skip
ISTIO = [
    ("apis/networking.istio.io/v1", "VirtualService", "virtualservices", True),
    ("apis/networking.istio.io/v1", "DestinationRule", "destinationrules", True),
    ("apis/networking.istio.io/v1", "Gateway", "gateways", True),
    ("apis/networking.istio.io/v1", "ServiceEntry", "serviceentries", True),
    ("apis/security.istio.io/v1", "PeerAuthentication", "peerauthentications", True),
    ("apis/security.istio.io/v1", "AuthorizationPolicy", "authorizationpolicies", True),
    ("apis/security.istio.io/v1", "RequestAuthentication", "requestauthentications", True),
    ("apis/telemetry.istio.io/v1", "Telemetry", "telemetries", True),
]
RESOURCES = CORE + ISTIO
#: kubectl's short names, as the built-in kinds and Istio's CRDs declare them
#: (istio/istio manifests/charts/base/files/crd-all.gen.yaml).
SHORT_NAMES = {"Namespace": ["ns"], "Pod": ["po"], "Service": ["svc"], "ServiceAccount": ["sa"],
               "ConfigMap": ["cm"], "Deployment": ["deploy"], "Node": ["no"], "VirtualService": ["vs"],
               "DestinationRule": ["dr"], "Gateway": ["gw"], "ServiceEntry": ["se"],
               "PeerAuthentication": ["pa"]}  # fmt: skip
#: Namespaces every cluster starts with.
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
#: Fields an ephemeral container may not set (validateEphemeralContainers).
EPHEMERAL_FORBIDDEN = ("ports", "resources", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle")


def crd_resources(objects: dict[str, dict]) -> list[tuple[str, str, str, bool]]:
    """The kinds the stored CRDs serve, one entry per served version, as the API server adds them to
    discovery once a CRD is Established (apiextensions-apiserver
    pkg/apiserver/customresource_discovery_controller.go)."""
    out = []
    for obj in objects.values():
        if obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = obj["spec"]
        for version in spec.get("versions") or []:
            if version.get("served"):
                prefix = f"apis/{spec['group']}/{version['name']}"
                names = spec["names"]
                out.append((prefix, names["kind"], names["plural"], spec["scope"] == "Namespaced"))
    return out


def version_order(version: str) -> tuple[int, int, int]:
    """Kubernetes' version priority (GA, then beta, then alpha; higher numbers first): the preferred version
    of a group is the first (apimachinery pkg/version/helpers.go ``CompareKubeAwareVersionStrings``)."""
    major, _, rest = version[1:].partition("beta" if "beta" in version else "alpha")
    if not rest:
        return (0, -int(version[1:]), 0)
    return (1 if "beta" in version else 2, -int(major), -int(rest))


def object_path(obj: dict, resources: list | None = None) -> str:
    for prefix, kind, plural, namespaced in resources or RESOURCES:
        if kind == obj["kind"] and prefix.endswith(obj["apiVersion"]):
            ns = f"/namespaces/{obj['metadata'].get('namespace', 'default')}" if namespaced else ""
            return f"/{prefix}{ns}/{plural}/{obj['metadata']['name']}"
    raise KeyError(obj["kind"])


def namespace_of(path: str) -> str | None:
    """The namespace an object path is in; None for a cluster-scoped object (a Namespace itself too)."""
    _, _, rest = path.partition("/namespaces/")
    return rest.split("/")[0] if "/" in rest else None


def deployment(namespace: str, name: str, labels: dict[str, str], container: str = "app") -> dict:
    """A Deployment as the lab's manifests write it."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": container}]}},
        },
    }


def node(name: str, ready: bool) -> dict:
    """A node as the kubelet reports it (Ready condition)."""
    condition = {"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"conditions": [condition]},
    }


def namespace(name: str, labels: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def list_key(resources: list, path: str) -> tuple[str, str | None, str] | None:
    """(group/version prefix, namespace or None, plural) for a list request."""
    for prefix, _, plural, namespaced in resources:
        if path == f"/{prefix}/{plural}":
            return prefix, None, plural
        head = f"/{prefix}/namespaces/"
        if (
            namespaced
            and path.startswith(head)
            and path.endswith(f"/{plural}")
            and path.count("/") == head.count("/") + 1
        ):
            return prefix, path[len(head) :].split("/")[0], plural
    return None


def matches(listing: tuple[str, str | None, str], path: str) -> bool:
    prefix, ns, plural = listing
    where = f"/{prefix}/namespaces/{ns}/{plural}/" if ns else f"/{prefix}/"
    return path.startswith(where) and f"/{plural}/" in path


def content(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def merge(old: dict, patch: dict) -> dict:
    merged = dict(old)
    for key, value in patch.items():
        merged[key] = merge(old.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def discovery(fake: Any, path: str) -> dict | None:
    resources = fake.resources()
    if path == "/version":
        return {"major": "1", "minor": fake.minor, "gitVersion": f"v1.{fake.minor}.1"}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"]}
    if path == "/apis":
        versions: dict[str, set[str]] = {}
        for p, *_ in resources:
            if p.startswith("apis/"):
                versions.setdefault(p.split("/")[1], set()).add(p.split("/")[2])
        groups = []
        for g, served in sorted(versions.items()):
            listed = [{"groupVersion": f"{g}/{v}", "version": v} for v in sorted(served, key=version_order)]
            groups.append({"name": g, "versions": listed, "preferredVersion": listed[0]})
        return {"kind": "APIGroupList", "groups": groups}
    listed = [(kind, plural, ns) for p, kind, plural, ns in resources if f"/{p}" == path]
    short_names = dict(SHORT_NAMES)
    group = path.split("/")[2] if path.startswith("/apis/") and path.count("/") == 3 else None
    for crd in fake.objects.values():  # a CRD's kind takes its own short names (Gateway API's Gateway: gtw)
        if crd.get("kind") == "CustomResourceDefinition" and crd["spec"]["group"] == group:
            short_names[crd["spec"]["names"]["kind"]] = crd["spec"]["names"].get("shortNames") or []
    if listed:
        pod_subresources = [
            {"name": "pods/log", "kind": "Pod", "namespaced": True, "verbs": ["get"]},
            {"name": "pods/ephemeralcontainers", "kind": "Pod", "namespaced": True,
             "verbs": ["get", "patch", "update"]},
        ]  # fmt: skip
        return {
            "kind": "APIResourceList",
            "groupVersion": path.split("/", 2)[2],
            "resources": [
                {
                    "name": plural,
                    "kind": kind,
                    "namespaced": ns,
                    "verbs": ["get", "list", "patch", "delete"],
                    "singularName": kind.lower(),
                    "shortNames": short_names.get(kind, []),
                }
                for kind, plural, ns in listed
            ]
            + pod_subresources * (path == "/api/v1"),
        }
    return None
