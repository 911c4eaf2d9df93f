"""Pre-pull mode (labkit/kind/images.py) against fake docker/kind executables (tests/fakes/bin): which images
are pulled from where, and what a failed pull says. The whole-lab path is in test_kind_backend.py."""

from __future__ import annotations

import pytest
from fakes import harness

from labkit.errors import CommandError
from labkit.kind import images


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return harness.install(tmp_path, monkeypatch)


def test_docker_hub_images_come_from_the_mirror_others_from_their_registry():
    mirror = "registry.local:5000"
    assert images.source("docker.io/istio/pilot:1.30.3", mirror) == "registry.local:5000/istio/pilot:1.30.3"
    assert images.source("prom/prometheus:v3.10.0", mirror) == "registry.local:5000/prom/prometheus:v3.10.0"
    assert images.source("busybox:1.37", mirror) == "registry.local:5000/library/busybox:1.37"
    assert images.source("quay.io/kiali/kiali:v2.16", mirror) == "quay.io/kiali/kiali:v2.16"
    assert images.source("docker.io/istio/pilot:1.30.3", None) == "docker.io/istio/pilot:1.30.3"


def test_addon_images_are_read_from_the_release_manifests(tmp_path):
    (tmp_path / "prometheus.yaml").write_text(
        "kind: ServiceAccount\nmetadata: {name: prometheus}\n---\n"
        "kind: Deployment\nspec:\n  template:\n    spec:\n"
        "      containers: [{name: reload, image: 'ghcr.io/x/reloader:v1'},\n"
        "                   {name: p, image: 'prom/prometheus:v3'}]\n"
    )
    (tmp_path / "kiali.yaml").write_text(
        "kind: Deployment\nspec:\n  template:\n    spec:\n"
        "      containers: [{name: k, image: 'quay.io/kiali/kiali:v2'}]\n"
    )
    assert images.addon_images(tmp_path) == [
        "quay.io/kiali/kiali:v2",
        "ghcr.io/x/reloader:v1",
        "prom/prometheus:v3",
    ]
    assert images.addon_images(None) == []


def test_a_refused_pull_from_the_mirror_names_the_mirror_and_the_image(fake, monkeypatch):
    monkeypatch.setenv("LAB_REGISTRY_MIRROR", "registry.local:5000")
    fake.add_cluster("meshlab")
    (fake.root / "docker-pull-refused").write_text("registry.local:5000/istio/pilot:1.30.3\n")
    with pytest.raises(CommandError) as err:
        images.pull_and_load(images.istio_images())
    assert "pull access denied" in str(err.value)
    assert "What to do: is the mirror registry.local:5000 running and does it hold" in str(err.value)


def test_prepull_from_the_host_pulls_each_pinned_image_and_loads_it(fake, monkeypatch):
    monkeypatch.delenv("LAB_REGISTRY_MIRROR", raising=False)
    fake.add_cluster("meshlab")
    images.pull_and_load(images.istio_images())
    assert [c[2] for c in fake.calls("docker") if c[1] == "pull"] == images.istio_images()
    assert [c[3] for c in fake.calls("kind") if c[1] == "load"] == images.istio_images()
    assert not [c for c in fake.calls("docker") if c[1] == "tag"]
