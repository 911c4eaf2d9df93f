"""The value rules of the Kubernetes API server and istiod that several kinds share: object names, host
names, subset names, durations, regexes. ``*_problem`` returns what is wrong (or None); ``*_problems``
yields the admission stage's (field, message, fix)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from labkit.meshmodel import duration_problem, is_ip

#: What a rule yields: (field, message, fix) for an error, ("warning", field, message, fix) for a warning.
Problems = Iterator[tuple]

# Kubernetes apimachinery pkg/util/validation/validation.go: IsDNS1123Label, IsDNS1123Subdomain,
# IsDNS1035Label (lower case only).
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL.pattern}(\.{_DNS1123_LABEL.pattern})*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# istiod pkg/config/labels/instance.go: dns1123LabelFmt (upper case allowed in hosts) and wildcardPrefix.
_HOST_LABEL = re.compile(r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?")
_WILDCARD_LABEL = re.compile(rf"\*|(\*|\*-)?{_HOST_LABEL.pattern}")
# RBAC kinds take any path segment name (ValidateRBACName: no '/' or '%', not '.' or '..'), e.g. system:x.
_PATH_SEGMENT = re.compile(r"(?!\.\.?$)[^/%]+")
#: The API server's name rule per kind (Kubernetes pkg/apis/core/validation: ValidateServiceName is a DNS-1035
#: label, ValidateNamespaceName a DNS-1123 label; pkg/apis/rbac/validation: ValidateRBACName); the rest,
#: custom resources included, take a DNS-1123 subdomain.
_SERVICE_RULE = (
    "DNS-1035 label",
    _DNS1035_LABEL,
    63,
    "lower-case letters, digits and '-', starting with a letter",
)
_LABEL_RULE = ("DNS-1123 label", _DNS1123_LABEL, 63, "lower-case letters, digits and '-'")
_RBAC_RULE = ("path segment name", _PATH_SEGMENT, 253, "no '/' or '%'")
_NAME_RULES = {"Service": _SERVICE_RULE, "Namespace": _LABEL_RULE}
_NAME_RULES |= dict.fromkeys(("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"), _RBAC_RULE)
_DEFAULT_RULE = ("DNS-1123 subdomain", _DNS1123_SUBDOMAIN, 253, "lower-case letters, digits, '-' and '.'")


def object_name_problem(kind: str, name: str) -> str | None:
    """Why the API server refuses ``name`` for an object of ``kind`` (ValidateObjectMeta's name check)."""
    rule, pattern, limit, allowed = _NAME_RULES.get(kind, _DEFAULT_RULE)
    if len(name) > limit or not pattern.fullmatch(name):
        return f"{name!r} is not a valid {rule} (at most {limit} characters: {allowed})"
    return None


def is_dns1123_label(value: str) -> bool:
    """A namespace, a subset or a port name: Kubernetes' DNS-1123 label (istiod's labels.IsDNS1123Label)."""
    return len(value) <= 63 and bool(_HOST_LABEL.fullmatch(value))


def fqdn_problem(host: str) -> str | None:
    """istiod's ``agent.ValidateFQDN``: DNS-1123 labels, a top-level domain that is not all digits."""
    if not host or len(host) > 255:
        return f"host {host!r} is empty or longer than 255 characters"
    return _labels_problem(host, host)


def wildcard_host_problem(host: str) -> str | None:
    """istiod's ``agent.ValidateWildcardDomain``: like an FQDN, but the first label may be ``*`` or start
    with ``*`` (``*.example.com``)."""
    if not host or len(host) > 255:
        return f"host {host!r} is empty or longer than 255 characters"
    first, _, rest = host.partition(".")
    if len(first) > 63 or not _WILDCARD_LABEL.fullmatch(first):
        return f"host {host!r} is not a valid DNS name (label {first!r})"
    return _labels_problem(host, rest) if rest else None


def _labels_problem(host: str, domain: str) -> str | None:
    """istiod's ``agent.ValidateDNS1123Labels`` (a trailing dot is allowed)."""
    parts = domain.split(".")
    if parts[-1].isdigit():
        return f"host {host!r} is not a valid DNS name (its top-level domain {parts[-1]!r} is all digits)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None
        if not is_dns1123_label(label):
            return f"host {host!r} is not a valid DNS name (label {label!r})"
    return None


def regex_problem(regex: str) -> str | None:
    """istiod's ``validateStringRegexp``: at most 1024 characters and RE2 syntax (Envoy compiles it with
    RE2: Python's ``re`` would accept lookarounds and backreferences that Envoy rejects)."""
    if len(regex) > 1024:
        return f"regex of {len(regex)} characters is too large; the most allowed is 1024"
    if regex == "":
        return "regex string match should not be empty"
    re2, options = _re2()
    try:
        re2.compile(regex, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return f"regex {regex!r} is not valid RE2 syntax: {reason}"
    return None


@functools.cache
def _re2() -> tuple:
    """google-re2 and options that keep its C++ logger quiet (the finding reports the error)."""
    import re2  # imported on first use: only manifests with a regex need it

    options = re2.Options()
    options.log_errors = False
    return re2, options


def host_problems(field: str, host: str) -> Problems:
    """istiod's agent.ValidateWildcardDomain for a host field (an IP address is accepted as it is)."""
    problem = None if is_ip(host) else wildcard_host_problem(host)
    if problem:
        yield field, f"{problem}; istiod rejects it", "write a host name such as reviews or api.example.com"


def subset_name_problems(field: str, name: str) -> Problems:
    """istiod's validateSubsetName: a DNS-1123 label."""
    if not is_dns1123_label(name):
        yield (
            field,
            f"subset name {name!r} is not a DNS-1123 label; istiod rejects it",
            "use letters, digits and '-', e.g. v1 or canary",
        )


def duration_problems(field: str, value: object) -> Problems:
    """istiod's agent.ValidateDuration for an optional duration field."""
    problem = None if value is None else duration_problem(value)
    if problem:
        yield (
            field,
            f"{problem}; istiod rejects it",
            "write a duration of 1ms or more, e.g. 1s, 0.5s or 300ms",
        )


def port_problems(field: str, port: object) -> Problems:
    """istiod's agent.ValidatePort (and the CRDs' "port must be between 1-65535") for an optional port."""
    if port is not None and (not isinstance(port, int) or not 1 <= port <= 65535):
        yield field, f"port {port} is not in range 1..65535; istiod rejects it", "use a port from 1 to 65535"
