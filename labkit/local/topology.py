"""The local mesh's shape, from the same app manifests kind applies: services, workloads, their instances
and the proxies in front of them, each with the addresses it binds (no pod IPs, no iptables here): 127.0.0.1
ports for what any caller may dial (a sidecar's inbound listener, an app without a sidecar, the ingress
gateway), Unix sockets in the state folder's private ``sock/`` for what only the pod itself reaches (the app
behind a sidecar, the Envoy admin API, a sidecar's outbound listeners; labkit.state names them).

Ports come from the runtime's ``allocate_port`` in a fixed order, so the same manifests and the same allocator
sequence always give the same topology.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from labkit import unixhttp
from labkit.errors import UnsupportedError
from labkit.local import downward, probes, statsmatcher
from labkit.meshmodel import selects, service_fqdn
from labkit.state import LocalState, ProxyFiles

if TYPE_CHECKING:
    from labkit.manifests import Resource

GATEWAY_NAMESPACE = "istio-system"
GATEWAY_WORKLOAD = "istio-ingressgateway"
GATEWAY_LABELS = {"app": "istio-ingressgateway", "istio": "ingressgateway"}
GATEWAY_SERVICE_ACCOUNT = "istio-ingressgateway-service-account"
#: The default ``istio-ingressgateway`` Service's ports → targetPorts (manifests/charts/gateways/istio-ingress
#: values.yaml: status-port 15021, http2 80 → 8080, https 443 → 8443); an Istio Gateway's other server ports
#: bind as they are, a Gateway API Gateway's are not served (gateway_address.py).
INGRESS_TARGET_PORTS = {15021: 15021, 80: 8080, 443: 8443}
#: App-manifest kinds that only carry identity or grouping; the local backend needs nothing else from them.
PASSIVE_KINDS = {"ServiceAccount", "ConfigMap", "Secret"}
#: The Kubernetes kinds the local backend runs (those of cluster-config/apps); other kinds are rejected.
KUBE_KINDS = {"Namespace", "Service", "Deployment"} | PASSIVE_KINDS
#: Istio's protocol names (``pkg/config/protocol``), keyed by the lower-case port-name prefix or appProtocol.
PROTOCOLS = {
    "http": "HTTP",
    "http2": "HTTP2",
    "h2c": "HTTP2",
    "grpc": "GRPC",
    "grpc-web": "GRPC-Web",
    "https": "HTTPS",
    "tls": "TLS",
    "tcp": "TCP",
    "udp": "UDP",
    "mongo": "Mongo",
    "mysql": "MySQL",
    "redis": "Redis",
}
#: Protocols the local backend routes as HTTP. "" is an unnamed port: Istio sniffs it; lab apps speak HTTP.
HTTP_PROTOCOLS = {"HTTP", "HTTP2", "GRPC", "GRPC-Web", ""}
#: What the local backend proxies as plain TCP (tcp_proxy): the app's TCP echo port (TCP_PORT).
TCP = "TCP"


def port_protocol(name: str, app_protocol: str | None = None) -> str:
    """Istio's protocol selection: ``appProtocol`` first, then the port name's prefix before ``-``."""
    if app_protocol:
        return PROTOCOLS.get(app_protocol.lower(), "")
    if name.lower() in PROTOCOLS:
        return PROTOCOLS[name.lower()]
    return PROTOCOLS.get(name.lower().split("-", 1)[0], "")


@dataclass
class ServicePort:
    name: str
    port: int
    target_port: int
    protocol: str  # Istio's protocol name from the port name or appProtocol; "" = sniffed (treated as HTTP)


@dataclass
class Service:
    name: str
    namespace: str
    ports: list[ServicePort]
    selector: dict[str, str]

    @property
    def fqdn(self) -> str:
        return service_fqdn(self.name, self.namespace)

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


@dataclass
class Workload:
    name: str  # the Deployment's name, Istio's ``destination_workload``
    namespace: str
    labels: dict[str, str]  # pod template labels
    service_account: str
    replicas: int
    env: dict[str, str]  # literal values
    injected: bool
    env_fields: dict[str, str] = field(
        default_factory=dict
    )  # env name -> fieldRef path (downward.py fills it)
    annotations: dict[str, str] = field(default_factory=dict)  # pod template annotations
    image: str = ""  # the first container's image: the sample app's, or another (standin.py)
    readiness: probes.Probe | None = None  # the first container's readinessProbe, when run here (probes.py)
    liveness: probes.Probe | None = None  # its livenessProbe and startupProbe: its kubelet's (kubelet.py)
    startup: probes.Probe | None = None
    grpc_port: int | None = None  # the container port its gRPC probes ask: the stand-in serves health there
    stats_matcher: dict = field(default_factory=lambda: statsmatcher.stats_matcher({}))  # its sidecars' stats

    @property
    def version(self) -> str | None:
        return self.labels.get("version")


@dataclass
class Proxy(ProxyFiles):
    """One Envoy (a sidecar or the gateway); its files live under ``dir`` (see labkit.state.ProxyFiles)."""

    id: str
    kind: str  # "sidecar" | "gateway"
    namespace: str
    workload: str
    labels: dict[str, str]
    service_account: str
    spiffe: str
    dir: Path
    sock_dir: Path
    inbound_ports: dict[int, int] = field(default_factory=dict)  # target port -> inbound listener port
    outbound_sockets: dict[int, Path] = field(default_factory=dict)  # service port -> outbound listener
    gateway_ports: dict[int, int] = field(default_factory=dict)  # Gateway server port -> listener port
    stats_port: int = 0  # istio-proxy's 15090: /stats/prometheus only, for Prometheus (envoy.bootstrap)
    stats_matcher: dict = field(default_factory=lambda: statsmatcher.stats_matcher({}))  # the stats it makes


@dataclass
class Instance:
    workload: Workload
    index: int
    app_port: int | None  # where an app without a sidecar listens on 127.0.0.1
    proxy: Proxy | None
    ready: bool = True  # passes its readiness probe (readiness.update); a not-ready one has no endpoints
    app_socket: Path | None = None  # where an app behind a sidecar listens: reachable only through it
    tcp_ports: dict[int, int] = field(default_factory=dict)  # TCP target port -> TCP_PORT (no sidecar)
    tcp_sockets: dict[int, Path] = field(default_factory=dict)  # TCP target port -> TCP_SOCKET (sidecar)
    grpc_socket: Path | None = None  # where the app answers grpc.health.v1 (a gRPC probe's port)
    kubelet_file: Path | None = None  # what its kubelet says (kubelet.py), with liveness or startup probes

    @property
    def name(self) -> str:
        return f"{self.workload.name}-{self.index}"

    def url(self, path: str = "/") -> str:
        """The app itself, bypassing any sidecar: what the lab's user (health checks, notebook 11's no-mesh
        path) dials; an ``http+unix://`` URL behind a sidecar (labkit.unixhttp)."""
        if self.app_socket is not None:
            return unixhttp.url(self.app_socket, path)
        return f"http://127.0.0.1:{self.app_port}{path}"

    def app_address(self, target_port: int) -> int | Path:
        """Where the app listens for ``target_port``: its TCP echo port or socket, else its HTTP one."""
        if target_port in self.tcp_sockets:
            return self.tcp_sockets[target_port]
        if target_port in self.tcp_ports:
            return self.tcp_ports[target_port]
        return self.app_socket if self.app_socket is not None else (self.app_port or 0)


