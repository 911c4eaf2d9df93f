"""The Telemetry API on the local backend (notebook 19), through real Envoy and real HTTP: a workload's
Telemetry turns its access log on over its namespace's off (pilot/pkg/model/telemetry.go ``mergeLogs``) and
keeps only the lines its CEL ``filter.expression`` accepts (core/accesslog.go
``buildAccessLogFilterFromTelemetry``).
"""

from __future__ import annotations

import uuid

import pytest

from labkit import lesson, paths

pytestmark = pytest.mark.mesh

OFF = paths.CLUSTER_CONFIG / "tasks" / "telemetry-payments-prod-access-log-off.yaml"
ERRORS_ONLY = paths.CLUSTER_CONFIG / "tasks" / "telemetry-currency-converter-errors-only.yaml"
BASE = lesson.URL.split("/convert")[0]
SERVERS = ("currency-converter-v1", "currency-converter-v2")


def test_the_filtered_log_has_only_the_failed_requests_and_the_others_stay_quiet(lab):
    marker = uuid.uuid4().hex
    try:
        lab.apply(OFF)
        lab.apply(ERRORS_ONLY)
        ok = lab.send(f"{BASE}/convert?from=NOK&to=EUR&amount=1&m={marker}", n=20, progress=False)
        missing = lab.send(f"{BASE}/status/404?m={marker}", n=5, progress=False)
        teapot = lab.send(f"{BASE}/status/418?m={marker}", n=5, progress=False)
        assert (ok.codes(), missing.codes(), teapot.codes()) == ({200: 20}, {404: 5}, {418: 5})
        lines = [line for w in SERVERS for line in lab.access_log(w, tail=500) if marker in line]
        statuses = sorted(int(line.split('" ')[1].split()[0]) for line in lines)
        assert statuses == [404] * 5 + [418] * 5  # only >= 400, every one of them
        assert not [
            line for line in lab.access_log("client", tail=500) if marker in line
        ]  # the namespace's off
    finally:
        lab.delete(ERRORS_ONLY)
        lab.delete(OFF)
    again = uuid.uuid4().hex
    lab.send(f"{BASE}/convert?from=NOK&to=EUR&amount=1&m={again}", n=5, progress=False)
    lines = [line for w in SERVERS for line in lab.access_log(w, tail=500) if again in line]
    assert len(lines) == 5  # meshConfig.accessLogFile decides again: every request
