"""Shared helpers for the translator tests: the lab's real topology, Istio YAML as Resources, and a check that
real Envoy 1.40 accepts a proxy's generated config (``envoy --mode validate``).

Validate mode does not fetch xDS, so the check puts the proxy's clusters and listeners in
``static_resources`` and inlines each RDS route config where the listener names it; the certificate files are
real ones from the lab's CA (Envoy loads them while validating). ECDS filter configs are inlined the same way.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import yaml

from labkit import manifests, paths
from labkit.local.ca import LocalCA
from labkit.local.envoy import binary
from labkit.local.listeners import ADS
from labkit.local.topology import Topology, build_topology
from labkit.local.translate import ProxyConfig, ensure_ports, translate
from labkit.manifests import Resource
from labkit.mesh import MeshSettings

MESH = MeshSettings(outbound_policy="REGISTRY_ONLY", access_log_file="/dev/stdout")


def lab_topology(state: Path, start: int = 20000) -> tuple[Topology, itertools.count]:
    """The topology of the real cluster-config/apps, ports counted from ``start``; and the counter."""
    ports = itertools.count(start)
    return build_topology(manifests.load(paths.APPS), state, lambda: next(ports)), ports


def istio(*texts: str) -> list[Resource]:
    """Istio resources from YAML texts or cluster-config/mesh file names, in order (oldest first)."""
    out: list[Resource] = []
    for text in texts:
        out += manifests.load(paths.MESH / text if text.endswith(".yaml") else text)
    return out


def configs(state: Path, *texts: str, mesh: MeshSettings = MESH) -> tuple[Topology, dict[str, ProxyConfig]]:
    """Translate ``texts`` for the lab's topology (allocating any ports they need first)."""
    topo, ports = lab_topology(state)
    resources = istio(*texts)
    ensure_ports(resources, topo, lambda: next(ports))
    return topo, translate(resources, topo, mesh)


def client(cfgs: dict[str, ProxyConfig]) -> ProxyConfig:
    return cfgs["sidecar~client-0.payments-prod"]


def route(cfg: ProxyConfig, name: str) -> dict:
    return next(r for r in cfg.routes if r["name"] == name)


def vhost(cfg: ProxyConfig, route_name: str, vhost_name: str) -> dict:
    return next(v for v in route(cfg, route_name)["virtual_hosts"] if v["name"] == vhost_name)


def cluster(cfg: ProxyConfig, name: str) -> dict:
    return next(c for c in cfg.clusters if c["name"] == name)


def listener(cfg: ProxyConfig, name: str) -> dict:
    return next(x for x in cfg.listeners if x["name"] == name)


def hcms(listener_: dict) -> list[dict]:
    """The HttpConnectionManager configs of every filter chain of a listener (no TCP port's tcp_proxy)."""
    return [
        f["typed_config"]
        for chain in listener_["filter_chains"]
        for f in chain["filters"]
        if f["name"] == "envoy.filters.network.http_connection_manager"
    ]


def envoy_validate(topo: Topology, cfgs: dict[str, ProxyConfig], work: Path) -> None:
    """Run ``envoy --mode validate`` on every proxy's config; AssertionError with Envoy's words."""
    ca = LocalCA(work / "ca")
    for proxy_id, cfg in cfgs.items():
        proxy = topo.proxies[proxy_id]
        ca.ensure(proxy.spiffe, proxy.cert_file, proxy.key_file, proxy.ca_file)
        routes = {r["name"]: r for r in cfg.routes}
        listeners = []
        for lst in cfg.listeners:
            lst = yaml.safe_load(yaml.safe_dump(lst))  # a deep copy we may edit
            for hcm in hcms(lst):
                rds = hcm.pop("rds", None)
                if rds is not None:
                    assert rds["config_source"] == ADS
                    hcm["route_config"] = {
                        k: v for k, v in routes[rds["route_config_name"]].items() if k != "@type"
                    }
                for f in hcm.get("http_filters", []):  # ECDS: inline the filter's config from its file
                    discovery = f.pop("config_discovery", None)
                    if discovery is not None:
                        assert discovery["config_source"] == ADS
                        f["typed_config"] = cfg.extensions[f["name"]]
            listeners.append({k: v for k, v in lst.items() if k != "@type"})
        bootstrap = {
            "node": {"id": proxy.id, "cluster": proxy.workload},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "listeners": listeners,
                "clusters": [{k: v for k, v in c.items() if k != "@type"} for c in cfg.clusters],
            },
        }
        path = work / f"{proxy.dir.name}.yaml"
        path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
        run = subprocess.run(
            [binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, (
            f"Envoy rejected {proxy_id}'s config:\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
        )
