"""Stand-ins for kind, docker, istioctl and kubectl, which this machine cannot run (no Docker engine, no
cluster). Each fake records its argv to ``$FAKE_CLI_DIR/calls.jsonl`` and replays the real tool's documented
output and exit code (see /work/shared/reference/kind-istio-tooling.md); a test can override any answer with
``$FAKE_CLI_DIR/responses.json``: ``[{"tool", "args": [prefix...], "stdout", "stderr", "rc", "sleep"}]``.

They stand in at the process boundary only: labkit runs them exactly as it would run the real tools.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from loadtool import output as load_output

STATE = Path(os.environ.get("FAKE_CLI_DIR", "."))


def main(tool: str) -> None:
    args = sys.argv[1:]
    with (STATE / "calls.jsonl").open("a") as log:
        log.write(json.dumps({"tool": tool, "args": args}) + "\n")
    stdout, stderr, rc = _override(tool, args) or DEFAULTS[tool](args)
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    sys.exit(rc)


def _override(tool: str, args: list[str]) -> tuple[str, str, int] | None:
    path = STATE / "responses.json"
    for rule in json.loads(path.read_text()) if path.exists() else []:
        words = [a for a in args if not a.startswith("-")]
        if rule["tool"] == tool and words[: len(rule["args"])] == rule["args"]:
            time.sleep(rule.get("sleep", 0))
            return rule.get("stdout", ""), rule.get("stderr", ""), rule.get("rc", 0)
    return None


def _flag(args: list[str], name: str, default: str = "") -> str:
    return args[args.index(name) + 1] if name in args else default


def _lines(name: str) -> list[str]:
    path = STATE / name
    return path.read_text().split() if path.exists() else []


def _api(path: str) -> dict | None:
    """GET an object from the fake API server (None: 404, or no API server in this test)."""
    if not os.environ.get("FAKE_API_SERVER"):
        return None
    try:
        with urllib.request.urlopen(os.environ["FAKE_API_SERVER"] + path, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _deployment_pods(namespace: str, name: str) -> list[dict]:
    deployment = _api(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    if deployment is None:
        return []
    labels = deployment["spec"]["selector"].get("matchLabels") or {}
    query = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return (_api(f"/api/v1/namespaces/{namespace}/pods?labelSelector={query}") or {}).get("items") or []


#: The kind Cluster config fields kind knows (kubernetes-sigs/kind pkg/apis/config/v1alpha4/types.go); kind
#: decodes --config strictly (pkg/internal/apis/config/encoding/load.go yamlUnmarshalStrict): any other is an
#: error. Also networking's fields (ipFamily, apiServerPort, podSubnet ...), not checked here.
KIND_CLUSTER_FIELDS = {"kind", "apiVersion", "name", "nodes", "networking", "featureGates", "runtimeConfig",
                       "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902", "containerdConfigPatches",
                       "containerdConfigPatchesJSON6902"}  # fmt: skip
KIND_NODE_FIELDS = {"role", "image", "labels", "extraMounts", "extraPortMappings", "kubeadmConfigPatches",
                    "kubeadmConfigPatchesJSON6902"}  # fmt: skip
KIND_PORT_FIELDS = {"containerPort", "hostPort", "listenAddress", "protocol"}


def _kind_config_error(path: str) -> str | None:
    """kind's complaint about a --config file, or None when kind would accept it."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        return f"ERROR: failed to create cluster: error reading file: {exc}"
    if config.get("apiVersion") != "kind.x-k8s.io/v1alpha4":
        return f"ERROR: failed to create cluster: unknown apiVersion: {config.get('apiVersion')}"
    if config.get("kind") != "Cluster":
        return f"ERROR: failed to create cluster: unknown kind {config.get('kind')} for apiVersion: v1alpha4"
    unknown = [f"{k}" for k in config if k not in KIND_CLUSTER_FIELDS]
    for node in config.get("nodes") or []:
        unknown += [k for k in node if k not in KIND_NODE_FIELDS]
        for mapping in node.get("extraPortMappings") or []:
            unknown += [k for k in mapping if k not in KIND_PORT_FIELDS]
        if node.get("role") not in ("control-plane", "worker"):
            return (
                f'ERROR: failed to create cluster: invalid configuration: unknown role "{node.get("role")}"'
            )
    if unknown:
        return (f"ERROR: failed to create cluster: unable to decode config: error unmarshaling JSON: while "
                f'decoding JSON: json: unknown field "{unknown[0]}"')  # fmt: skip
    return None