@dataclass(frozen=True)
class Endpoint:
    """One address a service port's traffic may go to, and the instance behind it (None for a literal IP)."""

    address: str
    port: int
    instance: Instance | None


@dataclass
class Topology:
    services: list[Service]
    workloads: list[Workload]
    instances: list[Instance]
    proxies: dict[str, Proxy]  # every sidecar and the gateway, by id
    gateway: Proxy

    @property
    def sidecars(self) -> list[Proxy]:
        return [p for p in self.proxies.values() if p.kind == "sidecar"]

    def service(self, fqdn: str) -> Service | None:
        return next((s for s in self.services if s.fqdn == fqdn), None)

    def selected(self, namespace: str, selector: dict[str, str]) -> list[Instance]:
        """The instances in ``namespace`` whose labels include every ``selector`` pair."""
        return [
            i
            for i in self.instances
            if i.workload.namespace == namespace and selects(selector, i.workload.labels)
        ]

    def endpoints(self, service: Service, port: ServicePort) -> list[Endpoint]:
        """Where a service port's traffic lands: a sidecar's inbound listener, or the bare app without one."""
        if not service.selector:
            return []
        out = []
        for inst in self.selected(service.namespace, service.selector):
            if not inst.ready:
                continue
            if inst.proxy is not None:
                out.append(Endpoint("127.0.0.1", inst.proxy.inbound_ports[port.target_port], inst))
            elif inst.app_port is not None:
                out.append(Endpoint("127.0.0.1", inst.tcp_ports.get(port.target_port, inst.app_port), inst))
        return out

    def instance_of(self, proxy: Proxy) -> Instance | None:
        return next((i for i in self.instances if i.proxy is proxy), None)


