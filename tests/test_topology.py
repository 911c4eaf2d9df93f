"""The local topology from the real app manifests: who gets a sidecar, which ports each proxy binds, and
where a Service's traffic lands."""

from __future__ import annotations

import ctypes
import itertools
import os
import re
from pathlib import Path

import pytest
import yaml
from support.envoy import lab_topology

from labkit import manifests, paths, unixhttp
from labkit.errors import CapacityError, LabError, UnsupportedError
from labkit.local import capacity, resolve, supervisor
from labkit.local.ports import Ports
from labkit.local.topology import (
    Topology,
    build_topology,
    ensure_gateway_port,
    ensure_outbound_port,
    port_protocol,
)
from labkit.meshmodel import service_fqdn

CC = "currency-converter.payments-prod.svc.cluster.local"


def test_injected_namespaces_get_one_sidecar_per_instance(tmp_path):
    topo, _ = lab_topology(tmp_path)
    sidecars = {p.id: p for p in topo.sidecars}
    assert set(sidecars) == {
        "sidecar~client-0.payments-prod",
        "sidecar~currency-converter-v1-0.payments-prod",
        "sidecar~currency-converter-v2-0.payments-prod",
    }
    by_name = {i.name: i for i in topo.instances}
    assert by_name["legacy-client-0"].proxy is None  # namespace legacy: istio-injection=disabled
    assert by_name["fx-rates-0"].proxy is None
    v2 = sidecars["sidecar~currency-converter-v2-0.payments-prod"]
    assert v2.spiffe == "spiffe://cluster.local/ns/payments-prod/sa/currency-converter"
    assert (v2.workload, v2.labels["version"], v2.kind) == ("currency-converter-v2", "v2", "sidecar")
    assert by_name["currency-converter-v2-0"].workload.version == "v2"
    assert by_name["currency-converter-v1-0"].workload.env["VERSION"] == "v1"
    assert (
        "POD_NAME" not in by_name["currency-converter-v1-0"].workload.env
    )  # downward API: the runtime's job
    assert (
        topo.gateway.id == "istio-ingressgateway.istio-system"
        and topo.proxies[topo.gateway.id] is topo.gateway
    )


def test_every_sidecar_has_an_outbound_socket_per_registry_port_and_inbound_port_per_target_port(tmp_path):
    topo, _ = lab_topology(tmp_path)
    for proxy in topo.sidecars:
        assert set(proxy.outbound_sockets) == {80, 8080, 9001}  # fx-rates; currency-converter; tcp-echo
    client = topo.proxies["sidecar~client-0.payments-prod"]
    assert client.inbound_ports == {}  # no Service selects the client
    assert set(topo.proxies["sidecar~currency-converter-v1-0.payments-prod"].inbound_ports) == {8080, 9001}
    v1 = next(i for i in topo.instances if i.name == "currency-converter-v1-0")
    assert (
        set(v1.tcp_sockets) == {9001} and not v1.tcp_ports
    )  # its TCP echo port: a socket behind the sidecar
    bound = [
        port for p in topo.proxies.values() for port in (*p.inbound_ports.values(), *p.gateway_ports.values())
    ] + [
        port for i in topo.instances if i.app_port is not None for port in (i.app_port, *i.tcp_ports.values())
    ]
    assert len(bound) == len(set(bound)), "two listeners would share a 127.0.0.1 port"
    sockets = [
        sock for p in topo.proxies.values() for sock in (p.admin_socket, *p.outbound_sockets.values())
    ] + [
        s for i in topo.instances if i.app_socket is not None for s in (i.app_socket, *i.tcp_sockets.values())
    ]
    assert len(sockets) == len(set(sockets)), "two listeners would share a Unix socket"
    assert {s.parent for s in sockets} == {tmp_path / "sock"}


def test_an_app_behind_a_sidecar_has_a_socket_and_no_port_and_one_without_a_port(tmp_path):
    topo, _ = lab_topology(tmp_path)
    for inst in topo.instances:
        if inst.proxy is not None:  # reachable only through its sidecar (and by the lab's user)
            assert inst.app_port is None and inst.app_socket is not None
            assert inst.url("/healthz").startswith("http+unix://")
        else:  # a pod without a sidecar is reachable in plaintext, as on Kubernetes
            assert inst.app_socket is None and inst.url("/x") == f"http://127.0.0.1:{inst.app_port}/x"


