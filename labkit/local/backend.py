"""LocalLab: the mesh on this machine. The sample service runs as plain processes, with a real Envoy sidecar
in front of every injected instance and an Envoy ingress gateway, all on 127.0.0.1, configured from the same
Istio YAML as the kind backend.

Everything a new Python kernel needs to find the lab lives in the state folder (``.lab/``): the ports
(allocated once), the CA, pidfiles, logs, the Envoy config and the applied resources. ``up()`` reconciles: it
keeps healthy processes, restarts dead or outdated ones, and rewrites the Envoy config files that changed.

State folder: ``ports.json``, ``applied.yaml`` (Istio objects and re-applied Kubernetes objects),
``apps.validated``, ``ca/`` (root key 0600), ``run/<process>.json`` (pidfiles), ``logs/<process>.log``, and
per proxy ``proxies/<id>/`` with ``bootstrap.yaml``, ``cfg/{cds,lds}.yaml``, ``rds/``, ``certs/``,
``access.log``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import psutil
import yaml

from labkit import manifests, paths
from labkit.errors import BackendError, LabError, PortInUseError, UnsupportedError
from labkit.files import write_atomic
from labkit.lab import Change, Lab, Status, WorkloadStatus
from labkit.local import envoy, processes, telemetry
from labkit.local.ca import LocalCA
from labkit.local.registry import alt_names
from labkit.local.topology import (
    KUBE_KINDS,
    Instance,
    Proxy,
    Topology,
    build_topology,
    ensure_gateway_port,
    safe_name,
)
from labkit.local.translate import ProxyConfig, check_supported, ensure_ports, translate
from labkit.manifests import Resource
from labkit.mesh import MeshSettings, load_mesh_settings

if TYPE_CHECKING:
    from labkit.manifests import Source
    from labkit.metrics import RequestCount
    from labkit.traffic import Resolver

#: How long up() waits for every process to become ready (generous: CI machines are slow and shared).
READY_TIMEOUT = 30.0
#: A port nothing listens on: where a sidecar without a listener for the URL's port sends you (refused).
CLOSED_PORT = 1


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: re-read on every apply


def _is_istio(res: Resource) -> bool:
    return res.group.endswith("istio.io")


class _Ports:
    """The lab's 127.0.0.1 ports, persisted so a new kernel finds the same lab.

    The topology of the apps takes its ports in a fixed call order, so replaying the saved sequence gives it
    the same ports again. Listener ports added later for applied ServiceEntries and Gateways depend on the
    order things were applied, so those are saved per proxy instead and restored as they were.
    """

    def __init__(self, file: Path) -> None:
        self.file = file
        saved = json.loads(file.read_text()) if file.is_file() else {}
        self.ports: list[int] = saved.get("sequence", [])
        self.listeners: dict[str, dict[str, dict[str, int]]] = saved.get("listeners", {})
        self.next = 0

    def __call__(self) -> int:
        if self.next == len(self.ports):
            self.ports.append(self._free())
        self.next += 1
        return self.ports[self.next - 1]

    def _free(self) -> int:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in self.ports:
                return port

    def restore(self, topo: Topology) -> None:
        """Give the proxies their saved extra listener ports; from now on, hand out only new ports."""
        base = set(self.ports[: self.next])
        for proxy in topo.proxies.values():
            saved = self.listeners.get(proxy.id, {})
            for mine, ports in (("outbound", proxy.outbound_ports), ("gateway", proxy.gateway_ports)):
                for port, local in saved.get(mine, {}).items():
                    if local not in base:  # an apps change can hand a saved port to an app: allocate anew
                        ports.setdefault(int(port), local)
        self.next = len(self.ports)

    def save(self, topo: Topology) -> None:
        listeners = {
            p.id: {"outbound": p.outbound_ports, "gateway": p.gateway_ports} for p in topo.proxies.values()
        }
        write_atomic(self.file, json.dumps({"sequence": self.ports, "listeners": listeners}))


class _Wanted(NamedTuple):
    """One process the lab runs: command, extra environment, the ports it binds, a fingerprint of it all."""

    argv: list[str]
    env: dict[str, str]
    ports: list[int]
    spec: str


def _spec(argv: list[str], env: dict[str, str], extra: str = "") -> str:
    return hashlib.sha256(json.dumps([argv, sorted(env.items()), extra]).encode()).hexdigest()[:16]


def _bootstrap_text(proxy: Proxy) -> str:
    return yaml.safe_dump(envoy.bootstrap(proxy), sort_keys=False)


class LocalLab(Lab):
    """The local backend (no Kubernetes, no Docker): see the module docstring."""

    backend = "local"

    def __init__(self, state: Path | None = None) -> None:
        self.state = Path(state) if state is not None else paths.state_dir()
        self.state.mkdir(parents=True, exist_ok=True)
        self._run = self.state / "run"
        self._logs = self.state / "logs"
        self._applied_file = self.state / "applied.yaml"
        self._ports_file = self.state / "ports.json"
        self._topo: Topology | None = None
        self._topo_stamp = (0, 0)
        self._mesh: MeshSettings | None = None

    # --- persisted state -----------------------------------------------------------------------------------

    def _applied(self) -> list[Resource]:
        """Resources applied on top of cluster-config/apps: Istio config, and edited Kubernetes objects."""
        if not self._applied_file.is_file():
            return []
        entries = yaml.load(self._applied_file.read_text(), Loader=_Loader) or []
        return [Resource(body=e["body"], source=e["source"], index=e["index"]) for e in entries]

    def applied(self) -> list[Resource]:
        """What runs now: cluster-config/apps with the trainee's edits, then the applied Istio objects."""
        applied = self._applied()
        return self._apps(applied) + [r for r in applied if _is_istio(r)]

    def _save_applied(self, resources: list[Resource]) -> None:
        entries = [{"source": r.source, "index": r.index, "body": r.body} for r in resources]
        write_atomic(self._applied_file, yaml.safe_dump(entries, sort_keys=False))
        self._topo_stamp = self._stamp()  # the cached topology already matches what was saved

    def _apps(self, applied: list[Resource]) -> list[Resource]:
        """cluster-config/apps/*.yaml, with the Kubernetes objects a trainee re-applied replacing theirs."""
        by_key = {r.key: r for r in manifests.load(paths.APPS)}
        by_key.update({r.key: r for r in applied if not _is_istio(r)})
        return list(by_key.values())

    def _validate_apps(self, apps: list[Resource]) -> None:
        """Validate the apps, skipping it when exactly these were validated before (validation is slow)."""
        digest = hashlib.sha256(json.dumps([r.body for r in apps], sort_keys=True).encode()).hexdigest()
        marker = self.state / "apps.validated"
        if marker.is_file() and marker.read_text() == digest:
            return
        from labkit import validation

        validation.check(apps)
        write_atomic(marker, digest)

    def _topology(self, apps: list[Resource], istio: list[Resource], save: bool = False) -> Topology:
        """The topology with its persisted ports, plus listener ports the applied ``istio`` objects need."""
        ports = _Ports(self._ports_file)
        topo = build_topology(apps, self.state, ports, trust_domain=self._mesh_settings().trust_domain)
        ensure_gateway_port(topo, 80, ports)  # the ingress URL exists from the start, like kind's NodePort
        ports.restore(topo)
        if ensure_ports(istio, topo, ports) or save:
            ports.save(topo)
        return topo

    def _stamp(self) -> tuple[int, int]:
        """Changes whenever the topology may have: ports or applied objects saved (by any kernel)."""
        ports, applied = (
            f.stat().st_mtime_ns if f.is_file() else 0 for f in (self._ports_file, self._applied_file)
        )
        return ports, applied

    def _current(self) -> Topology | None:
        """The lab's topology (rebuilt from the state folder when another kernel changed it), or None if
        never started."""
        if not self._ports_file.is_file():
            return None
        if self._topo is None or self._topo_stamp != self._stamp():
            applied = self._applied()
            self._topo = self._topology(self._apps(applied), [r for r in applied if _is_istio(r)])
            self._topo_stamp = self._stamp()
        return self._topo

    def _mesh_settings(self) -> MeshSettings:
        if self._mesh is None:
            self._mesh = load_mesh_settings()
        return self._mesh

    # --- processes -----------------------------------------------------------------------------------------

    @staticmethod
    def _all_proxies(topo: Topology) -> list[Proxy]:
        return list(topo.proxies.values())

    @staticmethod
    def _app_name(inst: Instance) -> str:
        return f"app.{inst.workload.namespace}.{inst.name}"

    @staticmethod
    def _envoy_name(proxy: Proxy) -> str:
        return f"envoy.{safe_name(proxy.id)}"

    def _wanted(self, topo: Topology) -> dict[str, _Wanted]:
        """Every process the lab runs, by name: the app instances and one Envoy per proxy."""
        app = str(paths.SERVICE_DIR / "app.py")
        out: dict[str, _Wanted] = {}
        for inst in topo.instances:
            env = {str(k): str(v) for k, v in inst.workload.env.items()}
            env.update(PORT=str(inst.app_port), HOST="127.0.0.1", POD_NAME=inst.name, PYTHONUNBUFFERED="1")
            argv = [sys.executable, app]
            out[self._app_name(inst)] = _Wanted(argv, env, [inst.app_port], _spec(argv, env))
        for proxy in self._all_proxies(topo):
            argv = envoy.command(proxy, Path(proxy.dir) / "bootstrap.yaml")
            spec = _spec(argv, {}, _bootstrap_text(proxy))
            out[self._envoy_name(proxy)] = _Wanted(argv, {}, self._ports_of(proxy), spec)
        return out

    @staticmethod
    def _ports_of(proxy: Proxy) -> list[int]:
        return [
            proxy.admin_port,
            *proxy.inbound_ports.values(),
            *proxy.outbound_ports.values(),
            *proxy.gateway_ports.values(),
        ]

    def _check_ports_free(self, ports: dict[int, str]) -> None:
        for port, owner in sorted(ports.items()):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no clash
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise PortInUseError(
                        f"port 127.0.0.1:{port}, which the lab's {owner} needs, is already in use"
                        f"{_holder(port)}. What to do: stop that process, or delete {self._ports_file} "
                        "so the lab picks new ports."
                    ) from None

    # --- lifecycle -----------------------------------------------------------------------------------------

    def up(self) -> Status:
        """Start (or reattach to, or repair) the lab; on any failure, stop everything and raise."""
        try:
            self._reconcile()
        except BaseException:
            self._stop_all()
            raise
        return self.status()

    def _reconcile(self) -> None:
        envoy.binary()  # fail first, with the fix, when Envoy is missing
        applied = self._applied()
        apps = self._apps(applied)
        self._validate_apps(apps)
        istio = [r for r in applied if _is_istio(r)]
        topo = self._topology(apps, istio, save=True)
        configs = translate(istio, topo, self._mesh_settings())
        self._topo, self._topo_stamp = topo, self._stamp()

        ca = LocalCA(self.state / "ca", trust_domain=self._mesh_settings().trust_domain)
        proxies = self._all_proxies(topo)
        reissued = {  # Envoy reads certificate files once: a proxy with a new one restarts
            self._envoy_name(p)
            for p in proxies
            if ca.ensure(p.spiffe, Path(p.cert_file), Path(p.key_file), Path(p.ca_file))
        }
        wanted = self._wanted(topo)

        # Keep what runs as wanted; stop the dead, the outdated, the unknown, and Envoys with a new cert.
        keep, stale = set(), []
        for rec in processes.records(self._run):
            want = wanted.get(rec.name)
            if want and want.spec == rec.spec and rec.name not in reissued and processes.is_alive(rec):
                keep.add(rec.name)
            else:
                stale.append(rec)
        processes.stop(stale, self._run)
        to_start = [name for name in wanted if name not in keep]
        self._check_ports_free({port: name for name in to_start for port in wanted[name].ports})

        for proxy in proxies:
            write_atomic(Path(proxy.dir) / "bootstrap.yaml", _bootstrap_text(proxy))
        written = envoy.write_configs([(p, configs[p.id]) for p in proxies])
        for name in to_start:
            want = wanted[name]
            log = self._logs / f"{name}.log"
            processes.start(
                name, want.argv, pid_dir=self._run, log_file=log, env=want.env, cwd=paths.ROOT, spec=want.spec
            )
        self._wait_ready(topo, configs)
        self._wait_applied(written)

    def _wait_applied(self, written: list[envoy.Written]) -> None:
        """Return once every Envoy runs the files just written, so the next request sees the change."""
        rejected = envoy.wait_applied(written)
        if rejected:
            files = ", ".join(str(w.path) for w in rejected)
            tails = "".join(
                self._log_tail(self._envoy_name(p)) for p in {w.proxy.id: w.proxy for w in rejected}.values()
            )
            raise LabError(
                f"Envoy did not apply {files} (rejected, see its log); this is a labkit bug.{tails}"
            )

    def _wait_ready(self, topo: Topology, configs: dict[str, ProxyConfig]) -> None:
        """Poll until every app answers /healthz and every Envoy is LIVE with its listeners bound."""
        checks: dict[str, Callable[[], bool]] = {}
        for inst in topo.instances:
            url = f"http://127.0.0.1:{inst.app_port}/healthz"
            checks[self._app_name(inst)] = functools.partial(envoy.http_ok, url, timeout=0.5)
        for proxy in self._all_proxies(topo):
            names = [lis["name"] for lis in configs[proxy.id].listeners]
            checks[self._envoy_name(proxy)] = functools.partial(envoy.ready, proxy, names)
        deadline = time.monotonic() + READY_TIMEOUT
        recs = {r.name: r for r in processes.records(self._run)}
        while checks:
            for name, check in list(checks.items()):
                if check():
                    del checks[name]
                    continue
                rec = recs.get(name)
                if rec is None or not processes.is_alive(rec):
                    raise LabError(f"{name} exited while starting.{self._log_tail(name)}")
            if checks and time.monotonic() > deadline:
                tails = "".join(self._log_tail(n) for n in checks)
                raise LabError(f"not ready after {READY_TIMEOUT:.0f} s: {', '.join(checks)}.{tails}")
            if checks:
                time.sleep(0.02)

    def _log_tail(self, name: str) -> str:
        log = self._logs / f"{name}.log"
        lines = telemetry.tail(log, 12)
        return f"\nLast lines of {log}:\n  " + "\n  ".join(lines) if lines else f" (no output in {log})"

    def _stop_all(self) -> None:
        processes.stop(processes.records(self._run), self._run)

    def down(self) -> None:
        """Stop every process of this lab (also one a dead kernel started) and forget the applied resources,
        like deleting a kind cluster; ports, certificates and logs stay for the next up()."""
        self._stop_all()
        self._applied_file.unlink(missing_ok=True)
        self._topo = None

    def _require_up(self) -> Topology:
        topo = self._current()
        if topo is None or not any(processes.is_alive(r) for r in processes.records(self._run)):
            raise BackendError("the local lab is not running; start it with lab.up() (or `labkit up`)")
        return topo

    # --- configuration -------------------------------------------------------------------------------------

    def apply(self, src: Source) -> list[Change]:
        """Validate, then apply: Istio objects change Envoy config live (file xDS, no restart); an edited
        Deployment restarts its processes. On any error nothing changes."""
        self._require_up()
        incoming = manifests.load(src)
        for res in incoming:
            if not _is_istio(res) and res.kind not in KUBE_KINDS:
                raise UnsupportedError(
                    f"{res.where}: the local backend runs only {', '.join(sorted(KUBE_KINDS))} and Istio "
                    "objects; use the kind backend (LAB_BACKEND=kind) for other Kubernetes kinds"
                )
        check_supported([r for r in incoming if _is_istio(r)])
        applied = self._applied()
        apps = self._apps(applied)
        keys = {r.key for r in incoming}
        from labkit import validation  # imported on first use: loading its schemas takes seconds

        istio = [r for r in applied if _is_istio(r)]
        validation.check(incoming, context=[r for r in apps + istio if r.key not in keys])

        current = {r.key: r for r in apps + istio}
        changes, updated = [], {r.key: r for r in applied}
        for res in incoming:
            old = current.get(res.key)
            action = "created" if old is None else "unchanged" if old.body == res.body else "configured"
            changes.append(Change(res.kind, res.namespace, res.name, action))
            if action != "unchanged":
                updated[res.key] = res
        if all(c.action == "unchanged" for c in changes):
            return changes
        new_applied = list(updated.values())
        if any(not _is_istio(r) and c.action != "unchanged" for r, c in zip(incoming, changes, strict=True)):
            self._save_applied(new_applied)
            try:
                self._reconcile()  # restarts exactly the processes whose command or environment changed
            except LabError:
                self._save_applied(applied)  # the change does not run: bring the lab back as it was
                self.up()
                raise
        else:
            self._write_config(new_applied)  # translate first: a failure leaves the saved set untouched
            self._save_applied(new_applied)
        return changes

    def delete(self, src: Source) -> list[Change]:
        """Remove Istio objects (config updated live); the apps from cluster-config/apps cannot be deleted."""
        self._require_up()
        incoming = manifests.load(src)
        for res in incoming:
            if not _is_istio(res):
                raise UnsupportedError(
                    f"{res.where}: the local backend always runs the apps of cluster-config/apps; "
                    "re-apply an edited manifest instead, or stop the lab with lab.down()"
                )
        applied = {r.key: r for r in self._applied()}
        changes = []
        for res in incoming:
            found = applied.pop(res.key, None) is not None
            changes.append(Change(res.kind, res.namespace, res.name, "deleted" if found else "not found"))
        self._write_config(list(applied.values()))
        self._save_applied(list(applied.values()))
        return changes

    def _write_config(self, applied: list[Resource]) -> None:
        topo = self._require_up()
        istio = [r for r in applied if _is_istio(r)]
        ports = _Ports(self._ports_file)
        ports.next = len(ports.ports)  # the topology has its ports: only new listeners get new ones
        if ensure_ports(istio, topo, ports):
            ports.save(topo)
        configs = translate(istio, topo, self._mesh_settings())
        self._wait_applied(envoy.write_configs([(p, configs[p.id]) for p in self._all_proxies(topo)]))

    # --- observing -----------------------------------------------------------------------------------------

    def status(self) -> Status:
        """Workloads with ready counts (ready while its processes live), the ingress URL, problems."""
        topo = self._current()
        recs = {r.name: r for r in processes.records(self._run)}
        if topo is None or not recs:
            return Status(self.backend, up=False)
        alive = {name for name, rec in recs.items() if processes.is_alive(rec)}
        problems = []
        names = [self._app_name(i) for i in topo.instances] + [
            self._envoy_name(p) for p in self._all_proxies(topo)
        ]
        for name in names:
            if name not in alive:
                rec = recs.get(name)
                what = f"process {rec.pid} is not running" if rec else "was never started"
                problems.append(f"{name}: {what} (log: {self._logs / (name + '.log')}); lab.up() restarts it")
        workloads = []
        for wl in topo.workloads:
            insts = [i for i in topo.instances if i.workload is wl]
            ready = sum(
                self._app_name(i) in alive and (i.proxy is None or self._envoy_name(i.proxy) in alive)
                for i in insts
            )
            workloads.append(
                WorkloadStatus(wl.name, wl.namespace, wl.version, wl.replicas, ready, wl.injected)
            )
        gw = topo.gateway
        gw_ready = int(self._envoy_name(gw) in alive)
        workloads.append(WorkloadStatus(gw.workload, gw.namespace, None, 1, gw_ready, False, "(gateway)"))
        port = gw.gateway_ports.get(80) or next(iter(gw.gateway_ports.values()), None)
        return Status(
            self.backend,
            up=bool(alive),
            workloads=workloads,
            ingress_url=f"http://127.0.0.1:{port}" if port else None,
            problems=problems,
        )

    def _live_proxies(self, topo: Topology) -> list[Proxy]:
        live = {r.name for r in processes.records(self._run) if processes.is_alive(r)}
        return [p for p in self._all_proxies(topo) if self._envoy_name(p) in live]

    def metrics(self) -> list[RequestCount]:
        """``istio_requests_total`` from every running proxy (reporter source and destination)."""
        return telemetry.requests_total(self._live_proxies(self._require_up()))

    def access_log(self, workload: str, tail: int = 50) -> list[str]:
        """The last ``tail`` lines of ``workload``'s proxy access log (all its replicas, in time order).

        Envoy flushes file logs every ``envoy.FLUSH_INTERVAL_MS``; this waits two intervals first, so requests
        that were already answered are in the file."""
        topo = self._require_up()
        proxies = [p for p in self._all_proxies(topo) if workload in (p.workload, p.id)]
        if not proxies:
            known = sorted({p.workload for p in self._all_proxies(topo)})
            raise LabError(
                f"no proxy for workload {workload!r} (workloads without a sidecar have no access log); "
                f"choose one of: {', '.join(known)}"
            )
        time.sleep(2 * envoy.FLUSH_INTERVAL_MS / 1000)
        lines = [line for p in proxies for line in telemetry.tail(Path(p.access_log), tail)]
        return sorted(lines)[-tail:] if len(proxies) > 1 else lines

    def resolver(self, source: str) -> Resolver:
        """How ``source`` reaches a logical URL: "client" through its sidecar's outbound listener, "legacy"
        straight to one Service endpoint (like kube-proxy, plaintext), "ingress" through the gateway."""
        topo = self._require_up()
        if source == "client":
            client = next((p for p in topo.sidecars if p.workload == "client"), None)
            if client is None:
                raise LabError(
                    "no `client` workload with a sidecar: is cluster-config/apps/client.yaml there?"
                )
            return lambda url: _via(url, client.outbound_ports.get(_port(url), CLOSED_PORT))
        if source == "ingress":
            return lambda url: _via(url, topo.gateway.gateway_ports.get(_port(url), CLOSED_PORT))
        if source == "legacy":
            return lambda url: _via(url, _kube_proxy(topo, url, namespace="legacy"))
        raise LabError(f"unknown traffic source {source!r}; use 'client', 'legacy' or 'ingress'")


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _via(url: str, port: int) -> tuple[str, dict[str, str]]:
    """Connect to 127.0.0.1:``port`` with the logical host in the Host header; 127.0.0.1 URLs pass through."""
    parts = urlsplit(url)
    if parts.hostname == "127.0.0.1":
        return url, {}
    target = urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, parts.query, ""))
    return target, {"Host": parts.netloc}


