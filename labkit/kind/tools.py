"""``labkit tools install``: pinned kind and istioctl release binaries in the state folder, each checked
against the SHA-256 pinned here AND the one the release publishes, before ``labkit.command.run`` can find it;
and the Gateway API CRDs (standard channel), checked against their pin, kept for ``lab.up()`` to apply (so
bringing a cluster up never downloads them).

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
from labkit.state import bin_dir, gateway_api_dir, istio_dir
from labkit.versions import GATEWAY_API_VERSION, ISTIO_VERSION, KIND_VERSION

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


_KIND = f"https://github.com/kubernetes-sigs/kind/releases/download/{KIND_VERSION}/kind-{{platform}}"
_ISTIO = f"https://github.com/istio/istio/releases/download/{ISTIO_VERSION}/istio-{ISTIO_VERSION}-{{platform}}.tar.gz"

#: The pins, copied from shared/reference/release-checksums.md; the release's own checksum file is fetched
#: and must agree too. kind v0.32.0 is the release whose default node image (v1.36.1) cluster.yaml pins.
#: Its raw binaries' digests: cashapp/hermit-packages kind.hcl @ f0517fd7532fc6adfd910cfba3ef2b4c59f662db
#: (filled from kind's own kind-<os>-<arch>.sha256sum) and cert-manager/makefile-modules
#: modules/tools/00_mod.mk @ b90303374efd9a7837cc4ec2b73267d19836e6e0, which agree.
#: Istio: the full release archives (istioctl plus samples/addons), cert-manager/makefile-modules
#: modules/tools/00_mod.mk, row 1.30.3 introduced in commit bbf85270. No public pin exists for any 1.31.x
#: archive, hence Istio 1.30.3 (labkit/versions.py).
PINS: dict[str, Release] = {
    "kind": Release(
        "kind",
        KIND_VERSION,
        _KIND,
        _KIND + ".sha256sum",
        # each digest: cashapp/hermit-packages kind.hcl @ f0517fd and cert-manager/makefile-modules
        # modules/tools/00_mod.mk @ b903033, identical in both
        sha256={
            "linux-amd64": "50030de23cf40a18505f20426f6a8506bedf13c6e509244bd1fa9463721b0f54",
            "linux-arm64": "b92cd615e97585de8ddade28ed5cd7feb4248d717c233eea5b03c37298900f5d",
            "darwin-amd64": "295ac6d0d634c9819c9907df45e3017d1f13166bd13c3404c45e79f7faa47498",
            "darwin-arm64": "dca67911095a110c2b5c36e26df6cac860c602033e456c0db47be498cdef1ebb",
        },
    ),
    "istioctl": Release(
        "istioctl",
        ISTIO_VERSION,
        _ISTIO,
        _ISTIO + ".sha256",
        # each digest: cert-manager/makefile-modules modules/tools/00_mod.mk, row 1.30.3 (commit bbf85270)
        sha256={
            "linux-amd64": "55ada076ba1b37af49e8a24e5e539b4abccabdb33894c923279edd293eea3993",
            "linux-arm64": "926d265818e8ab69de9f81bfe78447c3bc8f4ae32a356a39545b790bfcfd63e5",
            "darwin-amd64": "9a2b70d8257861156336c89bf33251b90cc77924116c10a281d39d996d4f0bac",
            "darwin-arm64": "4d78e3effac3253c9348cef73563af405dc3429bea9536eae98a724ee81761c7",
        },
        platforms={"darwin-amd64": "osx-amd64", "darwin-arm64": "osx-arm64"},
    ),
}


#: Gateway API's standard-channel CRDs (one file for every platform). Two independent sources agree on its
#: SHA-256: zephytiju/JuntaiPlatformFoundationsIaC src/release.ts ``GATEWAY_API_MANIFEST`` (its
#: src/artifacts.ts fetches the file and refuses any other digest), and the file rebuilt from
#: kubernetes-sigs/gateway-api at tag v1.5.1 (commit e7677b70ae75) as its release does (``make
#: build-install-yaml`` = hack/build-install-yaml.sh: the boilerplate, "Gateway API Standard channel
#: install", then ``---``/``# <file>`` and each config/crd/standard/gateway*.yaml; the boilerplate has no
#: YEAR left to fill). docs/instructors.md says how to redo the check. Where the internet is reachable,
#: compare it with ``sha256sum`` of the release's own file before changing it.
GATEWAY_API_URL = (
    f"https://github.com/kubernetes-sigs/gateway-api/releases/download/{GATEWAY_API_VERSION}/"
    "standard-install.yaml"
)
GATEWAY_API_SHA256 = "751002b3b91a87f7ae3bd2517c79a47a8d7ed6702901808a1cf9bd97d284f9b8"


def gateway_api_file() -> Path:
    """Where the verified ``standard-install.yaml`` of the pinned Gateway API release is kept."""
    return gateway_api_dir() / f"standard-install-{GATEWAY_API_VERSION}.yaml"


def install_gateway_api() -> Path:
    """Download the Gateway API CRDs, verify their SHA-256 against the pin, keep them for ``lab.up()``."""
    target = gateway_api_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        download = Path(tmp) / "download"
        with download.open("wb") as sink:
            actual = _get(_http(), GATEWAY_API_URL, sink)
        if actual != GATEWAY_API_SHA256:
            raise LabError(
                f"{GATEWAY_API_URL} has SHA-256 {actual}, expected {GATEWAY_API_SHA256}; not kept (a "
                "truncated download or a proxy rewriting it?). What to do: retry `labkit tools install`"
            )
        download.replace(target)
    return target


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
        raise LabError(
            f"cannot download {url}: {exc}. What to do: check the network (or a proxy) and retry"
        ) from exc
    try:
        if response.status != 200:
            raise LabError(
                f"downloading {url} answered HTTP {response.status}. "
                "What to do: check the pinned version exists"
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
            f"downloaded. What to do: add it from {release.checksum(plat)} after checking it, or install "
            f"{tool} yourself"
        )
    http = _http()
    published_file = io.BytesIO()
    _get(http, release.checksum(plat), published_file)
    published = published_file.getvalue().decode(errors="replace").split()[:1]
    if published != [pinned]:
        raise LabError(
            f"{release.checksum(plat)} says {published[0] if published else 'nothing'}, but labkit pins "
            f"{pinned} for {tool} {release.version}; not installed. What to do: check which is right first"
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
                "download or a proxy rewriting it?). What to do: retry `labkit tools install`"
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
    """``labkit tools install``: every pinned tool and the Gateway API CRDs, or the first error with what to
    do."""
    for tool in PINS:
        path = install(tool)
        print(f"{tool} {PINS[tool].version} verified and installed: {path}")
    print(f"Gateway API {GATEWAY_API_VERSION} CRDs (standard channel) verified: {install_gateway_api()}")
    print(f"labkit runs these before any on PATH; add {bin_dir()} to PATH to use them yourself")
    return 0