def _lines_raw(name: str) -> list[str]:
    path = STATE / name
    return path.read_text().splitlines() if path.exists() else []


def _write_kubeconfig(path: str, cluster: str) -> None:
    server = os.environ.get("FAKE_API_SERVER", "https://127.0.0.1:6443")
    Path(path).write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: kind-{cluster}, cluster: {{server: '{server}'}}}}]\n"
        f"users: [{{name: kind-{cluster}, user: {{token: fake}}}}]\n"
        f"contexts: [{{name: kind-{cluster}, context: {{cluster: kind-{cluster}, user: kind-{cluster}}}}}]\n"
        f"current-context: kind-{cluster}\n"
    )


def kind(args: list[str]) -> tuple[str, str, int]:
    clusters = _lines("kind-clusters")
    name = _flag(args, "--name", "kind")
    if args[:2] == ["get", "clusters"]:
        return ("".join(c + "\n" for c in clusters), "" if clusters else "No kind clusters found.\n", 0)
    if args[:2] == ["create", "cluster"]:
        if name in clusters:
            msg = (
                f'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "{name}"'
            )
            msg += "\n"
            return "", msg, 1
        if "--config" in args:
            problem = _kind_config_error(_flag(args, "--config"))
            if problem:
                return "", problem + "\n", 1
            config = yaml.safe_load(Path(_flag(args, "--config")).read_text())
            ports = [f"{m['containerPort']}/{m.get('protocol', 'TCP').lower()} -> "
                     f"{m.get('listenAddress', '0.0.0.0')}:{m['hostPort']}"
                     for m in (config.get("nodes") or [{}])[0].get("extraPortMappings") or []]  # fmt: skip
            (STATE / f"docker-ports-{name}").write_text("".join(p + "\n" for p in ports))
        (STATE / "kind-clusters").write_text("\n".join([*clusters, name]) + "\n")
        _write_kubeconfig(_flag(args, "--kubeconfig"), name)
        return (
            "",
            f'Creating cluster "{name}" ...\n ✓ Ensuring node image\nSet kubectl context to "kind-{name}"\n',
            0,
        )
    if args[:2] == ["export", "kubeconfig"]:
        if name not in clusters:
            return "", f'ERROR: unknown cluster "{name}"\n', 1
        _write_kubeconfig(_flag(args, "--kubeconfig"), name)
        return "", f'Set kubectl context to "kind-{name}"\n', 0
    if args[:2] == ["delete", "cluster"]:
        (STATE / "kind-clusters").write_text("".join(c + "\n" for c in clusters if c != name))
        return "", f'Deleting cluster "{name}" ...\n', 0
    if args[:2] == ["load", "docker-image"]:
        # kubernetes-sigs/kind pkg/cmd/kind/load/docker-image/docker-image.go: the image, then the nodes
        image = args[2]
        if image not in _lines("docker-images"):
            return "", f'ERROR: image: "{image}" not present locally\n', 1
        if name not in clusters:
            return "", f'ERROR: no nodes found for cluster "{name}"\n', 1
        if (STATE / "containerd-store").exists():  # Docker's containerd image store (kind#3795)
            return (
                "",
                (
                    'ERROR: failed to load image: command "docker exec --privileged -i '
                    f"{name}-control-plane ctr --namespace=k8s.io images import --all-platforms --digests "
                    '--snapshotter=overlayfs -" failed with error: exit status 1\n'
                    "Command Output: ctr: content "
                    "digest sha256:9b7f2e1c0a4d: not found\n"
                ),
                1,
            )
        return (
            "",
            f'Image: "{image}" with ID "sha256:0f1e" not yet present on node "{name}-control-plane", '
            "loading...\n",
            0,
        )
    if args[:2] == ["load", "image-archive"]:  # pkg/cmd/kind/load/image-archive/image-archive.go
        if not Path(args[2]).is_file():
            return "", f"ERROR: failed to load image archive: open {args[2]}: no such file or directory\n", 1
        if name not in clusters:
            return "", f'ERROR: no nodes found for cluster "{name}"\n', 1
        return "", "", 0
    if args[:1] == ["version"]:
        return os.environ.get("FAKE_KIND_VERSION", "kind v0.32.0 go1.24.4 linux/amd64") + "\n", "", 0
    return "", f"ERROR: unknown command {args}\n", 1


