"""The local control plane end to end: real Envoys fed over ADS by the lab's istiod (labkit/local/xds).

One lab for the module; each test leaves it at the 90/10 canary with every proxy SYNCED.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from labkit import lesson, paths, scenario
from labkit.backends import local as local_backend
from labkit.backends.local import LocalLab
from labkit.local import capacity, envoy, processes
from labkit.local.supervisor import ISTIOD
from labkit.local.xds import snapshot, store, sync

pytestmark = pytest.mark.mesh

URL = lesson.URL
MESH = paths.CLUSTER_CONFIG / "mesh"
CLIENT = "sidecar~client-0.payments-prod"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    lab = LocalLab(tmp_path_factory.mktemp("xds-state"))
    try:
        lab.up()
        lab.ensure("canary-90-10")
        yield lab
    finally:
        lab.down()


def _pid(lab: LocalLab, name: str) -> int:
    rec = processes.record(lab.files.run_dir, name)
    assert rec is not None and processes.is_alive(rec), f"{name} is not running"
    return rec.pid


def _all_synced(lab: LocalLab) -> None:
    rows = lab.proxy_status()
    assert len(rows) == 4  # three sidecars and the gateway
    assert all(r.synced for r in rows), rows


def test_istiod_runs_as_a_lab_process_and_every_proxy_is_synced_without_watching_files(lab):
    assert "istiod" in " ".join(psutil.Process(_pid(lab, ISTIOD)).cmdline())
    _all_synced(lab)
    [client] = [r for r in lab.proxy_status() if r.proxy == CLIENT]
    assert {k: client.types[k] for k in ("CDS", "LDS", "EDS", "RDS")} == dict.fromkeys(
        ("CDS", "LDS", "EDS", "RDS"), "SYNCED"
    )
    for rec in processes.records(lab.files.run_dir):
        if rec.name.startswith("envoy."):
            assert capacity.inotify_held(Path(f"/proc/{rec.pid}")) == 0, rec.name
    boot = (Path(lab.files.root) / "proxies").rglob("bootstrap.yaml")
    text = next(iter(boot)).read_text()
    assert "xds-grpc" in text and "~127.0.0.1~" in text and "path_config_source" not in text


def test_a_weight_change_is_acked_before_apply_returns_and_touches_no_cluster(lab):
    modified = "cluster_manager.cluster_modified"
    before = lab.proxy_stats("client", modified)
    lab.apply(MESH / "virtual-service-currency-converter-50-50.yaml")
    assert lab.route_weights() == {"v1": 50, "v2": 50}  # Envoy runs it the moment apply returns
    _all_synced(lab)
    assert lab.proxy_stats("client", modified) == before  # RDS only: no cluster rebuilt
    lab.apply(MESH / "virtual-service-currency-converter-90-10.yaml")
    assert lab.route_weights() == {"v1": 90, "v2": 10}


def _bad_route(configs: dict) -> dict:
    """The client's route to the canary's service, with a route first whose regex RE2 refuses: Envoy NACKs
    that route config (and takes the others of the same push: each RDS resource stands alone)."""
    cfg = configs[CLIENT]
    routes = copy.deepcopy(cfg.routes)
    vhost = next(
        v for r in routes for v in r["virtual_hosts"] if any(scenario.SERVICE in d for d in v["domains"])
    )
    bad = copy.deepcopy(vhost["routes"][0])
    bad["match"] = {"safe_regex": {"regex": "(unclosed"}}
    vhost["routes"].insert(0, bad)
    cfg.routes = routes
    return configs


def test_a_nack_names_the_proxy_and_envoys_error_and_the_proxy_keeps_serving(lab, monkeypatch):
    real = local_backend.translate
    monkeypatch.setattr(local_backend, "translate", lambda *a, **k: _bad_route(real(*a, **k)))
    with pytest.raises(
        sync.SyncError, match=rf"(?s){CLIENT} rejected its RDS update of '\d+'.* \(NACK\): missing \)"
    ):
        lab.apply(MESH / "virtual-service-currency-converter-50-50.yaml")
    [client] = [r for r in lab.proxy_status() if r.proxy == CLIENT]
    assert client.types["RDS"] == "NACK" and "missing )" in client.errors["RDS"]
    assert lab.route_weights() == {"v1": 90, "v2": 10}  # its last accepted config
    assert lab.send(URL, n=20, progress=False).codes() == {200: 20}
    monkeypatch.setattr(local_backend, "translate", real)
    lab.apply(MESH / "virtual-service-currency-converter-90-10.yaml")
    _all_synced(lab)


def test_killed_istiod_leaves_traffic_flowing_and_up_restarts_it_with_the_same_config(lab):
    served = json.loads(snapshot.snapshot_file(Path(lab.files.root)).read_text())
    codes: Counter = Counter()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            codes.update(lab.send(URL, n=10, progress=False).codes())

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        os.kill(_pid(lab, ISTIOD), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not any(ISTIOD in p for p in lab.status().problems) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(p.startswith(f"{ISTIOD} (the control plane)") for p in lab.status().problems)
        time.sleep(3)  # traffic on the last config while no control plane runs (Envoys retry meanwhile)
        lab.up()
    finally:
        stop.set()
        sender.join(timeout=30)
    assert codes[200] > 0 and set(codes) == {200}, codes
    assert not lab.status().problems
    _all_synced(lab)  # every Envoy reconnected and ACKed what the new istiod serves
    assert json.loads(snapshot.snapshot_file(Path(lab.files.root)).read_text()) == served
    lab.apply(MESH / "virtual-service-currency-converter-50-50.yaml")  # the next change reaches them
    assert lab.route_weights() == {"v1": 50, "v2": 50}
    lab.apply(MESH / "virtual-service-currency-converter-90-10.yaml")


def test_envoy_admin_reports_the_versions_istiod_sent(lab):
    node = next(n for n, d in lab._procs.snapshot()["nodes"].items() if d["proxy"] == CLIENT)
    want = lab._procs.snapshot()["nodes"][node]["types"][snapshot.ROUTE]["version"]
    dump = envoy.config_dump(lab._proxy("client"))  # what istioctl proxy-config reads
    routes = next(c for c in dump["configs"] if c["@type"].endswith(".RoutesConfigDump"))
    assert want in {r["version_info"] for r in routes["dynamic_route_configs"]}


def test_envoy_creates_istios_stats_and_what_its_pod_asks_for_only(lab):
    """istio-proxy's stats inclusion list (statsmatcher.py): the counters behind istio_requests_total,
    readiness and draining stay; the client's pod asks for its outbound cluster counters (its
    proxy.istio.io/config), a server's pod does not get them; other families are never made."""
    assert lab.send(URL, n=5, progress=False).codes() == {200: 5}

    def names(workload: str) -> set[str]:
        text = envoy.admin_get(lab._proxy(workload), "/stats")
        return {line.partition(": ")[0] for line in text.splitlines()}

    client, server = names("client"), names("currency-converter-v1")
    for made in (client, server):
        assert any(n.startswith("istiolocal.") for n in made)  # the request counters (listeners.STATS_PREFIX)
        assert {"cluster_manager.cluster_modified", "listener_manager.total_listeners_warming"} <= made
        assert not [n for n in made if n.startswith("cluster.inbound|") or n.endswith("downstream_rq_total")]
    assert any(
        n.startswith("cluster.outbound|") and n.endswith("upstream_rq_pending_overflow") for n in client
    )
    assert not [n for n in server if n.startswith("cluster.outbound|")]


