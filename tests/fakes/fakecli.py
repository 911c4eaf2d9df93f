"""Stand-ins for kind, docker, istioctl and kubectl, which this machine cannot run (no Docker engine, no
cluster). Each fake records its argv to ``$FAKE_CLI_DIR/calls.jsonl`` and replays the real tool's documented
output and exit code, refusing what the real tool refuses (each rule cites the tool's source it was read
from); istioctl and kubectl ask the stand-in API server (apiserver.py) what the cluster holds. istioctl lives
in fake_istioctl.py, the shared helpers in cliutil.py. A test can override any answer with
``$FAKE_CLI_DIR/responses.json``: ``[{"tool", "args": [prefix...], "stdout", "stderr", "rc", "sleep"}]``.

They stand in at the process boundary only: labkit runs them exactly as it would run the real tools.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import cliutil
from cgroup import read as cgroup_read
from fake_istioctl import istioctl
from loadtool import output as load_output

STATE = cliutil.STATE


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
    import yaml  # here: most calls need no YAML, and each fake call is a new process

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
    clusters = cliutil.lines("kind-clusters")
    name = cliutil.flag(args, "--name", "kind")
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
            problem = _kind_config_error(cliutil.flag(args, "--config"))
            if problem:
                return "", problem + "\n", 1
            import yaml  # here: most calls need no YAML, and each fake call is a new process

            config = yaml.safe_load(Path(cliutil.flag(args, "--config")).read_text())
            ports = [f"{m['containerPort']}/{m.get('protocol', 'TCP').lower()} -> "
                     f"{m.get('listenAddress', '0.0.0.0')}:{m['hostPort']}"
                     for m in (config.get("nodes") or [{}])[0].get("extraPortMappings") or []]  # fmt: skip
            (STATE / f"docker-ports-{name}").write_text("".join(p + "\n" for p in ports))
        (STATE / "kind-clusters").write_text("\n".join([*clusters, name]) + "\n")
        _write_kubeconfig(cliutil.flag(args, "--kubeconfig"), name)
        return (
            "",
            f'Creating cluster "{name}" ...\n ✓ Ensuring node image\nSet kubectl context to "kind-{name}"\n',
            0,
        )
    if args[:2] == ["export", "kubeconfig"]:
        if name not in clusters:
            return "", f'ERROR: unknown cluster "{name}"\n', 1
        _write_kubeconfig(cliutil.flag(args, "--kubeconfig"), name)
        return "", f'Set kubectl context to "kind-{name}"\n', 0
    if args[:2] == ["delete", "cluster"]:
        (STATE / "kind-clusters").write_text("".join(c + "\n" for c in clusters if c != name))
        return "", f'Deleting cluster "{name}" ...\n', 0
    if args[:2] == ["load", "docker-image"]:
        # kubernetes-sigs/kind pkg/cmd/kind/load/docker-image/docker-image.go: the image, then the nodes
        image = args[2]
        if image not in cliutil.lines("docker-images"):
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
        if image in cliutil.lines("docker-pull-refused"):
            return "", f"Error response from daemon: pull access denied for {image}\n", 1
        (STATE / "docker-images").write_text("\n".join([*cliutil.lines("docker-images"), image]) + "\n")
        return f"Status: Downloaded newer image for {image}\n", "", 0
    if args[:1] == ["tag"]:
        if args[1] not in cliutil.lines("docker-images"):
            return "", f"Error response from daemon: No such image: {args[1]}\n", 1
        (STATE / "docker-images").write_text("\n".join([*cliutil.lines("docker-images"), args[2]]) + "\n")
        return "", "", 0
    if args[:1] == ["save"]:
        image = args[-1]
        if image not in cliutil.lines("docker-images"):
            return "", f"Error response from daemon: reference does not exist: {image}\n", 1
        Path(cliutil.flag(args, "-o")).write_text(f"image archive of {image}\n")
        return "", "", 0
    if args[:1] == ["port"]:
        container, port = args[1], args[2]
        cluster = container.removesuffix("-control-plane")
        lines = [
            ln.split(" -> ")[1] for ln in cliutil.lines_raw(f"docker-ports-{cluster}") if ln.startswith(port)
        ]
        if not lines:
            return "", f"Error: No public port '{port}' published for {container}\n", 1
        return "".join(ln + "\n" for ln in lines), "", 0
    if args[:1] == ["build"]:
        image = cliutil.flag(args, "-t")
        (STATE / "docker-images").write_text("\n".join([*cliutil.lines("docker-images"), image]) + "\n")
        return f"Successfully tagged {image}\n", "", 0
    return "", f"docker: unknown command {args}\n", 1


def _exec(args: list[str], words: list[str]) -> tuple[str, str, int]:
    """``kubectl exec -n NS deploy/NAME|pod/NAME -c CONTAINER -- CMD``: into a running container only
    (staging/src/k8s.io/kubectl/pkg/cmd/exec/exec.go; the kubelet refuses a container that is not running)."""
    i = args.index("exec")
    ref = args[i + 3] if args[i + 1] == "-n" else args[i + 1]
    namespace, container = cliutil.flag(args, "-n", "default"), cliutil.flag(args, "-c")
    if os.environ.get("FAKE_API_SERVER"):
        if ref.startswith("pod/") or "/" not in ref:  # `kubectl exec POD` or `pod/POD`
            name = ref.removeprefix("pod/")
            pod = cliutil.api(f"/api/v1/namespaces/{namespace}/pods/{name}")
            pods = [pod] if pod else []
            if not pods:
                return "", f'Error from server (NotFound): pods "{name}" not found\n', 1
        else:
            pods = cliutil.deployment_pods(namespace, ref.removeprefix("deploy/"))
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
    if words == ["pilot-agent", "request", "GET", "stats"]:
        return STATS, "", 0
    if words[:1] == ["cat"] and all(w.startswith("/sys/fs/cgroup/") for w in words[1:]):
        return cgroup_read(f"{namespace}.{ref.removeprefix('pod/')}.{container}", words[1:])
    return "", f"error: {words[:1]}: executable file not found in $PATH\n", 126


#: A few lines of an istio-proxy's admin ``/stats`` (pilot-agent request GET stats), a histogram among them.
CC_CLUSTER = "cluster.outbound|8080||currency-converter.payments-prod.svc.cluster.local"
STATS = (
    f"{CC_CLUSTER}.upstream_rq_pending_overflow: 7\n{CC_CLUSTER}.upstream_rq_pending_total: 23\n"
    f"{CC_CLUSTER}.upstream_rq_time: P0(nan,1) P25(nan,2)\nserver.live: 1\n"
)


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
