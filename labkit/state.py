"""The state folder (``.lab/``, or ``LAB_STATE``): the one place that names every file in it.

Layout: ``bin/`` (pinned kind/istioctl), ``istio/`` (the release's samples), ``gateway-api/`` (the Gateway
API CRDs), ``kind/`` (kubeconfigs, API discovery cache), and for the local backend ``ports.json``,
``applied.yaml`` (+ ``applied.lock``), ``apps.validated``, ``ca/``, ``run/<process>.json`` (pidfiles),
``logs/<process>.log`` and per proxy ``proxies/<id>/`` with ``bootstrap.yaml``, ``cfg/{cds,lds}.yaml``,
``rds/``, ``certs/`` and ``access.log``.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from labkit import paths
from labkit.errors import BackendError

if TYPE_CHECKING:
    from filelock import FileLock

#: How long a change waits for another kernel's change to the same lab (a reconcile may take ~30 s).
LOCK_TIMEOUT = 120.0


def bin_dir() -> Path:
    """Where ``labkit tools install`` puts pinned binaries."""
    return paths.state_dir() / "bin"


def istio_dir() -> Path:
    """Where ``labkit tools install`` unpacks the Istio release's ``samples/``."""
    return paths.state_dir() / "istio"


def gateway_api_dir() -> Path:
    """Where ``labkit tools install`` keeps the verified Gateway API CRDs (``standard-install-<v>.yaml``)."""
    return paths.state_dir() / "gateway-api"


def kubeconfig(cluster: str, default: bool) -> Path:
    """The kubeconfig kind writes for ``cluster`` (the lab's own cluster is the ``default`` one)."""
    return _kind_dir() / ("kubeconfig" if default else f"kubeconfig-{cluster}")


def discovery_cache(server: str) -> Path:
    """The Kubernetes client's API discovery cache for the API server at ``server``."""
    return _kind_dir() / f"discovery-{hashlib.sha256(server.encode()).hexdigest()[:12]}.json"


def _kind_dir() -> Path:
    return paths.state_dir() / "kind"


def safe_name(name: str) -> str:
    """A file-system-safe form of a proxy id, process or route name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


class LocalState:
    """The local backend's files in one state folder (a kernel opening the same folder finds the same lab)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else paths.state_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.ports = self.root / "ports.json"
        self.applied = self.root / "applied.yaml"
        self.apps_validated = self.root / "apps.validated"
        self.ca_dir = self.root / "ca"
        self.run_dir = self.root / "run"
        self.logs_dir = self.root / "logs"
        self._lock_file = self.root / "applied.lock"
        self._lock: FileLock | None = None

    def log(self, process: str) -> Path:
        return self.logs_dir / f"{process}.log"

    def proxy_dir(self, proxy_id: str) -> Path:
        return self.root / "proxies" / safe_name(proxy_id)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The lab's change lock: held around every read-modify-write of the applied state, the ports and
        the Envoy config, so two kernels applying at once both land (the second waits, then reads what the
        first saved). Reentrant within this object."""
        from filelock import FileLock, Timeout  # imported on first change: keeps `import labkit` light

        if self._lock is None:
            self._lock = FileLock(self._lock_file)
        try:
            self._lock.acquire(timeout=LOCK_TIMEOUT)
        except Timeout:
            raise BackendError(
                f"another kernel is changing the lab in {self.root}: {self._lock_file} was not released "
                f"within {LOCK_TIMEOUT:g} s",
                f"wait for it to finish; if no other kernel or `labkit` command runs, delete "
                f"{self._lock_file}",
            ) from None
        try:
            yield
        finally:
            self._lock.release()


class ProxyFiles:
    """The files of one proxy, under its folder ``self.dir`` (``LocalState.proxy_dir``); mixed into Proxy."""

    dir: Path

    @property
    def bootstrap_file(self) -> Path:
        return self.dir / "bootstrap.yaml"

    @property
    def cfg_dir(self) -> Path:
        return self.dir / "cfg"

    @property
    def cds_file(self) -> Path:
        return self.cfg_dir / "cds.yaml"

    @property
    def lds_file(self) -> Path:
        return self.cfg_dir / "lds.yaml"

    @property
    def rds_dir(self) -> Path:
        return self.dir / "rds"

    def route_file(self, name: str) -> Path:
        return self.rds_dir / f"rds_{safe_name(name)}.yaml"

    @property
    def cert_file(self) -> Path:
        return self.dir / "certs" / "cert-chain.pem"

    @property
    def key_file(self) -> Path:
        return self.dir / "certs" / "key.pem"

    @property
    def ca_file(self) -> Path:
        return self.dir / "certs" / "root-cert.pem"

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"
