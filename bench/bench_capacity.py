"""Capacity of one trainee's lab (printed; not a test): CPU and memory idle, during notebook 05-like traffic
at 200 req/s, and at the peak of a real notebook 05 run; what else a lab holds (inotify instances, ports); and
the sizing rule for a room derived from them ("N trainees per 4-core / 16 GiB node").

    .venv/bin/python bench/bench_capacity.py [--idle 10] [--traffic 20] [--notebook 05-live-traffic-split]

"CPU" is cores used (1.0 = one core busy), summed over the lab's processes (Envoys, apps) and the process
that drives them (this script standing in for the trainee's kernel, or the notebook's real kernel). Run it on
a quiet machine: on a shared one the figures include the neighbours' contention.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

from labkit import paths, scenario
from labkit.backends.local import LocalLab
from labkit.local import processes

NODE_CORES, NODE_GIB, RESERVED_GIB = 4, 16, 2.0  # a room's node; the OS, the hub and JupyterLab's own share
CPU_TARGET = 0.75  # of the node's cores, so a rollout's steps and the live chart keep their timing


class Sampler:
    """Sums CPU time and RSS over a set of processes (asked afresh at each sample) while it runs."""

    def __init__(self, procs, interval: float = 0.5):
        self.procs, self.interval = procs, interval
        self.peak_rss = 0
        self.rss: list[int] = []
        self.totals: list[tuple[float, float]] = []  # (time, CPU seconds used so far)
        self._stop = threading.Event()
        self._cpu: dict[int, float] = {}  # pid -> last cpu seconds seen
        self._cpu0: dict[int, float] = {}

    def _sample(self) -> None:
        rss = 0
        for proc in self.procs():
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    self._cpu[proc.pid] = times.user + times.system
                    self._cpu0.setdefault(proc.pid, 0.0 if self._started else self._cpu[proc.pid])
            except psutil.Error:
                continue
        self.rss.append(rss)
        used = sum(self._cpu[p] - self._cpu0.get(p, 0.0) for p in self._cpu)
        self.totals.append((time.monotonic(), used))
        self.peak_rss = max(self.peak_rss, rss)

    def __enter__(self) -> Sampler:
        self._started = False
        self._sample()  # the processes already running count from now, new ones from their start
        self._started = True
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()
        self._own = time.thread_time()  # the sampler's own CPU: not the lab's, subtracted below

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
        self.seconds = time.monotonic() - self.t0

    @property
    def cores(self) -> float:
        used = sum(self._cpu[p] - self._cpu0.get(p, 0.0) for p in self._cpu) - self._own
        return max(used, 0.0) / self.seconds

    @property
    def peak_cores(self) -> float:
        """The busiest sampling interval (the sampler's own CPU included: a small overestimate)."""
        pairs = zip(self.totals, self.totals[1:], strict=False)
        return max(((c1 - c0) / (t1 - t0) for (t0, c0), (t1, c1) in pairs if t1 > t0), default=0.0)

    @property
    def mean_rss(self) -> float:
        return sum(self.rss) / len(self.rss)


def lab_processes(state: Path):
    """The lab's processes (from its pidfiles) plus this process and its children (the notebook's kernel)."""

    def procs() -> list[psutil.Process]:
        me = psutil.Process()
        out = {me.pid: me} | {c.pid: c for c in me.children(recursive=True)}
        for rec in processes.records(state / "run"):
            with contextlib.suppress(psutil.Error):
                out.setdefault(rec.pid, psutil.Process(rec.pid))
        return list(out.values())

    return procs


def inotify_instances(procs: list[psutil.Process]) -> int:
    count = 0
    for proc in procs:
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                count += os.readlink(f"/proc/{proc.pid}/fd/{fd}") == "anon_inode:inotify"
    return count


def listening_ports(procs: list[psutil.Process]) -> int:
    pids = {p.pid for p in procs}
    return sum(1 for c in psutil.net_connections("tcp") if c.pid in pids and c.status == psutil.CONN_LISTEN)


def run_notebook(name: str, state: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(paths.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    os.environ["LAB_STATE"] = str(state)  # the kernel inherits it: the same lab as the phases before
    NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(paths.NOTEBOOKS)}}).execute()


def _sysctl(name: str) -> int:
    try:
        return int(Path(f"/proc/sys/fs/inotify/{name}").read_text())
    except (OSError, ValueError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--traffic", type=float, default=20.0)
    parser.add_argument("--notebook", default="05-live-traffic-split")
    args = parser.parse_args()
    gib = 2**30
    with tempfile.TemporaryDirectory(prefix="meshlab-capacity-") as tmp:
        state = Path(tmp) / "state"
        lab = LocalLab(state=state)
        procs = lab_processes(state)
        try:
            lab.up()
            lab.ensure("canary-90-10")
            time.sleep(2)  # let start-up settle
            with Sampler(procs) as idle:
                time.sleep(args.idle)
            with Sampler(procs) as busy:
                result = lab.send(scenario.URL, duration=args.traffic, qps=200, progress=False)
            achieved = len(result.outcomes) / busy.seconds
            held = procs()
            inotify, ports = inotify_instances(held), listening_ports(held)
            lab_only = len(processes.records(state / "run"))
            with Sampler(procs) as notebook:
                run_notebook(args.notebook, state)
        finally:
            lab.down()

    print(f"one trainee's lab on the local backend ({lab_only} processes: Envoys and apps, plus the kernel)")
    print(f"{'phase':<34}{'CPU mean':>10}{'CPU peak':>10}{'RSS mean':>10}{'RSS peak':>10}")
    rows = [
        ("idle (canary checkpoint)", idle),
        (f"200 req/s for {args.traffic:g} s ({achieved:.0f} achieved)", busy),
        (f"notebook {args.notebook} ({notebook.seconds:.0f} s)", notebook),
    ]
    for label, s in rows:
        memory = f"{s.mean_rss / gib:>9.2f}G{s.peak_rss / gib:>9.2f}G"
        print(f"{label:<34}{s.cores:>10.2f}{s.peak_cores:>10.2f}{memory}")
    max_instances, max_watches = _sysctl("max_user_instances"), _sysctl("max_user_watches")
    print(f"inotify instances held by one lab: {inotify} (this host: max_user_instances {max_instances}, ")
    print(f"  max_user_watches {max_watches}); 127.0.0.1 ports listening: {ports}")

    peak_gib = max(notebook.peak_rss, busy.peak_rss) / gib
    by_memory = math.floor((NODE_GIB - RESERVED_GIB) / peak_gib)
    by_cpu_all_busy = math.floor(NODE_CORES * CPU_TARGET / busy.cores)
    by_cpu_notebook = math.floor(NODE_CORES * CPU_TARGET / notebook.cores)
    by_inotify = math.floor(max_instances / inotify) if inotify else None
    print(
        f"sizing, per {NODE_CORES}-core / {NODE_GIB} GiB node ({RESERVED_GIB:g} GiB for the OS and the hub, "
        f"CPU to {CPU_TARGET:.0%}):"
    )
    print(f"  memory at the peak: {by_memory} trainees")
    print(f"  CPU, everyone in notebook {args.notebook} at once: {by_cpu_notebook} trainees")
    print(f"  CPU, everyone streaming 200 req/s at the same moment: {by_cpu_all_busy} trainees")
    if by_inotify is not None:
        print(f"  inotify, all labs under one uid (Kubernetes pods as jovyan): {by_inotify} labs per node")
    print(f"  rule: {min(by_memory, by_cpu_notebook)} trainees per node (the smaller of memory and CPU)")


if __name__ == "__main__":
    main()
