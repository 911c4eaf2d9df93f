"""A real Prometheus for the local lab (notebook 21, Istio's "Querying Metrics" task): the ``prometheus``
binary (Debian's package ``prometheus``, or ``LAB_PROMETHEUS``) scraping every proxy's admin
``/stats/prometheus``, started as a lab process (pidfile, log) on first use and stopped by ``lab.down()``.

On a cluster, Istio's addon (samples/addons/prometheus.yaml) scrapes each sidecar's merged metrics port, where
the stats filter already names the counters ``istio_requests_total``, ``istio_tcp_sent_bytes_total``...
Here the sidecars count them as ``envoy_istiolocal_requests_total``... (counters.py), so the scrape renames
them and turns empty labels into ``unknown`` (what Istio's stats filter reports), and PromQL written for
Istio runs unchanged. Only the lab's counters are scraped (``filter=istiolocal``): the lesson's queries
need nothing else, and scraping every Envoy stat of every proxy each interval would cost this 2-core
machine more than the lesson.

The targets are static (scraped from the first interval on; file_sd would hand them over only after its
5 s update delay); when the proxies change, the config is rewritten and reloaded (``/-/reload``). Its
pidfile is in ``prometheus/run``, apart from the mesh's processes, which ``up()`` reconciles (it would stop
a process it does not know); ``LocalLab.down()`` stops it too."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from labkit.errors import BackendError, LabError
from labkit.files import write_atomic
from labkit.local import processes
from labkit.metrics import LABELS, REQUESTS

if TYPE_CHECKING:
    from labkit.local.topology import Proxy
    from labkit.state import LocalState

NAME = "prometheus"
#: Seconds between scrapes (Istio's addon scrapes every 15 s; a lesson cannot wait that long).
SCRAPE_INTERVAL = 2
READY_TIMEOUT = 30.0
QUERY_TIMEOUT = 10.0
#: The lab's counters in Envoy's Prometheus output (counters.py), and Istio's name for them.
ENVOY_NAMES, ISTIO_NAMES = "envoy_istiolocal_(.+)", "istio_$1"
HOW_TO_GET = (
    "install Prometheus: `sudo apt-get install prometheus` (Debian/Ubuntu; `make system-deps` does it as "
    "root), `brew install prometheus` (macOS), or a release from prometheus.io/download; or set "
    "LAB_PROMETHEUS to the binary. On kind, Istio's Prometheus addon is installed by lab.up()"
)
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def binary() -> str:
    """The ``prometheus`` binary: ``LAB_PROMETHEUS``, else the one on PATH; LabError saying how to get it."""
    found = os.environ.get("LAB_PROMETHEUS") or shutil.which("prometheus")
    if not found or not Path(found).is_file():
        raise LabError("the prometheus binary was not found", HOW_TO_GET)
    return found


def config(proxies: list[Proxy]) -> dict[str, Any]:
    """prometheus.yml: one job scraping each proxy's admin ``/stats/prometheus`` (the lab's counters)."""
    unknown = [
        {"source_labels": [label], "regex": "", "target_label": label, "replacement": "unknown"}
        for label in LABELS
        if label != "response_code"
    ]
    # a request's only: Istio's TCP series have no response_code label
    unknown.append(
        {
            "source_labels": ["__name__", "response_code"],
            "regex": f"{REQUESTS};",
            "target_label": "response_code",
            "replacement": "unknown",
        }
    )
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL}s", "evaluation_interval": f"{SCRAPE_INTERVAL}s"},
        "scrape_configs": [
            {
                "job_name": "envoy-stats",  # the name of the addon's job for sidecars' Envoy stats
                "metrics_path": "/stats/prometheus",
                "params": {"filter": ["istiolocal"]},
                "static_configs": targets(proxies),
                "metric_relabel_configs": [
                    {
                        "source_labels": ["__name__"],
                        "regex": ENVOY_NAMES,
                        "target_label": "__name__",
                        "replacement": ISTIO_NAMES,
                    },
                    *unknown,
                ],
            }
        ],
    }


def targets(proxies: list[Proxy]) -> list[dict[str, Any]]:
    """The targets: each proxy's stats port (istio-proxy's 15090), labelled with its namespace and pod as the
    addon does."""
    return [
        {
            "targets": [f"127.0.0.1:{p.stats_port}"],
            "labels": {"namespace": p.namespace, "pod": p.id.split("~")[-1].rsplit(".", 1)[0]},
        }
        for p in proxies
    ]


class Prometheus:
    """The lab's Prometheus process in ``state``: its config, data, port, pidfile and log."""

    def __init__(self, state: LocalState) -> None:
        self.state = state
        self.dir = state.root / "prometheus"
        self.run_dir = self.dir / "run"
        self.config_file = self.dir / "prometheus.yml"
        self.port_file = self.dir / "port"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port_file.read_text().strip()}"

    def running(self) -> bool:
        rec = processes.record(self.run_dir, NAME)
        return rec is not None and processes.is_alive(rec) and self.port_file.is_file()

    def _write_config(self, proxies: list[Proxy]) -> bool:
        """Write prometheus.yml for ``proxies``; True if it changed."""
        text = yaml.safe_dump(config(proxies), sort_keys=False)
        if self.config_file.is_file() and self.config_file.read_text() == text:
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config_file, text)
        return True

    def ensure(self, proxies: list[Proxy]) -> str:
        """Start Prometheus unless it runs; its base URL once it answers ``/-/ready``."""
        changed = self._write_config(proxies)
        if self.running():
            if changed:  # a proxy came or went: reload the targets
                reload = urllib.request.Request(f"{self.url}/-/reload", method="POST")
                with _opener.open(reload, timeout=QUERY_TIMEOUT):
                    pass
            return self.url
        argv0 = binary()
        # a fresh TSDB: the series of a former run are of Envoys that are gone (counters restart with them),
        # and Prometheus would still show them for its 5 min lookback, added into every sum
        shutil.rmtree(self.dir / "data", ignore_errors=True)
        port = _free_port()
        write_atomic(self.port_file, str(port))
        argv = [
            argv0,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            "--storage.tsdb.retention.time=2h",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",  # POST /-/reload re-reads the targets
        ]
        rec = processes.start(NAME, argv, pid_dir=self.run_dir, log_file=self.state.log(NAME))
        deadline = time.monotonic() + READY_TIMEOUT
        while not _answers(f"{self.url}/-/ready"):
            if not processes.is_alive(rec) or time.monotonic() > deadline:
                processes.stop([rec], self.run_dir)
                raise BackendError(
                    f"prometheus did not become ready on 127.0.0.1:{port}",
                    f"read its log, {self.state.log(NAME)}",
                )
            time.sleep(0.1)
        self._wait_scraping(len(proxies), deadline)
        return self.url

    def _wait_scraping(self, targets: int, deadline: float) -> None:
        """Until every proxy has been scraped once, so the first query already sees every proxy's
        counters."""
        while len(query(self.url, "up == 1")) < targets:
            if time.monotonic() > deadline:
                raise BackendError(
                    f"prometheus does not scrape all {targets} proxies after {READY_TIMEOUT:.0f} s",
                    f"open {self.url}/targets (each target's error), and its log, {self.state.log(NAME)}",
                )
            time.sleep(0.2)

    def stop(self) -> None:
        rec = processes.record(self.run_dir, NAME)
        if rec is not None:
            processes.stop([rec], self.run_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with _opener.open(url, timeout=1.0) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def query(base: str, promql: str) -> list[dict[str, Any]]:
    """An instant query on Prometheus's HTTP API (``/api/v1/query``): its ``data.result`` list."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with _opener.open(url, timeout=QUERY_TIMEOUT) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 400: the query does not parse; Prometheus says where
        answer = json.loads(exc.read() or b"{}")
        raise LabError(
            f"Prometheus refused the query {promql!r}: {answer.get('error', exc.reason)}",
            "fix the PromQL (its error names the position); Istio's task uses e.g. "
            '`istio_requests_total{destination_service="..."}`',
        ) from None
    except OSError as exc:
        problem = f"cannot reach Prometheus at {base}: {exc}"
        raise BackendError(problem, "run lab.up(), then query again") from None
    return list(answer["data"]["result"])
