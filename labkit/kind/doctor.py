"""Preflight for the kind backend (``labkit doctor``, also run by ``lab.up()``): everything that would
otherwise fail ten minutes into a cluster build, each problem as one line plus what to do."""

from __future__ import annotations

import argparse
import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from labkit import paths
from labkit.command import run
from labkit.errors import BackendError, CommandError, LabError, ToolNotFoundError
from labkit.kind import cluster, gatewayapi, images, istio, tools
from labkit.versions import GATEWAY_API_VERSION, ISTIO_MINOR, K8S_SUPPORTED  # the one place for versions

MIN_CPUS = 4
#: 8 GiB asked of Docker; Docker Desktop set to "8 GB" reports about 7.7 GiB of MemTotal, so allow that.
MIN_MEMORY_GIB = 7.5
HOST_PORTS = (8080, 8443)
#: Each kind release's own node image (kubernetes-sigs/kind pkg/apis/config/defaults/image.go at the tag):
#: node images are built for the kind release that publishes them, and an older kind may not boot a newer one.
KIND_NODE_IMAGES = {
    "v0.30.0": "kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a",
    "v0.31.0": "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f",
    "v0.32.0": "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5",
}
#: kind's known issue "Pod errors due to too many open files" (site/content/docs/user/known-issues.md): the
#: values it recommends for fs.inotify on the Linux host (or the Docker Desktop VM).
INOTIFY_MINIMUM = {"max_user_watches": 524288, "max_user_instances": 512}
INOTIFY_DIR = Path("/proc/sys/fs/inotify")


@dataclass(frozen=True)
class Check:
    """One preflight result: ``level`` is ok, warning or error; ``fix`` says what to do when it is not ok."""

    level: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"[{self.level}] {self.message}"
        return f"{text}. What to do: {self.fix}" if self.fix else text


def check_docker() -> list[Check]:
    """The Docker daemon answers, and has the CPUs and memory Istio plus the lab need."""
    try:
        out = run(
            ["docker", "info", "--format", "{{.NCPU}} {{.MemTotal}} {{.ServerVersion}}"], timeout=30
        ).stdout
    except ToolNotFoundError as exc:
        return [Check("error", str(exc))]
    except CommandError as exc:
        # docker prints empty fields on stdout and the reason on stderr: the reason is the last line
        reason = ([ln for ln in exc.output.splitlines() if ln.strip()] or ["no output"])[-1]
        fix = "start Docker (Docker Desktop, or `sudo systemctl start docker`), then rerun `labkit doctor`"
        return [Check("error", f"Docker daemon not reachable: {reason}", fix)]
    cpus, memory, version = (out.split() + ["?", "?", "?"])[:3]
    if not (cpus.isdigit() and memory.isdigit()):
        return [
            Check(
                "error",
                f"`docker info` gave unexpected output {out.strip()!r}",
                "check `docker info` by hand",
            )
        ]
    gib = int(memory) / 2**30
    checks = [Check("ok", f"docker {version}: {cpus} CPUs, {gib:.1f} GiB")]
    if int(cpus) < MIN_CPUS or gib < MIN_MEMORY_GIB:
        checks.append(
            Check(
                "warning",
                f"Docker has {cpus} CPUs / {gib:.1f} GiB; Istio and the lab want {MIN_CPUS} CPUs / 8 GiB "
                "(pods may stay Pending)",
                "give Docker more in Docker Desktop > Settings > Resources, or close other containers",
            )
        )
    return checks


#: How each tool tells its version, and where the version is in the output.
VERSION_COMMANDS: dict[str, tuple[list[str], Callable[[str], str]]] = {
    "kind": (["kind", "version"], lambda out: out.split()[1]),
    "kubectl": (
        ["kubectl", "version", "--client", "-o", "json"],
        lambda out: json.loads(out)["clientVersion"]["gitVersion"],
    ),
    "istioctl": (
        ["istioctl", "version", "--remote=false", "-o", "json"],
        lambda out: json.loads(out)["clientVersion"]["version"],
    ),
}


