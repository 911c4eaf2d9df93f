"""Figures for the local control plane at scale (printed; not a test): for 10, 30, 60 and 100 sidecars, the
time up() takes to start them all, memory per idle sidecar (RSS, and what it really costs: private memory and
PSS, since every Envoy maps the same binary), the push latency from ``apply`` of a weight change to the last
proxy's ACK (median and max; and the control plane's part, from building the snapshot to the last ACK,
without validation and translation), istiod's CPU per push, and the machine's load average (other jobs
slow every figure).

    .venv/bin/python bench/bench_xds.py [--sidecars 10 30 60 100] [--pushes 9]

The sidecars are replicas of currency-converter-v1 (plus the client's and v2's); a weight change rewrites
every sidecar's route to the service (RDS), so each push reaches all of them.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from labkit import manifests, paths
from labkit.backends.local import LocalLab
from labkit.local import applied as applied_state
from labkit.local import processes
from labkit.local.supervisor import ISTIOD

MESH = paths.CLUSTER_CONFIG / "mesh"
WEIGHTS = [MESH / f"virtual-service-currency-converter-{w}.yaml" for w in ("50-50", "90-10")]


def _deployment(replicas: int) -> dict:
    docs = yaml.safe_load_all((paths.APPS / "currency-converter.yaml").read_text())
    found = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-v1"))
    found = copy.deepcopy(found)
    found["spec"]["replicas"] = replicas
    return found


def _memory(lab: LocalLab) -> tuple[float, float, float]:
    """Mean RSS, private (USS) and PSS of the lab's Envoys, in MB."""
    rows = []
    for rec in processes.records(lab.files.run_dir):
        if rec.name.startswith("envoy.") and processes.is_alive(rec):
            full = psutil.Process(rec.pid).memory_full_info()
            rows.append((full.rss, full.uss, full.pss))
    return tuple(statistics.mean(col) / 2**20 for col in zip(*rows, strict=True))  # type: ignore[return-value]


def run(sidecars: int, pushes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-xds-") as tmp:
        lab = LocalLab(state=Path(tmp))
        try:
            applied = manifests.load(_deployment(sidecars - 2))  # the client and v2 have one sidecar each
            lab._save_applied(applied)  # as if applied before: up() starts every sidecar at once
            # validated once per apps version, not part of a usual up()
            applied_state.validate_apps(applied_state.apps(applied), lab.files.apps_validated)
            start = time.monotonic()
            lab.up()
            up_s = time.monotonic() - start
            lab.apply(MESH / "destination-rule-currency-converter.yaml")
            lab.apply(WEIGHTS[1])
            assert len(lab.proxy_status()) == sidecars + 1  # and the gateway
            time.sleep(2)  # idle
            rss, uss, pss = _memory(lab)
            rec = processes.record(lab.files.run_dir, ISTIOD)
            assert rec is not None
            istiod = psutil.Process(rec.pid)
            cpu0 = sum(istiod.cpu_times()[:2])
            latencies, pushing = [], []
            push = lab._procs.push

            def timed(*args: Any) -> None:  # the control plane's part: snapshot -> the last ACK
                start = time.monotonic()
                push(*args)
                pushing.append(time.monotonic() - start)

            setattr(lab._procs, "push", timed)  # noqa: B010 (a bench-only wrapper)
            for i in range(pushes):
                start = time.monotonic()
                lab.apply(WEIGHTS[i % 2])  # returns once every sidecar ACKed
                latencies.append(time.monotonic() - start)
            cpu = (sum(istiod.cpu_times()[:2]) - cpu0) / pushes
            assert all(r.synced for r in lab.proxy_status())
            print(
                f"{sidecars:4d} sidecars: up() {up_s:6.1f} s | per sidecar RSS {rss:4.0f} MB,"
                f" private {uss:4.1f} MB, PSS {pss:4.1f} MB | apply -> last ACK median"
                f" {statistics.median(latencies) * 1000:5.0f} ms, max {max(latencies) * 1000:5.0f} ms"
                f" (of which snapshot -> last ACK {statistics.median(pushing) * 1000:4.0f} ms)"
                f" | istiod CPU {cpu * 1000:4.0f} ms/push | load average {os.getloadavg()[0]:.1f}"
            )
        finally:
            lab.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sidecars", type=int, nargs="+", default=[10, 30, 60, 100])
    parser.add_argument("--pushes", type=int, default=9)
    args = parser.parse_args()
    for n in args.sidecars:
        run(n, args.pushes)


if __name__ == "__main__":
    main()
