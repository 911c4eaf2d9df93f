"""Plain-text views for a shell or a notebook: what is applied (like ``kubectl get``), what runs (like
``kubectl get pods``) and the routes and clusters an Envoy runs (like ``istioctl proxy-config routes`` and
``clusters``), each a list of rows under a header. They answer a notebook's kubectl/istioctl question on every
backend, from ``lab.get``, ``lab.status`` and ``lab.proxy_config``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labkit.status import Status


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
        action, rules = spec.get("action", "ALLOW"), spec.get("rules") or []
        if action == "ALLOW" and not rules:  # an ALLOW policy that matches nothing denies every request
            return "action ALLOW  rules 0: denies every request to the workloads it selects"
        return f"action {action}  rules {len(rules)}"
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
    if kind == "Namespace":  # what `kubectl get namespace --show-labels` is asked for
        labels = (body.get("metadata") or {}).get("labels") or {}
        return "labels " + (",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>")
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


def print_resources(items: Iterable[Any], namespace: str | None = None) -> None:
    """Print ``resources(items)``, or kubectl's words when there is none: a cell's (or the shell's) answer to
    ``kubectl get <kind> -n <namespace>``."""
    lines = resources(items)
    where = f" in {namespace} namespace" if namespace else ""
    print("\n".join(lines) if lines else f"No resources found{where}.")


def workloads(status: Status, namespace: str) -> list[str]:
    """``kubectl get pods``'s question, per workload of ``namespace``: how many replicas are ready, how often
    their containers restarted, and which containers each pod runs (the app, and ``istio-proxy`` when it has a
    sidecar)."""
    rows = [("WORKLOAD", "READY", "RESTARTS", "CONTAINERS")]
    for w in sorted(status.workloads, key=lambda w: w.name):
        if w.namespace == namespace:
            containers = "app, istio-proxy" if w.sidecar else "app"
            rows.append((w.name, f"{w.ready}/{w.replicas}", str(w.restarts), containers))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c:<{width[2]}}  {d}" for a, b, c, d in rows]
    return lines if len(rows) > 1 else []


def _snake(node: Any) -> Any:
    """Envoy's JSON with proto field names (``virtual_hosts``, as ``/config_dump`` prints them), whether it
    came so or camelCase (``virtualHosts``, as ``istioctl proxy-config -o json`` re-encodes them)."""
    if isinstance(node, dict):
        return {re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", k).lower(): _snake(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_snake(v) for v in node]
    return node


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
    for config in _snake(list(configs)):
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


def clusters(configs: Iterable[dict], fqdn: str | None = None) -> list[str]:
    """``istioctl proxy-config clusters``-style lines from Cluster objects (only ``fqdn``'s with ``--fqdn``):
    service FQDN, port, subset and direction, read from Istio's cluster name ``direction|port|subset|fqdn``
    (istio/istio pilot/pkg/model/service.go, BuildSubsetKey), and Envoy's discovery type."""
    rows = [("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE")]
    for cluster in _snake(list(configs)):
        parts = str(cluster.get("name", "")).split("|")
        direction, port, subset, host = parts if len(parts) == 4 else ("", "", "", parts[0])
        if fqdn in (None, host):
            kind = cluster.get("type", "STATIC")  # proto3 JSON leaves out the default, STATIC
            rows.append((host, port or "-", subset or "-", direction or "-", str(kind)))
    if len(rows) == 1:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(f"{v:<{widths[i]}}" for i, v in enumerate(r[:4])) + f"  {r[4]}" for r in rows]
