"""LocalLab: the mesh on this machine. The sample service runs as plain processes, with a real Envoy sidecar
in front of every injected instance and an Envoy ingress gateway, all on 127.0.0.1, configured from the same
Istio YAML as the kind backend.

Everything a new Python kernel needs to find the lab lives in the state folder (``labkit.state.LocalState``):
the ports (allocated once, ports.py), the CA, pidfiles, logs, the Envoy config and the applied resources.
``up()`` reconciles (supervisor.py): it keeps healthy processes, restarts dead or outdated ones, and rewrites
the Envoy config files that changed. Every change to the applied state (applied.py) holds the state folder's
lock, so two kernels applying at once both land. Who sends and how a request finds its way: resolve.py.

``LocalLab`` keeps the lab's lifecycle and the apply and delete of changes; what it observes is one call into
the engine that owns it: the supervisor (status, proxy-status, listening ports), telemetry (metrics, access
logs) and proxyview (what an Envoy runs).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from labkit import metrics
from labkit.errors import BackendError, LabError, UnsupportedError
from labkit.lab import Lab, show
from labkit.local import applied as applied_state
from labkit.local import capacity, envoy, podfields, prometheus, proxyview, readiness, resolve, telemetry
from labkit.local.applied import is_mesh_config, mesh_config
from labkit.local.ca import LocalCA
from labkit.local.httproute import with_status
from labkit.local.ports import Ports, release
from labkit.local.prometheus import Prometheus
from labkit.local.supervisor import ISTIOD, Supervisor, envoy_name
from labkit.local.supported import SCHEMAS, check_supported
from labkit.local.topology import KUBE_KINDS, Topology, build_topology, ensure_gateway_port
from labkit.local.translate import ProxyConfig, ensure_ports, gc_paused, route_status, translate
from labkit.local.xds.sync import SyncError
from labkit.mesh import MeshSettings, load_mesh_settings
from labkit.meshmodel import unreachable_gateways
from labkit.scenario import NAMESPACE, SERVICE
from labkit.state import LocalState
from labkit.status import Change, ProxyStatus, Status

if TYPE_CHECKING:
    from labkit.local.topology import Proxy
    from labkit.manifests import Resource
    from labkit.metrics import RequestCount
    from labkit.traffic import Resolver


class _Plan(NamedTuple):
    """What a change would run, computed and checked before anything changes."""

    topo: Topology
    ports: Ports
    configs: dict[str, ProxyConfig]


class LocalLab(Lab):
    """The local backend (no Kubernetes, no Docker): see the module docstring. ``limits`` replaces this
    machine's limits for the capacity check (capacity.py)."""

    backend = "local"
    scrape_interval = float(prometheus.SCRAPE_INTERVAL)

    def __init__(self, state: Path | None = None, limits: capacity.Limits | None = None) -> None:
        self.files = LocalState(state)
        self.state = self.files.root
        self.limits = limits or capacity.Limits()
        self._procs = Supervisor(self.files)
        self._topo: Topology | None = None
        self._topo_stamp = (0, 0)
        self._mesh: MeshSettings | None = None

    # --- persisted state -----------------------------------------------------------------------------------

    def _applied(self) -> list[Resource]:
        """Resources applied on top of cluster-config/apps: Istio config, and edited Kubernetes objects."""
        return applied_state.load(self.files.applied)

    def _save_applied(self, resources: list[Resource]) -> None:
        applied_state.save(self.files.applied, resources)
        self._topo_stamp = self._stamp()  # the cached topology already matches what was saved

    def _topology(self, apps: list[Resource], istio: list[Resource]) -> tuple[Topology, Ports, bool]:
        """The topology with its persisted ports (ports.py), plus listener ports the applied ``istio`` objects
        need; True when it has ports ``ports.json`` does not hold yet."""
        placeholder = itertools.count(1).__next__  # every port is then given by Ports.assign
        topo = build_topology(apps, self.state, placeholder, trust_domain=self._mesh_settings().trust_domain)
        ensure_gateway_port(
            topo, 80, placeholder
        )  # the ingress URL exists from the start, like kind's NodePort
        ensure_ports(istio, topo, placeholder)
        ports = Ports(self.files.ports)
        return topo, ports, ports.assign(topo)

    def _stamp(self) -> tuple[int, int]:
        """Changes whenever the topology may have: ports or applied objects saved (by any kernel)."""
        ports, applied = (
            f.stat().st_mtime_ns if f.is_file() else 0 for f in (self.files.ports, self.files.applied)
        )
        return ports, applied

    def _current(self) -> Topology | None:
        """The lab's topology (rebuilt from the state folder when another kernel changed it), or None if
        never started."""
        if not self.files.ports.is_file():
            return None
        if self._topo is None or self._topo_stamp != self._stamp():
            applied = self._applied()
            topo, ports, added = self._topology(applied_state.apps(applied), mesh_config(applied))
            if added:
                with self.files.lock():
                    ports.save(topo)
                release()  # nothing starts here: the next up() or apply binds them
            self._topo, self._topo_stamp = topo, self._stamp()
        return self._topo

    def _mesh_settings(self) -> MeshSettings:
        if self._mesh is None:
            self._mesh = load_mesh_settings()
        return self._mesh

    # --- lifecycle -----------------------------------------------------------------------------------------

    def up(self) -> Status:
        """Start (or reattach to, or repair) the lab. A lab that cannot run here is refused before anything
        starts; on a failure while starting, everything stops and the error is raised."""
        with self.files.lock():
            try:
                plan = self._plan(applied=self._applied())
                self._run(plan)
            except BaseException:
                self._procs.stop_all()
                raise
            finally:
                release()  # new ports are istiod's to hold now (ports.Ports._free)
        return self.status()

    def _plan(self, applied: list[Resource]) -> _Plan:
        """Build, translate and check the lab ``applied`` describes (Envoy present, apps valid, capacity),
        changing nothing."""
        envoy.binary()  # fail first, with the fix, when Envoy is missing
        apps = applied_state.apps(applied)
        applied_state.validate_apps(apps, self.files.apps_validated)
        istio = mesh_config(applied)
        topo, ports, _ = self._topology(apps, istio)
        configs = translate(istio, topo, self._mesh_settings())
        capacity.check(topo, self._procs.alive(), self.limits)
        return _Plan(topo, ports, configs)

    def _run(self, plan: _Plan) -> None:
        """Run ``plan``: persist its ports, issue certificates, start and stop processes, wait until ready."""
        topo = plan.topo
        plan.ports.save(topo)
        self._topo, self._topo_stamp = topo, self._stamp()
        ca = LocalCA(self.files.ca_dir, trust_domain=self._mesh_settings().trust_domain)
        reissued = {  # Envoy reads certificate files once: a proxy with a new one restarts
            envoy_name(p)
            for p in topo.proxies.values()
            if ca.ensure(p.spiffe, Path(p.cert_file), Path(p.key_file), Path(p.ca_file))
        }
        self._procs.reconcile(topo, plan.configs, reissued)
        if readiness.update(topo):  # an instance failing its readiness probe leaves the endpoints
            self._write_config(self._applied())

    def down(self) -> None:
        """Stop every process of this lab (also one a dead kernel started) and forget the applied resources,
        like deleting a kind cluster; ports, certificates and logs stay for the next up()."""
        with self.files.lock():
            self._procs.stop_all()
            Prometheus(self.files).stop()
            self.files.applied.unlink(missing_ok=True)
            self._topo = None

    def _require_up(self) -> Topology:
        topo = self._current()
        if topo is None or not self._procs.any_alive():
            raise BackendError("the local lab is not running", "start it with lab.up() (or `labkit up`)")
        return topo

    # --- configuration: the hooks of Lab.apply / Lab.delete ------------------------------------------------

    def _context(self, incoming: list[Resource]) -> list[Resource]:
        """The apps and the applied Istio objects, minus those ``incoming`` replaces (for analysis)."""
        applied = self._applied()
        keys = {r.key for r in incoming}
        return [r for r in applied_state.running(applied) if r.key not in keys]

    def _check_capabilities(self, resources: list[Resource], deleting: bool = False) -> None:
        """Refuse, by name, valid Kubernetes kinds and Istio fields the local backend does not run, and the
        deletion of an app (the lab always runs cluster-config/apps)."""
        for res in resources:
            if is_mesh_config(res):
                continue
            if deleting:
                raise UnsupportedError(
                    "the local backend always runs the apps of cluster-config/apps",
                    "re-apply an edited manifest instead, or stop the lab with lab.down()",
                    where=res.where,
                )
            if res.kind not in KUBE_KINDS:
                raise UnsupportedError(
                    f"kind {res.kind} is not supported by the local backend, which runs only "
                    f"{', '.join(sorted(KUBE_KINDS))} and Istio objects",
                    "use the kind backend (LAB_BACKEND=kind) for other Kubernetes kinds",
                    where=res.where,
                )
        if not deleting:
            check_supported(mesh_config(resources))
            ignored = podfields.note(resources)  # accepted, and said once (labkit/local/podfields.py)
            if ignored:
                show(ignored)

    def _apply(self, resources: list[Resource]) -> list[Change]:
        """Istio objects change Envoy config live (over xDS, no restart); an edited Deployment restarts its
        processes. On any error nothing changes; a topology this machine cannot run is refused first."""
        try:
            return self._apply_locked(resources)
        finally:
            release()  # ports allocated for the change are istiod's to hold now (or nothing started)

    def _apply_locked(self, resources: list[Resource]) -> list[Change]:
        self._require_up()
        with self.files.lock():  # read-modify-write of the applied state: one kernel at a time
            applied = self._applied()
            current = {r.key: r for r in applied_state.running(applied)}
            changes, updated = [], {r.key: r for r in applied}
            for res in resources:
                old = current.get(res.key)
                action = "created" if old is None else "unchanged" if old.body == res.body else "configured"
                changes.append(Change(res.kind, res.namespace, res.name, action))
                if action != "unchanged":
                    updated[res.key] = res
            if all(c.action == "unchanged" for c in changes):
                return changes
            new_applied = list(updated.values())
            pairs = zip(resources, changes, strict=True)
            if any(not is_mesh_config(r) and c.action != "unchanged" for r, c in pairs):
                plan = self._plan(new_applied)  # refused here (capacity, unsupported) with nothing changed
                self._save_applied(new_applied)
                try:
                    self._run(plan)  # restarts exactly the processes whose command or environment changed
                except LabError:
                    self._save_applied(applied)  # the change does not run: bring the lab back as it was
                    self.up()
                    raise
            else:
                self._push(new_applied)
        return changes

    def _delete(self, resources: list[Resource]) -> list[Change]:
        """Remove Istio objects (config updated live); the apps from cluster-config/apps cannot be deleted."""
        self._require_up()
        with self.files.lock():
            applied = {r.key: r for r in self._applied()}
            changes = []
            for res in resources:
                found = applied.pop(res.key, None) is not None
                changes.append(Change(res.kind, res.namespace, res.name, "deleted" if found else "not found"))
            self._push(list(applied.values()))
        return changes

    def _push(self, applied: list[Resource]) -> None:
        """Translate and serve ``applied``, then save it. A translation error leaves the saved set untouched;
        a proxy's NACK does not: istiod serves the change (as kubectl accepts an object Envoy then rejects),
        so the saved set says what the control plane serves and the next apply is compared with it."""
        try:
            self._write_config(applied)
        except SyncError:
            self._save_applied(applied)
            raise
        self._save_applied(applied)

    def _write_config(self, applied: list[Resource]) -> None:
        topo = self._require_up()
        istio = mesh_config(applied)
        ensure_ports(istio, topo, itertools.count(1).__next__)  # new listeners: numbers from Ports.assign
        ports = Ports(self.files.ports)
        if ports.assign(topo):
            ports.save(topo)
        for _ in range(2):  # again when a readiness probe's answer changed with this config (probes.py)
            with gc_paused():
                self._procs.push(topo, translate(istio, topo, self._mesh_settings()))
            if not readiness.update(topo, readiness.through_sidecar(topo)):
                break

    def _refresh_readiness(self, topo: Topology, serve: bool = True) -> None:
        """Probe again and (``serve``) serve the endpoints that changed (probes.py, kubelet.py): what a
        cluster's kubelet and EndpointSlice controller do all the time, done here whenever the lab reports
        status or sends. Without istiod nothing is served; the next up() serves what the probes say."""
        if readiness.update(topo) and serve:
            with self.files.lock():
                self._write_config(self._applied())

    # --- observing: each call asks the engine that owns the answer ------------------------------------------

    def status(self) -> Status:
        """Workloads with ready counts (ready while its processes live), the ingress URL, problems."""
        topo = self._current()
        if topo is None:
            return Status(self.backend, up=False)
        problems = []
        if self._procs.records():  # a stopped lab probes nothing
            try:
                self._refresh_readiness(topo, serve=ISTIOD in self._procs.alive())
            except LabError as exc:
                problems.append(f"{ISTIOD}: a readiness change did not reach the proxies: {exc}")
            problems += unreachable_gateways(g.body for g in self.get("gateways.gateway.networking.k8s.io"))
        status = self._procs.status(topo, self.backend)
        status.problems += problems
        return status

    def applied(self) -> list[Resource]:
        """What runs now: cluster-config/apps with the trainee's edits, then the applied Istio objects."""
        return applied_state.running(self._applied())

    def get(self, kind: str, namespace: str | None = None) -> list[Resource]:
        """The objects of ``kind`` the lab runs (apps and applied), like ``kubectl get``: ``kind`` as kubectl
        takes it (VirtualService, virtualservices, vs); every namespace when ``namespace`` is None."""
        applied = self._applied()
        objects = applied_state.running(applied)
        wanted = resolve.kind(kind, KUBE_KINDS | set(SCHEMAS) | {"HTTPRoute"} | {r.kind for r in objects})
        group = kind.lower().partition(".")[2]  # gateways.gateway.networking.k8s.io picks one API group
        found = [
            r
            for r in objects
            if r.kind == wanted and namespace in (None, r.namespace) and group in ("", r.group)
        ]
        # Gateway API objects carry the status istiod writes on them (Accepted, ResolvedRefs ...)
        status = route_status(mesh_config(applied), self._require_up(), self._mesh_settings())
        return sorted(with_status(found, status), key=lambda r: (r.namespace, r.name))

    def metrics(self, name: str = metrics.REQUESTS) -> list[RequestCount]:
        """Istio's metric ``name`` from every running proxy (reporter source and destination)."""
        topo = self._require_up()
        live = self._procs.alive()
        return telemetry.requests_total((p for p in topo.proxies.values() if envoy_name(p) in live), name)

    def promql(self, query: str) -> list[dict[str, Any]]:
        """Run ``query`` on the lab's Prometheus (started on first use; labkit/local/prometheus.py)."""
        return prometheus.query(self.prometheus(), query)

    def prometheus(self) -> str:
        """The lab's Prometheus, scraping every proxy: started unless it runs; its base URL."""
        return Prometheus(self.files).ensure(list(self._require_up().proxies.values()))

    def access_log(self, workload: str, tail: int = 50) -> list[str]:
        """The last ``tail`` lines of ``workload``'s proxy access log (all its replicas, in time order); it
        waits for Envoy's log flush first (telemetry.py)."""
        return telemetry.access_log(self._require_up(), workload, tail)

    def resolver(self, source: str) -> Resolver:
        """How ``source`` (a workload, ``namespace/workload``, an alias, "ingress") reaches a URL, once the
        endpoints hold the instances ready now."""
        topo = self._require_up()
        self._refresh_readiness(topo)
        return resolve.resolver(topo, source)

    # --- what Envoy runs (proxyview.py reads it from the admin API) ----------------------------------------

    def _proxy(self, workload: str) -> Proxy:
        """The (first) Envoy of ``workload``; an error when it has none."""
        return proxyview.sidecar(self._require_up(), workload)

    def proxy_config(self, workload: str, what: str = "routes") -> list[dict[str, Any]]:
        """What ``workload``'s Envoy runs (routes, clusters, listeners, endpoints, secrets), from its admin
        API; see proxyview.py for the shapes."""
        return proxyview.proxy_config(self._proxy(workload), what)

    def proxy_status(self) -> list[ProxyStatus]:
        """Each proxy's sync state with the lab's istiod, like ``istioctl proxy-status``."""
        self._require_up()
        return self._procs.proxy_status()

    def proxy_stats(self, workload: str, contains: str = "") -> dict[str, int]:
        """``workload``'s Envoy counters whose names contain ``contains``, from its admin ``/stats``."""
        return metrics.envoy_stats(envoy.admin_get(self._proxy(workload), "/stats"), contains)

    def route_weights(
        self, service: str = SERVICE, namespace: str = NAMESPACE, source: str = "client"
    ) -> dict[str, int]:
        """``{subset: weight}`` as ``source``'s sidecar holds them for ``service`` (its first port)."""
        return proxyview.service_route_weights(self._require_up(), source, service, namespace)

    def pod_urls(self, workload: str, namespace: str = NAMESPACE) -> list[str]:
        """The 127.0.0.1 TCP ports ``workload``'s processes really listen on (supervisor.py)."""
        return self._procs.pod_urls(self._require_up(), f"{namespace}/{workload}")

    def mtls_mode(self, workload: str, namespace: str = NAMESPACE) -> str | None:
        """The inbound mTLS mode (STRICT, PERMISSIVE, DISABLE) ``workload``'s sidecar enforces; None
        without a sidecar."""
        return proxyview.workload_mtls_mode(self._require_up(), f"{namespace}/{workload}")
