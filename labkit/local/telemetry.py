"""What the local proxies report: ``istio_requests_total`` from each Envoy's admin API, and its access log.

The translator has every proxy count requests with Envoy's stats access logger as
``envoy_istiolocal_requests_total{reporter=..., ...}``; here it gets Istio's name back. Envoy writes file
access logs from a buffer flushed every ``envoy.FLUSH_INTERVAL_MS``, so a line shows up that long after its
request: ``access_log`` sleeps two intervals before reading; ``wait_for_lines`` re-reads until an
expected line is there, for callers (the tests) that know what they wait for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

from labkit.errors import LabError
from labkit.local import envoy
from labkit.metrics import RequestCount

if TYPE_CHECKING:
    from labkit.local.topology import Proxy, Topology

ENVOY_NAME = "envoy_istiolocal_requests_total"


def parse_requests_total(text: str) -> list[RequestCount]:
    """The ``istio_requests_total`` series in one proxy's Prometheus text; empty labels become "unknown"."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == ENVOY_NAME:
                labels = {k: (v or "unknown") for k, v in sample.labels.items()}
                out.append(RequestCount(labels, float(sample.value)))
    return out


def requests_total(proxies: Iterable[Proxy]) -> list[RequestCount]:
    """``istio_requests_total`` from every proxy (each counts what it reported, as source or destination)."""
    out: list[RequestCount] = []
    for proxy in proxies:
        out += parse_requests_total(envoy.stats_prometheus(proxy, filter_regex="istiolocal"))
    return out


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file (undecodable bytes replaced; NULs from a truncation dropped)."""
    if lines <= 0 or not path.is_file():
        return []
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        block = 64 * 1024
        data = b""
        while size > 0 and data.count(b"\n") <= lines:
            step = min(block, size)
            size -= step
            f.seek(size)
            data = f.read(step) + data
    text = data.decode("utf-8", errors="replace").replace("\x00", "")
    return text.splitlines()[-lines:]


def access_log(topo: Topology, workload: str, tail_lines: int) -> list[str]:
    """The last ``tail_lines`` lines of ``workload``'s proxy access log (all its replicas, in time order),
    after waiting two flush intervals, so requests that were already answered are in the file."""
    proxies = [p for p in topo.proxies.values() if workload in (p.workload, p.id)]
    if not proxies:
        known = sorted({p.workload for p in topo.proxies.values()})
        raise LabError(
            f"no proxy for workload {workload!r} (workloads without a sidecar have no access log); "
            f"choose one of: {', '.join(known)}"
        )
    time.sleep(2 * envoy.FLUSH_INTERVAL_MS / 1000)
    lines = [line for p in proxies for line in tail(Path(p.access_log), tail_lines)]
    return sorted(lines)[-tail_lines:] if len(proxies) > 1 else lines


def wait_for_lines(
    read: Callable[[], list[str]], predicate: Callable[[list[str]], bool], timeout: float = 2.0
) -> list[str]:
    """Re-read until ``predicate(lines)`` holds or ``timeout`` passes (logs flush on a timer)."""
    deadline = time.monotonic() + timeout
    lines = read()
    while not predicate(lines) and time.monotonic() < deadline:
        time.sleep(envoy.FLUSH_INTERVAL_MS / 1000 / 4)
        lines = read()
    return lines
