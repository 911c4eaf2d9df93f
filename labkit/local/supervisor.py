"""Process supervision for the local lab: what should run for a topology (an app process per instance, an
Envoy per proxy), keeping what runs as wanted and restarting the rest, and waiting until everything is ready.

Every process is known by a name (``app.<ns>.<instance>``, ``envoy.<proxy id>``) that also names its pidfile
and its log, and by a spec (a fingerprint of its command, environment and bootstrap): a running process whose
wanted spec changed is restarted, any other is kept.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import yaml

from labkit import paths
from labkit.errors import LabError
from labkit.files import write_atomic
from labkit.local import downward, envoy, processes, standin, telemetry
from labkit.local.ports import check_free
from labkit.state import safe_name

if TYPE_CHECKING:
    from labkit.local.topology import Instance, Proxy, Topology
    from labkit.local.translate import ProxyConfig
    from labkit.state import LocalState

#: How long up() waits for every process to become ready (generous: CI machines are slow and shared).
READY_TIMEOUT = 30.0


class Wanted(NamedTuple):
    """One process the lab runs: command, extra environment, the ports it binds, a fingerprint of it all."""

    argv: list[str]
    env: dict[str, str]
    ports: list[int]
    spec: str


def app_name(inst: Instance) -> str:
    return f"app.{inst.workload.namespace}.{inst.name}"


def envoy_name(proxy: Proxy) -> str:
    return f"envoy.{safe_name(proxy.id)}"


def _spec(argv: list[str], env: dict[str, str], extra: str = "") -> str:
    return hashlib.sha256(json.dumps([argv, sorted(env.items()), extra]).encode()).hexdigest()[:16]


def _bootstrap_text(proxy: Proxy) -> str:
    return yaml.safe_dump(envoy.bootstrap(proxy), sort_keys=False)


def _ports_of(proxy: Proxy) -> list[int]:
    return [
        proxy.admin_port,
        *proxy.inbound_ports.values(),
        *proxy.outbound_ports.values(),
        *proxy.gateway_ports.values(),
    ]


def wanted(topo: Topology) -> dict[str, Wanted]:
    """Every process the lab runs, by name: the app instances (with the pod identity the kubelet would give
    them, see downward.py) and one Envoy per proxy."""
    app = str(paths.SERVICE_DIR / "app.py")
    out: dict[str, Wanted] = {}
    for inst in topo.instances:
        env = downward.environment(inst)
        env.update(standin.environment(topo, inst))
        env.update(PORT=str(inst.app_port), HOST="127.0.0.1", PYTHONUNBUFFERED="1")
        for port in inst.tcp_ports.values():  # one at most (topology.py)
            env["TCP_PORT"] = str(port)
        argv = [sys.executable, app]
        ports = [inst.app_port, *inst.tcp_ports.values()]
        out[app_name(inst)] = Wanted(argv, env, ports, _spec(argv, env))
    for proxy in topo.proxies.values():
        argv = envoy.command(proxy, proxy.bootstrap_file)
        out[envoy_name(proxy)] = Wanted(argv, {}, _ports_of(proxy), _spec(argv, {}, _bootstrap_text(proxy)))
    return out


class Supervisor:
    """Starts, keeps, restarts and stops the lab's processes, recorded in the state folder's pidfiles."""

    def __init__(self, state: LocalState) -> None:
        self.state = state

    def records(self) -> list[processes.ProcessRecord]:
        return processes.records(self.state.run_dir)

    def alive(self) -> set[str]:
        """Names of the lab's processes that run now."""
        return {r.name for r in self.records() if processes.is_alive(r)}

    def to_start(self, topo: Topology, restart: set[str]) -> dict[str, Wanted]:
        """The wanted processes not running as wanted (dead, outdated, or named in ``restart``)."""
        want = wanted(topo)
        keep = {
            r.name
            for r in self.records()
            if r.name in want
            and want[r.name].spec == r.spec
            and r.name not in restart
            and processes.is_alive(r)
        }
        return {name: w for name, w in want.items() if name not in keep}

    def reconcile(self, topo: Topology, configs: dict[str, ProxyConfig], restart: set[str]) -> None:
        """Keep what runs as wanted; stop the dead, the outdated, the unknown and those in ``restart``; write
        every proxy's bootstrap and xDS files; start the rest; return once all are ready and applied."""
        start = self.to_start(topo, restart)
        want = wanted(topo)
        processes.stop(
            [r for r in self.records() if r.name in start or r.name not in want], self.state.run_dir
        )
        check_free({port: name for name, w in start.items() for port in w.ports}, self.state.ports)
        proxies = list(topo.proxies.values())
        for proxy in proxies:
            write_atomic(proxy.bootstrap_file, _bootstrap_text(proxy))
        written = envoy.write_configs([(p, configs[p.id]) for p in proxies])
        for name, w in start.items():
            processes.start(
                name,
                w.argv,
                pid_dir=self.state.run_dir,
                log_file=self.state.log(name),
                env=w.env,
                cwd=paths.ROOT,
                spec=w.spec,
            )
        self.wait_ready(topo, configs)
        self.wait_applied(written)

    def wait_applied(self, written: list[envoy.Written]) -> None:
        """Return once every Envoy runs the files just written, so the next request sees the change."""
        rejected = envoy.wait_applied(written)
        if rejected:
            files = ", ".join(str(w.path) for w in rejected)
            proxies = {w.proxy.id: w.proxy for w in rejected}.values()
            tails = "".join(self.log_tail(envoy_name(p)) for p in proxies)
            raise LabError(
                f"Envoy did not apply {files} (rejected, see its log); this is a labkit bug.{tails}"
            )

    def wait_ready(self, topo: Topology, configs: dict[str, ProxyConfig]) -> None:
        """Poll until every app answers /healthz and every Envoy is LIVE with its listeners bound."""
        checks: dict[str, Callable[[], bool]] = {}
        for inst in topo.instances:
            url = f"http://127.0.0.1:{inst.app_port}/healthz"
            checks[app_name(inst)] = functools.partial(envoy.http_ok, url, timeout=0.5)
        for proxy in topo.proxies.values():
            names = [lis["name"] for lis in configs[proxy.id].listeners]
            checks[envoy_name(proxy)] = functools.partial(envoy.ready, proxy, names)
        deadline = time.monotonic() + READY_TIMEOUT
        recs = {r.name: r for r in self.records()}
        while checks:
            for name, check in list(checks.items()):
                if check():
                    del checks[name]
                    continue
                rec = recs.get(name)
                if rec is None or not processes.is_alive(rec):
                    raise LabError(f"{name} exited while starting.{self.log_tail(name)}")
            if checks and time.monotonic() > deadline:
                tails = "".join(self.log_tail(n) for n in checks)
                raise LabError(f"not ready after {READY_TIMEOUT:.0f} s: {', '.join(checks)}.{tails}")
            if checks:
                time.sleep(0.02)

    def log_tail(self, name: str) -> str:
        log = self.state.log(name)
        lines = telemetry.tail(log, 12)
        return f"\nLast lines of {log}:\n  " + "\n  ".join(lines) if lines else f" (no output in {log})"

    def stop_all(self) -> None:
        processes.stop(self.records(), self.state.run_dir)