def test_same_allocator_sequence_gives_the_same_topology(tmp_path):
    first, _ = lab_topology(tmp_path)
    second, _ = lab_topology(tmp_path)
    assert first == second


def test_service_endpoints_are_sidecar_inbound_ports_or_the_bare_app(tmp_path):
    topo, _ = lab_topology(tmp_path)
    cc = topo.service(CC)
    endpoints = topo.endpoints(cc, cc.port(8080))
    assert sorted(e.port for e in endpoints) == sorted(
        i.proxy.inbound_ports[8080]
        for i in topo.instances
        if i.workload.name.startswith("currency-converter")
    )
    fx = topo.service("fx-rates.external.svc.cluster.local")
    [fx_instance] = [i for i in topo.instances if i.workload.name == "fx-rates"]
    assert [e.port for e in topo.endpoints(fx, fx.port(80))] == [fx_instance.app_port]
    assert fx.port(80).target_port == 8080 and fx.port(80).protocol == "HTTP"


def test_ensure_ports_add_listener_ports_once(tmp_path):
    topo, ports = lab_topology(tmp_path)
    alloc = lambda: next(ports)  # noqa: E731
    assert ensure_outbound_port(topo, 9999) is True
    assert ensure_outbound_port(topo, 9999) is False
    assert all(p.outbound_sockets[9999] == p.outbound_socket(9999) for p in topo.sidecars)
    assert ensure_gateway_port(topo, 80, alloc) is True and 80 in topo.gateway.gateway_ports


INJECTION = """
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Namespace
metadata: {name: meshed, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: opted-in, namespace: plain}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: a, sidecar.istio.io/inject: "true"}}
    spec: {containers: [{name: a, ports: [{containerPort: 9000}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: opted-out, namespace: meshed}
spec:
  template:
    metadata: {labels: {app: b}, annotations: {sidecar.istio.io/inject: "false"}}
    spec: {containers: [{name: b, ports: [{containerPort: 9000}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: default-off, namespace: plain}
spec:
  template:
    metadata: {labels: {app: c}}
    spec: {containers: [{name: c, ports: [{containerPort: 9000}]}]}
"""


def test_injection_follows_istio_namespace_label_then_pod_opt_in_or_out(tmp_path):
    ports = itertools.count(30000)
    topo = build_topology(manifests.load(INJECTION), tmp_path, lambda: next(ports))
    injected = {i.name: i.proxy is not None for i in topo.instances}
    assert injected == {"default-off-0": False, "opted-in-0": True, "opted-in-1": True, "opted-out-0": False}


def test_port_protocol_follows_istio_naming():
    assert port_protocol("http") == "HTTP"
    assert port_protocol("http-direct") == "HTTP"
    assert port_protocol("grpc-api") == "GRPC"
    assert port_protocol("tcp-db") == "TCP"
    assert port_protocol("web", app_protocol="http2") == "HTTP2"
    assert port_protocol("web") == ""  # unnamed: sniffed


def test_unsupported_app_kinds_and_ports_are_named(tmp_path):
    statefulset = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: data}\nspec: {}\n"
    with pytest.raises(
        UnsupportedError, match=r"<string> \(document 1\) StatefulSet/db: kind StatefulSet .*kind"
    ):
        build_topology(manifests.load(statefulset), tmp_path, lambda: 1)
    mongo = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: data}\n"
    mongo += "spec: {ports: [{name: mongo, port: 27017}]}\n"
    with pytest.raises(UnsupportedError, match=r"Service/db: field spec.ports\[0\] is a Mongo port"):
        build_topology(manifests.load(mongo), tmp_path, lambda: 1)
    portless = INJECTION.split("---")[4].replace("ports: [{containerPort: 9000}]", "image: x")
    # the app's port comes from the lab (PORT), so a Deployment without containerPort builds
    assert [w.name for w in build_topology(manifests.load(portless), tmp_path, lambda: 1).workloads] == [
        "default-off"
    ]


SHOP = Path(__file__).parent / "shop" / "apps.yaml"


def shop_doc(name: str) -> dict:
    """One Deployment of the shop scenario, to edit."""
    docs = yaml.safe_load_all(SHOP.read_text())
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def shop_topology(tmp_path: Path, *edited: dict) -> Topology:
    """The lab's apps and the shop's, with ``edited`` objects replacing theirs (as the local backend does)."""
    ports = itertools.count(30000)
    by_key = {
        r.key: r for r in manifests.load(paths.APPS) + manifests.load(SHOP) + manifests.load(list(edited))
    }
    return build_topology(list(by_key.values()), tmp_path, lambda: next(ports))


