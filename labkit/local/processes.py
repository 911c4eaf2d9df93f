"""Local processes with pidfiles, so any Python kernel can find, check and stop a lab an earlier one started.

A pidfile records pid + create_time + cmdline: a process only counts as ours when the pid AND its start time
match, so a stop never signals an unrelated process that happens to reuse the pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import psutil

from labkit.files import write_atomic

#: The mode of pidfiles and logs: the lab's user only.
PRIVATE = 0o600
#: psutil rounds create_time; two readings of the same process differ by far less than this.
_SAME_START = 0.05
#: Popen handles of the processes this kernel started, so they are reaped (no zombies) when they exit.
_children: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """What a pidfile holds about one started process."""

    name: str
    pid: int
    create_time: float
    cmdline: list[str]
    log: str
    spec: str  # a fingerprint of argv + env: up() restarts a running process whose wanted spec changed


def _pidfile(pid_dir: Path, name: str) -> Path:
    return pid_dir / f"{name}.json"


def start(
    name: str,
    argv: Sequence[str],
    *,
    pid_dir: Path,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    spec: str = "",
) -> ProcessRecord:
    """Start ``argv`` in its own session, output appended to ``log_file``, and write its pidfile (both
    0600: a log shows the lab's requests, a pidfile which processes to signal)."""
    pid_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE)
    os.fchmod(fd, PRIVATE)  # a log an older labkit created 0644
    with open(fd, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,  # own process group: a Ctrl-C in the notebook does not hit the lab
            umask=0o077,  # what it creates (an app's socket, Envoy's access log) is the lab's user's only
        )
    _children[proc.pid] = proc
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:  # exited at once; the caller's readiness check reports it with the log
        create_time = 0.0
    record = ProcessRecord(name, proc.pid, create_time, list(argv), str(log_file), spec)
    write_atomic(_pidfile(pid_dir, name), json.dumps(asdict(record)), PRIVATE)
    return record


def records(pid_dir: Path) -> list[ProcessRecord]:
    """Every pidfile in ``pid_dir`` (alive or not), sorted by name."""
    return list(each_record(pid_dir))


def each_record(pid_dir: Path) -> Iterator[ProcessRecord]:
    """``records``, each read when asked for: ``any(is_alive(r) for r in each_record(d))`` reads one
    pidfile of a running lab, not its 200."""
    for path in sorted(pid_dir.glob("*.json")) if pid_dir.is_dir() else []:
        found = _read(path)
        if found is not None:
            yield found


def record(pid_dir: Path, name: str) -> ProcessRecord | None:
    """The pidfile of ``name``, if any."""
    path = _pidfile(pid_dir, name)
    return _read(path) if path.is_file() else None


def _read(path: Path) -> ProcessRecord | None:
    known = {f.name for f in fields(ProcessRecord)}
    try:
        data = json.loads(path.read_text())
        # name, pid and create_time identify a process; a pidfile from an older labkit may lack the rest, and
        # dropping it would orphan a process that is still running.
        defaults = {"cmdline": [], "log": "", "spec": ""}
        return ProcessRecord(**defaults | {k: data[k] for k in known & set(data)})
    except FileNotFoundError:  # removed since it was listed: its process was stopped
        return None
    except (ValueError, TypeError):
        path.unlink(missing_ok=True)  # a torn or foreign file: it cannot identify a process
        return None


def process(rec: ProcessRecord) -> psutil.Process | None:
    """The live process ``rec`` describes, or None if it exited or the pid now belongs to someone else."""
    child = _children.get(rec.pid)
    if child is not None and child.poll() is not None:  # our own child: reap it
        _children.pop(rec.pid, None)
        return None
    try:
        proc = psutil.Process(rec.pid)
        if abs(proc.create_time() - rec.create_time) > _SAME_START or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_alive(rec: ProcessRecord) -> bool:
    """True while the very process ``rec`` started is running (not a zombie, not a reused pid)."""
    return process(rec) is not None


def stop(recs: Iterable[ProcessRecord], pid_dir: Path, timeout: float = 5.0) -> None:
    """SIGTERM each process group, wait up to ``timeout`` s, SIGKILL what is left; remove the pidfiles."""
    recs = list(recs)
    procs = [p for p in (process(r) for r in recs) if p is not None]
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        _signal(proc, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=timeout)
    for rec in recs:
        child = _children.pop(rec.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=timeout)
        _pidfile(pid_dir, rec.name).unlink(missing_ok=True)


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    """Signal the verified process and its process group (it leads its own session)."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass
