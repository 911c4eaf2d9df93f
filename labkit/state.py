"""The state folder (``.lab/``, or ``LAB_STATE``): the one place that names every file in it.

Layout: ``bin/`` (pinned kind/istioctl), ``istio/`` (the release's samples), ``kind/`` (kubeconfigs, API
discovery cache), and for the local backend
``ports.json``, ``applied.yaml`` (+ ``applied.lock``), ``apps.validated``, ``ca/``, ``run/<process>.json``
(pidfiles), ``logs/<process>.log`` and per proxy ``proxies/<id>/`` with ``bootstrap.yaml``,
``cfg/{cds,lds}.yaml``, ``rds/``, ``certs/`` and ``access.log``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from labkit import paths

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


def kind_dir() -> Path:
    """The kind backend's kubeconfigs and API discovery cache."""
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

    def lock(self) -> FileLock:
        """The lab's change lock: held around every read-modify-write of the applied state, the ports and
        the Envoy config, so two kernels applying at once both land. Reentrant within this object."""
        if self._lock is None:
            from filelock import FileLock  # imported on first change: keeps `import labkit` light

            self._lock = FileLock(self._lock_file, timeout=LOCK_TIMEOUT)
        return self._lock


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
