"""A team's own services on the local backend (issue #11), end to end with real Envoy: the shop scenario of
tests/shop/ (orders v1 x2, v2, v3 behind Service orders 9000 -> 8080, callers web and batch), sent from any
workload, Envoy's own config read back, pod identity as the kubelet gives it, refusals before anything starts,
and two kernels applying at once.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import labkit
from labkit import checks
from labkit.backends.local import LocalLab
from labkit.errors import CapacityError, LabError
from labkit.local import capacity, processes

pytestmark = pytest.mark.mesh

SHOP = Path(__file__).parent / "shop"
URL = "http://orders.shop:9000/healthz"
ORDERS = "orders.shop.svc.cluster.local"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLab]:
    lab = labkit.open("local", state=tmp_path_factory.mktemp("shop-state"))
    try:
        lab.up()
        lab.before_shop = pids(lab), lab.status().ingress_url  # type: ignore[attr-defined]
        lab.apply(SHOP / "apps.yaml")
        lab.apply(SHOP / "routing.yaml")
        yield lab
    finally:
        lab.down()


def test_adding_a_teams_services_leaves_the_running_lab_as_it_was(shop):
    before, ingress = shop.before_shop
    after = pids(shop)
    assert {name: after.get(name) for name in before} == before  # nothing of the lesson restarted
    assert shop.status().ingress_url == ingress  # the ingress URL a notebook printed still works


def pids(lab: LocalLab) -> dict[str, int]:
    return {r.name: r.pid for r in processes.records(lab.files.run_dir) if processes.is_alive(r)}


def test_the_split_measured_from_web_is_80_20_and_testers_get_v3(shop):
    # No Deployment sets VERSION: each answer carries its pod's `version` label.
    result = shop.send(URL, n=1000, source="shop/web", progress=False)
    assert all(o.status == 200 for o in result.outcomes), result.codes()
    checks.split_matches(result, {"v1": 80, "v2": 20})
    beta = shop.send(
        URL, n=100, source="web", headers={"x-beta": "yes"}, progress=False
    )  # a unique bare name
    assert beta.counts() == {"v3": 100}


def test_a_wrong_split_fails_the_same_check(shop):
    result = shop.send(URL, n=1000, source="shop/web", progress=False)
    with pytest.raises(AssertionError, match="does not match"):
        checks.split_matches(result, {"v1": 50, "v2": 50})


def test_requests_from_web_carry_its_identity(shop):
    shop.send(URL, n=20, source="shop/web", progress=False)
    seen = {
        (m.labels["source_workload"], m.labels["source_principal"])
        for m in shop.metrics()
        if m.labels.get("reporter") == "destination"
        and m.labels.get("destination_workload", "").startswith("orders-")
    }
    assert ("web", "spiffe://cluster.local/ns/shop/sa/web") in seen


def test_a_workload_without_sidecar_goes_straight_to_an_endpoint_in_plaintext(shop):
    result = shop.send(URL, n=200, source="shop/batch", headers={"x-beta": "yes"}, progress=False)
    assert all(o.status == 200 for o in result.outcomes), result.codes()
    # No sidecar, no VirtualService: every endpoint (v1 x2, v2, v3) answers, the header routes nothing.
    assert set(result.counts()) == {"v1", "v2", "v3"}


def test_unknown_and_ambiguous_sources_name_the_candidates(shop):
    with pytest.raises(LabError, match=r"(?s)no workload 'shop/nope'.*shop/web"):
        shop.send(URL, n=1, source="shop/nope", progress=False)


def test_proxy_config_shows_the_weights_envoy_runs(shop):
    routes = shop.proxy_config("shop/web", "routes")
    [config] = [r for r in routes if r["name"] == "9000"]
    [vhost] = [v for v in config["virtual_hosts"] if ORDERS in v["domains"]]
    clusters = vhost["routes"][-1]["route"]["weighted_clusters"]["clusters"]
    assert {c["name"]: c["weight"] for c in clusters} == {
        f"outbound|9000|v1|{ORDERS}": 80,
        f"outbound|9000|v2|{ORDERS}": 20,
    }
    assert shop.route_weights("orders", "shop", source="shop/web") == {"v1": 80, "v2": 20}

    names = {c["name"] for c in shop.proxy_config("shop/web", "clusters")}
    assert f"outbound|9000|v3|{ORDERS}" in names
    assert any(lis["name"] == "0.0.0.0_9000" for lis in shop.proxy_config("shop/web", "listeners"))
    [v3] = [
        c for c in shop.proxy_config("shop/web", "endpoints") if c["name"] == f"outbound|9000|v3|{ORDERS}"
    ]
    assert len(v3["host_statuses"]) == 1  # orders-v3 has one replica
    sans = [
        san["uri"]
        for cert in shop.proxy_config("shop/web", "secrets")
        for chain in cert.get("cert_chain", [])
        for san in chain.get("subject_alt_names", [])
    ]
    assert "spiffe://cluster.local/ns/shop/sa/web" in sans
    with pytest.raises(LabError, match="has no sidecar"):
        shop.proxy_config("shop/batch", "routes")
    with pytest.raises(
        LabError, match="(?s)unknown proxy config 'route'.*routes, clusters, listeners, endpoints"
    ):
        shop.proxy_config("shop/web", "route")


def test_mtls_mode_follows_peer_authentication(shop):
    assert shop.mtls_mode("orders-v1", "shop") == "PERMISSIVE"  # Istio's default
    assert shop.mtls_mode("batch", "shop") is None


def test_get_lists_what_is_applied_like_kubectl(shop):
    assert [r.name for r in shop.get("vs", "shop")] == ["orders"]
    assert [r.name for r in shop.get("deployments", "shop")] == [
        "batch",
        "orders-v1",
        "orders-v2",
        "orders-v3",
        "web",
    ]
    assert "currency-converter" in {r.name for r in shop.get("Service")}  # every namespace
    with pytest.raises(LabError, match="unknown kind 'virtualservise'"):
        shop.get("virtualservise")


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_each_app_gets_its_pod_identity_like_the_kubelet_gives_it(shop):
    rec = processes.record(shop.files.run_dir, "app.shop.orders-v3-0")
    env = _environ(rec.pid)
    assert json.loads(env["MESHLAB_POD"]) == {
        "name": "orders-v3-0",
        "namespace": "shop",
        "labels": {"app": "orders", "version": "v3"},
        "serviceAccount": "orders",
    }
    assert env["MY_VERSION"] == "v3" and "VERSION" not in env  # the label, through fieldRef
    assert (env["MY_POD"], env["MY_NAMESPACE"], env["MY_TEAM"]) == ("orders-v3-0", "shop", "checkout")
    assert (env["MY_SERVICE_ACCOUNT"], env["MY_IP"], env["GREETING"]) == ("orders", "127.0.0.1", "hello")
    assert env["MY_NODE"]
    web = _environ(processes.record(shop.files.run_dir, "app.shop.web-0").pid)
    assert json.loads(web["MESHLAB_POD"])["labels"] == {"app": "web", "version": "v1"}
    assert "VERSION" not in web  # only what the Deployment asks for, as the kubelet does


def _oversized(replicas: int) -> dict:
    docs = list(yaml.safe_load_all((SHOP / "apps.yaml").read_text()))
    [v1] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "orders-v1"]
    v1["spec"]["replicas"] = replicas
    return v1


def test_an_oversized_deployment_is_refused_before_anything_starts(shop):
    before, applied = pids(shop), shop.files.applied.read_bytes()
    limited = LocalLab(shop.state, limits=capacity.Limits(memory_bytes=2**30))
    with pytest.raises(
        CapacityError, match=r"deployment/orders-v1 \(shop\) with 40 replica.*1024 MiB"
    ) as err:
        limited.apply(_oversized(40))
    assert "What to do: lower spec.replicas of deployment/orders-v1" in str(err.value)
    assert pids(shop) == before and shop.files.applied.read_bytes() == applied
    assert shop.send(URL, n=20, source="shop/web", progress=False).codes() == {200: 20}  # still serving


def test_a_lowered_memory_limit_refuses_even_one_more_replica(shop):
    before = pids(shop)
    limited = LocalLab(shop.state, limits=capacity.Limits(memory_bytes=capacity.MEMORY_PER_ENVOY))
    with pytest.raises(CapacityError, match=r"deployment/orders-v1 \(shop\) with 3 replica.*MiB available"):
        limited.apply(_oversized(3))
    assert pids(shop) == before


def _apply_at_once(state: str, manifest: dict, barrier, results) -> None:
    lab = LocalLab(Path(state))
    from labkit import validation

    validation.check([])  # load the schemas first, so both applies reach the state at the same moment
    barrier.wait(timeout=60)
    try:
        results.put([str(c) for c in lab.apply(manifest)])
    except Exception as exc:  # reported by the test, not lost in the child's stderr
        results.put([f"{type(exc).__name__}: {exc}"])


def test_two_kernels_applying_at_once_both_land(shop):
    strict = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "shop"},
        "spec": {"mtls": {"mode": "STRICT"}},
    }
    web_dr = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
    }
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    kernels = [
        ctx.Process(target=_apply_at_once, args=(str(shop.state), m, barrier, results))
        for m in (strict, web_dr)
    ]
    for k in kernels:
        k.start()
    try:
        changes = sorted(results.get(timeout=120) for _ in kernels)
    finally:
        for k in kernels:
            k.join(timeout=30)
    assert changes == [["destinationrule/web (shop) created"], ["peerauthentication/default (shop) created"]]
    fresh = LocalLab(shop.state)  # what any kernel now finds
    assert [r.name for r in fresh.get("pa", "shop")] == ["default"]
    assert [r.name for r in fresh.get("dr", "shop")] == ["orders", "web"]
    assert fresh.mtls_mode("orders-v1", "shop") == "STRICT"  # and Envoy runs both
    assert "outbound|8080|v1|web.shop.svc.cluster.local" in {
        c["name"] for c in fresh.proxy_config("web", "clusters")
    }
    fresh.delete([strict, web_dr])