def test_a_source_is_a_workload_by_namespace_bare_name_or_alias(tmp_path):
    topo = shop_topology(tmp_path)
    assert resolve.workload(topo, "shop/web").name == "web"
    assert resolve.workload(topo, "web").namespace == "shop"
    legacy = resolve.workload(topo, "legacy")
    assert (legacy.namespace, legacy.name) == ("legacy", "legacy-client")
    assert [p.id for p in resolve.proxies(topo, "orders-v1")] == [
        "sidecar~orders-v1-0.shop",
        "sidecar~orders-v1-1.shop",
    ]
    assert resolve.proxies(topo, "ingress") == [topo.gateway] and resolve.proxies(topo, "shop/batch") == []
    # Without a sidecar: straight to one endpoint of the Service (kube-proxy), the short name resolving in
    # the caller's namespace like DNS would.
    target, headers = resolve.resolver(topo, "shop/batch")("http://orders:9000/x")
    orders = topo.service(service_fqdn("orders", "shop"))
    endpoints = {e.port for e in topo.endpoints(orders, orders.port(9000))}
    assert int(target.split(":")[2].split("/")[0]) in endpoints and headers == {"Host": "orders:9000"}
    web = topo.proxies["sidecar~web-0.shop"]
    assert resolve.resolver(topo, "web")("http://orders:9000/x?a=1") == (
        unixhttp.url(web.outbound_sockets[9000], "/x?a=1"),
        {"Host": "orders:9000"},
    )


def test_unknown_and_ambiguous_sources_name_the_candidates(tmp_path):
    other_web = shop_doc("web")
    other_web["metadata"]["namespace"] = "payments-prod"
    topo = shop_topology(tmp_path, other_web)
    with pytest.raises(
        LabError, match=r"(?s)workload 'web' is ambiguous\nWhat to do: .*one of payments-prod/web, shop/web"
    ):
        resolve.workload(topo, "web")
    with pytest.raises(
        LabError, match=r"(?s)no workload 'shop/nope'.*shop/orders-v1, shop/orders-v2.*client, legacy"
    ):
        resolve.workload(topo, "shop/nope")


def test_kinds_are_named_as_kubectl_takes_them():
    kinds = {"VirtualService", "ServiceEntry", "AuthorizationPolicy", "Gateway", "Deployment"}
    for name in ("vs", "virtualservices", "VirtualService", "virtualservice.networking.istio.io"):
        assert resolve.kind(name, kinds) == "VirtualService"
    assert resolve.kind("serviceentries", kinds) == "ServiceEntry"
    assert resolve.kind("authorizationpolicies", kinds) == "AuthorizationPolicy"
    assert resolve.kind("gateways", kinds) == "Gateway" and resolve.kind("deploy", kinds) == "Deployment"
    with pytest.raises(
        LabError, match="unknown kind 'virtualservise'\nWhat to do: use one of AuthorizationPolicy"
    ):
        resolve.kind("virtualservise", kinds)


