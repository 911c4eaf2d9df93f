"""``labkit tools install`` against a real HTTP server on 127.0.0.1 serving a fake release binary and checksum
file (the real downloads cannot happen on this machine): SHA-256 verification, refusal of unpinned tools, and
the error paths. The digests below are of the fake binaries made here, not of any real release."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files, hits
    server.shutdown()
    server.server_close()


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


def test_a_corrupted_download_is_refused_and_not_installed(release_server, monkeypatch):
    base, files, _ = release_server
    sha = hashlib.sha256(KIND).hexdigest()
    files["/kind-linux-amd64"] = KIND + b"tampered"
    files["/kind-linux-amd64.sha256sum"] = f"{sha}  kind-linux-amd64\n".encode()
    _pin(monkeypatch, "kind", base, sha)
    with pytest.raises(LabError, match=f"has SHA-256 [0-9a-f]{{64}}, expected {sha}; not installed"):
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


def test_the_shipped_pins_refuse_until_someone_fills_real_checksums():
    for tool in tools.PINS:
        with pytest.raises(LabError, match="no pinned SHA-256"):
            tools.install(tool, "linux-amd64")


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
