"""``lab.reset``/``lab.ensure`` on the real local mesh: after any leftover (a fault VirtualService, a deny-all
policy, a Deployment with FAIL_RATE, a running stream) the lab is exactly the checkpoint again."""

from __future__ import annotations

import copy

import pytest

from labkit import lesson, manifests, paths, scenario, traffic
from labkit.cli import main
from labkit.lab import checkpoint_resources, covers, in_sync


def _istio_keys(lab) -> set:
    return {r.key for r in lab.applied() if r.group.endswith("istio.io")}


@pytest.mark.mesh
def test_reset_removes_leftovers_and_restores_deployments(lab) -> None:
    lab.apply(paths.CLUSTER_CONFIG / "mesh/virtual-service-currency-converter-fault-abort.yaml")
    lab.apply(paths.CLUSTER_CONFIG / "mesh/authorization-policy-currency-converter-deny-all.yaml")
    lesson.set_env(lab, "currency-converter-v2", FAIL_RATE="1")
    seen: list[int] = []
    stream = lab.stream(scenario.URL, qps=50, on_batch=lambda batch: seen.append(len(batch)))
    stream.start()

    changes = lab.reset("canary-90-10")  # its time is in bench/bench_reset.py: tests do not time things

    assert not stream.running, "reset must stop background traffic"
    assert {"deleted"} <= {c.action for c in changes}
    wanted = {r.key for r in checkpoint_resources("canary-90-10") if r.group.endswith("istio.io")}
    assert _istio_keys(lab) == wanted
    app = next(r for r in manifests.load(paths.APPS) if r.name == "currency-converter-v2")
    live = next(r for r in lab.applied() if r.key == app.key)
    assert in_sync(live, app) and covers(app.body, live.body), "FAIL_RATE left on v2"
    result = lab.send(scenario.URL, n=200)
    assert result.codes() == {200: 200}, result.summary()


@pytest.mark.mesh
def test_reset_removes_a_leftover_in_istios_root_namespace(lab) -> None:
    """A mesh-wide Telemetry (istio-system) left by an interrupted lesson would keep every access log off."""
    lab.apply(paths.CLUSTER_CONFIG / "mesh/telemetry-access-log-off.yaml")
    lab.reset("canary-90-10")
    assert not [r for r in lab.applied() if r.kind == "Telemetry" and r.namespace == "istio-system"]


@pytest.mark.mesh
def test_reset_of_a_clean_lab_changes_nothing(lab) -> None:
    lab.ensure("canary-90-10")
    assert lab.reset("canary-90-10") == []


@pytest.mark.mesh
def test_reset_without_checkpoint_leaves_no_istio_configuration_and_cli_does_the_same(
    lab, monkeypatch, capsys
) -> None:
    lab.reset()
    assert _istio_keys(lab) == set()
    lab.ensure("mtls-strict")
    monkeypatch.setenv("LAB_STATE", str(lab.state))
    assert main(["--backend", "local", "reset", "deployed"]) == 0
    assert "lab at deployed" in capsys.readouterr().out
    assert _istio_keys(lab) == set()
    lab.ensure("canary-90-10")


@pytest.mark.mesh
def test_unknown_checkpoint_names_the_choices(lab) -> None:
    with pytest.raises(Exception, match="What to do: choose one of deployed, mtls-strict"):
        lab.reset("canary-50-50")


def test_stop_all_stops_registered_streams_without_a_lab() -> None:
    class Task:
        stopped = False

        def stop(self) -> None:
            self.stopped = True

    task = Task()
    traffic.register(task)
    traffic.stop_all()
    assert task.stopped


def test_drift_is_an_edit_the_manifest_did_not_make_but_not_a_server_default() -> None:
    app = next(r for r in manifests.load(paths.APPS) if r.name == "currency-converter-v2")
    live = copy.deepcopy(app.body)
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["terminationMessagePath"] = "/dev/termination-log"  # what an API server adds
    live["metadata"]["uid"] = "1234"
    assert in_sync(manifests.load(live)[0], app)
    container.setdefault("env", []).append({"name": "FAIL_RATE", "value": "0.5"})
    assert not in_sync(manifests.load(live)[0], app)
    vs = manifests.load(paths.CLUSTER_CONFIG / "mesh/virtual-service-currency-converter-90-10.yaml")[0]
    fault = manifests.load(paths.CLUSTER_CONFIG / "mesh/virtual-service-currency-converter-fault-abort.yaml")[
        0
    ]
    assert vs.key == fault.key and not in_sync(fault, vs), "a fault left in the same-named VirtualService"


def test_kind_reset_deletes_leftovers_and_restores_a_deployment_through_the_api(
    tmp_path, monkeypatch
) -> None:
    """KubeLab.applied() lists the live objects; reset deletes the Istio ones the checkpoint lacks and
    re-applies an edited Deployment (fake kind/istioctl and a stand-in API server: no cluster here)."""
    from fakes import harness
    from fakes.apiserver import FakeApiServer

    from labkit.backends.kind import KubeLab
    from labkit.kind import doctor

    harness.install(tmp_path, monkeypatch)
    api = FakeApiServer().start()
    monkeypatch.setenv("FAKE_API_SERVER", api.url)
    harness.istio_release(tmp_path, monkeypatch)
    monkeypatch.setattr(doctor, "HOST_PORTS", ())
    try:
        lab = KubeLab("kind")
        lab.ensure("canary-90-10")
        lab.apply(paths.CLUSTER_CONFIG / "mesh/virtual-service-currency-converter-fault-abort.yaml")
        lab.apply(lesson.with_env("currency-converter-v2", FAIL_RATE="1"))

        changes = lab.reset("mtls-strict")

        deleted = {(c.kind, c.name) for c in changes if c.action == "deleted"}
        assert deleted == {
            ("VirtualService", "currency-converter"),
            ("DestinationRule", "currency-converter"),
        }
        live = {r.key: r for r in lab.applied()}
        app = next(r for r in manifests.load(paths.APPS) if r.name == "currency-converter-v2")
        assert in_sync(live[app.key], app), "FAIL_RATE left on v2"
        assert lab.reset("mtls-strict") == []  # nothing drifted: nothing written
    finally:
        api.stop()
