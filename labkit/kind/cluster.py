"""The kind cluster and the sample image: create or reuse, delete, build and load, each one kind/docker
command. Every cluster gets its own kubeconfig in the state folder, so ~/.kube/config is never touched."""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path

import yaml

from labkit import paths, state
from labkit.command import run
from labkit.errors import CommandError

NAME = "meshlab"
IMAGE = "meshlab/currency-converter:0.1.0"

#: kind's message when the cluster's node containers exist already (create.go ``alreadyExists``).
ALREADY_EXISTS = "node(s) already exist for a cluster with the name"
#: What ``kind load docker-image`` prints when Docker's containerd image store hands it an image whose
#: manifest list names platforms it does not have (kubernetes-sigs/kind#3795; ``ctr images import`` fails).
CONTAINERD_STORE_FAILURE = ("content digest", "not found")


def kubeconfig(name: str = NAME) -> Path:
    """The kubeconfig kind writes for this lab's cluster (context ``kind-<name>``)."""
    path = state.kubeconfig(name, default=name == NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def context(name: str = NAME) -> str:
    return f"kind-{name}"


def exists(name: str = NAME) -> bool:
    """Whether kind knows a cluster called ``name`` (``kind get clusters`` prints one name per line)."""
    out = run(
        ["kind", "get", "clusters"], timeout=60, fix="check that Docker is running: `docker info`"
    ).stdout
    return name in out.split()


def create(name: str = NAME, config: Path = paths.KIND_CONFIG, wait: str = "300s") -> bool:
    """Create the cluster, or reuse it if it exists; True when it was created now."""
    if exists(name):
        export_kubeconfig(name)
        return False
    argv = ["kind", "create", "cluster", "--name", name, "--config", str(config)]
    argv += ["--kubeconfig", str(kubeconfig(name)), "--wait", wait]
    fix = (
        f"read kind's message above; if ports 8080/8443 are taken, free them; then `kind delete cluster "
        f"--name {name}` and run lab.up() again"
    )
    try:
        run(argv, timeout=900, fix=fix)
    except CommandError as exc:
        if ALREADY_EXISTS not in exc.output:
            raise
        export_kubeconfig(name)  # created by someone else meanwhile: reuse it
        return False
    return True


def export_kubeconfig(name: str = NAME) -> Path:
    """Write the cluster's credentials into the lab's own kubeconfig (for a cluster created elsewhere)."""
    path = kubeconfig(name)
    run(["kind", "export", "kubeconfig", "--name", name, "--kubeconfig", str(path)], timeout=60)
    return path


def delete(name: str = NAME) -> None:
    """Delete the cluster; a cluster that does not exist is fine (kind exits 0)."""
    run(["kind", "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig(name))], timeout=300)


def build_image(image: str = IMAGE, context_dir: Path = paths.SERVICE_DIR) -> None:
    """Build the sample service's image in the local Docker daemon (the Dockerfile pins its base image)."""
    fix = f"read the build log above; the Dockerfile is {context_dir / 'Dockerfile'}"
    run(["docker", "build", "-t", image, str(context_dir)], timeout=900, fix=fix)


def load_image(image: str = IMAGE, name: str = NAME) -> None:
    """Copy an image from the local Docker daemon into the cluster's nodes, so pods never pull it.

    With Docker's containerd image store (Docker Desktop, Docker 29) ``kind load docker-image`` fails on
    multi-platform images (kind#3795): then save only the node's platform and load that archive instead."""
    fix = f"build or pull it first (`docker build -t {image} {paths.SERVICE_DIR}`); is {name} in "
    fix += "`kind get clusters`?"
    try:
        run(["kind", "load", "docker-image", image, "--name", name], timeout=600, fix=fix)
    except CommandError as exc:
        if not all(part in exc.output for part in CONTAINERD_STORE_FAILURE):
            raise
        with tempfile.TemporaryDirectory(prefix="labkit-image-") as tmp:
            archive = str(Path(tmp) / "image.tar")
            run(["docker", "save", "--platform", node_platform(), "-o", archive, image], timeout=600, fix=fix)
            run(["kind", "load", "image-archive", archive, "--name", name], timeout=600, fix=fix)


def node_platform() -> str:
    """The kind node's platform: the host's CPU under Linux (Docker Desktop runs linux/<host arch> VMs)."""
    machine = platform.machine().lower()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def port_mapping_problem(name: str = NAME, config: Path = paths.KIND_CONFIG) -> str | None:
    """Why an existing cluster ``name`` does not publish the lab's ports (created without the lab's config);
    None when every ``extraPortMappings`` entry of ``config`` is published on its host port."""
    nodes = (yaml.safe_load(config.read_text()) or {}).get("nodes") or []
    for mapping in (nodes[0] if nodes else {}).get("extraPortMappings") or []:
        port = f"{mapping['containerPort']}/{mapping.get('protocol', 'TCP').lower()}"
        try:
            out = run(["docker", "port", f"{name}-control-plane", port], timeout=30).stdout
        except CommandError:
            out = ""  # docker: "No public port '30080/tcp' published for ..." (exit 1)
        if not any(line.rsplit(":", 1)[-1].strip() == str(mapping["hostPort"]) for line in out.splitlines()):
            return (
                f"kind cluster {name} does not publish port {mapping['hostPort']} (it was created without "
                f"{config.name}), so the ingress URL cannot work\nWhat to do: `kind delete cluster --name "
                f"{name}`, then lab.up() (or `labkit --backend kind up`) creates it with the lab's config"
            )
    return None
