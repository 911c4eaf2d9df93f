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
from labkit.errors import CommandError, LabError, ToolNotFoundError
from labkit.kind import cluster, istio
from labkit.versions import ISTIO_MINOR, K8S_SUPPORTED  # the one place for versions

MIN_CPUS = 4
#: 8 GiB asked of Docker; Docker Desktop set to "8 GB" reports about 7.7 GiB of MemTotal, so allow that.
MIN_MEMORY_GIB = 7.5
HOST_PORTS = (8080, 8443)


@dataclass(frozen=True)
class Check:
    """One preflight result: ``level`` is ok, warning or error; ``fix`` says what to do when it is not ok."""

    level: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"[{self.level}] {self.message}"
        return f"{text} -> {self.fix}" if self.fix else text


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
    """The tools are installed; istioctl is the Istio minor the lab is written for."""
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


def run_checks(*, cluster_exists: bool) -> list[Check]:
    """Every preflight check; ports are skipped when the lab's cluster already holds them."""
    checks = check_docker() + check_tools() + [check_node_image(), check_addons()]
    if not cluster_exists:
        checks += check_ports()
    return checks


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
