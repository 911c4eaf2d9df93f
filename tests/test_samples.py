"""Real-world Deployments on the local backend (issue #18): the fields only a kubelet uses are accepted and
named once per apply, and the workload runs and answers through real Envoy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import manifests, paths, samples
from labkit.errors import LabError
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
    for name in ("volumeMounts", "resources", "startupProbe"):  # an exec probe: left alone
        assert name in note
    # httpGet and tcpSocket probes are run, as Istio rewrites them (test_probes.py, test_kubelet.py)
    assert "readinessProbe" not in note and "livenessProbe" not in note
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


#: A release folder's layout with the lab's own YAML in it (Istio's is not shipped): samples/httpbin/.
HTTPBIN = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: httpbin}
---
apiVersion: v1
kind: Service
metadata: {name: httpbin, labels: {app: httpbin}}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: httpbin}
spec:
  selector: {matchLabels: {app: httpbin, version: v1}}
  template:
    metadata: {labels: {app: httpbin, version: v1}}
    spec:
      serviceAccountName: httpbin
      containers: [{name: httpbin, image: "registry.example.com/httpbin:0.1", ports: [{containerPort: 8080}]}]
"""


def release(tmp_path: Path) -> Path:
    (tmp_path / "samples" / "httpbin").mkdir(parents=True)
    (tmp_path / "samples" / "httpbin" / "httpbin.yaml").write_text(HTTPBIN)
    return tmp_path


def test_a_sample_is_its_files_after_the_labelled_default_namespace(tmp_path):
    home = release(tmp_path)
    assert samples.istio_home({"ISTIO_HOME": str(home)}) == home
    namespace, httpbin = samples.sources("httpbin", home)
    assert namespace["metadata"] == {"name": "default", "labels": {"istio-injection": "enabled"}}
    assert httpbin == home / "samples" / "httpbin" / "httpbin.yaml"
    assert samples.sources("httpbin/httpbin.yaml", home)[1] == httpbin  # a file under samples/


def test_a_missing_release_sample_or_file_says_what_to_do(tmp_path):
    with pytest.raises(LabError, match="(?s)ISTIO_HOME is not set.*What to do"):
        samples.istio_home({})
    with pytest.raises(LabError, match="has no samples/ folder"):
        samples.istio_home({"ISTIO_HOME": str(tmp_path)})
    home = release(tmp_path)
    with pytest.raises(LabError, match="(?s)no sample 'bookinfoo'.*bookinfo, helloworld"):
        samples.sources("bookinfoo", home)
    with pytest.raises(LabError, match="bookinfo/platform/kube/bookinfo.yaml does not exist"):
        samples.sources("bookinfo", home)


@pytest.mark.mesh
def test_labkit_apply_sample_runs_a_release_sample_in_default(tmp_path):
    home = release(tmp_path / "istio-1.31.0")
    env = {
        **os.environ,
        "LAB_BACKEND": "local",
        "LAB_STATE": str(tmp_path / "state"),
        "ISTIO_HOME": str(home),
    }
    labkit = [str(Path(sys.executable).with_name("labkit"))]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            labkit + list(args), capture_output=True, text=True, timeout=300, env=env, cwd=paths.ROOT
        )

    try:
        assert run("up").returncode == 0
        applied = run("apply-sample", "httpbin")
        assert applied.returncode == 0, applied.stderr
        assert "namespace/default created" in applied.stdout
        assert "deployment/httpbin (default) created" in applied.stdout
        sent = run("send", "http://httpbin.default:8000/anything", "-n", "20", "--from", "client")
        assert sent.returncode == 0, sent.stderr
        assert "v1: 20 (100.0%)" in sent.stdout and "codes: 200: 20" in sent.stdout
    finally:
        run("down")


def test_on_kind_a_sample_lands_in_the_labelled_default_namespace(tmp_path, monkeypatch):
    """Contract test on the kind backend's stand-ins (tests/fakes): the same sources through the Kubernetes
    API, the namespace labelled before the sample's pods are created, so they get sidecars."""
    from fakes import harness
    from fakes.apiserver import FakeApiServer

    from labkit.backends.kind import KubeLab
    from labkit.kind import doctor

    harness.install(tmp_path, monkeypatch)
    api = FakeApiServer().start()
    try:
        monkeypatch.setenv("FAKE_API_SERVER", api.url)
        harness.istio_release(tmp_path, monkeypatch)
        monkeypatch.setattr(doctor, "HOST_PORTS", ())
        lab = KubeLab("kind")
        lab.up()
        home = release(tmp_path / "istio-release")
        changes = [str(c) for s in samples.sources("httpbin", home) for c in lab.apply(s)]
        assert "deployment/httpbin (default) created" in changes
        namespace = api.objects["/api/v1/namespaces/default"]
        assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"
        [pod] = [
            o for o in api.objects.values() if o["kind"] == "Pod" and o["metadata"]["ownerName"] == "httpbin"
        ]
        assert [c["name"] for c in pod["spec"]["containers"]] == ["httpbin", "istio-proxy"]
    finally:
        api.stop()
