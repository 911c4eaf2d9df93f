"""The sidecar-cost lesson's measurement on the kind backend, against the stand-ins of tests/fakes (fake
kubectl/kind/istioctl and API server; the real cluster cannot run here): the two mesh paths run load.py open
loop in the caller's pod, the PeerAuthentication each path needs is applied, and each proxy's CPU and memory
come from its container's cgroup."""

from __future__ import annotations

import pytest
from fakes import harness
from fakes.apiserver import FakeApiServer
from fakes.cgroup import CPU_USEC_PER_READ, INACTIVE_FILE, MEMORY_CURRENT

from labkit import checks, cost
from labkit.backends.kind import KubeLab
from labkit.errors import BackendError
from labkit.kind import doctor, usage


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
    assert [list(p.proxies) for p in paths] == [["server sidecar"], ["client sidecar", "server sidecar"]]
    points = cost.run(lab, paths, [100], cost.Mode((1.0,), repeats=1, seconds=1.0, ceiling=100))
    loads = [c for c in fake.calls("kubectl") if "load.py" in c]
    assert [c[c.index("exec") + 3] for c in loads] == ["deploy/legacy-client", "deploy/client"]  # PERMISSIVE
    assert all(c[c.index("--open-loop") :][:3] == ["--open-loop", "--duration", "2"] for c in loads)  # 2 s
    assert [len(p.result) for p in points] == [200, 200]  # 2 s at 100 rps: the 200 a p99 needs
    checks.measurement_sound(points)
    # each proxy's cgroup read before and after its point: one read's CPU per 200 requests, its working set
    rows = cost.resource_rows(points)
    assert [(r["path"], r["proxy"]) for r in rows] == [
        (cost.SERVER, "server sidecar"), (cost.BOTH, "client sidecar"), (cost.BOTH, "server sidecar")
    ]  # fmt: skip
    vcpu = CPU_USEC_PER_READ / 1e6 / 200 * 1000
    assert {(r["vCPU per 1,000 rps"], r["memory MB"]) for r in rows} == {
        (f"{vcpu:.2f}", f"{(MEMORY_CURRENT - INACTIVE_FILE) / 2**20:.0f}")
    }
    [added] = cost.added_rows(points, baseline=paths[0].name)  # the notebook's baseline on kind
    assert added["path"] == cost.BOTH and added["+p99 ms"] == "0.00"  # the fake's latencies are all 4 ms
    modes = [
        '"PERMISSIVE"' in w.body
        for w in api.writes()
        if "peerauthentications/default" in w.path and w.method == "PATCH"
    ]
    assert modes == [True, False]  # PERMISSIVE for the plaintext caller, then STRICT again


def test_on_kind_a_rate_the_pod_cannot_send_fails_the_check(lab, monkeypatch) -> None:
    """Open loop ends on time: a pod that sends only 60 rps when 100 are asked comes back short, and the
    CHECK names the rate it reached."""
    _, _, lab = lab
    monkeypatch.setenv("FAKE_LOAD_RPS", "60")
    [_, both] = cost.paths(lab)
    point = cost.measure(both, 100, 1.0)
    assert len(point.result) == 120 and point.achieved == pytest.approx(60)
    with pytest.raises(checks.CheckFailed, match="reached 60 rps"):
        checks.measurement_sound([point])


def test_cgroup_v1_or_a_missing_counter_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match="no cgroup v2 counters") as err:
        usage.parse("12345\n", "pod/x container istio-proxy (ns)")
    assert "What to do:" in str(err.value) and "pod/x" in str(err.value)