def docker(args: list[str]) -> tuple[str, str, int]:
    if (STATE / "docker-down").exists():
        msg = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        msg += "Is the docker daemon running?\n"
        return ("0 0 \n" if args[:1] == ["info"] else ""), msg, 1  # docker info --format prints empty fields
    if args[:1] == ["info"]:
        return os.environ.get("FAKE_DOCKER_INFO", "8 16663109632 28.3.2") + "\n", "", 0
    if args[:1] == ["pull"]:
        image = [a for a in args[1:] if not a.startswith("-")][0]
        if image in _lines("docker-pull-refused"):
            return "", f"Error response from daemon: pull access denied for {image}\n", 1
        (STATE / "docker-images").write_text("\n".join([*_lines("docker-images"), image]) + "\n")
        return f"Status: Downloaded newer image for {image}\n", "", 0
    if args[:1] == ["tag"]:
        if args[1] not in _lines("docker-images"):
            return "", f"Error response from daemon: No such image: {args[1]}\n", 1
        (STATE / "docker-images").write_text("\n".join([*_lines("docker-images"), args[2]]) + "\n")
        return "", "", 0
    if args[:1] == ["save"]:
        image = args[-1]
        if image not in _lines("docker-images"):
            return "", f"Error response from daemon: reference does not exist: {image}\n", 1
        Path(_flag(args, "-o")).write_text(f"image archive of {image}\n")
        return "", "", 0
    if args[:1] == ["port"]:
        container, port = args[1], args[2]
        cluster = container.removesuffix("-control-plane")
        lines = [ln.split(" -> ")[1] for ln in _lines_raw(f"docker-ports-{cluster}") if ln.startswith(port)]
        if not lines:
            return "", f"Error: No public port '{port}' published for {container}\n", 1
        return "".join(ln + "\n" for ln in lines), "", 0
    if args[:1] == ["build"]:
        image = _flag(args, "-t")
        (STATE / "docker-images").write_text("\n".join([*_lines("docker-images"), image]) + "\n")
        return f"Successfully tagged {image}\n", "", 0
    return "", f"docker: unknown command {args}\n", 1


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


def _routes(name: str | None) -> list[dict]:
    """The RouteConfigurations (one per port; only ``name`` if given) a sidecar holds: a virtual host per
    Service port, routed as the live VirtualServices say (istiod pushes them at once in this fake)."""
    services = (_api("/api/v1/services") or {}).get("items") or []
    vss = (_api("/apis/networking.istio.io/v1/virtualservices") or {}).get("items") or []
    configs: dict[str, list[dict]] = {}
    for svc in services:
        ns, svc_name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        fqdn = f"{svc_name}.{ns}.svc.cluster.local"
        for port in (svc.get("spec") or {}).get("ports") or []:
            if name is not None and str(port["port"]) != name:
                continue
            routes = [{"match": {"prefix": "/"}, "route": {"cluster": f"outbound|{port['port']}||{fqdn}"}}]
            for vs in vss:
                vs_ns = vs["metadata"]["namespace"]
                if fqdn in {_fqdn(h, vs_ns) for h in (vs.get("spec") or {}).get("hosts") or []}:
                    routes = [_route(rule, port["port"], fqdn) for rule in vs["spec"].get("http") or []]
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
    pod = _api(f"/api/v1/namespaces/{namespace}/pods/{name}")
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