def _kube_proxy(topo: Topology, url: str, namespace: str) -> int:
    """One endpoint of the Service ``url`` names (picked at random per call, like kube-proxy's iptables mode):
    the sidecar's inbound port for an injected instance, else the app itself."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host == "127.0.0.1":
        return parts.port or 80
    service = next((s for s in topo.services if host in (s.fqdn, *alt_names(s.fqdn, namespace))), None)
    if service is None:
        raise LabError(
            f"{host}: no such Service (name resolution fails, as DNS would in namespace {namespace})"
        )
    name, ns = service.name, service.namespace
    port = service.port(_port(url))
    if port is None:
        have = ", ".join(str(p.port) for p in service.ports)
        raise LabError(f"Service {name}.{ns} has no port {_port(url)}; its ports: {have}")
    endpoints = [e.port for e in topo.endpoints(service, port)]
    if not endpoints:
        raise LabError(f"Service {name}.{ns} has no endpoints (no running instance matches its selector)")
    return random.choice(endpoints)


def _holder(port: int) -> str:
    """`` (held by pid N: cmdline)`` when psutil can tell who listens on ``port``."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return ""
    for conn in conns:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            try:
                cmd = " ".join(psutil.Process(conn.pid).cmdline())[:120]
            except psutil.Error:
                cmd = "?"
            return f" (held by pid {conn.pid}: {cmd})"
    return ""
