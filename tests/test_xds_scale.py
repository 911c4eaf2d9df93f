"""Many proxies and many labs for one user: what file watching could not run (each Envoy held 5 inotify
instances; ``fs.inotify.max_user_instances`` is 128 by default, so ~25 Envoys per user)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from labkit import lesson, paths
from labkit.backends.local import LocalLab
from labkit.local import capacity, processes

pytestmark = pytest.mark.mesh

URL = lesson.URL


def _replicas(replicas: int) -> dict:
    docs = yaml.safe_load_all((paths.APPS / "currency-converter.yaml").read_text())
    found = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-v1"))
    found = copy.deepcopy(found)
    found["spec"]["replicas"] = replicas
    return found


def _envoys_hold_no_inotify(lab: LocalLab) -> int:
    envoys = [r for r in processes.records(lab.files.run_dir) if r.name.startswith("envoy.")]
    assert all(capacity.inotify_held(Path(f"/proc/{r.pid}")) == 0 for r in envoys)
    return len(envoys)


def test_48_sidecars_come_up_synced_and_serve(tmp_path_factory):
    lab = LocalLab(tmp_path_factory.mktemp("s"))  # short: socket paths must fit sun_path
    try:
        lab.up()
        lab.ensure("canary-90-10")
        lab.apply(_replicas(46))  # with the client's and v2's: 48 sidecars, and the gateway
        rows = lab.proxy_status()
        assert len(rows) == 49 and all(r.synced for r in rows)
        assert _envoys_hold_no_inotify(lab) == 49
        assert lab.send(URL, n=100, progress=False).codes() == {200: 100}
    finally:
        lab.down()
    assert processes.records(lab.files.run_dir) == []


def test_four_labs_in_four_state_folders_run_at_once_each_healthy_and_apart(tmp_path_factory):
    root = tmp_path_factory.mktemp("s")  # short: socket paths must fit sun_path
    labs = [LocalLab(root / f"lab{i}") for i in range(4)]
    try:
        for lab in labs:
            lab.up()
        ports = [set(json.loads(lab.files.ports.read_text())["ports"].values()) for lab in labs]
        assert sum(len(p) for p in ports) == len(set().union(*ports))  # no port shared between labs
        for lab in labs:
            assert lab.status().healthy, lab.status()
            assert all(r.synced for r in lab.proxy_status())
            _envoys_hold_no_inotify(lab)
            assert lab.send(URL, n=20, progress=False).codes() == {200: 20}
        others = [lab._procs.snapshot() for lab in labs[1:]]
        labs[0].ensure("canary-90-10")  # one lab's change reaches its proxies only
        assert labs[0].route_weights() == {"v1": 90, "v2": 10}
        assert [lab._procs.snapshot() for lab in labs[1:]] == others
    finally:
        for lab in labs:
            lab.down()
    assert all(processes.records(lab.files.run_dir) == [] for lab in labs)
