"""The local topology from the real app manifests: who gets a sidecar, which ports each proxy binds, and
where a Service's traffic lands."""

from __future__ import annotations

import itertools

import pytest
from envoy_check import lab_topology

from labkit import manifests
from labkit.errors import UnsupportedError
from labkit.local.topology import build_topology, ensure_gateway_port, ensure_outbound_port, port_protocol

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


def test_every_sidecar_has_an_outbound_port_per_registry_port_and_inbound_per_target_port(tmp_path):
    topo, _ = lab_topology(tmp_path)
    for proxy in topo.sidecars:
        assert set(proxy.outbound_ports) == {80, 8080}  # fx-rates 80 + 8080, currency-converter 8080
    client = topo.proxies["sidecar~client-0.payments-prod"]
    assert client.inbound_ports == {}  # no Service selects the client
    assert set(topo.proxies["sidecar~currency-converter-v1-0.payments-prod"].inbound_ports) == {8080}
    bound = [
        port
        for p in topo.proxies.values()
        for port in (p.admin_port, *p.inbound_ports.values(), *p.outbound_ports.values())
    ] + [i.app_port for i in topo.instances]
    assert len(bound) == len(set(bound)), "two listeners would share a 127.0.0.1 port"


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
    assert ensure_outbound_port(topo, 9999, alloc) is True
    assert ensure_outbound_port(topo, 9999, alloc) is False
    assert all(9999 in p.outbound_ports for p in topo.sidecars)
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
    tcp = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: data}\n"
    tcp += "spec: {ports: [{name: tcp, port: 5432}]}\n"
    with pytest.raises(UnsupportedError, match=r"Service/db: field spec.ports\[0\] is a TCP port"):
        build_topology(manifests.load(tcp), tmp_path, lambda: 1)
    portless = INJECTION.split("---")[4].replace("ports: [{containerPort: 9000}]", "image: x")
    # the app's port comes from the lab (PORT), so a Deployment without containerPort builds
    assert [w.name for w in build_topology(manifests.load(portless), tmp_path, lambda: 1).workloads] == [
        "default-off"
    ]
