"""The fake ``istioctl``: install (validating the IstioOperator), version, analyze, proxy-config and
``x describe pod``, answered from what the stand-in API server holds, as istioctl 1.31 answers them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cliutil


def _fqdn(host: str, namespace: str) -> str:
    """Istio's short-name rule: ``name`` and ``name.ns`` complete to ``name.ns.svc.cluster.local``."""
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.svc.cluster.local"
    if len(parts) == 2:
        return f"{host}.svc.cluster.local"
    return host


def _route(rule: dict, port: int, fqdn: str) -> dict:
    """One HTTP rule as Envoy's RDS JSON shows it: one cluster, or weighted clusters
    (istio/istio pilot/pkg/networking/core/route/route.go)."""
    clusters = [
        {
            "name": f"outbound|{port}|{d['destination'].get('subset', '')}|{fqdn}",
            "weight": d.get("weight", 100),
        }
        for d in rule.get("route") or []
    ]
    action = (
        {"cluster": clusters[0]["name"]}
        if len(clusters) == 1
        else {"weightedClusters": {"clusters": clusters}}
    )
    return {"match": rule["match"][0] if rule.get("match") else {"prefix": "/"}, "route": action}


def _mesh_route(rule: dict, port: int, namespace: str) -> dict:
    """One HTTPRoute rule as istiod converts it for a sidecar: each backendRef a Service's own cluster, no
    subset (pilot/pkg/config/kube/gateway/conversion.go ``buildHTTPDestination``)."""
    refs = rule.get("backendRefs") or []
    hosts = [f"{b['name']}.{b.get('namespace', namespace)}.svc.cluster.local" for b in refs]
    clusters = [
        {"name": f"outbound|{b.get('port', port)}||{host}", "weight": b.get("weight", 1)}
        for b, host in zip(refs, hosts, strict=True)
    ]
    return {"match": {"prefix": "/"}, "route": {"weightedClusters": {"clusters": clusters}}}


def _parents(route: dict) -> set[tuple[str, str]]:
    """The Services (namespace, name) a mesh HTTPRoute is attached to."""
    ns = route["metadata"]["namespace"]
    return {
        (p.get("namespace", ns), p["name"])
        for p in route["spec"].get("parentRefs") or []
        if p.get("kind") == "Service" and p.get("group", "") == ""
    }


def _routes(name: str | None) -> list[dict]:
    """The RouteConfigurations (one per port; only ``name`` if given) a sidecar holds: a virtual host per
    Service port, routed as the live VirtualServices say, or a mesh HTTPRoute attached to the Service (in the
    caller's namespace first: istio/istio pilot/pkg/model/push_context.go), pushed at once in this fake."""
    services = (cliutil.api("/api/v1/services") or {}).get("items") or []
    vss = (cliutil.api("/apis/networking.istio.io/v1/virtualservices") or {}).get("items") or []
    http_routes = (cliutil.api("/apis/gateway.networking.k8s.io/v1/httproutes") or {}).get("items") or []
    configs: dict[str, list[dict]] = {}
    for svc in services:
        ns, svc_name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        fqdn = f"{svc_name}.{ns}.svc.cluster.local"
        for port in (svc.get("spec") or {}).get("ports") or []:
            if name is not None and str(port["port"]) != name:
                continue
            if "tcp" in (port.get("appProtocol"), port.get("name")):
                continue  # a TCP port has a tcp_proxy listener, no route config (networkfilter.go)
            routes = [{"match": {"prefix": "/"}, "route": {"cluster": f"outbound|{port['port']}||{fqdn}"}}]
            for vs in vss:
                vs_ns = vs["metadata"]["namespace"]
                if fqdn in {_fqdn(h, vs_ns) for h in (vs.get("spec") or {}).get("hosts") or []}:
                    routes = [_route(rule, port["port"], fqdn) for rule in vs["spec"].get("http") or []]
            for route in http_routes:
                if (ns, svc_name) in _parents(route):
                    routes = [
                        _mesh_route(rule, port["port"], ns) for rule in route["spec"].get("rules") or []
                    ]
            vhost = {"name": f"{fqdn}:{port['port']}", "domains": [fqdn, f"{svc_name}.{ns}", svc_name]}
            configs.setdefault(str(port["port"]), []).append({**vhost, "routes": routes})
    return [{"name": port, "virtualHosts": hosts} for port, hosts in sorted(configs.items())]


DESCRIBE = """Pod: {pod}
   Pod Revision: default
   Pod Ports: 8080 (currency-converter), 15090 (istio-proxy)
--------------------
Service: currency-converter
   Port: http 8080/HTTP targets pod port 8080
DestinationRule: currency-converter for "currency-converter"
   Matching subsets: v1
      (Non-matching subsets v2)
   No Traffic Policy
--------------------
Effective PeerAuthentication:
   Workload mTLS mode: {mode}
Applied PeerAuthentication:
{applied}
"""


#: IstioOperator spec fields istioctl 1.31 knows (istio/istio operator/pkg/apis/types.go); `install` refuses
#: others ("unknown field") after reading -f strictly (operator/pkg/manifest/...).
IOP_SPEC_FIELDS = {"profile", "revision", "hub", "tag", "namespace", "meshConfig", "components", "values",
                   "unvalidatedValues", "compatibilityVersion", "installPackagePath"}  # fmt: skip


def _iop_error(path: str) -> str | None:
    import yaml  # here: most calls need no YAML, and each fake call is a new process

    try:
        iop = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        return f"Error: could not read {path}: {exc}"
    if iop.get("kind") != "IstioOperator" or not str(iop.get("apiVersion", "")).startswith(
        "install.istio.io/"
    ):
        return (
            f"Error: {path}: expected kind IstioOperator (install.istio.io/v1alpha1), got {iop.get('kind')}"
        )
    unknown = [k for k in iop.get("spec") or {} if k not in IOP_SPEC_FIELDS]
    if unknown:
        return f'Error: generate config: unknown field "{unknown[0]}" in IstioOperator spec'
    return None


