"""The control plane's side without Envoy: every resource the translator makes fits Envoy's protos from
xds-protos, the snapshot splits endpoints out for EDS, and the sync state reads as proxy-status does."""

from __future__ import annotations

import json

import pytest
from support.envoy import configs

from labkit import paths
from labkit.local.xds import proto, snapshot, sync

#: Every lesson manifest that translates on its own (the missing subset is meant to 503, it translates too).
MESH_FILES = sorted(p.name for p in (paths.CLUSTER_CONFIG / "mesh").glob("*.yaml"))


@pytest.mark.parametrize("name", MESH_FILES)
def test_every_resource_the_translator_makes_converts_to_envoys_protos(tmp_path, name):
    topo, cfgs = configs(tmp_path, name)
    snap = snapshot.build(list(topo.proxies.values()), cfgs)
    count = 0
    for node in snap["nodes"].values():
        for url, typed in node["types"].items():
            for resource in typed["resources"]:
                packed = proto.to_any(resource, node["proxy"])
                assert packed.type_url == url
                count += 1
    assert count > 20


def test_an_unknown_field_is_refused_naming_the_resource():
    bad = {"@type": snapshot.CLUSTER, "name": "outbound|80||x", "no_such_field": 1}
    with pytest.raises(proto.ProtoError, match=r"client CDS: resource 'outbound\|80\|\|x'.*no_such_field"):
        proto.to_any(bad, "client CDS")


def test_outbound_endpoints_travel_by_eds_and_the_node_id_is_istios(tmp_path):
    topo, cfgs = configs(tmp_path, "virtual-service-currency-converter-90-10.yaml")
    client = topo.proxies["sidecar~client-0.payments-prod"]
    snap = snapshot.build([client], cfgs)
    node_id = "sidecar~127.0.0.1~client-0.payments-prod~payments-prod.svc.cluster.local"
    types = snap["nodes"][node_id]["types"]
    eds = [c for c in types[snapshot.CLUSTER]["resources"] if c["type"] == "EDS"]
    assert eds and all("load_assignment" not in c for c in eds)
    assert {c["name"] for c in eds} == {e["cluster_name"] for e in types[snapshot.ENDPOINT]["resources"]}
    assert all(
        c["eds_cluster_config"]["eds_config"] == {"ads": {}, "resource_api_version": "V3"} for c in eds
    )
    assert snapshot.node_id(topo.gateway).startswith("router~127.0.0.1~istio-ingressgateway.istio-system~")


def _sync(tmp_path, snap, acked: dict[str, str], nack: dict | None = None) -> None:
    node = next(iter(snap["nodes"]))
    types = {
        snapshot.SHORT[u]: {"sent": v, "acked": acked.get(u, ""), "nack": None}
        for u, v in snapshot.expected(snap["nodes"][node]).items()
    }
    if nack:
        types["RDS"]["nack"] = nack
    body = {"pid": 1, "version": snap["version"], "nodes": {node: {"connected": True, "types": types}}}
    snapshot.folder(tmp_path).mkdir(exist_ok=True)
    snapshot.sync_file(tmp_path).write_text(json.dumps(body))


def test_proxy_status_is_synced_stale_or_nack_and_a_wait_names_the_proxy(tmp_path):
    topo, cfgs = configs(tmp_path, "virtual-service-currency-converter-90-10.yaml")
    client = topo.proxies["sidecar~client-0.payments-prod"]
    snap = snapshot.build([client], cfgs)
    want = snapshot.expected(next(iter(snap["nodes"].values())))
    _sync(tmp_path, snap, want)
    [row] = sync.status(tmp_path, snap)
    assert row.synced and row.types["RDS"] == "SYNCED"
    sync.wait_acked(tmp_path, snap, list(snap["nodes"]), timeout=0.1)

    _sync(tmp_path, snap, {u: v for u, v in want.items() if u != snapshot.ROUTE})
    [row] = sync.status(tmp_path, snap)
    assert row.types["RDS"] == "STALE" and not row.synced
    with pytest.raises(
        sync.SyncError, match=r"client-0.payments-prod did not ACK the new config within 0.1 s"
    ):
        sync.wait_acked(tmp_path, snap, list(snap["nodes"]), timeout=0.1)

    _sync(tmp_path, snap, {}, nack={"version": want[snapshot.ROUTE], "error": "missing ): (x"})
    [row] = sync.status(tmp_path, snap)
    assert row.types["RDS"] == "NACK" and row.errors == {"RDS": "missing ): (x"}
