"""Process supervision for the local lab: what should run for a topology (the control plane, an app process
per instance, an Envoy per proxy), keeping what runs as wanted and restarting the rest, and waiting until
everything is ready and every proxy ACKed its config. What runs is also read here, for ``lab.status()``,
``lab.proxy_status()`` and ``lab.pod_urls()``: the pidfiles and the OS are the truth, not what was wanted.

Every process is known by a name (``istiod``, ``app.<ns>.<instance>``, ``envoy.<proxy id>``) that also names
its pidfile and its log, and by a spec (a fingerprint of its command, environment and bootstrap): a running
process whose wanted spec changed is restarted, any other is kept.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import psutil
import yaml

from labkit import paths
from labkit.errors import LabError
from labkit.files import write_atomic
from labkit.local import downward, envoy, kubelet, ports, processes, resolve, standin, telemetry
from labkit.local.ports import check_free
from labkit.local.readiness import probe_target
from labkit.local.xds import snapshot, sync
from labkit.state import LocalState, safe_name
from labkit.status import ProxyStatus, Status, WorkloadStatus

if TYPE_CHECKING:
    from labkit.local.topology import Instance, Proxy, Topology
    from labkit.local.translate import ProxyConfig
    from labkit.state import LocalState

#: How long up() waits for every process to become ready (generous: CI machines are slow and shared).
READY_TIMEOUT = 30.0
#: The control plane's process name (pidfile, log, ``lab.status()``).
ISTIOD = "istiod"


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


def _bootstrap_text(proxy: Proxy, xds_socket: Path) -> str:
    return yaml.safe_dump(envoy.bootstrap(proxy, xds_socket), sort_keys=False)


def _ports_of(proxy: Proxy) -> list[int]:
    """The TCP ports ``proxy`` binds (its admin API and outbound listeners are Unix sockets)."""
    return [proxy.stats_port, *proxy.inbound_ports.values(), *proxy.gateway_ports.values()]


def wanted(topo: Topology, state: LocalState) -> dict[str, Wanted]:
    """Every process the lab runs, by name: the control plane, the app instances (with the pod identity the
    kubelet would give them, see downward.py) and one Envoy per proxy."""
    app = str(paths.SERVICE_DIR / "app.py")
    istiod = [sys.executable, "-m", "labkit.local.xds.istiod", str(state.root), str(state.xds_socket)]
    out: dict[str, Wanted] = {ISTIOD: Wanted(istiod, {}, [], _spec(istiod, {}, snapshot.FORMAT))}
    for inst in topo.instances:
        env = downward.environment(inst)
        env.update(standin.environment(topo, inst))
        if inst.app_port is None:  # behind a sidecar: only the sidecar reaches it (app.py, SOCKET)
            env.update(SOCKET=str(inst.app_socket), PYTHONUNBUFFERED="1")
            for sock in inst.tcp_sockets.values():  # one at most (topology.py)
                env["TCP_SOCKET"] = str(sock)
        else:
            env.update(PORT=str(inst.app_port), HOST="127.0.0.1", PYTHONUNBUFFERED="1")
            for port in inst.tcp_ports.values():  # one at most (topology.py)
                env["TCP_PORT"] = str(port)
        if inst.grpc_socket is not None:  # its gRPC probes' port: the stand-in answers grpc.health.v1 there
            env["GRPC_HEALTH_SOCKET"] = str(inst.grpc_socket)
        argv = [sys.executable, app]
        if inst.kubelet_file is not None:  # liveness or startup probes: the pod's kubelet runs the app
            kinds = {"startup": inst.workload.startup, "liveness": inst.workload.liveness}
            env.update(kubelet.environment({k: (p, probe_target(inst, p)) for k, p in kinds.items() if p}))
            argv = [sys.executable, "-m", "labkit.local.kubelet", str(inst.kubelet_file), "--", *argv]
        ports = [] if inst.app_port is None else [inst.app_port, *inst.tcp_ports.values()]
        out[app_name(inst)] = Wanted(argv, env, ports, _spec(argv, env))
    for proxy in topo.proxies.values():
        argv = envoy.command(proxy, proxy.bootstrap_file)
        boot = _bootstrap_text(proxy, state.xds_socket)
        out[envoy_name(proxy)] = Wanted(argv, {}, _ports_of(proxy), _spec(argv, {}, boot))
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

    def any_alive(self) -> bool:
        """Whether one of the lab's processes runs (the lab is up, if perhaps not healthy)."""
        return any(processes.is_alive(r) for r in processes.each_record(self.state.run_dir))

    def to_start(self, topo: Topology, restart: set[str]) -> dict[str, Wanted]:
        """The wanted processes not running as wanted (dead, outdated, or named in ``restart``)."""
        want = wanted(topo, self.state)
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
        every proxy's bootstrap and the control plane's snapshot; start the rest (istiod first, so Envoys
        find it); return once all are ready and every proxy ACKed its config."""
        start = self.to_start(topo, restart)
        want = wanted(topo, self.state)
        processes.stop(
            [r for r in self.records() if r.name in start or r.name not in want], self.state.run_dir
        )
        for inst in topo.instances:  # what a pod's earlier kubelet said is not news about the new one
            if inst.kubelet_file is not None and app_name(inst) in start:
                inst.kubelet_file.unlink(missing_ok=True)
        # the running istiod holds the listener ports (snapshot.held_ports): ours, not a clash
        held = set((self.snapshot() or {}).get("hold", [])) if ISTIOD not in start else set()
        needed = {port: name for name, w in start.items() for port in w.ports if port not in held}
        check_free(needed, self.state.ports)
        self.state.open_sockets()
        proxies = list(topo.proxies.values())
        for proxy in proxies:
            write_atomic(proxy.bootstrap_file, _bootstrap_text(proxy, self.state.xds_socket))
        enc = snapshot.Encoder()
        snap = snapshot.build(proxies, configs, enc, self.snapshot())
        changed = sync.publish(self.state.root, snap, enc)
        if ISTIOD in start:
            self._start(ISTIOD, start.pop(ISTIOD))
            self._wait_loaded(snap, signal_it=False)
        elif changed:
            self._wait_loaded(snap, signal_it=True)
        ports.release()  # istiod holds the new listener ports now; the apps and admin ports are free to bind
        for name, w in start.items():
            self._start(name, w)
        self.wait_ready(topo, configs, set(start))
        sync.wait_acked(self.state.root, snap, list(snap["nodes"]))
        self._wait_settled(proxies)

    def _start(self, name: str, w: Wanted) -> None:
        processes.start(
            name,
            w.argv,
            pid_dir=self.state.run_dir,
            log_file=self.state.log(name),
            env=w.env,
            cwd=paths.ROOT,
            spec=w.spec,
        )

    def push(self, topo: Topology, configs: dict[str, ProxyConfig]) -> None:
        """Serve new ``configs`` (no process restarts): publish, tell istiod, return once every proxy whose
        config changed ACKed it and none of its listeners warms or drains."""
        old = self.snapshot()
        enc = snapshot.Encoder()
        snap = snapshot.build(list(topo.proxies.values()), configs, enc, old)
        if not sync.publish(self.state.root, snap, enc):
            return
        try:
            self._wait_loaded(snap, signal_it=True)
        finally:
            ports.release()
        nodes = sync.changed_nodes(old, snap)
        sync.wait_acked(self.state.root, snap, nodes, old)
        relisten = set(sync.changed_nodes(old, snap, snapshot.LISTENER))
        self._wait_settled([p for p in topo.proxies.values() if snapshot.node_id(p) in relisten])

    def snapshot(self) -> dict | None:
        """The snapshot istiod serves (None before the first up())."""
        return sync.served(self.state.root)

    def _wait_loaded(self, snap: dict, signal_it: bool) -> None:
        """Wait until istiod runs with ``snap`` loaded (SIGHUP it first when ``signal_it``)."""
        rec = processes.record(self.state.run_dir, ISTIOD)
        if rec is None or not processes.is_alive(rec):
            raise LabError(f"{ISTIOD} is not running; lab.up() restarts it.{self.log_tail(ISTIOD)}")
        if signal_it:
            os.kill(rec.pid, signal.SIGHUP)
        deadline = time.monotonic() + READY_TIMEOUT
        while not sync.loaded(self.state.root, rec.pid, snap):
            state = sync.read(self.state.root)
            if state.get("pid") == rec.pid and state.get("error"):
                raise LabError(f"{ISTIOD} refused the new config: {state['error']}")
            if not processes.is_alive(rec):
                raise LabError(f"{ISTIOD} exited while starting.{self.log_tail(ISTIOD)}")
            if time.monotonic() > deadline:
                raise LabError(
                    f"{ISTIOD} did not load {snapshot.snapshot_file(self.state.root)} "
                    f"within {READY_TIMEOUT:.0f} s.{self.log_tail(ISTIOD)}"
                )
            time.sleep(0.005)

    def _wait_settled(self, proxies: list[Proxy]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        pending = list(proxies)
        while pending:
            pending = [p for p in pending if not envoy.settled(p)]
            if pending and time.monotonic() > deadline:
                names = ", ".join(envoy_name(p) for p in pending)
                raise LabError(f"listeners still warming or draining after {READY_TIMEOUT:.0f} s: {names}")
            if pending:
                time.sleep(0.01)

    def wait_ready(self, topo: Topology, configs: dict[str, ProxyConfig], started: set[str]) -> None:
        """Poll until every app answers /healthz and every Envoy is LIVE with its listeners bound. An app run
        by its pod's kubelet is waited for only when ``started`` now: later its kubelet restarts it (a pod
        in back-off holds up no apply, as on a cluster an unchanged pod holds up no rollout)."""
        checks: dict[str, Callable[[], bool]] = {}
        for inst in topo.instances:
            if inst.kubelet_file is not None and app_name(inst) not in started:
                continue
            checks[app_name(inst)] = functools.partial(envoy.http_ok, inst.url("/healthz"), timeout=0.5)
            if "TLS_CERT" in inst.workload.env and inst.app_port is not None:  # HTTPS only (no sidecar):
                checks[app_name(inst)] = functools.partial(_listening, inst.app_port)  # it listens
        for proxy in topo.proxies.values():
            names = [lis["name"] for lis in configs[proxy.id].listeners]
            checks[envoy_name(proxy)] = functools.partial(envoy.ready, proxy, names)
        deadline = time.monotonic() + READY_TIMEOUT
        recs = {r.name: r for r in self.records()}
        kubelets = {app_name(i): i.kubelet_file for i in topo.instances if i.kubelet_file is not None}
        while checks:
            for name, check in list(checks.items()):
                if check():
                    del checks[name]
                    continue
                rec = recs.get(name)
                crashed = name in kubelets and kubelet.crashed(kubelets[name])  # its kubelet restarts it
                if rec is None or not processes.is_alive(rec) or crashed:
                    raise LabError(f"{name} exited while starting.{self.log_tail(name)}")
            if checks and time.monotonic() > deadline:
                tails = "".join(self.log_tail(n) for n in checks)
                raise LabError(f"not ready after {READY_TIMEOUT:.0f} s: {', '.join(checks)}.{tails}")
            if checks:
                time.sleep(0.02)

    def listening(self, names: list[str]) -> list[int]:
        """The 127.0.0.1 TCP ports the running processes ``names`` listen on, as the OS reports them."""
        ports: set[int] = set()
        for rec in self.records():
            proc = processes.process(rec) if rec.name in names else None
            for each in [proc, *proc.children(recursive=True)] if proc is not None else []:  # a pod's kubelet
                conns = each.net_connections("tcp")
                ports |= {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}
        return sorted(ports)

    def control_plane_problems(self) -> list[str]:
        """What ``lab.status()`` says about istiod: not running, or what it could not do."""
        rec = processes.record(self.state.run_dir, ISTIOD)
        if rec is None or not processes.is_alive(rec):
            what = f"process {rec.pid} is not running" if rec else "was never started"
            return [
                f"{ISTIOD} (the control plane): {what} (log: {self.state.log(ISTIOD)}); the proxies keep "
                "serving their last config but no change reaches them; lab.up() restarts it"
            ]
        state = sync.read(self.state.root)
        problems = [f"{ISTIOD}: {state['error']}"] if state.get("error") else []
        if state.get("unheld"):
            problems.append(
                f"{ISTIOD}: another program holds the lab's port(s) {state['unheld']}, so a listener on one "
                "would not bind; stop it, or lab.down() and delete ports.json for new ports"
            )
        return problems

    def status(self, topo: Topology, backend: str) -> Status:
        """Workloads with ready counts (ready while its processes live and its readiness probe last passed:
        ``readiness.update``), restarts, the ingress URL, and each problem with what to do."""
        recs = {r.name: r for r in self.records()}
        if not recs:
            return Status(backend, up=False)
        alive = self.alive()
        problems = []
        for name in [app_name(i) for i in topo.instances] + [envoy_name(p) for p in topo.proxies.values()]:
            if name not in alive:
                rec = recs.get(name)
                what = f"process {rec.pid} is not running" if rec else "was never started"
                problems.append(f"{name}: {what} (log: {self.state.log(name)}); lab.up() restarts it")
        problems += self.control_plane_problems()
        workloads = []
        for wl in topo.workloads:
            insts = [i for i in topo.instances if i.workload is wl]
            ready = sum(
                app_name(i) in alive and (i.proxy is None or envoy_name(i.proxy) in alive) and i.ready
                for i in insts
            )
            restarts = sum(kubelet.restarts(i.kubelet_file) for i in insts if i.kubelet_file is not None)
            workloads.append(
                WorkloadStatus(
                    wl.name, wl.namespace, wl.version, wl.replicas, ready, wl.injected, restarts=restarts
                )
            )
        gw = topo.gateway
        gw_ready = int(envoy_name(gw) in alive)
        workloads.append(WorkloadStatus(gw.workload, gw.namespace, None, 1, gw_ready, False, "(gateway)"))
        port = gw.gateway_ports.get(80) or next(iter(gw.gateway_ports.values()), None)
        return Status(
            backend,
            up=bool(alive),
            workloads=workloads,
            ingress_url=f"http://127.0.0.1:{port}" if port else None,
            problems=problems,
        )

    def proxy_status(self) -> list[ProxyStatus]:
        """Each proxy's sync state as istiod last wrote it (labkit/local/xds/sync.py); all disconnected
        when istiod is not running (what it last wrote is no news: nobody is connected now)."""
        rows = sync.status(self.state.root, self.snapshot())
        if ISTIOD not in self.alive():
            rows = [dataclasses.replace(r, connected=False) for r in rows]
        return rows

    def pod_urls(self, topo: Topology, workload: str) -> list[str]:
        """The TCP ports the processes of ``workload`` (its apps and sidecars) really listen on, read from the
        OS as ``ss -ltnp`` shows them: behind a sidecar only its inbound listeners; the app's own socket and
        the admin and outbound sockets are Unix sockets only the lab's user may open."""
        found = resolve.workload(topo, workload)
        insts = [i for i in topo.instances if i.workload is found]
        names = [app_name(i) for i in insts] + [envoy_name(i.proxy) for i in insts if i.proxy is not None]
        return [f"http://127.0.0.1:{port}/" for port in self.listening(names)]

    def log_tail(self, name: str) -> str:
        log = self.state.log(name)
        lines = telemetry.tail(log, 12)
        return f"\nLast lines of {log}:\n  " + "\n  ".join(lines) if lines else f" (no output in {log})"

    def stop_all(self) -> None:
        """Stop every process of the lab and remove the sockets they leave (Envoy does not unlink its own)."""
        ports.release()
        processes.stop(self.records(), self.state.run_dir)
        for sock in self.state.sock_dir.glob("*.sock"):
            sock.unlink(missing_ok=True)


def _listening(port: int) -> bool:
    """A kubelet tcpSocket probe: something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
