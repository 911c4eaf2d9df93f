"""Refuse a topology this machine cannot run, before anything starts: each new Envoy and app needs memory and
threads (the per-user thread limit is shared by every process of the user); past a limit, processes fail to
start and leave a lab half up, so this check names the Deployment instead.

Envoys get their config over ADS (labkit/local/xds) and watch no file, so they hold no inotify instance
(file-xDS took 5 per Envoy, and ``fs.inotify.max_user_instances``, 128 by default, capped a user at ~25);
``inotify_held`` stays to measure that (tests, bench).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from labkit.errors import CapacityError
from labkit.local.supervisor import app_name, envoy_name

if TYPE_CHECKING:
    from labkit.local.topology import Topology, Workload

#: Resident memory and threads per process, measured on this lab's processes (Envoy --concurrency 1: 68 MiB,
#: 7 threads; the sample app under CPython: 36 MiB, 1 thread; a pod's kubelet, kubelet.py, with grpc loaded:
#: 42 MiB, 1 thread, counted as one more app process), rounded up.
MEMORY_PER_ENVOY = 72 * 2**20
MEMORY_PER_APP = 40 * 2**20
THREADS_PER_ENVOY = 8
THREADS_PER_APP = 2


@dataclass(frozen=True)
class Limits:
    """This machine's limits; a field given here replaces what the machine says (tests lower them)."""

    memory_bytes: int | None = None
    threads: int | None = None

    def memory(self) -> int:
        return self.memory_bytes if self.memory_bytes is not None else psutil.virtual_memory().available

    def thread_limit(self) -> int | None:
        if self.threads is not None:
            return self.threads
        soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)  # counts threads, per user
        return None if soft == resource.RLIM_INFINITY else soft


def inotify_held(proc: Path) -> int:
    """The inotify instances the process ``/proc/<pid>`` holds (0 once it exited or when not ours to read)."""
    try:
        return sum(_link(fd) == "anon_inode:inotify" for fd in (proc / "fd").iterdir())
    except OSError:
        return 0


def _link(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:  # closed meanwhile
        return ""


def threads_in_use() -> int:
    uid, count = os.getuid(), 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        uids, threads = proc.info["uids"], proc.info["num_threads"]
        if uids is not None and uids.real == uid and threads:
            count += threads
    return count


def check(topo: Topology, running: set[str], limits: Limits) -> None:
    """Raise CapacityError when the processes ``topo`` adds to those ``running`` would pass a limit; the
    message names the Deployment that adds the most, its count and the limit."""
    new_envoys = [p for p in topo.proxies.values() if envoy_name(p) not in running]
    new_apps = [i for i in topo.instances if app_name(i) not in running]
    if not new_envoys and not new_apps:
        return
    added: dict[int, int] = {}
    for inst in new_apps:
        added[id(inst.workload)] = added.get(id(inst.workload), 0) + 1
    biggest: Workload | None = max(topo.workloads, key=lambda w: added.get(id(w), 0), default=None)
    if biggest is None or not added.get(id(biggest)):  # only the gateway is new
        culprit, what_to_do = "the ingress gateway", "stop other labs"
    else:
        culprit = f"deployment/{biggest.name} ({biggest.namespace}) with {biggest.replicas} replica(s)"
        what_to_do = f"lower spec.replicas of deployment/{biggest.name}"

    pythons = len(new_apps) + sum(i.kubelet_file is not None for i in new_apps)  # a pod's kubelet is one more
    memory = len(new_envoys) * MEMORY_PER_ENVOY + pythons * MEMORY_PER_APP
    available = limits.memory()
    if memory > available:
        raise CapacityError(
            f"{culprit} would start {len(new_envoys) + pythons} more processes, needing about "
            f"{memory // 2**20} MiB; this machine has {available // 2**20} MiB available. Nothing was "
            "started or stopped",
            f"{what_to_do}, or free memory",
        )
    thread_limit = limits.thread_limit()
    if thread_limit is not None:
        threads = len(new_envoys) * THREADS_PER_ENVOY + pythons * THREADS_PER_APP
        used = threads_in_use()
        if used + threads > thread_limit:
            raise CapacityError(
                f"{culprit} would start {len(new_envoys) + pythons} more processes, needing about "
                f"{threads} threads; this user runs {used} of its limit of {thread_limit} (ulimit -u). "
                "Nothing was started or stopped",
                f"{what_to_do}, or raise `ulimit -u`",
            )
