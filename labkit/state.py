"""The state folder (``.lab/``, or ``LAB_STATE``): the one place that names every file in it.

Layout: ``bin/`` (pinned kind/istioctl), ``istio/`` (the release's samples), ``gateway-api/`` (the Gateway
API CRDs), ``kind/`` (kubeconfigs, API discovery cache), and for the local backend ``ports.json``,
``applied.yaml`` (+ ``applied.lock``), ``apps.validated``, ``ca/``, ``run/<process>.json`` (pidfiles),
``logs/<process>.log``, ``sock/`` (the Unix sockets of the apps behind a sidecar, of every Envoy's admin API
and of the sidecars' outbound listeners) and per proxy ``proxies/<id>/`` with ``bootstrap.yaml``,
``cfg/{cds,lds}.yaml``, ``rds/``, ``certs/`` and ``access.log``.

The folder is 0700: on a shared machine (JupyterHub with local users) nobody else can read a key, a log or the
config, nor open a socket in it (a Unix socket's own mode is not checked on every OS; its folder's is).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from labkit import paths
from labkit.errors import BackendError

if TYPE_CHECKING:
    from filelock import FileLock

#: The mode of the state folder and of ``sock/``: the lab's user only.
PRIVATE_DIR = 0o700
#: A Unix socket path is at most 107 bytes (``sun_path``, Linux 108 with the NUL; macOS 104): the lab's
#: socket names are short, so the state folder's own path may be this long.
MAX_SOCKET_DIR = 80
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
        private_dir(self.root)
        self.ports = self.root / "ports.json"
        self.applied = self.root / "applied.yaml"
        self.apps_validated = self.root / "apps.validated"
        self.ca_dir = self.root / "ca"
        self.run_dir = self.root / "run"
        self.logs_dir = self.root / "logs"
        self.sock_dir = self.root / "sock"
        self.xds_socket = socket_path(self.sock_dir, "xds", "istiod")  # the control plane's gRPC (ADS)
        self._lock_file = self.root / "applied.lock"
        self._lock: FileLock | None = None

    def log(self, process: str) -> Path:
        return self.logs_dir / f"{process}.log"

    def proxy_dir(self, proxy_id: str) -> Path:
        return self.root / "proxies" / safe_name(proxy_id)

    def app_socket(self, namespace: str, instance: str) -> Path:
        """Where the app of an instance with a sidecar listens: only its sidecar (and the lab's user) reach
        it, as only the pod's own sidecar reaches a pod's app under STRICT."""
        return socket_path(self.sock_dir, "app", f"{namespace}/{instance}")

    def tcp_socket(self, namespace: str, instance: str, port: int) -> Path:
        """Where such an app's TCP port (the sample's TCP echo) listens, reached the same way."""
        return socket_path(self.sock_dir, "tcp", f"{namespace}/{instance}/{port}")

    def grpc_socket(self, namespace: str, instance: str) -> Path:
        """Where an instance's app answers grpc.health.v1 for its gRPC probes: only the prober (pilot-agent's
        part, or the kubelet's) dials it, so it is a socket with or without a sidecar."""
        return socket_path(self.sock_dir, "grpc", f"{namespace}/{instance}")

    def kubelet_file(self, namespace: str, instance: str) -> Path:
        """What the pod's kubelet (labkit/local/kubelet.py) says of its app: started, running, restarts."""
        return self.root / "kubelet" / f"{safe_name(namespace)}.{safe_name(instance)}.json"

    def open_sockets(self) -> Path:
        """``sock/``, created 0700; a clear error when its path is too long for a Unix socket."""
        if len(str(self.sock_dir.absolute())) > MAX_SOCKET_DIR:
            raise BackendError(
                f"the state folder {self.root} has too long a path for the lab's Unix sockets "
                f"(at most {MAX_SOCKET_DIR - len('/sock')} characters)",
                "set LAB_STATE to a shorter path, e.g. ~/.meshlab",
            )
        private_dir(self.sock_dir)
        return self.sock_dir

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


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) and make it 0700: the lab's user only."""
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR:
        path.chmod(PRIVATE_DIR)


def socket_path(sock_dir: Path, kind: str, key: str) -> Path:
    """A short socket name in ``sock_dir``: ``<kind>-<digest of key>.sock`` (``sun_path`` is short)."""
    return sock_dir / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.sock"


class ProxyFiles:
    """The files of one proxy, under its folder ``self.dir`` (``LocalState.proxy_dir``), and its sockets in
    ``self.sock_dir`` (``LocalState.sock_dir``); mixed into Proxy."""

    id: str
    dir: Path
    sock_dir: Path

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

    @functools.cached_property  # every cluster of a push names it: joined once
    def cert_file(self) -> Path:
        return self.dir / "certs" / "cert-chain.pem"

    @functools.cached_property  # every cluster of a push names it: joined once
    def key_file(self) -> Path:
        return self.dir / "certs" / "key.pem"

    @functools.cached_property  # every cluster of a push names it: joined once
    def ca_file(self) -> Path:
        return self.dir / "certs" / "root-cert.pem"

    @functools.cached_property  # every listener of a push names it: joined once
    def access_log(self) -> Path:
        return self.dir / "access.log"

    @property
    def admin_socket(self) -> Path:
        """The admin API's Unix socket (mode 0600): it can stop the proxy and dump its keys' paths."""
        return socket_path(self.sock_dir, "admin", self.id)

    def outbound_socket(self, port: int) -> Path:
        """The Unix socket (mode 0600) of the outbound listener for registry port ``port``: whoever connects
        sends as this proxy's workload, so only the lab's user may."""
        return socket_path(self.sock_dir, "out", f"{self.id}/{port}")
