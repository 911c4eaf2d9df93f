"""What many proxies share is built once per push (istiod's caches), and serves the same bytes as building it
for each proxy alone; only proxies whose config changed are pushed and waited for."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import yaml
from support.envoy import MESH, istio

from labkit import manifests, paths
from labkit.local import translate as translate_module
from labkit.local.routes import sidecar_route_config
from labkit.local.topology import build_topology
from labkit.local.translate import ProxyConfig, ensure_ports, translate
from labkit.local.xds import snapshot, store, sync

REPLICAS = 4
WEIGHTS = "virtual-service-currency-converter-90-10.yaml"


class _NoCache(dict):
    """A Host's cache that keeps nothing: every proxy builds its own endpoints."""

    def __setitem__(self, key, value) -> None:
        pass


def _apps() -> list:
    """The lab's apps with currency-converter-v1 at REPLICAS replicas."""
    apps = manifests.load(paths.APPS)
    docs = yaml.safe_load_all((paths.APPS / "currency-converter.yaml").read_text())
    found = copy.deepcopy(
        next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-v1"))
    )
    found["spec"]["replicas"] = REPLICAS
    [replicas] = manifests.load(found)
    return [replicas if r.key == replicas.key else r for r in apps]


def _translate(tmp_path, *texts, cached: bool = True, monkeypatch=None):
    ports = itertools.count(20000)
    topo = build_topology(_apps(), tmp_path, lambda: next(ports))
    resources = istio(*texts)
    ensure_ports(resources, topo, lambda: next(ports))
    if not cached:
        build = translate_module.build_registry

        def uncached(*args):
            hosts = build(*args)
            for host in hosts:
                host.shared = _NoCache()
            return hosts

        monkeypatch.setattr(translate_module, "build_registry", uncached)
        monkeypatch.setattr(
            translate_module,
            "_sidecar_routes",
            lambda shared, proxy, port, hosts, vss: sidecar_route_config(proxy, port, hosts, vss),
        )
    return topo, translate(resources, topo, MESH)


def _text(cfg: ProxyConfig) -> str:
    return json.dumps([cfg.listeners, cfg.clusters, cfg.routes, cfg.extensions], separators=(",", ":"))


def _naive(proxies, configs) -> dict:
    """Every node's types built for that proxy alone, from unshared copies, versioned by plain json.dumps."""
    nodes = {}
    for proxy in proxies:
        items = snapshot.resources(copy.deepcopy(configs[proxy.id]))
        types = {
            url: {"version": snapshot.version(t["resources"]), "resources": t["resources"]}
            for url, t in items.items()
        }
        nodes[snapshot.node_id(proxy)] = {"proxy": proxy.id, "types": types}
    return nodes


def test_shared_endpoints_and_snapshot_are_byte_identical_to_building_each_proxy_alone(tmp_path, monkeypatch):
    topo, shared = _translate(tmp_path, WEIGHTS)
    _, alone = _translate(tmp_path, WEIGHTS, cached=False, monkeypatch=monkeypatch)
    sidecars = [p.id for p in topo.sidecars]
    assert len(sidecars) >= REPLICAS + 2
    assert {p: _text(shared[p]) for p in shared} == {p: _text(alone[p]) for p in alone}

    def assignment(cfgs, proxy):
        return next(c["load_assignment"] for c in cfgs[proxy].clusters if c["name"].startswith("outbound|"))

    # built once for every proxy with the cache, once per proxy without it
    assert len({id(assignment(shared, p)) for p in sidecars}) == 1
    assert len({id(assignment(alone, p)) for p in sidecars}) == len(sidecars)
    v1 = [p.id for p in topo.sidecars if p.workload.endswith("-v1")]
    assert len({id(shared[p].routes[0]) for p in v1}) == 1  # one route config for the replicas
    assert len({id(alone[p].routes[0]) for p in v1}) == len(v1)

    proxies = list(topo.proxies.values())
    enc = snapshot.Encoder()
    snap = snapshot.build(proxies, shared, enc)
    assert json.dumps(snap["nodes"]) == json.dumps(_naive(proxies, shared))
    assert store.write(tmp_path, snap, enc)
    assert store.read(tmp_path, {}) == snap
    v1 = [snapshot.node_id(p) for p in proxies if p.workload.endswith("-v1")]  # now by node id
    eds = {id(snap["nodes"][n]["types"][snapshot.ENDPOINT]["resources"]) for n in v1}
    assert len(v1) == REPLICAS and len(eds) == 1  # the replicas share one list, stored once
    distinct = {(u, t["version"]) for n in snap["nodes"].values() for u, t in n["types"].items()}
    files = sorted(store.lists_folder(tmp_path).iterdir())
    assert len(files) == len(distinct) < len(proxies) * len(snapshot.ORDER)
    for file in files:  # content-addressed: a file's name is the version of the text it holds
        assert file.name.split("-", 1)[1] == f"{snapshot.version(json.loads(file.read_text()))}.json"


