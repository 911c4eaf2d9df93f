"""Istio's traffic-management tasks on the local backend, through real Envoy and real HTTP: what each lesson
(notebooks 12-14) relies on, with the manifests of cluster-config/tasks/. istiod's source for each field is
named in labkit/local (routes.py, clusters.py) and docs/fidelity.md.

One lab for the module at the canary checkpoint; each test puts back what it changed.
"""

from __future__ import annotations

import uuid

import pytest

from labkit import lesson, paths
from labkit.local import telemetry
from labkit.manifests import load

pytestmark = pytest.mark.mesh

TASKS = paths.CLUSTER_CONFIG / "tasks"
URL = lesson.URL
SLOW_URL = URL.split("/convert")[0] + "/delay/0.1"  # the app's /delay/{seconds}: calls that overlap


def restore(lab) -> None:
    lab.ensure("canary-90-10")


def copies(lab, workload: str, marker: str, expected: int) -> list[str]:
    """The access-log lines of ``workload`` with ``marker``, once ``expected`` of them arrived (mirrored
    copies are sent after the primary's answer, so they can land a moment later)."""
    return telemetry.wait_for_lines(
        lambda: [line for line in lab.access_log(workload, tail=500) if marker in line],
        lambda lines: len(lines) >= expected,
    )


def test_end_user_jason_goes_to_v2_and_everyone_else_to_v1(lab):
    """VirtualService headers exact match (route.go TranslateRouteMatch): case-sensitive, first match wins."""
    try:
        lab.apply(TASKS / "virtual-service-currency-converter-end-user.yaml")
        jason = lab.send(URL, n=20, headers={"end-user": "jason"}, progress=False)
        others = lab.send(URL, n=20, progress=False)
        capital = lab.send(URL, n=10, headers={"end-user": "Jason"}, progress=False)
        assert jason.counts() == {"v2": 20}
        assert others.counts() == {"v1": 20}
        assert capital.counts() == {"v1": 10}
    finally:
        restore(lab)


def test_mirrored_copies_land_on_v2_while_the_caller_sees_only_v1(lab):
    """mirror + mirrorPercentage 100 (route.go TranslateRequestMirrorPolicy): one copy per request."""
    marker = f"mirror-{uuid.uuid4().hex[:8]}"
    try:
        lab.apply(TASKS / "virtual-service-currency-converter-mirror.yaml")
        result = lab.send(f"{URL}&run={marker}", n=20, concurrency=4, progress=False)
        assert result.counts() == {"v1": 20} and result.codes() == {200: 20}
        lines = copies(lab, "currency-converter-v2", marker, 20)
        assert len(lines) == 20 and all('" 200 ' in line for line in lines)
        assert (
            len([line for line in lab.access_log("currency-converter-v1", tail=500) if marker in line]) == 20
        )
    finally:
        restore(lab)


def test_a_failing_mirror_does_not_hurt_the_caller(lab):
    """The mirror's answer is dropped: v2 answering 500 to every copy leaves the caller's 200s."""
    marker = f"failing-{uuid.uuid4().hex[:8]}"
    try:
        lesson.set_env(lab, "currency-converter-v2", FAIL_RATE="1")
        lab.apply(TASKS / "virtual-service-currency-converter-mirror.yaml")
        result = lab.send(f"{URL}&run={marker}", n=20, concurrency=4, progress=False)
        assert result.codes() == {200: 20} and result.counts() == {"v1": 20}
        lines = copies(lab, "currency-converter-v2", marker, 20)
        assert len(lines) == 20 and all('" 500 ' in line for line in lines)
    finally:
        lesson.set_env(lab, "currency-converter-v2")
        restore(lab)


def test_mirror_percentage_zero_sends_no_copy(lab):
    """MirrorPercent: 0 means no mirror policy at all."""
    marker = f"none-{uuid.uuid4().hex[:8]}"
    vs = load(TASKS / "virtual-service-currency-converter-mirror.yaml")[0].body
    vs["spec"]["http"][0]["mirrorPercentage"] = {"value": 0.0}
    try:
        lab.apply(vs)
        assert lab.send(f"{URL}&run={marker}", n=10, progress=False).codes() == {200: 10}
        assert not [line for line in lab.access_log("currency-converter-v2", tail=500) if marker in line]
    finally:
        restore(lab)


def _overflow(lab) -> int:
    stats = lab.proxy_stats("client", "upstream_rq_pending_overflow")
    return sum(v for name, v in stats.items() if "currency-converter" in name)


def test_circuit_breaker_overflows_with_503_uo_and_counts_it_in_the_callers_proxy(lab):
    """connectionPool maxConnections 1, http1MaxPendingRequests 1, maxRequestsPerConnection 1
    (cluster_traffic_policy.go applyConnectionPool): one call at a time passes, three at once overflow."""
    try:
        lab.apply(TASKS / "destination-rule-currency-converter-circuit-breaker.yaml")
        before = _overflow(lab)
        one = lab.send(SLOW_URL, n=10, concurrency=1, progress=False)
        assert one.codes() == {200: 10}
        assert _overflow(lab) == before
        three = lab.send(SLOW_URL, n=30, concurrency=3, progress=False)
        codes = three.codes()
        assert set(codes) == {200, 503}, codes
        assert {o.flags for o in three.outcomes if o.status == 503} == {"UO"}
        assert _overflow(lab) - before == codes[503]
    finally:
        restore(lab)


def test_without_the_connection_pool_the_same_load_all_passes(lab):
    """The canary DR has no connectionPool: Istio's defaults (2^32-1) never overflow."""
    result = lab.send(SLOW_URL, n=30, concurrency=3, progress=False)
    assert result.codes() == {200: 30}
