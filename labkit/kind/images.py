"""Where the cluster's images come from. By default the kind node's containerd pulls Istio's and the addons'
images from Docker Hub when the pods start, anonymously (the host's ``docker login`` does not reach it), and
a classroom behind one NAT soon hits Docker Hub's anonymous pull limit. Pre-pull mode pulls the pinned images
once on the host - from Docker Hub or from a registry mirror an instructor runs - and ``kind load``s them, so
the nodes pull nothing at class time.

    LAB_IMAGES=prepull                       pull on the host (its docker login counts), then kind load
    LAB_REGISTRY_MIRROR=registry.local:5000  pull Docker Hub's images from that mirror (implies prepull)

The mirror is a Docker Hub pull-through cache (``registry:2`` with ``proxy.remoteurl:
https://registry-1.docker.io``), so it serves Docker Hub's paths (``library/nginx``, ``istio/pilot``); images
from other registries (ghcr.io, quay.io) are pulled from their own registry, which has no such limit.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from labkit.command import run
from labkit.kind import cluster
from labkit.versions import ISTIO_VERSION

#: Istio's images, pinned: ``istioctl install`` is told this hub and tag, so it runs exactly what was pulled.
ISTIO_HUB, ISTIO_TAG = "docker.io/istio", ISTIO_VERSION
ISTIO_IMAGES = ("pilot", "proxyv2")
MODE_ENV, MIRROR_ENV = "LAB_IMAGES", "LAB_REGISTRY_MIRROR"


def mirror() -> str | None:
    """The registry mirror to pull from (host:port), if the instructor set one."""
    return os.environ.get(MIRROR_ENV, "").strip().rstrip("/") or None


def prepull() -> bool:
    """Whether the host pulls the images and loads them into the nodes (pre-pull mode)."""
    return bool(mirror()) or os.environ.get(MODE_ENV, "").strip().lower() == "prepull"


def describe() -> str:
    """One line for ``labkit doctor``: which mode is active and how to switch."""
    if mirror():
        return f"images: pre-pull mode from the registry mirror {mirror()} ({MIRROR_ENV}), then kind load"
    if prepull():
        return f"images: pre-pull mode ({MODE_ENV}=prepull): the host pulls them once, then kind load"
    return (
        "images: the kind node pulls Istio's and the addons' images from Docker Hub at class time; for a "
        f"classroom behind one NAT set {MODE_ENV}=prepull (or {MIRROR_ENV}=host:port) before `labkit up`"
    )


def istio_images() -> list[str]:
    return [f"{ISTIO_HUB}/{name}:{ISTIO_TAG}" for name in ISTIO_IMAGES]


def addon_images(folder: Path | None) -> list[str]:
    """Every container image the addons' manifests (Prometheus, Kiali) name."""
    found: list[str] = []
    for path in sorted(folder.glob("*.yaml")) if folder else []:
        for doc in yaml.safe_load_all(path.read_text()):
            spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec") or {}
            for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                if container.get("image") and container["image"] not in found:
                    found.append(container["image"])
    return found


def install_args() -> list[str]:
    """``istioctl install`` flags that make the control plane and sidecars use the pinned images."""
    return ["--set", f"hub={ISTIO_HUB}", "--set", f"tag={ISTIO_TAG}"]


def source(image: str, registry: str | None) -> str:
    """Where to pull ``image`` from: a Docker Hub image from the mirror (under its Docker Hub path), any
    other image from its own registry."""
    first, _, rest = image.partition("/")
    hosted = bool(rest) and ("." in first or ":" in first or first == "localhost")
    if not registry or (hosted and first != "docker.io"):
        return image
    path = rest if hosted else image
    return f"{registry}/{path if '/' in path else 'library/' + path}"


def pull_and_load(images: list[str], name: str = cluster.NAME) -> None:
    """Pull each image on the host (from the mirror when set, re-tagged to its own name) and load it."""
    registry = mirror()
    for image in images:
        origin = source(image, registry)
        fix = (
            f"is the mirror {registry} running and does it hold {origin}?"
            if registry
            else f"`docker login` (Docker Hub's anonymous limit), or set {MIRROR_ENV} to a mirror"
        )
        run(["docker", "pull", origin], timeout=900, fix=fix)
        if origin != image:
            run(["docker", "tag", origin, image], timeout=60)
        cluster.load_image(image, name)
