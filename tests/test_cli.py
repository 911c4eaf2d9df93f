"""The prototyping loop from a shell: the real ``labkit`` command as a subprocess, against a real local lab.

``labkit up`` leaves the lab running (its state in ``LAB_STATE``), so every later command attaches to it, as a
user's shell session would. The refusals of bad arguments need no lab and no process of their own: they call
the command's ``main`` (what the ``labkit`` script runs) in the test's process, its exit status as returned.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit import cli, paths
from labkit.lab import Lab

LABKIT = str(Path(sys.executable).with_name("labkit"))
SHOP = paths.CLUSTER_CONFIG / "examples" / "shop"
ORDERS = "http://orders.shop:9000/"
#: Sending from any workload, proxy_config and get come with the local backend's Lab API (issue #11).
LAB_API = all(hasattr(Lab, name) for name in ("proxy_config", "get"))
needs_lab_api = pytest.mark.skipif(not LAB_API, reason="needs Lab.proxy_config/Lab.get (local backend API)")


def labkit(*args: str, state: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAB_BACKEND": "local"}
    if state is not None:
        env["LAB_STATE"] = str(state)
    return subprocess.run(
        [LABKIT, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=paths.ROOT
    )


def in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, state: Path, *args: str):
    """``labkit ARGS`` as the script runs it, in this process: (exit status, stderr)."""
    monkeypatch.setenv("LAB_BACKEND", "local")
    monkeypatch.setenv("LAB_STATE", str(state))
    monkeypatch.chdir(paths.ROOT)
    status = cli.main(list(args))
    return status, capsys.readouterr().err


def test_get_names_the_unknown_kind_and_what_to_use(tmp_path: Path, capsys, monkeypatch):
    returncode, stderr = in_process(capsys, monkeypatch, tmp_path, "get", "virtualservise")
    assert returncode == 2
    assert "unknown kind 'virtualservise'" in stderr
    assert "What to do:" in stderr and "VirtualService" in stderr


def test_send_refuses_a_header_without_a_colon(tmp_path: Path, capsys, monkeypatch):
    returncode, stderr = in_process(capsys, monkeypatch, tmp_path, "send", ORDERS, "-H", "x-beta yes")
    assert returncode == 2
    assert "header 'x-beta yes' is not 'Name: value'" in stderr and "What to do:" in stderr


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A lab started with ``labkit up``, the shop applied with ``labkit apply``; ``labkit down`` after."""
    state = tmp_path_factory.mktemp("lab-state")
    try:
        up = labkit("up", state=state, timeout=300)
        assert up.returncode == 0, up.stderr
        files = [
            SHOP / "shop.yaml",
            SHOP / "destination-rule-orders.yaml",
            SHOP / "virtual-service-orders-header.yaml",
        ]
        applied = labkit("apply", *map(str, files), state=state)
        assert applied.returncode == 0, applied.stderr
        assert "deployment/orders-v3 (shop) created" in applied.stdout
        assert "virtualservice/orders (shop) created" in applied.stdout
        yield state
    finally:
        labkit("down", state=state, timeout=120)


@pytest.mark.mesh
def test_send_prints_the_split_with_its_interval_codes_and_flags_and_checks_the_weights(shop: Path):
    done = labkit("send", ORDERS, "--from", "client", "-n", "400", "--expect", "v1=80", "v2=20", state=shop)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "400 requests from client to http://orders.shop:9000/" in out
    assert "split measured from" in out
    assert "99.999 % intervals: v1 " in out and ", v2 " in out
    assert "codes: 200: 400" in out and "flags: none" in out
    assert "consistent with the configured 20 %" in out

    wrong = labkit("send", ORDERS, "--from", "client", "-n", "400", "--expect", "v1=50", "v2=50", state=shop)
    assert wrong.returncode == 1 and "NOT consistent" in wrong.stdout


@pytest.mark.mesh
def test_send_with_a_header_takes_the_header_rule(shop: Path):
    done = labkit("send", ORDERS, "-H", "x-beta: yes", "-n", "50", "--expect", "v3=100", state=shop)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "v3: 50 (100.0%)" in done.stdout


@pytest.mark.mesh
@needs_lab_api
def test_send_from_the_shops_own_caller(shop: Path):
    done = labkit("send", ORDERS, "--from", "shop/web", "-n", "400", "--expect", "v1=80", "v2=20", state=shop)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "400 requests from shop/web" in done.stdout
    # No VERSION in the shop's Deployments: the app reports its pod's version label, as the kubelet gives it.
    assert "split measured from the answers" in done.stdout


@pytest.mark.mesh
@needs_lab_api
def test_proxy_config_routes_shows_the_weights_envoy_runs(shop: Path):
    done = labkit("proxy-config", "shop/web", "routes", state=shop)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "orders.shop.svc.cluster.local" in line]
    assert any("header x-beta exact yes" in line and "|v3|orders" in line for line in lines), done.stdout
    assert any(
        "outbound|9000|v1|orders.shop.svc.cluster.local 80" in line
        and "outbound|9000|v2|orders.shop.svc.cluster.local 20" in line
        for line in lines
    ), done.stdout


@pytest.mark.mesh
@needs_lab_api
def test_get_lists_what_is_applied_by_short_name(shop: Path):
    vs = labkit("get", "vs", "-n", "shop", state=shop)
    assert vs.returncode == 0, vs.stderr
    assert vs.stdout.splitlines()[0].split() == ["NAMESPACE", "NAME", "DETAIL"]
    assert any(line.split()[:4] == ["shop", "orders", "hosts", "orders"] for line in vs.stdout.splitlines())
    deploys = labkit("get", "deploy", "-n", "shop", state=shop).stdout
    assert {"web", "orders-v1", "orders-v2", "orders-v3", "payments-v1"} <= {
        line.split()[1] for line in deploys.splitlines()[1:]
    }
    none = labkit("get", "pa", "-n", "shop", state=shop)
    assert none.returncode == 0 and "No resources found in shop namespace." in none.stdout
    everywhere = labkit("get", "virtualservices", state=shop).stdout  # every namespace, full plural name
    assert any(line.split()[:2] == ["shop", "orders"] for line in everywhere.splitlines())
