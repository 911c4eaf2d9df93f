"""Shared test configuration: a local mesh per test module; live-cluster tests only where docker+kind run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

import labkit


def pytest_collection_modifyitems(config, items):
    if shutil.which("docker") and shutil.which("kind") and _docker_engine_up():
        return
    skip = pytest.mark.skip(
        reason="needs a Docker engine and kind (live-cluster test); this machine has neither"
    )
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)


def _docker_engine_up() -> bool:
    import subprocess

    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[labkit.Lab]:
    """A local real-Envoy lab at the 90/10 canary checkpoint, with its own state folder; always stopped."""
    lab = labkit.open("local", state=tmp_path_factory.mktemp("lab-state"))
    try:
        lab.up()
        lab.ensure("canary-90-10")
        yield lab
    finally:
        lab.down()
