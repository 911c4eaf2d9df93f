"""Puts the fake kind/docker/istioctl/kubectl (tests/fakes/bin) first on PATH for one test, with the lab's
state folder and HOME in the test's tmp folder. These fakes stand in for tools this machine cannot run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from fakes.apiserver import FakeApiServer
from labkit.kind import doctor
from labkit.validation import schemas

BIN = Path(__file__).parent / "bin"
#: What `docker port` shows for a cluster created with cluster-config/kind/cluster.yaml.
LAB_PORTS = ("30080/tcp -> 127.0.0.1:8080", "30443/tcp -> 127.0.0.1:8443")


class FakeTools:
    """The fakes' shared folder: what they were called with, and answers a test wants instead."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def calls(self, tool: str | None = None) -> list[list[str]]:
        log = self.root / "calls.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [([r["tool"]] + r["args"]) for r in rows if tool in (None, r["tool"])]

    def respond(
        self, tool: str, args: list[str], *, stdout: str = "", stderr: str = "", rc: int = 0, sleep: float = 0
    ):
        path = self.root / "responses.json"
        rules = json.loads(path.read_text()) if path.exists() else []
        rules.append(
            {"tool": tool, "args": args, "stdout": stdout, "stderr": stderr, "rc": rc, "sleep": sleep}
        )
        path.write_text(json.dumps(rules))

    def forget_responses(self) -> None:
        """Back to the fakes' own answers (for a module-scoped lab shared by several tests)."""
        (self.root / "responses.json").unlink(missing_ok=True)

    def add_cluster(self, name: str, ports: tuple[str, ...] = LAB_PORTS) -> None:
        """A kind cluster that exists already, publishing ``ports`` (the lab's, unless told otherwise)."""
        with (self.root / "kind-clusters").open("a") as f:
            f.write(name + "\n")
        (self.root / f"docker-ports-{name}").write_text("".join(p + "\n" for p in ports))

    def containerd_store(self) -> None:
        """Docker with the containerd image store (Docker Desktop, Docker 29): kind#3795."""
        (self.root / "containerd-store").touch()

    def docker_down(self) -> None:
        (self.root / "docker-down").touch()


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    """Fakes first on PATH (run by this interpreter), state and HOME under ``tmp_path``."""
    root = tmp_path / "fake-cli"
    root.mkdir()
    python = tmp_path / "python-bin"
    python.mkdir()
    (python / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{python}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CLI_DIR", str(root))
    monkeypatch.setenv("LAB_STATE", str(tmp_path / "state"))
    # labkit's schema cache stays where it was (the user cache folder is under HOME): only the tools' files
    # move, and the Istio schemas are not generated again for every test (seconds of CPU each time)
    monkeypatch.setenv("LAB_CACHE", str(schemas.cache_file().parent))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", "")  # recorded, so a KUBECONFIG that up() sets is undone afterwards
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.delenv("ISTIO_HOME", raising=False)
    return FakeTools(root)


ADDON = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: istio-system, labels: {{app: {name}}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: {name}, image: {name}}}]}}
"""


def istio_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str = "1.30.3") -> Path:
    """An unpacked Istio release as far as the lab reads one (samples/addons), named by ISTIO_HOME."""
    home = tmp_path / f"istio-{version}"
    addons = home / "samples" / "addons"
    addons.mkdir(parents=True)
    for name in ("prometheus", "kiali"):
        (addons / f"{name}.yaml").write_text(ADDON.format(name=name))
    monkeypatch.setenv("ISTIO_HOME", str(home))
    return home


def kind_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeTools, FakeApiServer]:
    """The fakes, a started stand-in API server and an Istio release's samples/addons: what
    ``KubeLab("kind").up()`` needs on this machine. The caller stops the API server."""
    fake = install(tmp_path, monkeypatch)
    api = FakeApiServer().start()
    monkeypatch.setenv("FAKE_API_SERVER", api.url)
    istio_release(tmp_path, monkeypatch)
    monkeypatch.setattr(
        doctor, "HOST_PORTS", ()
    )  # this shared machine's 8080 may be busy; see test_kind_doctor
    return fake, api
