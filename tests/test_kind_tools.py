"""``labkit tools install`` against a real HTTP server on 127.0.0.1 serving a fake release binary and checksum
file (the real downloads cannot happen on this machine): SHA-256 verification, refusal of unpinned tools, and
the error paths. The digests below are of the fake binaries made here, not of any real release."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.serving import serving

from labkit import cli
from labkit.command import which
from labkit.errors import LabError
from labkit.kind import tools

KIND = b"#!/bin/sh\necho kind v0.32.0 fake\n"


@pytest.fixture
def release_server(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE", str(tmp_path / "state"))
    files: dict[str, bytes] = {}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}", files, hits


def _pin(monkeypatch, tool, base, sha, **extra):
    url = f"{base}/{tool}-{{platform}}" + (".tar.gz" if tool == "istioctl" else "")
    release = tools.Release(
        tool, "v0", url, url + ".sha256sum", sha256={"linux-amd64": sha} if sha else {}, **extra
    )
    monkeypatch.setitem(tools.PINS, tool, release)


def test_verified_kind_is_installed_where_run_finds_it(release_server, monkeypatch):
    base, files, _ = release_server
    sha = hashlib.sha256(KIND).hexdigest()
    files["/kind-linux-amd64"] = KIND
    files["/kind-linux-amd64.sha256sum"] = f"{sha}  kind-linux-amd64\n".encode()
    _pin(monkeypatch, "kind", base, sha)
    path = tools.install("kind", "linux-amd64")
    assert path.read_bytes() == KIND
    assert which("kind") == str(path)  # the pinned copy wins over PATH


def test_a_corrupted_download_is_refused_with_both_hashes_and_not_installed(release_server, monkeypatch):
    base, files, _ = release_server
    sha = hashlib.sha256(KIND).hexdigest()
    files["/kind-linux-amd64"] = KIND + b"tampered"
    files["/kind-linux-amd64.sha256sum"] = f"{sha}  kind-linux-amd64\n".encode()
    _pin(monkeypatch, "kind", base, sha)
    got = hashlib.sha256(KIND + b"tampered").hexdigest()
    refused = f"has SHA-256 {got}, expected {sha}; not installed.*What to do: retry"
    with pytest.raises(LabError, match=refused):
        tools.install("kind", "linux-amd64")
    assert not (tools.bin_dir() / "kind").exists()


def test_published_checksum_differing_from_the_pin_is_refused(release_server, monkeypatch):
    base, files, hits = release_server
    files["/kind-linux-amd64"] = KIND
    files["/kind-linux-amd64.sha256sum"] = ("0" * 64 + "  kind-linux-amd64\n").encode()
    _pin(monkeypatch, "kind", base, hashlib.sha256(KIND).hexdigest())
    with pytest.raises(LabError, match="but labkit pins"):
        tools.install("kind", "linux-amd64")
    assert "/kind-linux-amd64" not in hits  # the binary is never fetched


def test_unpinned_tool_is_refused_without_downloading(release_server, monkeypatch):
    base, _, hits = release_server
    _pin(monkeypatch, "kind", base, None)
    with pytest.raises(LabError, match=r"no pinned SHA-256 for kind v0 \(linux-amd64\).*add it from http"):
        tools.install("kind", "linux-amd64")
    assert hits == []


def test_shipped_pins_cover_every_unix_platform_with_the_release_urls():
    for tool in tools.PINS.values():
        assert set(tool.sha256) == {"linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64"}
        assert all(len(d) == 64 and int(d, 16) >= 0 for d in tool.sha256.values())
    assert tools.PINS["kind"].asset("darwin-arm64") == (
        "https://github.com/kubernetes-sigs/kind/releases/download/v0.32.0/kind-darwin-arm64"
    )
    assert tools.PINS["istioctl"].checksum("darwin-amd64") == (
        "https://github.com/istio/istio/releases/download/1.30.3/istio-1.30.3-osx-amd64.tar.gz.sha256"
    )


REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "release-checksums.md"


@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"{REFERENCE} (the team's reference copy) is not here")
def test_shipped_pins_are_the_reference_tables_digests():
    rows = {}
    for line in REFERENCE.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        if len(cells) >= 5 and all(re.fullmatch(r"[0-9a-f]{64}", c) for c in cells[1:5]):
            rows.setdefault(cells[0].split()[0], cells[1:5])  # the first table with that version wins
    for tool in tools.PINS.values():
        pinned = [tool.sha256[p] for p in ("linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64")]
        assert rows[tool.version] == pinned, tool.tool


def test_missing_release_asset_names_the_url(release_server, monkeypatch):
    base, files, _ = release_server
    _pin(monkeypatch, "kind", base, "a" * 64)
    with pytest.raises(LabError, match=r"kind-linux-amd64.sha256sum answered HTTP 404"):
        tools.install("kind", "linux-amd64")


def test_istio_archive_gives_istioctl_and_the_addons(release_server, monkeypatch):
    base, files, _ = release_server
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in (
            ("istio-0/bin/istioctl", b"#!/bin/sh\n"),
            ("istio-0/samples/addons/kiali.yaml", b"{}"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = archive.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    files["/istioctl-osx.tar.gz"] = blob
    files["/istioctl-osx.tar.gz.sha256sum"] = f"{sha}  istio-0-osx.tar.gz\n".encode()
    _pin(monkeypatch, "istioctl", base, None, platforms={"darwin-amd64": "osx"})
    tools.PINS["istioctl"].sha256["darwin-amd64"] = sha
    path = tools.install("istioctl", "darwin-amd64")
    assert path.read_bytes() == b"#!/bin/sh\n"
    assert (tools.istio_dir() / "samples" / "addons" / "kiali.yaml").is_file()


def test_labkit_tools_install_installs_both_pinned_tools_and_the_crds_from_the_server(
    release_server, monkeypatch, capsys
):
    base, files, _ = release_server
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in (("istio-0/bin/istioctl", b"#!/bin/sh\n"), ("istio-0/samples/addons/a.yaml", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for tool, blob in (("kind", KIND), ("istioctl", archive.getvalue())):
        sha = hashlib.sha256(blob).hexdigest()
        name = f"/{tool}-linux-amd64" + (".tar.gz" if tool == "istioctl" else "")
        files[name], files[name + ".sha256sum"] = blob, f"{sha}  {name[1:]}\n".encode()
        _pin(monkeypatch, tool, base, sha)
    files["/standard-install.yaml"] = b"kind: CustomResourceDefinition\n"
    monkeypatch.setattr(tools, "GATEWAY_API_URL", f"{base}/standard-install.yaml")
    monkeypatch.setattr(
        tools, "GATEWAY_API_SHA256", hashlib.sha256(files["/standard-install.yaml"]).hexdigest()
    )
    monkeypatch.setattr(tools, "current_platform", lambda: "linux-amd64")
    assert cli.main(["tools", "install"]) == 0
    out = capsys.readouterr().out
    assert "kind v0 verified and installed" in out and "istioctl v0 verified and installed" in out
    assert "Gateway API v1.5.1 CRDs (standard channel) verified" in out
    assert which("istioctl") == str(tools.bin_dir() / "istioctl")


#: Istio's support matrix: istio.io "Supported Releases", the support status table
#: (content/en/docs/releases/supported-releases/index.md), and each release's notes: Kubernetes minors
#: per Istio minor (shared/reference/field-notes.md, "Kubernetes supported by Istio").
ISTIO_SUPPORTS_KUBERNETES = {"1.30": ((1, 32), (1, 36)), "1.31": ((1, 32), (1, 36))}
#: kind's default node image per release, pkg/apis/config/defaults/image.go at the tag
#: (shared/reference/release-checksums.md).
KIND_DEFAULT_NODE = {
    "v0.32.0": "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5"
}


def _minor(text: str) -> tuple[int, int]:
    major, minor = re.search(r"(\d+)\.(\d+)", text).groups()
    return int(major), int(minor)


def test_kind_node_image_istio_and_kubectl_are_a_supported_combination():
    import yaml

    from labkit import paths, validation, versions

    assert tools.PINS["istioctl"].version == versions.ISTIO_VERSION
    assert tools.PINS["kind"].version == versions.KIND_VERSION
    low, high = ISTIO_SUPPORTS_KUBERNETES[versions.ISTIO_MINOR]
    assert (low, high) == versions.K8S_SUPPORTED  # what `labkit doctor` enforces is the matrix's row
    configs = sorted(paths.KIND_CONFIG.parent.glob("*.yaml"))
    images = {node["image"] for cfg in configs for node in yaml.safe_load(cfg.read_text())["nodes"]}
    assert images == {KIND_DEFAULT_NODE[versions.KIND_VERSION]}  # the pinned kind's own, by digest
    node = _minor(images.pop())
    assert low <= node <= high
    kubectl = _minor(versions.KUBECTL_MINOR)
    assert kubectl[0] == node[0] and abs(kubectl[1] - node[1]) <= 1  # kubectl's version-skew policy
    assert _minor(validation.KUBERNETES_VERSION) == node  # schemas of the Kubernetes the cluster runs


def test_gateway_api_crds_are_kept_only_when_their_sha256_matches_the_pin(release_server, monkeypatch):
    base, files, _ = release_server
    crds = b"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
    files["/standard-install.yaml"] = crds
    monkeypatch.setattr(tools, "GATEWAY_API_URL", f"{base}/standard-install.yaml")
    with pytest.raises(LabError, match=r"has SHA-256 \w+, expected 751002b3\w+; not kept"):
        tools.install_gateway_api()  # the real pin: these bytes are not the release's
    assert not tools.gateway_api_file().exists()
    monkeypatch.setattr(tools, "GATEWAY_API_SHA256", hashlib.sha256(crds).hexdigest())
    assert tools.install_gateway_api().read_bytes() == crds
    assert tools.gateway_api_file().name == "standard-install-v1.5.1.yaml"