def check_tools(tools: tuple[str, ...] = ("kind", "kubectl", "istioctl")) -> list[Check]:
    """The tools are installed; istioctl is the Istio minor the lab is written for; kind runs the pinned node
    image; kubectl is within one minor of the node."""
    checks = []
    for tool in tools:
        argv, parse = VERSION_COMMANDS[tool]
        try:
            version = parse(run(argv, timeout=30).stdout)
        except ToolNotFoundError as exc:
            checks.append(Check("error", str(exc)))  # the message says how to install it
            continue
        except CommandError as exc:
            checks.append(
                Check("error", str(exc).splitlines()[0], f"reinstall {tool} (`labkit tools install`)")
            )
            continue
        except (ValueError, KeyError, IndexError):
            checks.append(Check("error", f"{tool} printed an unexpected version", f"reinstall {tool}"))
            continue
        checks.append(Check("ok", f"{tool} {version}"))
        if tool == "kind":
            checks.append(check_kind_node_image(version))
        if tool == "kubectl":
            checks.append(check_kubectl_skew(version))
        if tool == "istioctl" and not version.startswith(ISTIO_MINOR + "."):
            fix = "run `labkit tools install` for the pinned istioctl"
            checks.append(
                Check("warning", f"istioctl {version}: the lab is written for Istio {ISTIO_MINOR}", fix)
            )
    return checks


def check_node_image(config: Path = paths.KIND_CONFIG) -> Check:
    """The kind node image's Kubernetes is inside the range the lab's Istio supports (labkit/versions)."""
    low, high = K8S_SUPPORTED
    supported = f"{low[0]}.{low[1]}-{high[0]}.{high[1]}"
    nodes = (yaml.safe_load(config.read_text()) or {}).get("nodes") or [{}]
    images = {node.get("image") for node in nodes}
    fix = f"pin `image: kindest/node:v1.36.x@sha256:...` (kind release notes) on every node in {config}"
    if None in images:
        return Check(
            "warning", f"{config.name}: a node has no pinned image; kind's default may be newer", fix
        )
    for image in sorted(images):
        match = re.search(r":v(\d+)\.(\d+)", image)
        if not match:
            return Check("warning", f"cannot read a Kubernetes version from node image {image}", fix)
        version = (int(match[1]), int(match[2]))
        if not low <= version <= high:
            return Check(
                "error", f"node image {image}: Istio {ISTIO_MINOR} supports Kubernetes {supported}", fix
            )
    return Check("ok", f"node image {', '.join(sorted(images))} (Kubernetes {supported} supported)")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def check_kind_node_image(kind_version: str, config: Path = paths.KIND_CONFIG) -> Check:
    """The node image cluster.yaml pins is the one this kind release was built with (or older)."""
    nodes = (yaml.safe_load(config.read_text()) or {}).get("nodes") or [{}]
    image = nodes[0].get("image") or ""
    owner = next((k for k, v in KIND_NODE_IMAGES.items() if v == image), None)
    fix = f"run `labkit tools install` (kind {max(KIND_NODE_IMAGES, key=_version)}), or install that kind"
    if owner is None:
        return Check("warning", f"node image {image or '(none)'} is not a kind release's own image", fix)
    if _version(kind_version) < _version(owner):
        return Check(
            "error", f"kind {kind_version} is older than {owner}, whose node image {config.name} pins", fix
        )
    return Check("ok", f"kind {kind_version} runs node image {image.split('@')[0]} (kind {owner}'s)")


def check_kubectl_skew(kubectl_version: str, config: Path = paths.KIND_CONFIG) -> Check:
    """kubectl within one minor of the node's Kubernetes (Kubernetes' version skew policy)."""
    nodes = (yaml.safe_load(config.read_text()) or {}).get("nodes") or [{}]
    node = re.search(r":v(\d+)\.(\d+)", nodes[0].get("image") or "")
    client = _version(kubectl_version)
    if not node or len(client) < 2:
        return Check("warning", f"cannot compare kubectl {kubectl_version} with the node's Kubernetes")
    skew = abs(client[1] - int(node[2]))
    if client[0] != int(node[1]) or skew > 1:
        return Check(
            "warning",
            f"kubectl {kubectl_version} is {skew} minors from the node's Kubernetes 1.{node[2]} "
            "(one minor either way is supported)",
            f"install kubectl 1.{node[2]} (https://kubernetes.io/docs/tasks/tools/)",
        )
    return Check("ok", f"kubectl {kubectl_version} within one minor of Kubernetes 1.{node[2]}")


def check_inotify(folder: Path = INOTIFY_DIR) -> list[Check]:
    """Linux inotify limits kind's known issues ask for; every proxy and kubelet watch files."""
    if not folder.is_dir():
        return []  # not Linux (Docker Desktop's VM has its own, larger, limits)
    checks = []
    for name, minimum in INOTIFY_MINIMUM.items():
        try:
            value = int((folder / name).read_text().strip())
        except (OSError, ValueError):
            continue
        if value < minimum:
            checks.append(Check(
                "warning",
                f"fs.inotify.{name} is {value}; kind needs {minimum} (pods fail with 'too many open files')",
                f"`sudo sysctl fs.inotify.{name}={minimum}` (and add it to /etc/sysctl.conf to keep it)",
            ))  # fmt: skip
        else:
            checks.append(Check("ok", f"fs.inotify.{name} {value}"))
    return checks


