"""Checks of a run's traffic (a ``TrafficResult``): which answers, which versions, which shares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from labkit import scenario
from labkit.checks.report import _describe, _flags, _requests, _test, fail, passed
from labkit.stats import CONFIDENCE, LEVEL

if TYPE_CHECKING:
    from labkit.lab import Lab
    from labkit.traffic import TrafficResult


# --- traffic ------------------------------------------------------------------------------------------------


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
            f"is peer-authentication-strict.yaml applied (mode STRICT, namespace {scenario.NAMESPACE})? "
            "A PERMISSIVE policy accepts plaintext; on kind: `kubectl get peerauthentication -A`",
            result,
        )
    passed(f"{what} refused: {_describe(result)}")


def direct_dials_refused(
    lab: Lab, workload: str, namespace: str = scenario.NAMESPACE, source: str = "legacy", n: int = 5
) -> None:
    """A caller without a sidecar that skips the Service and dials every address the pods of ``workload``
    listen on (``lab.pod_urls``) gets no answer from the app: under STRICT there is no plaintext path."""
    urls = lab.pod_urls(workload, namespace)
    if not urls:
        raise fail(
            f"no pod of {workload} ({namespace}) listens on any TCP address, so nothing could be dialled",
            "is the lab up (lab.status())? Every pod with a sidecar listens on its inbound port",
        )
    for url in urls:
        refused(lab.send(url, n=n, source=source), what=f"{source} dialling {url} directly")


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
            "which VirtualService is applied (`lab.apply` printed it; kind: "
            f"`kubectl get vs -n {scenario.NAMESPACE} -o yaml`), that the DestinationRule defines the "
            "subsets, and that the caller has a sidecar",
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
    look_at = (
        "which AuthorizationPolicies select app=currency-converter, their principals "
        "(cluster.local/ns/<ns>/sa/<sa>) and paths; a 2xx means a rule allowed it"
    )
    _all_answered(result, 403, "RBAC: access denied", what, look_at, "denied")


def unauthenticated(result: TrafficResult, what: str = "this caller") -> None:
    """Every request was turned away with 401: the sidecar's JWT check refused its token (a
    RequestAuthentication verifies every token that is present: bad signature, other issuer, expired)."""
    look_at = (
        "the RequestAuthentication that selects app=currency-converter: its issuer and jwks (a token "
        "signed by that key and not expired passes; a 2xx means the token was accepted, a 403 that an "
        "AuthorizationPolicy, not the JWT check, said no)"
    )
    reason = "Jwt verification fails / Jwt is expired"
    _all_answered(result, 401, reason, what, look_at, "refused by the JWT check")


def _all_answered(
    result: TrafficResult, status: int, reason: str, what: str, look_at: str, verb: str
) -> None:
    """Every request of ``result`` was answered ``status`` (Envoy's ``reason``), or CheckFailed."""
    outcomes = _requests(result, what)
    bad = [o for o in outcomes if o.status != status]
    if bad:
        raise fail(
            f"expected {status} ({reason}) for {what}, but {len(bad)} of {len(outcomes)} were not "
            f"({_describe(result)})",
            look_at,
            result,
        )
    passed(f"{what} {verb}: {len(outcomes)}/{len(outcomes)} answered {status}")


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
