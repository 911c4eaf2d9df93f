"""The kind cluster and the sample image: create or reuse, delete, build and load, each one kind/docker
command. Every cluster gets its own kubeconfig in the state folder, so ~/.kube/config is never touched."""

from __future__ import annotations

from pathlib import Path

from labkit import paths, state
from labkit.command import run
from labkit.errors import CommandError

NAME = "meshlab"
IMAGE = "meshlab/currency-converter:0.1.0"

#: kind's message when the cluster's node containers exist already (create.go ``alreadyExists``).
ALREADY_EXISTS = "node(s) already exist for a cluster with the name"


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
    """Copy an image from the local Docker daemon into the cluster's nodes, so pods never pull it."""
    fix = f"build it first (`docker build -t {image} {paths.SERVICE_DIR}`); is {name} in `kind get clusters`?"
    run(["kind", "load", "docker-image", image, "--name", name], timeout=600, fix=fix)
