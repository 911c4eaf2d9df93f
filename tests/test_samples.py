"""Real-world Deployments on the local backend (issue #18): the fields only a kubelet uses are accepted and
named once per apply, and the workload runs and answers through real Envoy."""

from __future__ import annotations

import pytest

from labkit import manifests
from labkit.local import podfields

#: A Deployment as teams and Istio's samples write them (the lab's own YAML): volumes, resources, a security
#: context, placement, HTTP/TCP/exec probes, an init container and a second container.
REAL_WORLD = """
apiVersion: v1
kind: Namespace
metadata: {name: samples, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: inventory, namespace: samples}
spec:
  selector: {app: inventory}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: inventory-v2, namespace: samples}
spec:
  replicas: 1
  selector: {matchLabels: {app: inventory, version: v2}}
  template:
    metadata:
      labels: {app: inventory, version: v2}
      annotations: {prometheus.io/scrape: "true"}
    spec:
      securityContext: {runAsNonRoot: true}
      nodeSelector: {kubernetes.io/os: linux}
      tolerations: [{key: dedicated, operator: Equal, value: shop, effect: NoSchedule}]
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 1
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector: {matchLabels: {app: inventory}}
      volumes: [{name: tmp, emptyDir: {}}]
      initContainers: [{name: migrate, image: registry.example.com/inventory-migrate:2, command: [./migrate]}]
      containers:
        - name: inventory
          image: registry.example.com/inventory:2.0.1
          ports: [{containerPort: 9080}]
          env: [{name: LOG_DIR, value: /tmp/logs}]
          volumeMounts: [{name: tmp, mountPath: /tmp}]
          resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}
          securityContext: {runAsUser: 1000, readOnlyRootFilesystem: true}
          readinessProbe: {httpGet: {path: /ready, port: 9080}}
          livenessProbe: {tcpSocket: {port: 9080}}
          startupProbe: {exec: {command: [cat, /tmp/started]}}
        - name: log-shipper
          image: registry.example.com/shipper:1
"""


@pytest.mark.mesh
def test_kubelet_only_fields_are_named_once_and_the_workload_answers(lab, capsys):
    capsys.readouterr()
    changes = lab.apply(REAL_WORLD)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert {str(c) for c in changes} >= {"deployment/inventory-v2 (samples) created"}
    [note] = [line for line in printed if "ignores" in line]
    for name in ("volumes", "initContainers", "securityContext", "nodeSelector", "tolerations", "affinity"):
        assert name in note
    for name in ("volumeMounts", "resources", "readinessProbe", "livenessProbe", "startupProbe"):
        assert name in note
    assert "containers[1:]" in note and "Deployment/inventory-v2" in note
    result = lab.send("http://inventory.samples:9080/api/items", n=20, source="client", progress=False)
    assert result.codes() == {200: 20} and result.counts() == {"v2": 20}  # the echo stand-in, its label


def test_a_plain_deployment_gets_no_note():
    plain = manifests.load(
        """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers: [{name: web, image: meshlab/currency-converter:0.1.0, imagePullPolicy: IfNotPresent,
                    ports: [{containerPort: 8080}], env: [{name: VERSION, value: v1}]}]
"""
    )
    assert podfields.note(plain) is None


@pytest.mark.parametrize("field", podfields.POD_FIELDS)
def test_every_pod_field_is_named(field):
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x", "namespace": "n"},
        "spec": {"template": {"spec": {field: None, "containers": [{"name": "c", "image": "i"}]}}},
    }
    assert podfields.ignored(manifests.load(doc)[0]) == [field]
