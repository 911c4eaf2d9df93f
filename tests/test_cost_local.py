"""The sidecar-cost measurement on the real local mesh (real Envoy, real mTLS): the three paths reach v1,
each proxy's CPU and memory are read, STRICT is back afterwards, and the Telemetry that turns the access log
off really stops the lines (and deleting it starts them again)."""

from __future__ import annotations

import pytest

import labkit
from labkit import checks, cost, lesson
from labkit.local import telemetry

OFF = lesson.manifest_path("mesh/telemetry-access-log-off.yaml")


@pytest.mark.mesh
def test_three_paths_measured_with_each_proxys_cpu_and_strict_restored(lab: labkit.Lab) -> None:
    lab.set_weights("currency-converter", v1=100, v2=0)
    try:
        paths = cost.paths(lab)
        # 50 rps for 4 s: a rate any machine running the suite reaches, so soundness is about the method
        points = cost.run(lab, paths, [50], cost.Mode((1.0,), repeats=1, seconds=4.0, ceiling=50))
    finally:
        lab.ensure("canary-90-10")
    assert [p.path for p in points] == [cost.DIRECT, cost.SERVER, cost.BOTH]
    checks.measurement_sound(points)
    assert {p.version for p in points[-1].result.outcomes} == {"v1"}  # the mesh path reached v1 too
    rows = {(r["path"], r["proxy"]) for r in cost.resource_rows(points)}
    assert rows == {
        (cost.SERVER, "server sidecar"),
        (cost.BOTH, "client sidecar"),
        (cost.BOTH, "server sidecar"),
    }
    both = points[-1]
    assert all(both.cpu[k] > 0 and both.rss_mb[k] > 10 for k in both.cpu)  # Envoys did work, and are Envoys
    assert lab.send(lesson.URL, n=5, source="legacy").codes() == {"connection reset": 5}  # STRICT again


def lines(lab: labkit.Lab) -> int:
    return len(lab.access_log("client", tail=100_000))


def counted(lab: labkit.Lab) -> float:
    """istio_requests_total as the client's sidecar reports it."""
    return sum(
        s.value for s in lab.metrics() if s["reporter"] == "source" and s["source_workload"] == "client"
    )


@pytest.mark.mesh
def test_the_mesh_wide_telemetry_stops_the_access_log_and_deleting_it_starts_it_again(
    lab: labkit.Lab,
) -> None:
    lab.send(lesson.URL, n=10)
    before = lines(lab)
    try:
        lab.apply(OFF)
        requests = counted(lab)  # (a listener update restarts the local counters, so read it after)
        assert lab.send(lesson.URL, n=20).codes() == {200: 20}
        assert lines(lab) == before
        assert counted(lab) == requests + 20  # only the file log is off: the metric still counts
    finally:
        lab.delete(OFF)
    lab.send(lesson.URL, n=20)
    grown = telemetry.wait_for_lines(lambda: [""] * lines(lab), lambda got: len(got) >= before + 20)
    assert len(grown) == before + 20
