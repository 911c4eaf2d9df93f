"""The notebooks' CHECK cells: each function proves one step worked, or raises ``CheckFailed`` saying
what went wrong and what to look at. On success it prints one "✔ ..." line per fact and returns nothing, so
a passing cell stays quiet.

Checks read data only (a ``Status``, a ``TrafficResult``, metrics), so they behave the same on every backend.

**Confidence, one level for the whole lab.** Traffic is random (weights are probabilities, faults hit a
percentage), so a correct lab can fail a statistical check by bad luck. Every statistical check here is an
exact binomial test (scipy), so that chance is at most ``1 - CONFIDENCE`` per check by construction, never
tuned until it passes. The level is budgeted for a whole CI run (``labkit.stats``): at most
``CHECKS_PER_RUN`` = 100 statistical checks on live traffic, of which a full notebook run executes 32 (11 per
pass of the notebooks: 04 two, 05 two, 07 four, 10 two, 20 one; the run makes about three passes: every
notebook, each again after an interrupted one, and the interrupted halves, broken lessons and exports; a
test keeps the tally). By the union bound the run fails falsely with probability at most
100 × (1 - CONFIDENCE) = 1 in 1,000, so each check uses CONFIDENCE = 1 - 0.001 / 100 = 99.999 %. (05's
rollout cannot roll a healthy canary back by chance: with no failures its interval's lower end is 0.) A wrong
configuration (50/50 where 90/10 is configured, no retries where retries are configured) still fails every
time: it is dozens of standard errors away.

Example:
    >>> result = lab.send(lesson.URL, n=400)
    >>> checks.split_matches(result, {"v1": 90, "v2": 10})
    ✔ v2 got 10.5 % (5.9–17.4 %, 99.999 %) of 400 — consistent with the configured 10 % (...)

Modules, one concern each: ``report`` (``passed``, ``fail``, the shared exact test), ``lifecycle`` (the lab
itself), ``traffic`` (a run's answers and shares), ``telemetry`` (metrics, logs, identities), ``rollout`` (the
canary control), ``measurement`` (``labkit.cost``), ``tasks`` (Istio's tasks, notebooks 12-15), ``edge``
(secure ingress, notebook 16) and ``observe`` (TCP echoes and Prometheus's counts, notebooks 20-21).
"""

from __future__ import annotations

from labkit.checks.edge import https_ok, negotiates_h2, tls_refused
from labkit.checks.lifecycle import (
    install_settings,
    lab_is_down,
    lab_is_up,
    preflight,
    proxies_synced,
    sidecars_injected,
    versions_running,
)
from labkit.checks.measurement import measurement_sound
from labkit.checks.observe import all_echoed, by_label, prometheus_counted, settled_counts
from labkit.checks.report import LEFTOVER, _describe, _flags, _requests, _test, fail, passed
from labkit.checks.rollout import rollout_promoted, rollout_rolled_back
from labkit.checks.tasks import circuit_breaker_trips, mirrored, overflow_counted
from labkit.checks.telemetry import (
    _samples,
    access_log_filtered,
    access_log_shows,
    metrics_recorded,
    mutual_tls,
    peer_identity,
)
from labkit.checks.traffic import (
    _share_check,
    all_ok,
    blocked_egress,
    direct_dials_refused,
    error_share_at_most,
    faster_than,
    flags_seen,
    forbidden,
    only_version,
    refused,
    slow_share,
    split_matches,
    status_share,
    unauthenticated,
)
from labkit.errors import CheckFailed, LabError
from labkit.stats import CONFIDENCE, LEVEL

__all__ = [
    "https_ok",
    "negotiates_h2",
    "tls_refused",
    "CONFIDENCE",
    "CheckFailed",
    "LEFTOVER",
    "LEVEL",
    "LabError",
    "_describe",
    "_flags",
    "_requests",
    "_samples",
    "_share_check",
    "_test",
    "access_log_filtered",
    "access_log_shows",
    "all_echoed",
    "all_ok",
    "blocked_egress",
    "by_label",
    "circuit_breaker_trips",
    "direct_dials_refused",
    "error_share_at_most",
    "fail",
    "faster_than",
    "flags_seen",
    "forbidden",
    "install_settings",
    "lab_is_down",
    "lab_is_up",
    "measurement_sound",
    "metrics_recorded",
    "mirrored",
    "mutual_tls",
    "only_version",
    "overflow_counted",
    "passed",
    "peer_identity",
    "prometheus_counted",
    "preflight",
    "proxies_synced",
    "refused",
    "settled_counts",
    "rollout_promoted",
    "rollout_rolled_back",
    "sidecars_injected",
    "slow_share",
    "split_matches",
    "status_share",
    "unauthenticated",
    "versions_running",
]