def test_the_ingress_port_stays_the_labs_while_no_gateway_listens_on_it(lab):
    port = int(lab.status().ingress_url.rsplit(":", 1)[1])
    with socket.socket() as other, pytest.raises(OSError, match="in use"):
        other.bind(("127.0.0.1", port))  # another lab, another program: refused
    with socket.socket() as caller, pytest.raises(ConnectionRefusedError):
        caller.connect(("127.0.0.1", port))  # no listener yet: refused, as on a fresh port
    gateway = MESH / "gateway-currency-converter.yaml"
    ingress_vs = MESH / "virtual-service-currency-converter-ingress.yaml"
    lab.apply(gateway)
    lab.apply(ingress_vs)
    try:
        served = lab.send(
            f"{lab.status().ingress_url}/convert?from=NOK&to=EUR&amount=1",
            n=10,
            source="ingress",
            progress=False,
        )
        assert served.codes() == {200: 10}  # Envoy's listener binds beside istiod's placeholder
    finally:
        lab.delete(ingress_vs)
        lab.delete(gateway)
    with socket.socket() as other, pytest.raises(OSError, match="in use"):
        other.bind(("127.0.0.1", port))


def test_labkit_proxy_status_prints_a_row_per_proxy_and_exits_0_when_all_synced(lab):
    env = {**os.environ, "LAB_STATE": str(lab.files.root), "LAB_BACKEND": "local"}
    run = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "proxy-status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split()[:6] == ["NAME", "CDS", "LDS", "EDS", "RDS", "ECDS"]
    assert len(rows) == 4 and all(r.split()[1:3] == ["SYNCED", "SYNCED"] for r in rows)


def test_a_cluster_change_is_acked_too_with_its_endpoints_resent(lab):
    modified = "cluster_manager.cluster_modified"
    before = sum(lab.proxy_stats("client", modified).values())
    lab.apply(MESH / "destination-rule-currency-converter-outlier.yaml")  # CDS: the clusters change
    _all_synced(lab)
    assert sum(lab.proxy_stats("client", modified).values()) > before
    lab.apply(MESH / "destination-rule-currency-converter.yaml")
    _all_synced(lab)
    assert lab.send(URL, n=20, progress=False).codes() == {200: 20}


def test_a_change_another_kernel_made_is_where_this_kernels_next_change_starts(lab):
    """A second process (``labkit apply``) publishes a new snapshot; this one reads the new index and only
    the lists it does not hold yet, pushes its own change from there, and the store keeps only the lists of
    the last two indexes."""
    env = {**os.environ, "LAB_STATE": str(lab.files.root), "LAB_BACKEND": "local"}
    other = MESH / "virtual-service-currency-converter-50-50.yaml"
    run = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "apply", str(other)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert lab.route_weights() == {"v1": 50, "v2": 50}
    assert lab._procs.snapshot() == store.read(Path(lab.files.root), {})  # the other kernel's snapshot
    lab.apply(MESH / "virtual-service-currency-converter-90-10.yaml")
    _all_synced(lab)
    assert lab.route_weights() == {"v1": 90, "v2": 10}
    root = Path(lab.files.root)
    nodes = lab._procs.snapshot()["nodes"].values()
    lists = {store.list_file(root, u, t["version"]).name for n in nodes for u, t in n["types"].items()}
    files = {f.name for f in store.lists_folder(root).iterdir()}
    assert lists <= files
    assert len(files) <= 2 * len(lists)
