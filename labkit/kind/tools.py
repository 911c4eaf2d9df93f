"""``labkit tools install``: pinned kind and istioctl release binaries in the state folder, each checked
against the SHA-256 pinned here AND the one the release publishes, before ``labkit.command.run`` can find it.

A tool whose checksum is not pinned below is refused: fill ``sha256`` from the release's published checksum
file (after checking it) rather than trusting whatever a download says."""

from __future__ import annotations

import argparse
import hashlib
import io
import platform
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

from labkit.errors import LabError
from labkit.state import bin_dir, istio_dir

CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0


@dataclass(frozen=True)
class Release:
    """One pinned release: where its asset and published checksum are, and the SHA-256 per platform."""

    tool: str
    version: str
    url: str  # {platform} is replaced by the release's own platform name
    checksum_url: str
    sha256: dict[str, str] = field(default_factory=dict)  # platform -> hex digest; empty means "refuse"
    platforms: dict[str, str] = field(default_factory=dict)  # our platform -> the release's name for it

    def asset(self, plat: str) -> str:
        return self.url.format(platform=self.platforms.get(plat, plat))

    def checksum(self, plat: str) -> str:
        return self.checksum_url.format(platform=self.platforms.get(plat, plat))


_KIND = "https://github.com/kubernetes-sigs/kind/releases/download/v0.32.0/kind-{platform}"
_ISTIO = "https://github.com/istio/istio/releases/download/1.31.1/istio-1.31.1-{platform}.tar.gz"

#: The pins. kind v0.32.0 is the release whose default node image (v1.36.1) cluster.yaml pins; Istio 1.31.1 is
#: the lab's Istio. The digests were not available to this project's authors: fill them from the published
#: files (kind-<platform>.sha256sum, istio-1.31.1-<platform>.tar.gz.sha256) after checking them.
PINS: dict[str, Release] = {
    "kind": Release("kind", "v0.32.0", _KIND, _KIND + ".sha256sum"),
    "istioctl": Release(
        "istioctl",
        "1.31.1",
        _ISTIO,
        _ISTIO + ".sha256",
        platforms={"darwin-amd64": "osx", "darwin-arm64": "osx-arm64"},
    ),
}


def current_platform() -> str:
    """``linux-amd64``, ``darwin-arm64``, ...: the naming kind's release assets use."""
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    return f"{platform.system().lower()}-{machine}"


def _http() -> urllib3.PoolManager:
    retries = urllib3.Retry(total=3, backoff_factor=1.0, status_forcelist=(408, 429, 500, 502, 503, 504))
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT), retries=retries
    )


def _get(http: urllib3.PoolManager, url: str, sink: io.RawIOBase | io.BufferedIOBase) -> str:
    """Stream ``url`` into ``sink``; returns its SHA-256."""
    digest = hashlib.sha256()
    try:
        response = http.request("GET", url, preload_content=False)
    except urllib3.exceptions.HTTPError as exc:
        raise LabError(f"cannot download {url}: {exc}; check the network (or a proxy) and retry") from exc
    try:
        if response.status != 200:
            raise LabError(
                f"downloading {url} answered HTTP {response.status}; check the pinned version exists"
            )
        for chunk in response.stream(1 << 16):
            digest.update(chunk)
            sink.write(chunk)
    finally:
        response.release_conn()
    return digest.hexdigest()


def install(tool: str, plat: str | None = None) -> Path:
    """Download ``tool``'s pinned release, verify its SHA-256, and put the binary in the lab's bin folder."""
    release, plat = PINS[tool], plat or current_platform()
    pinned = release.sha256.get(plat)
    if not pinned:
        raise LabError(
            f"no pinned SHA-256 for {tool} {release.version} ({plat}) in labkit/kind/tools.py, so it is not "
            f"downloaded; add it from {release.checksum(plat)} after checking it, or install {tool} yourself"
        )
    http = _http()
    published_file = io.BytesIO()
    _get(http, release.checksum(plat), published_file)
    published = published_file.getvalue().decode(errors="replace").split()[:1]
    if published != [pinned]:
        raise LabError(
            f"{release.checksum(plat)} says {published[0] if published else 'nothing'}, but labkit pins "
            f"{pinned} for {tool} {release.version}; not installing: check which is right first"
        )
    target = bin_dir() / tool
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        download = Path(tmp) / "download"
        with download.open("wb") as sink:
            actual = _get(http, release.asset(plat), sink)
        if actual != pinned:
            raise LabError(
                f"{release.asset(plat)} has SHA-256 {actual}, expected {pinned}; not installed (a truncated "
                "download or a proxy rewriting it?); retry `labkit tools install`"
            )
        binary = _unpack_istio(download, Path(tmp)) if tool == "istioctl" else download
        binary.chmod(0o755)
        binary.replace(target)
    return target


def _unpack_istio(archive: Path, tmp: Path) -> Path:
    """istioctl from the release archive; its samples/ go to the state folder for the addons."""
    with tarfile.open(archive) as tar:
        tar.extractall(tmp / "istio", filter="data")
    roots = [p for p in (tmp / "istio").iterdir() if (p / "bin" / "istioctl").is_file()]
    if not roots:
        raise LabError(f"{archive.name}: no */bin/istioctl inside the Istio release archive")
    samples = istio_dir() / "samples"
    shutil.rmtree(samples, ignore_errors=True)
    shutil.copytree(roots[0] / "samples", samples)
    return roots[0] / "bin" / "istioctl"


def main(args: argparse.Namespace | None = None) -> int:
    """``labkit tools install``: every pinned tool, or the first error with what to do."""
    for tool in PINS:
        path = install(tool)
        print(f"{tool} {PINS[tool].version} verified and installed: {path}")
    print(f"labkit runs these before any on PATH; add {bin_dir()} to PATH to use them yourself")
    return 0
