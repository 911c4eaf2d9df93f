"""Shared test configuration: live-cluster tests run only where docker and kind exist."""

from __future__ import annotations

import shutil

import pytest


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