def test_a_weight_change_rewrites_only_the_route_lists_and_reuses_the_rest(tmp_path):
    """With the snapshot served now, a list equal to its old one keeps that list and version (nothing
    encoded again), and the files written are the new route lists alone; the lists of the index before
    stay for a reader still on it, older ones go."""
    topo, before = _translate(tmp_path, "destination-rule-currency-converter.yaml", WEIGHTS)
    proxies = list(topo.proxies.values())
    old = snapshot.build(proxies, before)
    store.write(tmp_path, old, snapshot.Encoder())
    first = set(store.lists_folder(tmp_path).iterdir())
    _, after = _translate(
        tmp_path, "destination-rule-currency-converter.yaml", "virtual-service-currency-converter-50-50.yaml"
    )
    new = snapshot.build(proxies, after, snapshot.Encoder(), old)
    assert json.dumps(new) == json.dumps(snapshot.build(proxies, after))  # the same as built afresh
    for node, data in new["nodes"].items():
        for url, typed in data["types"].items():
            was = old["nodes"][node]["types"][url]
            assert (typed["resources"] is was["resources"]) == (
                url != snapshot.ROUTE or not typed["resources"]
            )
    store.write(tmp_path, new, snapshot.Encoder())
    added = set(store.lists_folder(tmp_path).iterdir()) - first
    assert added and {f.name.split("-")[0] for f in added} == {"RDS"}
    store.write(tmp_path, snapshot.build(proxies, before), snapshot.Encoder())  # back to 90/10: old lists
    store.write(tmp_path, snapshot.build(proxies, before), snapshot.Encoder())
    assert set(store.lists_folder(tmp_path).iterdir()) == first  # 50/50's route lists are gone
    assert store.read(tmp_path, {}) == old


def test_an_index_that_is_not_one_is_refused_and_an_older_labkits_snapshot_is_not_served(tmp_path):
    folder = snapshot.snapshot_file(tmp_path).parent
    folder.mkdir()
    for text in ("[]", '{"nodes": {"n": {"types": {"bogus": "v"}}}}', '{"nodes": {"n": {}}}'):
        snapshot.snapshot_file(tmp_path).write_text(text)
        with pytest.raises(ValueError, match="not a snapshot index"):
            store.read(tmp_path, {})
    # an older labkit's one file, its lists inline: nothing to serve from (up() publishes anew)
    older = {"version": "1", "nodes": {"n": {"types": {snapshot.ROUTE: "abc"}}}, "resources": {}}
    snapshot.snapshot_file(tmp_path).write_text(json.dumps(older))
    assert sync.served(tmp_path) is None


def test_a_change_to_one_route_pushes_only_the_proxies_whose_config_it_changes(tmp_path):
    """A route bound only to the ingress gateway changes the gateway's config alone, a mesh weight change
    the sidecars' alone: only those are pushed and waited for (istiod pushes a proxy only when the change
    concerns it: ``ConfigsUpdated`` filtering, pilot/pkg/xds/proxy_dependencies.go)."""
    base = ["destination-rule-currency-converter.yaml", "gateway-currency-converter.yaml", WEIGHTS]
    topo, before = _translate(tmp_path, *base)
    proxies = list(topo.proxies.values())
    old = snapshot.build(proxies, before)
    gateway = snapshot.node_id(topo.gateway)
    sidecars = sorted(snapshot.node_id(p) for p in topo.sidecars)

    def changed(*texts: str) -> list[str]:
        _, after = _translate(tmp_path, *texts)
        return sorted(sync.changed_nodes(old, snapshot.build(proxies, after)))

    assert changed(*base) == []
    assert changed(*base, "virtual-service-currency-converter-ingress.yaml") == [gateway]
    assert changed(*base[:2], "virtual-service-currency-converter-50-50.yaml") == sidecars


def test_translating_pauses_garbage_collection_and_leaves_it_as_it_was():
    """The push runs without cyclic GC walks (translate.gc_paused), and the user's kernel keeps its GC
    setting whatever happens: on after a failed push, still off when the user had turned it off."""
    import gc

    from labkit.local.translate import gc_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("a translation error")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