def build_topology(
    apps: list[Resource], state: Path, allocate_port: Callable[[], int], trust_domain: str = "cluster.local"
) -> Topology:
    """The topology of ``apps`` (Namespaces, Services, Deployments): one sidecar per injected instance and the
    ingress gateway, with every listener port the registry's Services need."""
    files = LocalState(state)
    namespaces = {r.name: r.labels for r in apps if r.kind == "Namespace"}
    services, workloads = [], []
    for r in apps:
        if r.kind == "Service":
            services.append(_service(r))
        elif r.kind == "Deployment":
            workloads.append(_workload(r, namespaces.get(r.namespace, {})))
        elif r.kind not in KUBE_KINDS:
            raise UnsupportedError(
                f"{r.where}: kind {r.kind} is not supported by the local backend, which runs "
                f"{', '.join(sorted(KUBE_KINDS))}; use the kind backend (LAB_BACKEND=kind) or remove it"
            )
    services.sort(key=lambda s: (s.namespace, s.name))
    workloads.sort(key=lambda w: (w.namespace, w.name))
    registry_ports = sorted({p.port for s in services for p in s.ports})
    instances, proxies = [], {}
    for w in workloads:
        targets = sorted(
            {p.target_port for s in services if _selects(s, w) for p in s.ports} if w.injected else set()
        )
        tcp_targets = _tcp_targets(services, w)
        for index in range(w.replicas):
            inst = Instance(w, index, None if w.injected else allocate_port(), None)
            if w.grpc_port is not None:
                inst.grpc_socket = files.grpc_socket(w.namespace, inst.name)
            if w.liveness is not None or w.startup is not None:
                inst.kubelet_file = files.kubelet_file(w.namespace, inst.name)
            if not w.injected:
                inst.tcp_ports = {t: allocate_port() for t in tcp_targets}
            else:  # the app's ports are sockets only its sidecar (and the lab's user) reach
                inst.app_socket = files.app_socket(w.namespace, inst.name)
                inst.tcp_sockets = {t: files.tcp_socket(w.namespace, inst.name, t) for t in tcp_targets}
                proxy_id = f"sidecar~{inst.name}.{w.namespace}"
                inst.proxy = Proxy(
                    id=proxy_id,
                    kind="sidecar",
                    namespace=w.namespace,
                    workload=w.name,
                    labels=dict(w.labels),
                    service_account=w.service_account,
                    spiffe=f"spiffe://{trust_domain}/ns/{w.namespace}/sa/{w.service_account}",
                    dir=files.proxy_dir(proxy_id),
                    sock_dir=files.sock_dir,
                    inbound_ports={t: allocate_port() for t in targets},
                    stats_matcher=w.stats_matcher,
                )
                inst.proxy.outbound_sockets = {p: inst.proxy.outbound_socket(p) for p in registry_ports}
                proxies[proxy_id] = inst.proxy
            instances.append(inst)
    gateway_id = f"{GATEWAY_WORKLOAD}.{GATEWAY_NAMESPACE}"
    gateway = Proxy(
        id=gateway_id,
        kind="gateway",
        namespace=GATEWAY_NAMESPACE,
        workload=GATEWAY_WORKLOAD,
        labels=dict(GATEWAY_LABELS),
        service_account=GATEWAY_SERVICE_ACCOUNT,
        spiffe=f"spiffe://{trust_domain}/ns/{GATEWAY_NAMESPACE}/sa/{GATEWAY_SERVICE_ACCOUNT}",
        dir=files.proxy_dir(gateway_id),
        sock_dir=files.sock_dir,
    )
    proxies[gateway_id] = gateway
    return Topology(services, workloads, instances, proxies, gateway)