def _mtls_mode(namespace: str) -> tuple[str, list[str]]:
    """The workload mTLS mode istiod applies: the namespace's PeerAuthentication, else the root namespace's,
    else PERMISSIVE (istio/istio pilot/pkg/security/authn/policy_applier.go)."""
    for ns in (namespace, "istio-system"):
        items = (_api(f"/apis/security.istio.io/v1/namespaces/{ns}/peerauthentications") or {}).get(
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
            "clientVersion": {"version": "1.31.1", "revision": "fake", "status": "Clean", "tag": "1.31.1"}
        }
        istiod = (
            None
            if "--remote=false" in args
            else _api("/apis/apps/v1/namespaces/istio-system/deployments/istiod")
        )
        if (
            istiod is None
        ):  # no control plane found: meshVersion is omitempty (istio/istio pkg/version/cobra.go)
            return json.dumps(client) + "\n", "", 0
        mesh = [{"Component": "istiod", "Revision": "default", "Info": {"version": "1.31.1"}}]
        return json.dumps({**client, "meshVersion": mesh}) + "\n", "", 0
    if args[:1] == ["install"]:
        problem = _iop_error(_flag(args, "-f")) if "-f" in args else None
        if problem:
            return "", problem + "\n", 1
        if os.environ.get("FAKE_API_SERVER"):  # leave istiod and the gateway in the fake cluster
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
        if _flag(args, "-o", "log") == "json":
            return "[]\n", "", 0
        return "", "\u2714 No validation issues found when analyzing namespace: default.\n", 0
    if args[:1] == ["proxy-config"]:
        pod, problem = _pod_with_sidecar(args[2])
        if pod is None:
            return "", problem, 1
        if args[1] == "routes":
            return json.dumps(_routes(_flag(args, "--name") or None)) + "\n", "", 0
        return json.dumps([{"name": f"fake {args[1]} of {args[2]}"}]) + "\n", "", 0
    if args[:3] == ["x", "describe", "pod"]:
        namespace = _flag(args, "-n", "default")
        mode, applied = _mtls_mode(namespace)
        text = DESCRIBE.format(
            pod=args[3], mode=mode, applied="\n".join(f"   {a}" for a in applied) or "   (none)"
        )
        return text, "", 0
    return "", f"Error: unknown command {args}\n", 64


def _exec(args: list[str], words: list[str]) -> tuple[str, str, int]:
    """``kubectl exec -n NS deploy/NAME|pod/NAME -c CONTAINER -- CMD``: into a running container only
    (staging/src/k8s.io/kubectl/pkg/cmd/exec/exec.go; the kubelet refuses a container that is not running)."""
    i = args.index("exec")
    ref = args[i + 3] if args[i + 1] == "-n" else args[i + 1]
    namespace, container = _flag(args, "-n", "default"), _flag(args, "-c")
    if os.environ.get("FAKE_API_SERVER"):
        if ref.startswith("pod/"):
            pod = _api(f"/api/v1/namespaces/{namespace}/pods/{ref[4:]}")
            pods = [pod] if pod else []
            if not pods:
                return "", f'Error from server (NotFound): pods "{ref[4:]}" not found\n', 1
        else:
            pods = _deployment_pods(namespace, ref.removeprefix("deploy/"))
            if not pods:
                return "", f'Error from server (NotFound): deployments.apps "{ref[7:]}" not found\n', 1
        pod = pods[0]
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        running = (
            {c["name"] for c in spec.get("containers") or []} if status.get("phase") == "Running" else set()
        )
        running |= {
            s["name"] for s in status.get("ephemeralContainerStatuses") or [] if "running" in s["state"]
        }
        if container not in running:
            return (
                "",
                "error: unable to upgrade connection: container not found (" + repr(container) + ")\n",
                1,
            )
    if words[:2] == ["python", "load.py"]:
        return load_output(words), "", 0
    return "", f"error: {words[:1]}: executable file not found in $PATH\n", 126


def kubectl(args: list[str]) -> tuple[str, str, int]:
    if args[:1] == ["version"]:
        minor = os.environ.get("FAKE_KUBECTL_MINOR", "36")
        version = {"major": "1", "minor": minor, "gitVersion": f"v1.{minor}.1"}
        return json.dumps({"clientVersion": version}) + "\n", "", 0
    words = args[args.index("--") + 1 :] if "--" in args else []
    if "exec" in args:
        return _exec(args, words)
    return "", f"error: unknown command {args}\n", 1


DEFAULTS = {"kind": kind, "docker": docker, "istioctl": istioctl, "kubectl": kubectl}
