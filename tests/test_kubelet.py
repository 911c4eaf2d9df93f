"""Liveness and startup probes on the local backend (issue #18): the pod's kubelet (labkit/local/kubelet.py)
probes on the spec's schedule, a startupProbe gates readiness until it passes, a failing probe restarts the
container (counted as RESTARTS), and a restart or a stop leaves no process behind. Through real processes:
the stand-in app, its kubelet, and in the mesh tests real Envoy."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml

from labkit import paths, tables
from labkit.local import kubelet, podfields, probes, processes
from labkit.state import LocalState

NAMESPACE = "kubelet"
#: How long a test waits for what the probes' short periods make happen in a second or two.
DEADLINE = 30.0


def _until(what: Callable[[], object], message: str) -> object:
    """Poll ``what`` until it is truthy, failing with ``message`` after DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        found = what()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{message} within {DEADLINE:.0f} s")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_failing_liveness_probe_restarts_the_app_and_a_stop_leaves_no_process(tmp_path):
    """The kubelet alone, with the stand-in app on a port: liveness waits for the startup probe (which
    passes once the app listens), then failureThreshold failures in a row kill and restart the app, the old
    one gone; the lab's stop (SIGTERM to the group) ends the kubelet and its app."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    status = tmp_path / "kubelet.json"
    started = probes.Probe("httpGet", 8080, path="/healthz", period=0.1, failures=200)
    failing = probes.Probe("httpGet", 8080, path="/status/500", period=0.2, failures=2)
    env = kubelet.environment({"startup": (started, port), "liveness": (failing, port)})
    env.update(MODE="echo", PORT=str(port), HOST="127.0.0.1")
    argv = [sys.executable, "-m", "labkit.local.kubelet", str(status), "--"]
    argv += [sys.executable, str(paths.SERVICE_DIR / "app.py")]
    rec = processes.start("kubelet-test", argv, pid_dir=tmp_path, log_file=tmp_path / "log", env=env)
    try:
        first = _until(lambda: kubelet.read(status).get("pid"), "the kubelet started no app")
        _until(lambda: kubelet.restarts(status) >= 1, "the failing liveness probe restarted nothing")
        assert _gone(first), "the killed app is still running"
        # liveness killed it, which runs only once startup passed (startup had 200 tries)
        assert "liveness probe failed 2 times in a row" in (tmp_path / "log").read_text()
        second = _until(
            lambda: kubelet.read(status).get("pid") not in (None, first) and kubelet.read(status)["pid"],
            "no new app",
        )
    finally:
        processes.stop([rec], tmp_path)
    assert _gone(rec.pid) and _gone(second)
    assert kubelet.read(status)["running"] is False


def test_restarts_back_off_as_the_kubelets_do():
    waits, waited = [], None
    for _ in range(8):
        waited = kubelet.backoff(waited, ran=1.0)
        waits.append(waited)
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300]
    assert kubelet.backoff(300, ran=kubelet.BACKOFF_RESET) == 0  # ten minutes up: at once again, then 10 s


def _deployment(name: str, app: str, container: dict, annotations: dict | None = None) -> dict:
    labels = {"app": app, "version": name.rsplit("-", 1)[-1]}
    base = {"name": "web", "image": "registry.example.com/web:1", "ports": [{"containerPort": 9080}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations or {}},
                "spec": {"containers": [{**base, **container}]},
            },
        },
    }


def _service(app: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "namespace": NAMESPACE},
        "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]},
    }


FAST = {"periodSeconds": 1, "failureThreshold": 2}
HEALTHZ = {"httpGet": {"path": "/healthz", "port": 9080}}
#: A startup probe that waits (up to a minute) for the app to listen: on a busy machine it takes seconds.
UP = {**HEALTHZ, "periodSeconds": 1, "failureThreshold": 60}


def _apps() -> str:
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"istio-injection": "enabled"}},
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": NAMESPACE},
            "spec": {"mtls": {"mode": "STRICT"}},
        },
        _service("web"),
        _service("flaky"),
        # startup: never passes (its grpc health says NOT_SERVING) -> readiness gated, not restarted yet
        _deployment(
            "web-v1",
            "web",
            {
                "ports": [{"containerPort": 9080}, {"containerPort": 9090}],
                "env": [{"name": "GRPC_HEALTH", "value": "NOT_SERVING"}],
                "startupProbe": {"grpc": {"port": 9090}, "periodSeconds": 1, "failureThreshold": 1000},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 9080}},
            },
        ),
        # startup passes after its initial delay -> ready, gets traffic
        _deployment(
            "web-v2",
            "web",
            {"startupProbe": {**UP, "initialDelaySeconds": 1}},
        ),
        # startup fails twice in a row -> killed and restarted, never ready
        _deployment(
            "web-v3", "web", {"startupProbe": {"httpGet": {"path": "/status/503", "port": 9080}, **FAST}}
        ),
        # liveness rewritten to pilot-agent: passes under STRICT; not rewritten: STRICT refuses it -> restarts
        _deployment("flaky-v1", "flaky", {"startupProbe": UP, "livenessProbe": {**HEALTHZ, **FAST}}),
        _deployment(
            "flaky-v2", "flaky", {"livenessProbe": {**HEALTHZ, **FAST}}, {probes.REWRITE_ANNOTATION: "false"}
        ),
    ]
    return yaml.safe_dump_all(docs)


def _restarts(lab) -> dict[str, int]:
    return {w.name: w.restarts for w in lab.status().workloads if w.namespace == NAMESPACE}


@pytest.mark.mesh
def test_startup_gates_readiness_and_failing_probes_restart_containers_as_the_kubelet_does(lab, capsys):
    lab.apply(_apps())
    assert not [line for line in capsys.readouterr().out.splitlines() if "ignores" in line]
    files = LocalState(Path(lab.state))
    _until(lambda: _restarts(lab)["web-v3"] >= 1, "the failing startup probe restarted nothing")
    _until(lambda: _restarts(lab)["flaky-v2"] >= 1, "the kubelet's liveness probe met no STRICT refusal")
    status = _until(
        lambda: (s := lab.status()) and {w.name: w.ready for w in s.workloads}["web-v2"] == 1 and s,
        "web-v2 never became ready after its startup probe passed",
    )
    ready = {w.name: (w.ready, w.restarts) for w in status.workloads if w.namespace == NAMESPACE}
    assert ready["web-v1"] == (0, 0)  # gated by its startup probe, which has 1000 tries
    assert ready["web-v2"] == (1, 0) and ready["flaky-v1"] == (1, 0)
    assert ready["web-v3"][0] == 0 and ready["flaky-v2"][1] >= 1
    table = {line.split()[0]: line.split()[2] for line in tables.workloads(status, NAMESPACE)}
    assert table["flaky-v1"] == "0" and int(table["flaky-v2"]) >= 1  # kubectl get pods' RESTARTS
    result = lab.send(f"http://web.{NAMESPACE}:9080/", n=30, source="client", progress=False)
    assert result.codes() == {200: 30} and set(result.counts()) == {"v2"}
    # a changed pod replaces its kubelet and app: neither the old kubelet nor its app is left
    pod = processes.record(lab.files.run_dir, "app.kubelet.web-v1-0")
    app = kubelet.read(files.kubelet_file(NAMESPACE, "web-v1-0")).get("pid")
    lab.apply(_apps().replace("NOT_SERVING", "SERVING"))
    assert pod is not None and app and _gone(pod.pid) and _gone(app), "the old pod left a process"
    _until(lambda: {w.name: w.ready for w in lab.status().workloads}["web-v1"] == 1, "web-v1 never started")


def test_liveness_and_startup_probes_are_no_longer_named_but_exec_ones_are():
    from labkit import manifests

    deployments = manifests.load(_apps())
    assert [podfields.ignored(r) for r in deployments if r.kind == "Deployment"] == [[]] * 5
    exec_probe = json.loads(
        json.dumps(_deployment("x-v1", "x", {"livenessProbe": {"exec": {"command": ["true"]}}}))
    )
    [resource] = manifests.load(yaml.safe_dump(exec_probe))
    assert podfields.ignored(resource) == ["livenessProbe"]


def test_on_kind_restarts_are_the_pods_restart_counts_summed_as_kubectl_shows_them():
    from labkit.kind import workloads

    def pod(*counts: int) -> dict:
        return {
            "status": {
                "containerStatuses": [{"name": f"c{i}", "restartCount": n} for i, n in enumerate(counts)]
            }
        }

    assert workloads.restarts([pod(2, 0), pod(1), {"status": {}}]) == 3


@pytest.mark.mesh
def test_an_app_that_crashes_under_its_kubelet_fails_the_apply_with_its_log_and_leaves_nothing(lab):
    from labkit.errors import LabError

    crashing = _deployment(
        "crash-v1", "crash", {"env": [{"name": "GRPC_HEALTH", "value": "bogus"}], "livenessProbe": HEALTHZ}
    )
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    with pytest.raises(
        LabError, match=r"(?s)app\.kubelet\.crash-v1-0 exited while starting.*GRPC_HEALTH='bogus'"
    ):
        lab.apply(yaml.safe_dump_all([namespace, crashing]))
    assert "crash-v1" not in {w.name for w in lab.status().workloads}  # brought back as it was
    assert not [r for r in processes.records(lab.files.run_dir) if "crash" in r.name]