def _pod_with_sidecar(ref: str) -> tuple[dict | None, str]:
    """The pod ``<name>.<namespace>`` and istioctl's complaint when it has no sidecar to ask."""
    name, _, namespace = ref.rpartition(".")
    pod = cliutil.api(f"/api/v1/namespaces/{namespace}/pods/{name}")
    if pod is None:
        return None, f'Error: pods "{name}" not found\n'
    spec = pod.get("spec") or {}
    names = [c["name"] for c in spec.get("containers") or []] + [
        c["name"] for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"
    ]
    if "istio-proxy" not in names:  # istioctl/pkg/proxyconfig: it execs into the istio-proxy container
        return (
            None,
            "Error: failed to execute command on sidecar: container istio-proxy is not valid for pod "
            f"{name}\n",
        )
    return pod, ""


def _proxy_status() -> str:
    """``istioctl proxy-status`` as 1.30 prints it (tabwriter, istioctl/pkg/writer/pilot/status.go): every
    pod with an istio-proxy container, all SYNCED (the fake istiod pushes at once), ECDS unused."""
    pods = (cliutil.api("/api/v1/pods") or {}).get("items") or []
    names = sorted(
        f"{p['metadata']['name']}.{p['metadata']['namespace']}"
        for p in pods
        if any(c["name"] == "istio-proxy" for c in (p.get("spec") or {}).get("containers") or [])
    )
    width = max([len("NAME"), *map(len, names)]) + 5
    cols = ("CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION")
    cells = ("Kubernetes", *["SYNCED (2m)"] * 4, "IGNORED", "istiod-fake-1", "1.30.3")
    line = "".join(f"{c:<16}" for c in cols).rstrip()
    out = [f"{'NAME':<{width}}{line}"]
    out += [f"{n:<{width}}" + "".join(f"{c:<16}" for c in cells).rstrip() for n in names]
    return "\n".join(out) + "\n"


def _mtls_mode(namespace: str) -> tuple[str, list[str]]:
    """The workload mTLS mode istiod applies: the namespace's PeerAuthentication, else the root namespace's,
    else PERMISSIVE (istio/istio pilot/pkg/security/authn/policy_applier.go)."""
    for ns in (namespace, "istio-system"):
        items = (cliutil.api(f"/apis/security.istio.io/v1/namespaces/{ns}/peerauthentications") or {}).get(
            "items"
        ) or []
        for pa in items:
            if not (pa.get("spec") or {}).get("selector"):
                mode = ((pa.get("spec") or {}).get("mtls") or {}).get("mode", "PERMISSIVE")
                return mode, [f"{pa['metadata']['name']}.{ns}"]
    return "PERMISSIVE", []


def istioctl(args: list[str]) -> tuple[str, str, int]:
    if args[:1] == ["version"]:
        client = {
            "clientVersion": {"version": "1.30.3", "revision": "fake", "status": "Clean", "tag": "1.30.3"}
        }
        istiod = (
            None
            if "--remote=false" in args
            else cliutil.api("/apis/apps/v1/namespaces/istio-system/deployments/istiod")
        )
        if (
            istiod is None
        ):  # no control plane found: meshVersion is omitempty (istio/istio pkg/version/cobra.go)
            return json.dumps(client) + "\n", "", 0
        mesh = [{"Component": "istiod", "Revision": "default", "Info": {"version": "1.30.3"}}]
        return json.dumps({**client, "meshVersion": mesh}) + "\n", "", 0
    if args[:1] == ["install"]:
        problem = _iop_error(cliutil.flag(args, "-f")) if "-f" in args else None
        if problem:
            return "", problem + "\n", 1
        if os.environ.get("FAKE_API_SERVER"):  # leave istiod and the gateway in the fake cluster
            import urllib.request  # here: each fake call is a new process

            request = urllib.request.Request(
                os.environ["FAKE_API_SERVER"] + "/fake/install-istio", method="POST"
            )
            urllib.request.urlopen(request, timeout=10).close()
        return (
            "✔ Istio core installed ⛵️\n✔ Istiod installed 🧠\n✔ Ingress gateways installed 🛬\n"
            "✔ Installation complete\n",
            "",
            0,
        )
    if args[:1] == ["analyze"]:
        # istioctl/pkg/analyze/analyze.go: -o json prints the array (exit 0 whatever it holds); the clean
        # run's sentence goes to stderr
        if cliutil.flag(args, "-o", "log") == "json":
            return "[]\n", "", 0
        return "", "\u2714 No validation issues found when analyzing namespace: default.\n", 0
    if args[:1] == ["proxy-config"]:
        pod, problem = _pod_with_sidecar(args[2])
        if pod is None:
            return "", problem, 1
        if args[1] == "routes":
            return json.dumps(_routes(cliutil.flag(args, "--name") or None)) + "\n", "", 0
        return json.dumps([{"name": f"fake {args[1]} of {args[2]}"}]) + "\n", "", 0
    if args[:1] == ["proxy-status"]:
        return _proxy_status(), "", 0
    if args[:3] == ["x", "describe", "pod"]:
        namespace = cliutil.flag(args, "-n", "default")
        mode, applied = _mtls_mode(namespace)
        text = DESCRIBE.format(
            pod=args[3], mode=mode, applied="\n".join(f"   {a}" for a in applied) or "   (none)"
        )
        return text, "", 0
    return "", f"Error: unknown command {args}\n", 64
