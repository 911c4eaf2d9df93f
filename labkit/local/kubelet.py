"""A pod's kubelet on the local backend, for an app with liveness or startup probes: it runs the app as its
child and probes it as the kubelet's prober workers do (kubernetes pkg/kubelet/prober/worker.go), restarting
it as restartPolicy Always does.

- No probe before ``initialDelaySeconds`` from the container's start, then one every ``periodSeconds``, each
  within ``timeoutSeconds``; ``failureThreshold`` failures in a row make a probe fail.
- A startupProbe gates the other probes: until it passes, liveness is not probed and the pod is not ready
  (``serving``); when it fails, the container is killed and restarted.
- A failing livenessProbe kills and restarts the container; so does the app exiting by itself.
- Restarts back off as the kubelet's do (pkg/kubelet/kubelet.go ``backOffPeriod`` 10 s doubling up to
  ``MaxContainerBackOff`` 300 s; the first restart is at once, and a container that ran 10 minutes resets
  it), and are counted (``kubectl get pods``' RESTARTS).
- A kill is SIGTERM, then SIGKILL after ``GRACE`` seconds (terminationGracePeriodSeconds' default).

What it says of the container goes to a JSON file (``LocalState.kubelet_file``) the lab reads. The app is
in this process's group, so the lab's stop (processes.stop signals the group) ends both; on SIGTERM this
kubelet stops the app and exits, never starting another.

Run as ``python -m labkit.local.kubelet <status file> -- <app argv...>`` with the probes in ``PROBES_ENV``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from labkit.files import write_atomic
from labkit.local import probes

#: The env var carrying the probes to run: {"startup"|"liveness": {"probe": Probe JSON, "target": ...}}.
PROBES_ENV = "MESHLAB_KUBELET_PROBES"
#: kubelet's restart back-off: first delay, cap, and how long a container must run to reset it.
BACKOFF, MAX_BACKOFF, BACKOFF_RESET = 10.0, 300.0, 600.0
#: terminationGracePeriodSeconds' default: how long a killed container has to exit before SIGKILL.
GRACE = 30.0
#: How often the loop wakes to look at the app and the clock.
_TICK = 0.05
_SIGNALS = {signal.SIGTERM, signal.SIGINT}
#: How the reason for a restart starts when the app exited by itself (not killed for a probe).
EXITED = "the app exited"


def read(path: Path) -> dict:
    """What the pod's kubelet last wrote ({} before it wrote anything, or without a kubelet)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def serving(path: Path) -> bool:
    """Whether the container runs and its startup probe (if any) passed: only then may it be ready."""
    state = read(path)
    return bool(state.get("running") and state.get("started"))


def crashed(path: Path) -> bool:
    """Whether the app exited by itself and waits for its restart (a crash: its log says why)."""
    state = read(path)
    return not state.get("running") and str(state.get("reason", "")).startswith(EXITED)


def restarts(path: Path) -> int:
    return int(read(path).get("restarts") or 0)


def backoff(waited: float | None, ran: float) -> float:
    """How long to wait before restarting an app that ran ``ran`` seconds, the wait before that run having
    been ``waited`` (None: it never restarted): at once, then 10 s doubling to 300 s; 10 minutes of running
    start it over."""
    if waited is None or ran >= BACKOFF_RESET:
        return 0.0
    return min(MAX_BACKOFF, waited * 2 if waited else BACKOFF)


def environment(checks: dict[str, tuple[probes.Probe, int | Path]]) -> dict[str, str]:
    """The env that hands ``checks`` (probe kind -> probe and where it lands) to the pod's kubelet."""
    spec = {kind: {"probe": p.to_json(), "target": str(t)} for kind, (p, t) in sorted(checks.items())}
    return {PROBES_ENV: json.dumps(spec, sort_keys=True)}


def _checks(raw: str) -> dict[str, tuple[probes.Probe, int | Path]]:
    out: dict[str, tuple[probes.Probe, int | Path]] = {}
    for kind, entry in json.loads(raw).items():
        target = entry["target"]
        where = int(target) if target.isdigit() else Path(target)
        out[kind] = (probes.Probe.from_json(entry["probe"]), where)
    return out


class Kubelet:
    """The prober and restarter of one container (see the module docstring)."""

    def __init__(self, status: Path, argv: list[str], checks: dict[str, tuple[probes.Probe, int | Path]]):
        self.status, self.argv = status, argv
        self.startup, self.liveness = checks.get("startup"), checks.get("liveness")
        self.env = {k: v for k, v in os.environ.items() if k != PROBES_ENV}
        self.restarts, self.stopping = 0, False

    def run(self) -> None:
        waited: float | None = None
        while True:
            child = self._spawn()
            if child is None:
                break
            began = time.monotonic()
            reason = self._watch(child, began)
            self._kill(child)
            if self.stopping:
                break
            self.restarts += 1
            waited = backoff(waited, time.monotonic() - began)
            self._write(running=False, started=False, reason=reason)
            print(f"kubelet: {reason}; restart {self.restarts} in {waited:g} s", flush=True)
            self._sleep(waited)
        self._write(running=False, started=False, reason="stopped")

    def _spawn(self) -> subprocess.Popen | None:
        """Start the app unless a stop arrived. One arriving while it starts is seen by ``_watch`` next,
        which ends it: the app never outlives a stop that came before it joined the group."""
        if self.stopping:
            return None
        # in this process's group: the lab's stop reaches it too
        child = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)
        self._write(running=True, started=self.startup is None, pid=child.pid)
        return child

    def _watch(self, child: subprocess.Popen, began: float) -> str:
        """Probe until the app exits, a probe fails or a stop arrives; why it ended."""
        started = self.startup is None
        failures, due = 0, None
        while not self.stopping:
            if child.poll() is not None:
                return f"{EXITED} with code {child.returncode}"
            check = self.liveness if started else self.startup
            now = time.monotonic()
            if check is not None:
                probe, target = check
                due = began + probe.delay if due is None else due
                if now >= due:
                    due = now + probe.period
                    if probes.once(target, probe):
                        failures = 0
                        if not started:  # startup passed: liveness from now on, on its own schedule
                            started, due = True, None
                            self._write(running=True, started=True, pid=child.pid)
                    else:
                        failures += 1
                        if failures >= probe.failures:
                            what = "liveness" if started else "startup"
                            return f"the {what} probe failed {failures} times in a row"
            time.sleep(_TICK)
        return "stopped"

    def _kill(self, child: subprocess.Popen) -> None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(_TICK)

    def _write(self, *, running: bool, started: bool, pid: int | None = None, reason: str = "") -> None:
        state = {"running": running, "started": started, "restarts": self.restarts, "pid": pid}
        write_atomic(self.status, json.dumps({**state, "reason": reason}))

    def stop(self, *_: object) -> None:
        self.stopping = True


def main(args: list[str]) -> None:
    if len(args) < 3 or args[1] != "--":
        sys.exit("usage: python -m labkit.local.kubelet <status file> -- <app argv...>")
    status = Path(args[0])
    status.parent.mkdir(parents=True, exist_ok=True)
    kubelet = Kubelet(status, args[2:], _checks(os.environ.get(PROBES_ENV, "{}")))
    for sig in _SIGNALS:
        signal.signal(sig, kubelet.stop)
    kubelet.run()


if __name__ == "__main__":
    main(sys.argv[1:])