def ensure_outbound_port(topo: Topology, port: int) -> bool:
    """Give every sidecar an outbound listener for registry port ``port``; True if one was added."""
    added = False
    for proxy in topo.sidecars:
        if port not in proxy.outbound_sockets:
            proxy.outbound_sockets[port] = proxy.outbound_socket(port)
            added = True
    return added


def ensure_gateway_port(topo: Topology, port: int, allocate_port: Callable[[], int]) -> bool:
    """Give the gateway a listener port for Gateway server port ``port``; True if one was added."""
    if port in topo.gateway.gateway_ports:
        return False
    topo.gateway.gateway_ports[port] = allocate_port()
    return True


def _selects(service: Service, w: Workload) -> bool:
    """A Service's endpoints: an empty selector selects nothing (Kubernetes leaves it to manual Endpoints)."""
    return bool(service.selector) and service.namespace == w.namespace and selects(service.selector, w.labels)


def _tcp_targets(services: list[Service], w: Workload) -> list[int]:
    """The workload's TCP target ports: the sample app has one TCP echo port (TCP_PORT), so at most one."""
    ours = [s for s in services if _selects(s, w)]
    targets = sorted({p.target_port for s in ours for p in s.ports if p.protocol == TCP})
    if len(targets) > 1:
        raise UnsupportedError(
            f"Deployment {w.namespace}/{w.name} is selected by TCP Service ports with target ports "
            f"{targets}; the local backend's app has one TCP echo port (TCP_PORT): keep one TCP port per "
            "workload, or use the kind backend (LAB_BACKEND=kind)"
        )
    return targets


def _service(r: Resource) -> Service:
    spec = r.spec
    ports = []
    for i, p in enumerate(spec.get("ports") or []):
        name = str(p.get("name", ""))
        target = p.get("targetPort", p.get("port"))
        if not isinstance(target, int):
            raise UnsupportedError(
                f"{r.where}: field spec.ports[{i}].targetPort is the named port {target!r}; the local "
                "backend needs a number: write the container port number"
            )
        protocol = port_protocol(name, p.get("appProtocol"))
        if protocol not in HTTP_PROTOCOLS | {TCP}:
            raise UnsupportedError(
                f"{r.where}: field spec.ports[{i}] is a {protocol} port ({name!r}); the local backend routes "
                "HTTP and plain TCP only: name the port http, http-<suffix> or tcp, or use the kind backend "
                "(LAB_BACKEND=kind)"
            )
        ports.append(ServicePort(name, int(p["port"]), target, protocol))
    return Service(r.name, r.namespace, ports, dict(spec.get("selector") or {}))


def _workload(r: Resource, namespace_labels: dict[str, str]) -> Workload:
    template = r.spec.get("template") or {}
    meta = template.get("metadata") or {}
    pod = template.get("spec") or {}
    containers = pod.get("containers") or []
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    env, env_fields = downward.parse_env(r.where, 0, containers[0]) if containers else ({}, {})
    return Workload(
        name=r.name,
        namespace=r.namespace,
        labels=labels,
        service_account=pod.get("serviceAccountName") or "default",
        replicas=int(r.spec.get("replicas", 1)),
        env=env,
        injected=_injected(namespace_labels, labels, annotations),
        env_fields=env_fields,
        annotations=annotations,
        stats_matcher=statsmatcher.stats_matcher(annotations, r.where),
        image=str(containers[0].get("image", "")) if containers else "",
        readiness=probes.readiness(containers[0]) if containers else None,
        liveness=probes.parse(containers[0], "livenessProbe") if containers else None,
        startup=probes.parse(containers[0], "startupProbe") if containers else None,
        grpc_port=probes.grpc_port(containers[0]) if containers else None,
    )


def _injected(namespace_labels: dict[str, str], labels: dict[str, str], annotations: dict[str, str]) -> bool:
    """Istio's injection decision: the namespace label wins when set; else the pod's label or annotation."""
    pod = labels.get("sidecar.istio.io/inject", annotations.get("sidecar.istio.io/inject"))
    ns = namespace_labels.get("istio-injection")
    if ns == "disabled":
        return False
    if ns == "enabled":
        return pod != "false"
    return pod == "true"
