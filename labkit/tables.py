"""Plain-text views for a shell or a notebook: what is applied (like ``kubectl get``) and the routes an Envoy
runs (like ``istioctl proxy-config routes``), each a list of rows under a header."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _body(obj: Any) -> dict:
    return (
        obj.body if hasattr(obj, "body") else obj
    )  # a labkit Resource, or a plain object as the API returns


def _detail(kind: str, body: dict) -> str:
    """The column kubectl shows after the name, for the kinds this lab teaches."""
    spec = body.get("spec") or {}
    if kind == "VirtualService":
        gateways = f"  gateways {','.join(spec['gateways'])}" if spec.get("gateways") else ""
        return f"hosts {','.join(spec.get('hosts') or [])}{gateways}"
    if kind == "DestinationRule":
        subsets = ",".join(s.get("name", "") for s in spec.get("subsets") or [])
        return f"host {spec.get('host', '')}" + (f"  subsets {subsets}" if subsets else "")
    if kind == "ServiceEntry":
        return f"hosts {','.join(spec.get('hosts') or [])}  {spec.get('resolution', 'NONE')}"
    if kind == "PeerAuthentication":
        return f"mode {(spec.get('mtls') or {}).get('mode', 'UNSET')}"
    if kind == "AuthorizationPolicy":
        return f"action {spec.get('action', 'ALLOW')}"
    if kind == "Gateway":
        return "hosts " + ",".join(h for s in spec.get("servers") or [] for h in s.get("hosts") or [])
    if kind == "HTTPRoute":
        parents = ",".join(
            f"{p.get('kind', 'Gateway')}/{p.get('name', '')}" for p in spec.get("parentRefs") or []
        )
        backends = ", ".join(
            f"{b.get('name', '')} {b.get('weight', 1)}"
            for rule in spec.get("rules") or []
            for b in rule.get("backendRefs") or []
        )
        return f"parents {parents}" + (f"  backends {backends}" if backends else "")
    if kind == "Deployment":
        version = ((spec.get("template") or {}).get("metadata") or {}).get("labels", {}).get("version")
        return f"replicas {spec.get('replicas', 1)}" + (f"  version {version}" if version else "")
    if kind == "Service":
        return "ports " + ",".join(f"{p.get('port')}/{p.get('name', '')}" for p in spec.get("ports") or [])
    return ""


def resources(items: Iterable[Any]) -> list[str]:
    """``kubectl get``-style lines: NAMESPACE, NAME and what matters about each object."""
    rows = []
    for item in items:
        body = _body(item)
        meta = body.get("metadata") or {}
        rows.append((meta.get("namespace", ""), meta.get("name", ""), _detail(body.get("kind", ""), body)))
    if not rows:
        return []
    width = max(len("NAMESPACE"), *(len(r[0]) for r in rows)), max(len("NAME"), *(len(r[1]) for r in rows))
    lines = [f"{'NAMESPACE':<{width[0]}}  {'NAME':<{width[1]}}  DETAIL"]
    lines += [f"{ns:<{width[0]}}  {name:<{width[1]}}  {detail}".rstrip() for ns, name, detail in sorted(rows)]
    return lines


def _match(match: dict) -> str:
    """An Envoy route match as one short phrase: path, then header conditions."""
    path = next((f"{k} {match[k]}" for k in ("path", "prefix", "safe_regex") if k in match), "prefix /")
    if isinstance(match.get("safe_regex"), dict):
        path = f"regex {match['safe_regex'].get('regex', '')}"
    headers = []
    for h in match.get("headers") or []:
        string = h.get("string_match") or {}
        kind = next((k for k in ("exact", "prefix", "safe_regex") if k in string), None)
        value = string.get(kind)
        if isinstance(value, dict):
            value, kind = value.get("regex", ""), "regex"
        headers.append(f"{h.get('name')} {kind} {value}" if kind else f"{h.get('name')} present")
    return path + "".join(f", header {h}" for h in headers)


def _action(route: dict) -> str:
    """Where an Envoy route sends a request: its cluster, its weighted clusters, or its direct answer."""
    action = route.get("route")
    if action is None:
        if "direct_response" in route:
            return f"answers {route['direct_response'].get('status')}"
        return "redirect" if "redirect" in route else "-"
    if "cluster" in action:
        return action["cluster"]
    clusters = (action.get("weighted_clusters") or {}).get("clusters") or []
    return ", ".join(f"{c.get('name')} {c.get('weight', 0)}" for c in clusters)


def routes(configs: Iterable[dict]) -> list[str]:
    """``istioctl proxy-config routes``-style lines from RouteConfiguration objects: route config, virtual
    host, match and destination (weighted clusters as ``cluster weight``), in the order Envoy tries them."""
    rows = [("ROUTE", "VIRTUAL HOST", "MATCH", "DESTINATION")]
    for config in configs:
        for vhost in config.get("virtual_hosts") or []:
            for route in vhost.get("routes") or []:
                rows.append(
                    (
                        config.get("name", ""),
                        vhost.get("name", ""),
                        _match(route.get("match") or {}),
                        _action(route),
                    )
                )
    if len(rows) == 1:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip() for a, b, c, d in rows]
