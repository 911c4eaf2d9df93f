"""Figures for the local backend (printed; not a test): up() time, latency the sidecars add at fixed rates,
Envoy CPU and memory per 1,000 rps beside Istio's published sidecar cost, config swap -> effect time.

    .venv/bin/python bench/bench_local.py [--seconds 10] [--rates 200 500] [--repeats 3]

Latency and proxy cost are notebook 11's measurement (labkit.cost): labkit.traffic at a fixed rate, open loop,
straight to the app, through the server's sidecar, and through both sidecars with mTLS.
Run it on a quiet machine: on a shared one the figures mostly measure the neighbours.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from labkit import cost, paths, traffic
from labkit.backends.local import LocalLab
from labkit.local import capacity, processes

URL_PATH = "/convert?from=NOK&to=EUR&amount=100"
LOGICAL = f"http://currency-converter.payments-prod:8080{URL_PATH}"


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


def bench_latency(lab: LocalLab, rates: list[int], seconds: float, repeats: int) -> None:
    """Notebook 11's measurement (labkit.cost: three paths, open loop, each Envoy's CPU and memory)."""
    lab.ensure("canary-90-10")
    lab.set_weights("currency-converter", v1=100, v2=0)
    mode = cost.Mode(fractions=(), repeats=repeats, seconds=seconds, ceiling=max(rates))
    points = cost.run(lab, cost.paths(lab), rates, mode)
    print(f"\n{repeats} rounds of {seconds:g} s per path and rate (labkit.traffic, open loop)")
    for title, rows in (
        ("latency, ms: median [min, max]", cost.latency_rows(points)),
        ("added over no sidecar, ms (paired per round)", cost.added_rows(points)),
        (
            f"each Envoy (Istio: {cost.ISTIO_VCPU_PER_1000_RPS} vCPU, {cost.ISTIO_MB} MB)",
            cost.resource_rows(points),
        ),
    ):
        print(f"\n{title}")
        for row in rows:
            print("  " + "  ".join(f"{k} {v}" for k, v in row.items() if not k.startswith("Istio")))
    for problem in cost.problems(points):
        print(f"  not sound: {problem}")
    lab.ensure("canary-90-10")


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

    kinds: dict[str, list[tuple[int, float, int]]] = {"envoy": [], "app": []}
    for rec in processes.records(lab.files.run_dir):
        if rec.name.split(".")[0] not in kinds:  # istiod: one per lab, measured by bench_xds.py
            continue
        proc = psutil.Process(rec.pid)
        held = capacity.inotify_held(Path(f"/proc/{rec.pid}"))
        kinds[rec.name.split(".")[0]].append((held, proc.memory_info().rss / 2**20, proc.num_threads()))
    estimates = {
        "envoy": (0, capacity.MEMORY_PER_ENVOY, capacity.THREADS_PER_ENVOY),
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
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"Mesh Lab local backend bench; repository {paths.ROOT}; {psutil.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="meshlab-bench-") as state:
        lab = bench_up(Path(state))
        try:
            bench_capacity(lab)
            bench_latency(lab, args.rates, args.seconds, args.repeats)
            bench_swap(lab)
        finally:
            lab.down()


if __name__ == "__main__":
    main()