def check_images() -> Check:
    """Which image mode is active: the node pulls at class time, or pre-pull (host or mirror)."""
    return Check("ok", images.describe())


def check_ports(ports: tuple[int, ...] = HOST_PORTS) -> list[Check]:
    """The host ports kind publishes the ingress gateway on are free (they can only be set at create time)."""
    checks = []
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                fix = (
                    f"stop the program using it (`lsof -i :{port}`); the lab's ingress URL expects this port"
                )
                checks.append(
                    Check("error", f"host port {port} is in use; kind maps the ingress gateway there", fix)
                )
                continue
        checks.append(Check("ok", f"host port {port} free"))
    return checks


def check_addons() -> Check:
    """The Istio release's samples/addons (Prometheus, Kiali): up() needs them late, after the slow steps."""
    found = istio.addons_dir()
    if found is None:
        return Check(
            "error",
            "Istio's samples/addons (Prometheus, Kiali) not found",
            f"set ISTIO_HOME to an unpacked Istio {ISTIO_MINOR} release (or its bin/istioctl first on PATH)",
        )
    return Check("ok", f"Istio addons in {found}")


def check_gateway_api(cluster_exists: bool) -> Check:
    """The Gateway API CRDs: in the cluster when it exists (what HTTPRoutes need), else the verified file
    ``lab.up()`` installs them from. A warning, not an error: the Istio APIs work without them."""
    fix = "run `labkit tools install` (it downloads and verifies them); lab.up() then installs them"
    if cluster_exists:
        try:
            from labkit.kind.kube import Kube  # the kubernetes client: imported only when a cluster exists

            found = gatewayapi.installed(Kube(cluster.kubeconfig(), cluster.context()))
        except LabError:
            found = None  # the cluster does not answer: the file is what up() will need
        else:
            level, line = gatewayapi.describe(found)
            if found is not None:
                return Check(level, line, "" if level == "ok" else "lab.up() leaves them as they are")
    source = tools.gateway_api_file()
    if source.is_file():
        return Check(
            "ok", f"Gateway API {GATEWAY_API_VERSION} CRDs verified in {source} (lab.up() installs them)"
        )
    return Check(
        "warning",
        f"the Gateway API {GATEWAY_API_VERSION} CRDs are not downloaded, so HTTPRoutes will be refused",
        fix,
    )


def run_checks(*, cluster_exists: bool) -> list[Check]:
    """Every preflight check; an existing cluster is checked for the lab's port mapping instead of the
    ports being free (it holds them)."""
    checks = check_docker() + check_tools() + [check_node_image(), check_addons(), check_images()]
    checks += check_inotify() + [check_gateway_api(cluster_exists)]
    if not cluster_exists:
        checks += check_ports()
    else:
        problem = cluster.port_mapping_problem()
        if problem:
            message, _, fix = problem.partition("\nWhat to do: ")
            checks.append(Check("error", message, fix))
        else:
            checks.append(Check("ok", f"kind cluster {cluster.NAME} publishes the lab's ports"))
    return checks


def preflight(mode: str, name: str, say: Callable[[str], None]) -> None:
    """What ``up()`` checks before it changes anything: every check in kind mode; in kube mode (an existing
    cluster: no kind, no docker) only kubectl and istioctl. Warnings are said; errors stop it, all named."""
    if mode == "kind":
        try:
            exists = cluster.exists(name)
        except LabError:
            exists = False  # kind or docker is missing; the checks say which
        checks = run_checks(cluster_exists=exists)
    else:
        checks = check_tools(("kubectl", "istioctl"))
    for check in checks:
        if check.level == "warning":
            say(str(check))
    errors = [str(c) for c in checks if c.level == "error"]
    if errors:
        raise BackendError("the kind backend cannot start (`labkit doctor`):\n  " + "\n  ".join(errors))


def main(args: argparse.Namespace | None = None) -> int:
    """``labkit doctor``: print every check; exit 1 when any is an error."""
    try:
        exists = cluster.exists()
    except LabError:
        exists = False  # kind or docker missing: the checks below say so
    checks = run_checks(cluster_exists=exists)
    for check in checks:
        print(check)
    errors = sum(c.level == "error" for c in checks)
    print(
        f"{errors} problem(s) to fix before `labkit --backend kind up`"
        if errors
        else "ready for the kind backend"
    )
    return 1 if errors else 0
