"""istiod's admission rules for a VirtualService (pkg/config/validation/validation.go ValidateVirtualService
and virtualservice.go validateHTTPRoute), as (field, message, fix) problems."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from labkit.meshmodel import hosts_overlap, weights_route_nothing
from labkit.validation.names import (
    Problems,
    duration_problems,
    host_problems,
    port_problems,
    regex_problem,
    subset_name_problems,
)

#: The retryOn policies istiod accepts besides HTTP status codes: Envoy's x-envoy-retry-on and
#: x-envoy-retry-grpc-on values (supportedRetryOnPolicies, pkg/config/validation/agent/validation.go).
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
_STRING_MATCHES = ("uri", "method", "authority", "scheme")


def problems(spec: Mapping) -> Problems:
    gateways = spec.get("gateways") or []
    hosts = spec.get("hosts") or []
    mesh_only = all(g == "mesh" for g in gateways)  # istiod's !isGateway(vs)
    if not hosts and gateways:
        yield (
            "spec.gateways",
            "a VirtualService without hosts is a delegate, which must name no gateways; istiod rejects it",
            "add spec.hosts (the hosts these routes are for), or remove spec.gateways from a delegate",
        )
    for i, host in enumerate(hosts):
        if mesh_only and host == "*":
            yield (
                f"spec.hosts[{i}]",
                "wildcard host * is not allowed for a VirtualService bound to the mesh (the sidecars); "
                "istiod rejects it",
                "name the service, e.g. hosts: [currency-converter]; '*' suits a VirtualService bound to a "
                "Gateway only",
            )
        else:
            yield from host_problems(f"spec.hosts[{i}]", str(host))
        for j in range(i):
            if hosts_overlap(str(hosts[j]), str(host)):
                yield (
                    f"spec.hosts[{i}]",
                    f"duplicate hosts in virtual service: {hosts[j]} & {host}; istiod rejects it",
                    "list each host once (a wildcard already covers the hosts it matches)",
                )
    if not any(spec.get(proto) for proto in ("http", "tcp", "tls")):
        yield (
            "spec",
            "http, tcp or tls must be provided in a VirtualService; istiod rejects it",
            "add http routes",
        )
    for i, rule in enumerate(spec.get("http") or []):
        yield from _http_rule(f"spec.http[{i}]", rule)
    for proto in ("tcp", "tls"):
        for i, rule in enumerate(spec.get(proto) or []):
            yield from _destinations(f"spec.{proto}[{i}].route", rule.get("route") or [])


def _http_rule(field: str, rule: Mapping) -> Problems:
    """validateHTTPRoute (virtualservice.go)."""
    if not rule.get("route") and not any(rule.get(k) for k in ("redirect", "directResponse", "delegate")):
        yield (
            field,
            "has no route, redirect or directResponse; istiod rejects it "
            "(HTTP route, redirect or direct_response is required)",
            "put fault, timeout and retries in the same http entry as the route they apply to",
        )
    for k, match in enumerate(rule.get("match") or []):
        yield from _match(f"{field}.match[{k}]", match)
    yield from _fault(f"{field}.fault", rule.get("fault"))
    yield from _percentage(f"{field}.mirrorPercentage", rule.get("mirrorPercentage"), minimum=0)
    if rule.get("mirror"):
        yield from _destination(f"{field}.mirror", rule["mirror"])
    for k, mirror in enumerate(rule.get("mirrors") or []):
        yield from _destination(f"{field}.mirrors[{k}].destination", mirror.get("destination") or {})
        yield from _percentage(f"{field}.mirrors[{k}].percentage", mirror.get("percentage"), minimum=0)
    yield from _retries(f"{field}.retries", rule.get("retries"))
    regex_rewrite = (rule.get("rewrite") or {}).get("uriRegexRewrite") or {}
    if regex_rewrite.get("match") is not None:
        yield from _regex(f"{field}.rewrite.uriRegexRewrite.match", regex_rewrite["match"])
    yield from duration_problems(f"{field}.timeout", rule.get("timeout"))
    yield from _destinations(f"{field}.route", rule.get("route") or [])


def _match(field: str, match: Mapping) -> Problems:
    """validateHTTPRouteMatchRequest: every regex must compile with RE2; a prefix must not be empty. A
    ``withoutHeaders`` regex ``*`` is the one exception (it means "header present")."""
    for name in _STRING_MATCHES:
        yield from _string_match(f"{field}.{name}", match.get(name))
    for group in ("headers", "withoutHeaders", "queryParams"):
        for name, string_match in (match.get(group) or {}).items():
            if group == "withoutHeaders" and (string_match or {}).get("regex") == "*":
                continue
            yield from _string_match(f"{field}.{group}.{name}", string_match)


def _string_match(field: str, string_match: Mapping | None) -> Problems:
    """validateStringMatch."""
    if not string_match:
        return
    if string_match.get("prefix") == "":
        yield (
            f"{field}.prefix",
            "prefix string match should not be empty; istiod rejects it",
            "write a prefix",
        )
    if "regex" in string_match:
        yield from _regex(f"{field}.regex", str(string_match["regex"]))


def _regex(field: str, regex: str) -> Problems:
    problem = regex_problem(regex)
    if problem:
        yield (
            field,
            f"{problem}; istiod rejects it (Istio and Envoy use RE2: no lookarounds or backreferences)",
            "fix the regex (RE2 syntax: https://github.com/google/re2/wiki/Syntax); '.*' matches anything, "
            "'.+' anything non-empty",
        )


def _fault(field: str, fault: Mapping | None) -> Problems:
    """validateHTTPFaultInjection, ...Abort, ...Delay (validation.go)."""
    if fault is None:
        return
    abort, delay = fault.get("abort"), fault.get("delay")
    if not abort and not delay:
        yield (
            field,
            "fault injection must have an abort and/or a delay; istiod rejects it",
            "add abort or delay",
        )
    if abort:
        yield from _percentage(f"{field}.abort.percentage", abort.get("percentage"))
        status = abort.get("httpStatus")
        if status is not None and not 200 <= status <= 600:
            yield (
                f"{field}.abort.httpStatus",
                f"HTTP status {status} is not in range 200-599; istiod rejects it",
                "use an HTTP status such as 503",
            )
        if status is None and not abort.get("grpcStatus") and not abort.get("http2Error"):
            yield (
                "warning",
                f"{field}.abort",
                "abort configured, but error type not set: istiod accepts it and injects nothing",
                "add httpStatus (e.g. 503) or grpcStatus",
            )
    if delay:
        yield from _percentage(f"{field}.delay.percentage", delay.get("percentage"))
        yield from duration_problems(f"{field}.delay.fixedDelay", delay.get("fixedDelay"))
        if delay.get("exponentialDelay") is not None:
            yield (
                f"{field}.delay.exponentialDelay",
                "exponentialDelay is not supported yet; istiod rejects it",
                "use fixedDelay, e.g. fixedDelay: 2s",
            )


def _percentage(field: str, percent: Mapping | None, minimum: float = 0.0001) -> Problems:
    """validatePercentage (0, or 0.0001..100) for faults; mirror percentages are 0..100."""
    value = (percent or {}).get("value")
    if value is None:
        return
    if value < 0 or value > 100 or 0 < value < minimum:
        allowed = "0 to 100" if minimum == 0 else "0, or 0.0001 to 100"
        yield (
            f"{field}.value",
            f"percentage {value} is not in range {allowed}; istiod rejects it",
            f"use {allowed}",
        )


def _retries(field: str, retries: Mapping | None) -> Problems:
    """agent.ValidateHTTPRetry (pkg/config/validation/agent/validation.go)."""
    if retries is None:
        return
    attempts = retries.get("attempts") or 0
    if attempts < 0:
        yield (
            f"{field}.attempts",
            "attempts cannot be negative; istiod rejects it",
            "use 0 (no retries) or more",
        )
    configured = [
        k for k in ("perTryTimeout", "retryOn", "retryRemoteLocalities") if retries.get(k) is not None
    ]
    if attempts == 0 and configured:
        listed = " and ".join(configured)
        yield (
            f"{field}.attempts",
            f"attempts is 0 (retries disabled) but {listed} {'is' if len(configured) == 1 else 'are'} set; "
            "istiod rejects it "
            "(http retry policy configured when attempts are set to 0)",
            f"set attempts to 1 or more, or remove {listed}",
        )
    yield from duration_problems(f"{field}.perTryTimeout", retries.get("perTryTimeout"))
    yield from duration_problems(f"{field}.backoff", retries.get("backoff"))
    retry_on = retries.get("retryOn")
    for policy in str(retry_on).split(",") if retry_on else []:
        if policy not in RETRY_ON and not _is_http_status(policy):
            yield (
                f"{field}.retryOn",
                f"{policy!r} is not a valid retryOn policy; istiod rejects it",
                f"use comma-separated values without spaces from: {', '.join(sorted(RETRY_ON))}, or HTTP "
                "status codes such as 503",
            )


def _is_http_status(text: str) -> bool:
    """istiod accepts a number Go's net/http knows a status text for; Python's HTTPStatus lists the same."""
    return text.isdigit() and int(text) in HTTPStatus._value2member_map_


def _destinations(field: str, routes: list) -> Problems:
    """validateHTTPRouteDestinations / validateRouteDestinations: each destination, weights >= 0, and not
    all 0 when there are several."""
    weights = [d.get("weight") or 0 for d in routes]
    for j, route in enumerate(routes):
        yield from _destination(f"{field}[{j}].destination", route.get("destination") or {})
        if weights[j] < 0:
            yield (
                f"{field}[{j}].weight",
                f"weight {weights[j]} is negative; istiod rejects it",
                "use a weight of 0 or more (0 sends this destination no traffic)",
            )
    if weights_route_nothing(weights) and min(weights) >= 0:
        yield (
            field,
            "the weights add up to 0, so no request could be routed; istiod rejects it",
            "give at least one destination a weight above 0",
        )


def _destination(field: str, destination: Mapping) -> Problems:
    """validateDestination: a real host (not ``*``), a DNS-1123 subset name."""
    host = str(destination.get("host", ""))
    if host == "*":
        yield (
            f"{field}.host",
            "invalid destination host *; istiod rejects it",
            "name the service to route to, e.g. currency-converter",
        )
    else:
        yield from host_problems(f"{field}.host", host)
    if destination.get("subset"):
        yield from subset_name_problems(f"{field}.subset", str(destination["subset"]))
    yield from port_problems(f"{field}.port.number", (destination.get("port") or {}).get("number"))
