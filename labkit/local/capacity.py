"""Refuse a topology this machine cannot run, before anything starts: each new Envoy holds inotify instances
(it watches its config folders), memory and threads, and the per-user inotify limit
(``fs.inotify.max_user_instances``, 128 by default) is shared by every process of the user. Past it, Envoy
aborts at start (``inotify_fd_ >= 0``), leaving a lab half up; this check names the Deployment instead.
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

#: inotify instances one Envoy holds: its watched cfg/ and rds/ folders plus the dispatcher's own watchers
#: (measured with Envoy 1.40: 5 for a sidecar, 4-2 for fewer watched folders; the larger figure is used).
INOTIFY_PER_ENVOY = 5
#: Resident memory and threads per process, measured on this lab's processes (Envoy --concurrency 1: 68 MiB,
#: 7 threads; the sample app under CPython: 36 MiB, 1 thread), rounded up.
MEMORY_PER_ENVOY = 72 * 2**20
MEMORY_PER_APP = 40 * 2**20
THREADS_PER_ENVOY = 8
THREADS_PER_APP = 2
INOTIFY_LIMIT_FILE = Path("/proc/sys/fs/inotify/max_user_instances")


@dataclass(frozen=True)
class Limits:
    """This machine's limits; a field given here replaces what the machine says (tests lower them)."""

    inotify_instances: int | None = None
    memory_bytes: int | None = None
    threads: int | None = None

    def inotify(self) -> int | None:
        if self.inotify_instances is not None:
            return self.inotify_instances
        try:
            return int(INOTIFY_LIMIT_FILE.read_text())
        except (OSError, ValueError):
            return None  # not Linux: no such limit to meet

    def memory(self) -> int:
        return self.memory_bytes if self.memory_bytes is not None else psutil.virtual_memory().available

    def thread_limit(self) -> int | None:
        if self.threads is not None:
            return self.threads
        soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)  # counts threads, per user
        return None if soft == resource.RLIM_INFINITY else soft


def inotify_in_use() -> int:
    """The inotify instances this user's processes hold now (fd links to ``anon_inode:inotify``)."""
    uid = os.getuid()
    return sum(inotify_held(proc) for proc in Path("/proc").glob("[0-9]*") if _owner(proc) == uid)


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


def _owner(proc: Path) -> int | None:
    try:
        return proc.stat().st_uid
    except OSError:
        return None


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

    inotify_limit = limits.inotify()
    if inotify_limit is not None and new_envoys:
        need, used = len(new_envoys) * INOTIFY_PER_ENVOY, inotify_in_use()
        if used + need > inotify_limit:
            raise CapacityError(
                f"{culprit} would start {len(new_envoys)} more Envoy(s), needing about {need} inotify "
                f"instances; this user already holds {used} of fs.inotify.max_user_instances = "
                f"{inotify_limit}. Nothing was started or stopped",
                f"{what_to_do}, stop other labs, or raise the limit "
                f"(`sudo sysctl fs.inotify.max_user_instances={max(1024, 2 * (used + need))}`)",
            )
    memory = len(new_envoys) * MEMORY_PER_ENVOY + len(new_apps) * MEMORY_PER_APP
    available = limits.memory()
    if memory > available:
        raise CapacityError(
            f"{culprit} would start {len(new_envoys) + len(new_apps)} more processes, needing about "
            f"{memory // 2**20} MiB; this machine has {available // 2**20} MiB available. Nothing was "
            "started or stopped",
            f"{what_to_do}, or free memory",
        )
    thread_limit = limits.thread_limit()
    if thread_limit is not None:
        threads = len(new_envoys) * THREADS_PER_ENVOY + len(new_apps) * THREADS_PER_APP
        used = threads_in_use()
        if used + threads > thread_limit:
            raise CapacityError(
                f"{culprit} would start {len(new_envoys) + len(new_apps)} more processes, needing about "
                f"{threads} threads; this user runs {used} of its limit of {thread_limit} (ulimit -u). "
                "Nothing was started or stopped",
                f"{what_to_do}, or raise `ulimit -u`",
            )