def test_env_from_fields_the_kubelet_does_not_fill_is_refused_by_name(tmp_path):
    secret = shop_doc("web")
    secret["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    ]
    field = r"spec.template.spec.containers\[0\].env\[0\].valueFrom"
    with pytest.raises(UnsupportedError, match=rf"Deployment/web {field}.secretKeyRef: is not supported"):
        shop_topology(tmp_path, secret)
    typo = shop_doc("web")
    typo["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.nmae"}}}
    ]
    with pytest.raises(
        UnsupportedError, match=rf"{field}.fieldRef.fieldPath: 'metadata.nmae' is not a pod field"
    ):
        shop_topology(tmp_path, typo)
    env_from = shop_doc("web")
    env_from["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "web"}}]
    with pytest.raises(
        UnsupportedError, match=r"containers\[0\].envFrom: is not supported by the local backend"
    ):
        shop_topology(tmp_path, env_from)


def test_capacity_names_the_deployment_the_count_and_the_limit(tmp_path):
    big = shop_doc("orders-v1")
    big["spec"]["replicas"] = 40
    topo = shop_topology(tmp_path, big)
    roomy = {"memory_bytes": 2**40, "threads": 10**6}
    capacity.check(topo, set(), capacity.Limits(**roomy))
    with pytest.raises(
        CapacityError, match=r"deployment/orders-v1 \(shop\) with 40 replica\(s\) would start \d+ more"
    ):
        capacity.check(topo, set(), capacity.Limits(**(roomy | {"threads": 128})))
    with pytest.raises(CapacityError, match=r"orders-v1.*needing about \d+ MiB; this machine has 100 MiB"):
        capacity.check(topo, set(), capacity.Limits(**(roomy | {"memory_bytes": 100 * 2**20})))
    with pytest.raises(CapacityError, match=r"orders-v1.*needing about \d+ threads.*limit of 100"):
        capacity.check(topo, set(), capacity.Limits(**(roomy | {"threads": 100})))
    running = {supervisor.app_name(i) for i in topo.instances}
    running |= {supervisor.envoy_name(p) for p in topo.proxies.values()}
    capacity.check(topo, running, capacity.Limits(memory_bytes=0, threads=0))  # none new
    running.discard(supervisor.envoy_name(topo.gateway))
    with pytest.raises(
        CapacityError, match=r"(?s)the ingress gateway would start 1 more processes.*stop other labs"
    ):
        capacity.check(topo, running, capacity.Limits(**(roomy | {"memory_bytes": 1})))


def test_inotify_instances_are_counted_from_proc():
    libc = ctypes.CDLL(None, use_errno=True)
    me = Path(f"/proc/{os.getpid()}")
    before = capacity.inotify_held(me)
    fd = libc.inotify_init()
    assert fd >= 0, os.strerror(ctypes.get_errno())
    try:
        assert capacity.inotify_held(me) == before + 1
    finally:
        os.close(fd)
    assert capacity.inotify_held(me) == before


def test_ports_are_kept_by_what_they_are_for_so_adding_a_workload_moves_nothing(tmp_path):
    def assigned(*extra: dict) -> tuple[Topology, bool]:
        by_key = {r.key: r for r in manifests.load(paths.APPS) + manifests.load(list(extra))}
        topo = build_topology(list(by_key.values()), tmp_path, itertools.count(1).__next__)
        ensure_gateway_port(topo, 80, itertools.count(1).__next__)
        ports = Ports(tmp_path / "ports.json")
        added = ports.assign(topo)
        ports.save(topo)
        return topo, added

    def numbers(topo: Topology) -> dict[str, int]:
        out = {f"app {i.name}": i.app_port for i in topo.instances if i.app_port is not None}
        for p in topo.proxies.values():
            out |= {f"{p.id} {k}": v for k, v in p.gateway_ports.items()}
            out |= {f"{p.id} in {k}": v for k, v in p.inbound_ports.items()}
        return out

    first, added = assigned()
    assert added and len(set(numbers(first).values())) == len(numbers(first))  # every port its own
    again, added = assigned()
    assert not added and numbers(again) == numbers(first)  # a new kernel: the same ports
    web = shop_doc("web")
    web["metadata"]["namespace"] = "payments-prod"  # sorts before every lesson workload but one
    # without a sidecar, so its app gets a port (behind one, the app and the proxy's admin are sockets)
    web["spec"]["template"]["metadata"].setdefault("labels", {})["sidecar.istio.io/inject"] = "false"
    grown, added = assigned(web)
    assert added and {k: v for k, v in numbers(grown).items() if k in numbers(first)} == numbers(first)


def test_capacity_counts_the_kubelet_of_a_pod_with_liveness_or_startup_probes(tmp_path):
    plain, probed = shop_doc("orders-v1"), shop_doc("orders-v1")
    for doc in (plain, probed):
        doc["spec"]["replicas"] = 4
    probed["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {"tcpSocket": {"port": 8080}}
    roomy = {"memory_bytes": 2**40, "threads": 10**6}
    needed = []
    for doc in (plain, probed):
        with pytest.raises(CapacityError, match=r"needing about (\d+) MiB") as err:
            capacity.check(
                shop_topology(tmp_path, doc), set(), capacity.Limits(**(roomy | {"memory_bytes": 1}))
            )
        needed.append(int(re.search(r"needing about (\d+) MiB", str(err.value))[1]))
    assert needed[1] - needed[0] == 4 * capacity.MEMORY_PER_APP // 2**20  # one kubelet per replica
