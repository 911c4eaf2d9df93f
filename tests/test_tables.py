"""The plain-text views a notebook cell prints beside a kubectl/istioctl command, so the same question gets an
answer on every backend: from Envoy's JSON as the local admin API gives it (snake_case) and as ``istioctl
proxy-config -o json`` gives it on kind (camelCase), from ``lab.get`` objects and from ``lab.status``."""

from __future__ import annotations

from labkit import manifests, paths, tables
from labkit.status import Status, WorkloadStatus

FQDN = "orders.shop.svc.cluster.local"
LOCAL_ROUTES = [
    {
        "name": "9000",
        "virtual_hosts": [
            {
                "name": f"{FQDN}:9000",
                "domains": [FQDN],
                "routes": [
                    {
                        "match": {
                            "prefix": "/",
                            "headers": [{"name": "x-beta", "string_match": {"exact": "yes"}}],
                        },
                        "route": {"cluster": f"outbound|9000|v3|{FQDN}"},
                    },
                    {
                        "match": {"prefix": "/"},
                        "route": {
                            "weighted_clusters": {
                                "clusters": [
                                    {"name": f"outbound|9000|v1|{FQDN}", "weight": 80},
                                    {"name": f"outbound|9000|v2|{FQDN}", "weight": 20},
                                ]
                            }
                        },
                    },
                ],
            }
        ],
    }
]
#: The same route configuration as istioctl re-encodes it (camelCase field names).
KIND_ROUTES = [
    {
        "name": "9000",
        "virtualHosts": [
            {
                "name": f"{FQDN}:9000",
                "domains": [FQDN],
                "routes": [
                    {
                        "match": {
                            "prefix": "/",
                            "headers": [{"name": "x-beta", "stringMatch": {"exact": "yes"}}],
                        },
                        "route": {"cluster": f"outbound|9000|v3|{FQDN}"},
                    },
                    {
                        "match": {"prefix": "/"},
                        "route": {
                            "weightedClusters": {
                                "clusters": [
                                    {"name": f"outbound|9000|v1|{FQDN}", "weight": 80},
                                    {"name": f"outbound|9000|v2|{FQDN}", "weight": 20},
                                ]
                            }
                        },
                    },
                ],
            }
        ],
    }
]


def test_routes_read_the_same_from_the_local_admin_api_and_from_istioctl():
    lines = tables.routes(LOCAL_ROUTES)
    assert lines[0].split() == ["ROUTE", "VIRTUAL", "HOST", "MATCH", "DESTINATION"]
    assert lines[1].split("  ")[-1] == f"outbound|9000|v3|{FQDN}" and "header x-beta exact yes" in lines[1]
    assert lines[2].endswith(f"outbound|9000|v1|{FQDN} 80, outbound|9000|v2|{FQDN} 20")
    assert tables.routes(KIND_ROUTES) == lines


def test_clusters_like_istioctl_proxy_config_clusters_with_fqdn():
    clusters = [
        {"name": "outbound|443||api.fxrates.example", "type": "STRICT_DNS"},
        {"name": f"outbound|9000|v1|{FQDN}", "type": "EDS", "edsClusterConfig": {}},
        {"name": "BlackHoleCluster"},  # STATIC: proto3 JSON leaves the default out
    ]
    lines = tables.clusters(clusters)
    assert [line.split() for line in lines] == [
        ["SERVICE", "FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"],
        ["api.fxrates.example", "443", "-", "outbound", "STRICT_DNS"],
        [FQDN, "9000", "v1", "outbound", "EDS"],
        ["BlackHoleCluster", "-", "-", "-", "STATIC"],
    ]
    assert [line.split()[0] for line in tables.clusters(clusters, "api.fxrates.example")] == [
        "SERVICE",
        "api.fxrates.example",
    ]
    assert tables.clusters(clusters, "nope.example") == []


def test_print_resources_reads_like_kubectl_get(capsys):
    strict = manifests.load(paths.MESH / "peer-authentication-strict.yaml")
    tables.print_resources(strict, "payments-prod")
    tables.print_resources([], "payments-prod")
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAMESPACE", "NAME", "DETAIL"]
    assert out[1].split() == ["payments-prod", "default", "mode", "STRICT"]
    assert out[2] == "No resources found in payments-prod namespace."  # kubectl's words


def test_a_namespace_shows_its_labels_as_show_labels_does():
    [ns] = [r for r in manifests.load(paths.APPS) if r.kind == "Namespace" and r.name == "payments-prod"]
    assert "istio-injection=enabled" in tables.resources([ns])[1]


def test_workloads_answer_kubectl_get_pods_ready_restarts_and_containers():
    status = Status("local", True, workloads=[
        WorkloadStatus("currency-converter-v1", "payments-prod", "v1", 1, 1, True, restarts=2),
        WorkloadStatus("client", "payments-prod", "v1", 2, 1, True),
        WorkloadStatus("legacy-client", "legacy", "v1", 1, 1, False),
    ])  # fmt: skip
    assert [line.split(None, 3) for line in tables.workloads(status, "payments-prod")] == [
        ["WORKLOAD", "READY", "RESTARTS", "CONTAINERS"],
        ["client", "1/2", "0", "app, istio-proxy"],
        ["currency-converter-v1", "1/1", "2", "app, istio-proxy"],
    ]
    assert tables.workloads(status, "legacy")[1].split(None, 3) == ["legacy-client", "1/1", "0", "app"]
    assert "currency-converter-v1: 1/1 ready, 2 restarts, +sidecar" in str(status)
    assert tables.workloads(status, "nope") == []


def test_an_allow_policy_without_rules_reads_as_denying_everything():
    deny_all, allow = (
        manifests.load(paths.MESH / f"authorization-policy-currency-converter-{name}.yaml")[0]
        for name in ("deny-all", "allow-client")
    )
    assert tables.resources([deny_all])[1].endswith("action ALLOW  rules 0: denies every request to the "
                                                    "workloads it selects")  # fmt: skip
    assert tables.resources([allow])[1].endswith("action ALLOW  rules 1")
