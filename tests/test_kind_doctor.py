"""``labkit doctor`` against fake docker/kind/kubectl/istioctl executables (tests/fakes/bin), which stand in
for tools this machine cannot run and replay their documented output, including a stopped Docker daemon."""

from __future__ import annotations

import socket

import pytest
from fakes import harness

from labkit import cli
from labkit.kind import doctor


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return harness.install(tmp_path, monkeypatch)


def _istio_release(tmp_path, monkeypatch):
    """An unpacked Istio release's samples/addons, as ISTIO_HOME points to it on a trainee's laptop."""
    addons = tmp_path / "istio-1.31.1" / "samples" / "addons"
    addons.mkdir(parents=True)
    for name in ("prometheus.yaml", "kiali.yaml"):
        (addons / name).write_text("kind: List\n")
    monkeypatch.setenv("ISTIO_HOME", str(tmp_path / "istio-1.31.1"))


def test_healthy_machine_reports_versions_and_exits_0(fake, capsys, monkeypatch, tmp_path):
    _istio_release(tmp_path, monkeypatch)
    monkeypatch.setattr(
        doctor, "HOST_PORTS", ()
    )  # this shared machine's 8080 may be busy; ports tested below
    assert cli.main(["--backend", "kind", "doctor"]) == 0
    out = capsys.readouterr().out
    for line in ("docker 28.3.2: 8 CPUs, 15.5 GiB", "kind v0.32.0", "kubectl v1.36.1", "istioctl 1.31.1"):
        assert line in out
    assert "ready for the kind backend" in out


def test_docker_not_running_is_one_line_with_the_fix(fake, capsys, monkeypatch):
    monkeypatch.setattr(doctor, "HOST_PORTS", ())
    fake.docker_down()
    assert cli.main(["--backend", "kind", "doctor"]) == 1
    out = capsys.readouterr().out
    [line] = [ln for ln in out.splitlines() if "Docker daemon" in ln]
    assert line.startswith("[error] Docker daemon not reachable: Cannot connect to the Docker daemon")
    assert "start Docker" in line


def test_small_docker_gets_a_warning_with_the_fix(fake, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_INFO", "2 4123000000 28.3.2")
    [ok, warning] = doctor.check_docker()
    assert warning.level == "warning"
    assert "2 CPUs / 3.8 GiB" in warning.message and "4 CPUs / 8 GiB" in warning.message
    assert "Resources" in warning.fix


def test_node_image_outside_istio_range_is_an_error(tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text("kind: Cluster\nnodes:\n- role: control-plane\n  image: kindest/node:v1.37.0\n")
    check = doctor.check_node_image(config)
    assert check.level == "error"
    assert "supports Kubernetes 1.32-1.36" in check.message


def test_the_lab_cluster_config_pins_a_supported_node_image():
    assert doctor.check_node_image().level == "ok"


def test_unpinned_node_image_is_a_warning(tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text("kind: Cluster\nnodes:\n- role: control-plane\n")
    assert doctor.check_node_image(config).level == "warning"


def test_busy_host_port_is_reported_with_how_to_free_it():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        [check] = doctor.check_ports((port,))
    assert check.level == "error"
    assert f"host port {port} is in use" in check.message
    assert f"lsof -i :{port}" in check.fix


def test_missing_istioctl_is_an_error_naming_the_install(fake, monkeypatch):
    fake.respond("istioctl", ["version"], stderr="boom", rc=1)
    checks = doctor.check_tools()
    [bad] = [c for c in checks if c.level == "error"]
    assert "istioctl version" in bad.message and "labkit tools install" in bad.fix


def test_ports_are_not_checked_when_the_lab_cluster_already_holds_them(fake, monkeypatch):
    monkeypatch.setattr(doctor, "check_ports", lambda: pytest.fail("ports checked for an existing cluster"))
    doctor.run_checks(cluster_exists=True)


def test_a_tool_missing_from_path_is_one_line_with_where_to_get_it(fake, monkeypatch):
    monkeypatch.setenv("PATH", str(harness.BIN.parent / "no-such-dir"))
    [check] = doctor.check_tools(("istioctl",))
    assert check.level == "error"
    assert str(check) == (
        "[error] `istioctl` was not found on PATH; run `labkit tools install` (pinned istioctl), "
        "or see https://istio.io/latest/docs/setup"
    )


def test_missing_istio_addons_are_found_before_the_slow_steps(fake, tmp_path, monkeypatch):
    assert doctor.check_addons().level == "error"
    assert "ISTIO_HOME" in doctor.check_addons().fix
    _istio_release(tmp_path, monkeypatch)
    assert doctor.check_addons().level == "ok"
    assert any("Istio addons" in c.message for c in doctor.run_checks(cluster_exists=True))
