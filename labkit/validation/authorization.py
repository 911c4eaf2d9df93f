"""istiod's admission rules for an AuthorizationPolicy (ValidateAuthorizationPolicy in
pkg/config/validation/validation.go, attribute keys from pkg/config/security/security.go ValidateAttribute),
as (field, message, fix) problems."""

from __future__ import annotations

import re
from collections.abc import Mapping

from labkit.validation.names import Problems

#: ``when`` keys istiod knows, exact or as ``prefix[name]`` (security.go's attr* constants).
_KEYS = frozenset(
    {
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.serviceAccount",
        "source.principal",
        "source.trustDomain",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
    }
)
_MAP_KEYS = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")
_REPLACED = {
    "destination.namespace": "metadata.namespace",
    "destination.labels": "the workload selector (spec.selector)",
}


def problems(spec: Mapping) -> Problems:
    action = spec.get("action") or "ALLOW"
    rules = spec.get("rules")
    if action in ("DENY", "CUSTOM") and rules is None:
        yield (
            "spec.rules",
            f"{action} action without rules is meaningless, as it never triggers; istiod rejects it",
            "add the rules it applies to, or an empty rule `rules: [{}]` to match every request",
        )
    provider = spec.get("provider")
    if action == "CUSTOM" and rules is not None and not (provider or {}).get("name"):
        yield (
            "spec.provider.name",
            "a CUSTOM policy needs provider.name; istiod rejects it",
            "name the provider",
        )
    if provider is not None and action != "CUSTOM":
        yield (
            "spec.provider",
            f"provider is only for the CUSTOM action, not {action}; istiod rejects it",
            "remove provider, or set action: CUSTOM",
        )
    for i, rule in enumerate(rules or []):
        yield from _rule(f"spec.rules[{i}]", rule or {})


def _rule(field: str, rule: Mapping) -> Problems:
    for part, inner in (("from", "source"), ("to", "operation")):
        items = rule.get(part)
        if items is not None and not items:
            yield (
                f"{field}.{part}",
                f"`{part}` must not be empty; istiod rejects it",
                f"remove {part}, or fill it",
            )
        for j, item in enumerate(items or []):
            where = f"{field}.{part}[{j}].{inner}"
            content = (item or {}).get(inner)
            if not content or not any(content.values()):
                yield where, f"`{part}.{inner}` must not be empty; istiod rejects it", f"give {inner} a field"
                continue
            for name, values in content.items():
                for k, value in enumerate(values if isinstance(values, list) else []):
                    if value == "":
                        yield (
                            f"{where}.{name}[{k}]",
                            "empty value not allowed; istiod rejects it",
                            "remove it",
                        )
            for name in ("ports", "notPorts") if part == "to" else ():
                for k, port in enumerate(content.get(name) or []):
                    if port != "" and not _is_port(port):  # security.go ``ValidatePorts``
                        yield (
                            f"{where}.{name}[{k}]",
                            f"bad port {port!r}: a port is a number from 0 to 65535; istiod rejects it",
                            'write the port number as a string, e.g. "9001"',
                        )
    for j, condition in enumerate(rule.get("when") or []):
        yield from _condition(f"{field}.when[{j}]", condition or {})


def _is_port(value: object) -> bool:
    """``strconv.ParseUint(port, 10, 32)`` and at most 65535."""
    return re.fullmatch(r"[0-9]+", str(value)) is not None and int(str(value)) <= 65535


def _condition(field: str, condition: Mapping) -> Problems:
    key = str(condition.get("key") or "")
    if not key:
        yield (
            f"{field}.key",
            "`key` must not be empty; istiod rejects it",
            "name an attribute, e.g. source.ip",
        )
        return
    if not condition.get("values") and not condition.get("notValues"):
        yield field, f"at least one of values or notValues must be set for key {key}", "add values"
    base = key.partition("[")[0]
    if base in _REPLACED:
        yield f"{field}.key", f"attribute {key} is replaced by {_REPLACED[base]}", f"use {_REPLACED[base]}"
    elif key.startswith(_MAP_KEYS):
        opening = key.find("[")
        if not (key.endswith("]") and 0 < opening < len(key) - 2):  # validateMapKey
            yield (
                f"{field}.key",
                f"bad key {key!r}: it should have the format a[b]",
                "e.g. request.headers[x-user]",
            )
    elif key not in _KEYS:
        yield (
            f"{field}.key",
            f"unknown attribute {key!r}; istiod rejects it",
            f"use one of {', '.join(sorted(_KEYS))}, or request.headers[<name>]",
        )
