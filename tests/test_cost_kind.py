"""The sidecar-cost lesson's measurement on the kind backend, against the stand-ins of tests/fakes (fake
kubectl/kind/istioctl and API server; the real cluster cannot run here): the two mesh paths run load.py in the
caller's pod, the PeerAuthentication each path needs is applied, and no per-proxy figures are claimed."""

from __future__ import annotations

import pytest
from fakes import harness
from fakes.apiserver import FakeApiServer

from labkit import checks, cost
from labkit.backends.kind import KubeLab
from labkit.kind import doctor


@pytest.fixture
def lab(tmp_path, monkeypatch):
    fake = harness.install(tmp_path, monkeypatch)
    api = FakeApiServer().start()
    monkeypatch.setenv("FAKE_API_SERVER", api.url)
    addons = tmp_path / "istio" / "samples" / "addons"
    addons.mkdir(parents=True)
    for name in ("prometheus", "kiali"):
        (addons / f"{name}.yaml").write_text(
            f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: istio-system}}\n"
            f"spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n"
            f"  template:\n    metadata: {{labels: {{app: {name}}}}}\n"
            f"    spec: {{containers: [{{name: {name}, image: {name}}}]}}\n"
        )
    monkeypatch.setenv("ISTIO_HOME", str(tmp_path / "istio"))
    monkeypatch.setattr(doctor, "HOST_PORTS", ())  # this shared machine's 8080 may be busy
    lab = KubeLab("kind")
    lab.up()
    yield fake, api, lab
    api.stop()


def test_on_kind_the_two_mesh_paths_run_in_their_pods_and_the_check_judges_them(lab) -> None:
    fake, api, lab = lab
    paths = cost.paths(lab)
    assert [p.name for p in paths] == [cost.SERVER, cost.BOTH]
    assert all(not p.proxies for p in paths)  # no per-proxy CPU is claimed on kind
    points = cost.run(lab, paths, [100], cost.Mode((1.0,), repeats=1, seconds=1.0, ceiling=100))
    sources = [c[c.index("exec") + 3] for c in fake.calls("kubectl") if "exec" in c]
    assert sources == ["deploy/legacy-client", "deploy/client"]  # PERMISSIVE path first
    assert [len(p.result) for p in points] == [200, 200]  # 2 s at 100 rps: the 200 a p99 needs
    checks.measurement_sound(points)
    assert cost.resource_rows(points) == []
    [added] = cost.added_rows(points, baseline=paths[0].name)  # the notebook's baseline on kind
    assert added["path"] == cost.BOTH and added["+p99 ms"] == "0.00"  # the fake's latencies are all 4 ms
    modes = [
        '"PERMISSIVE"' in w.body
        for w in api.writes()
        if "peerauthentications/default" in w.path and w.method == "PATCH"
    ]
    assert modes == [True, False]  # PERMISSIVE for the plaintext caller, then STRICT again
