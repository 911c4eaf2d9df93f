"""Which stats a proxy's Envoy creates, as istio-proxy's bootstrap decides it.

istio-proxy creates only a few stat families (tools/packaging/common/envoy_bootstrap.json's
``stats_matcher``: ``reporter=``, the required prefixes, suffixes and regexps, ``component``, ``istio``), plus
what the pod asks for: the ``sidecar.istio.io/statsInclusion{Prefixes,Suffixes,Regexps}`` annotations (comma
separated) or, when an annotation is absent, ``proxyStatsMatcher`` in the ``proxy.istio.io/config`` annotation
(pkg/bootstrap/config.go ``getStatsOptions``: the annotation wins over the proxy config, never merged with
it, and the required ones are always added). Istio's circuit-breaking client asks for ``cluster.outbound``
this way (samples/httpbin/sample-client/fortio-deploy.yaml), and so does the lab's client: the lessons read
its overflow counters.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from labkit.errors import LabError

#: pkg/bootstrap/config.go: requiredEnvoyStatsMatcherInclusionPrefixes, rbacEnvoyStatsMatcherInclusionSuffix
#: (``downstream_cx_active`` is added only with EXIT_ON_ZERO_ACTIVE_CONNECTIONS, off by default) and
#: requiredEnvoyStatsMatcherInclusionRegexes.
REQUIRED = {
    "prefix": ("cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm"),
    "suffix": ("rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied"),
    "safe_regex": (r"vhost\..*\.route\..*",),
}
#: The pod annotation of each pattern kind (istio/api annotation: Sidecar Stats Inclusion ...).
ANNOTATIONS = {
    "prefix": "sidecar.istio.io/statsInclusionPrefixes",
    "suffix": "sidecar.istio.io/statsInclusionSuffixes",
    "safe_regex": "sidecar.istio.io/statsInclusionRegexps",
}
#: The pod annotation carrying a ProxyConfig, and its ``proxyStatsMatcher`` field of each pattern kind.
PROXY_CONFIG = "proxy.istio.io/config"
MATCHER_FIELDS = {
    "prefix": "inclusionPrefixes",
    "suffix": "inclusionSuffixes",
    "safe_regex": "inclusionRegexps",
}


#: Where the annotations are, for errors.
FIELD = "spec.template.metadata.annotations"


def proxy_config(annotations: Mapping[str, str], where: str = "") -> dict:
    """The ProxyConfig of ``proxy.istio.io/config`` ({} without it); a LabError when it is not a mapping."""
    text = annotations.get(PROXY_CONFIG)
    if not text:
        return {}
    field, fix = f"{FIELD}[{PROXY_CONFIG}]", "write a ProxyConfig as a YAML mapping, as Istio's samples do"
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabError(f"is not YAML: {exc}", fix, where=where, field=field) from exc
    if not isinstance(config, dict):
        raise LabError("is not a ProxyConfig mapping", fix, where=where, field=field)
    return config


def inclusion(annotations: Mapping[str, str], where: str = "") -> dict[str, tuple[str, ...]]:
    """Per pattern kind, the pod's own patterns (annotation first, else the ProxyConfig's), then Istio's."""
    matcher = proxy_config(annotations, where).get("proxyStatsMatcher") or {}
    out = {}
    for kind, required in REQUIRED.items():
        own = annotations.get(ANNOTATIONS[kind])
        if own:
            mine = [p for p in own.split(",") if p]
        else:
            mine = matcher.get(MATCHER_FIELDS[kind]) or []
            if not isinstance(mine, list) or not all(isinstance(p, str) for p in mine):
                field = f"{FIELD}[{PROXY_CONFIG}].proxyStatsMatcher.{MATCHER_FIELDS[kind]}"
                raise LabError("must be a list of strings", "list the stat names", where=where, field=field)
        out[kind] = (*mine, *required)
    return out


def stats_matcher(annotations: Mapping[str, str], where: str = "") -> dict:
    """Envoy's ``stats_matcher`` for a proxy whose pod has ``annotations``, in envoy_bootstrap.json's
    order."""
    found = inclusion(annotations, where)
    patterns: list[dict] = [{"prefix": "reporter="}]
    patterns += [{"prefix": p} for p in found["prefix"]]
    patterns += [{"suffix": s} for s in found["suffix"]]
    patterns += [{"safe_regex": {"regex": r}} for r in found["safe_regex"]]
    patterns += [{"prefix": "component"}, {"prefix": "istio"}]
    return {"inclusion_list": {"patterns": patterns}}
