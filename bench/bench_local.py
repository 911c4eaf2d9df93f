"""Figures for the local backend (printed; not a test): up() time, latency the sidecars add at fixed rates,
Envoy CPU and memory per 1,000 rps beside Istio's published sidecar cost, config swap -> effect time.

    .venv/bin/python bench/bench_local.py [--seconds 10] [--rates 200 500]

Load comes from `hey` (Debian package `hey`) at a fixed rate when it is on PATH, else from labkit.traffic.
Run it on a quiet machine: on a shared one the figures mostly measure the neighbours.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from labkit import paths, traffic
from labkit.local import processes
from labkit.local.backend import LocalLab
from labkit.local.supervisor import envoy_name
from labkit.local.topology import Proxy

URL_PATH = "/convert?from=NOK&to=EUR&amount=100"
LOGICAL = f"http://currency-converter.payments-prod:8080{URL_PATH}"
ISTIO_VCPU, ISTIO_MB = 0.20, 60  # istio.io "Performance and scalability": per sidecar, per 1,000 rps


def percentiles(latencies: list[float]) -> dict[int, float]:
    """p50/p90/p99 in milliseconds."""
    qs = statistics.quantiles(latencies, n=100, method="inclusive")
    return {p: qs[p - 1] * 1000 for p in (50, 90, 99)}


def load(url: str, host: str | None, rate: int, seconds: float) -> list[float]:
    """Latencies (s) of ``rate`` rps for ``seconds`` against ``url``, from hey if installed, else Python."""
    hey = shutil.which("hey")
    if hey:
        workers = 10
        argv = [hey, "-z", f"{seconds}s", "-c", str(workers), "-q", str(rate / workers), "-o", "csv"]
        if host:
            argv += ["-host", host]
        out = subprocess.run(
            argv + [url], capture_output=True, text=True, timeout=seconds + 60, check=True
        ).stdout
        rows = list(csv.DictReader(io.StringIO(out)))
        return [float(r["response-time"]) for r in rows if r["status-code"] == "200"]
    result = traffic.send(
        lambda u: (u, {"Host": host} if host else {}), url, duration=seconds, qps=rate, concurrency=16
    )
    return [o.latency for o in result.outcomes if o.status == 200]


def envoy_process(lab: LocalLab, proxy: Proxy) -> psutil.Process:
    rec = processes.record(lab.files.run_dir, envoy_name(proxy))
    assert rec is not None
    return psutil.Process(rec.pid)


def bench_up(state: Path) -> LocalLab:
    lab = LocalLab(state=state)
    for label in ("first up() (validates the apps)", "up() of a running lab (reattach)"):
        start = time.monotonic()
        lab.up()
        print(f"{label:44s} {time.monotonic() - start:6.2f} s")
    lab.down()
    start = time.monotonic()
    lab.up()
    print(f"{'up() after down() (apps already validated)':44s} {time.monotonic() - start:6.2f} s")
    return lab


def bench_latency(lab: LocalLab, rates: list[int], seconds: float) -> None:
    lab.ensure("canary-90-10")
    lab.set_weights("currency-converter", v1=100, v2=0)
    topo = lab._current()
    assert topo is not None
    v1 = next(i for i in topo.instances if i.workload.name == "currency-converter-v1")
    client = next(p for p in topo.sidecars if p.workload == "client")
    server = v1.proxy
    assert server is not None
    direct = f"http://127.0.0.1:{v1.app_port}{URL_PATH}"
    mesh = f"http://127.0.0.1:{client.outbound_ports[8080]}{URL_PATH}"
    print(f"\nlatency, {seconds:.0f} s per run ({'hey' if shutil.which('hey') else 'labkit.traffic'}), ms")
    print(f"{'rate':>6} {'path':28s} {'p50':>7} {'p90':>7} {'p99':>7}")
    envoys = [envoy_process(lab, client), envoy_process(lab, server)]
    for rate in rates:
        base = percentiles(load(direct, None, rate, seconds))
        cpu0 = [sum(p.cpu_times()[:2]) for p in envoys]
        through = percentiles(load(mesh, "currency-converter.payments-prod:8080", rate, seconds))
        cpu = [sum(p.cpu_times()[:2]) - c for p, c in zip(envoys, cpu0, strict=True)]
        for name, figs in (("direct to the app", base), ("client+server sidecars, mTLS", through)):
            print(f"{rate:>6} {name:28s} {figs[50]:7.2f} {figs[90]:7.2f} {figs[99]:7.2f}")
        print(
            f"{'':>6} {'added by the two sidecars':28s} "
            + " ".join(f"{through[p] - base[p]:7.2f}" for p in figs)
        )
        for label, proc, used in zip(("client sidecar", "server sidecar"), envoys, cpu, strict=True):
            vcpu = used / seconds / (rate / 1000)
            rss = proc.memory_info().rss / 2**20
            print(
                f"{'':>6} {label:28s} {vcpu:5.2f} vCPU per 1,000 rps (Istio: {ISTIO_VCPU}), "
                f"RSS {rss:5.1f} MB (Istio: {ISTIO_MB} MB)"
            )


def bench_swap(lab: LocalLab, swaps: int = 6) -> None:
    """Time from set_weights() to the first response from the newly weighted version, under 200 rps."""
    outcomes: list[traffic.Outcome] = []
    stream = traffic.Stream(lab.resolver("client"), LOGICAL, qps=200, concurrency=4, on_batch=outcomes.extend)
    applied, effect = [], []
    stream.start()
    try:
        time.sleep(1.0)
        for i in range(swaps):
            target = "v2" if i % 2 == 0 else "v1"
            start = time.monotonic() - stream.started
            lab.set_weights("currency-converter", **{target: 100, ("v1" if target == "v2" else "v2"): 0})
            applied.append(time.monotonic() - stream.started - start)
            time.sleep(1.0)
            first = min(
                (o.t + o.latency for o in outcomes if o.version == target and o.t >= start), default=None
            )
            if first is not None:
                effect.append(first - start)
    finally:
        stream.stop()
    failed = sum(o.failed for o in outcomes)
    print(f"\nconfig swap under 200 rps ({swaps} swaps, {len(outcomes)} requests, {failed} failed)")
    ms = statistics.median(applied) * 1000
    print(f"  set_weights() returned (Envoy runs the new routes): median {ms:.0f} ms")
    if effect:
        ms, worst = statistics.median(effect) * 1000, max(effect) * 1000
        print(
            f"  first response from the new version: median {ms:.0f} ms, max {worst:.0f} ms (target 500 ms)"
        )


def bench_capacity(lab: LocalLab) -> None:
    """What each process really holds, against the estimates capacity.py refuses a topology with."""
    from labkit.local import capacity

    kinds: dict[str, list[tuple[int, float, int]]] = {"envoy": [], "app": []}
    for rec in processes.records(lab.files.run_dir):
        proc = psutil.Process(rec.pid)
        held = capacity.inotify_held(Path(f"/proc/{rec.pid}"))
        kinds[rec.name.split(".")[0]].append((held, proc.memory_info().rss / 2**20, proc.num_threads()))
    estimates = {
        "envoy": (capacity.INOTIFY_PER_ENVOY, capacity.MEMORY_PER_ENVOY, capacity.THREADS_PER_ENVOY),
        "app": (0, capacity.MEMORY_PER_APP, capacity.THREADS_PER_APP),
    }
    print("\ncapacity: measured max per process (estimate used by the check)")
    for kind, rows in kinds.items():
        inotify, rss, threads = (max(col) for col in zip(*rows, strict=True))
        est = estimates[kind]
        print(
            f"  {kind:5} x{len(rows)}: inotify {inotify} ({est[0]}), "
            f"RSS {rss:.0f} MB ({est[1] / 2**20:.0f}), threads {threads} ({est[2]})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rates", type=int, nargs="+", default=[200, 500])
    args = parser.parse_args()
    print(f"Mesh Lab local backend bench; repository {paths.ROOT}; {psutil.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="meshlab-bench-") as state:
        lab = bench_up(Path(state))
        try:
            bench_capacity(lab)
            bench_latency(lab, args.rates, args.seconds)
            bench_swap(lab)
        finally:
            lab.down()


if __name__ == "__main__":
    main()
