"""TCP traffic shifting (notebook 20) on the local backend, through real Envoy and real TCP connections:
VirtualService ``tcp`` routes become ``tcp_proxy`` with ``weighted_clusters`` as istiod builds them
(labkit/local/tcp.py, after pilot/pkg/networking/core/networkfilter.go), under STRICT mTLS.

One lab for the module at the canary checkpoint; each test puts back what it changed.
"""

from __future__ import annotations

import pytest

from labkit import checks, paths
from labkit.checks import CheckFailed
from labkit.scenario import NAMESPACE

pytestmark = pytest.mark.mesh

TASKS = paths.CLUSTER_CONFIG / "tasks"
PORT = 9001  # the sample app's TCP echo port, Service tcp-echo (cluster-config/apps/currency-converter.yaml)
ECHO = "tcp-echo"
TCP_URL = f"tcp://{ECHO}.{NAMESPACE}:{PORT}"
FQDN = f"{ECHO}.{NAMESPACE}.svc.cluster.local"


def tcp_proxy(lab, listener: str) -> dict:
    """The client sidecar's tcp_proxy config on ``listener``, as its Envoy runs it (config dump)."""
    [found] = [lst for lst in lab.proxy_config("client", "listeners") if lst["name"] == listener]
    [chain] = found["filter_chains"]
    return chain["filters"][0]["typed_config"]


def test_tcp_routes_shift_connections_80_20_and_a_50_50_split_fails_the_check(lab):
    """tcp[].route weights: weighted_clusters, one pick per connection; the lesson's CHECK tells 50/50."""
    try:
        lab.apply(TASKS / "virtual-service-tcp-echo-80-20.yaml")
        config = tcp_proxy(lab, "0.0.0.0_9001")
        assert config["stat_prefix"] == f"{ECHO}.{NAMESPACE}"  # <vs name>.<namespace>, as istiod names it
        assert config["weighted_clusters"]["clusters"] == [
            {"name": f"outbound|9001|v1|{FQDN}", "weight": 80},
            {"name": f"outbound|9001|v2|{FQDN}", "weight": 20},
        ]
        shifted = lab.send_tcp(TCP_URL, 400)
        assert shifted.codes() == {"echoed": 400}, shifted.summary()
        checks.split_matches(shifted, {"v1": 80, "v2": 20})

        lab.apply(TASKS / "virtual-service-tcp-echo-50-50.yaml")
        even = lab.send_tcp(TCP_URL, 400)
        with pytest.raises(CheckFailed, match="does not match the configured 80/20"):
            checks.split_matches(even, {"v1": 80, "v2": 20})
    finally:
        lab.ensure("canary-90-10")


def test_one_tcp_destination_is_a_plain_cluster_and_no_route_is_the_default_cluster(lab):
    """A single destination is ``tcp_proxy.cluster`` with the cluster as stat prefix; without a
    VirtualService the TCP port takes the Service's default cluster, both versions."""
    one = {  # the single-destination form of Istio's task
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": ECHO, "namespace": NAMESPACE},
        "spec": {
            "hosts": [ECHO],
            "tcp": [{"route": [{"destination": {"host": ECHO, "subset": "v2", "port": {"number": PORT}}}]}],
        },
    }
    try:
        default = lab.send_tcp(TCP_URL, 60)  # the canary checkpoint: no route for tcp-echo
        assert set(default.counts()) == {"v1", "v2"}
        assert tcp_proxy(lab, "0.0.0.0_9001")["cluster"] == f"outbound|9001||{FQDN}"
        lab.apply(TASKS / "virtual-service-tcp-echo-80-20.yaml")  # its DestinationRule: the subsets
        lab.apply(one)
        assert tcp_proxy(lab, "0.0.0.0_9001")["stat_prefix"] == f"outbound|9001|v2|{FQDN}"
        assert lab.send_tcp(TCP_URL, 30).counts() == {"v2": 30}
    finally:
        lab.ensure("canary-90-10")


def test_strict_mtls_refuses_a_plaintext_tcp_client_and_the_access_log_shows_connections(lab):
    """The TCP port sits behind the same inbound filter chains as HTTP: STRICT takes TLS only."""
    refused = lab.send_tcp(TCP_URL, 10, source="legacy")  # no sidecar: plaintext straight to the pod
    assert "echoed" not in refused.codes(), refused.summary()
    served = lab.send_tcp(TCP_URL, 10)
    assert served.codes() == {"echoed": 10}
    lines = lab.access_log("client", tail=20)
    assert any('"- - -"' in line and "outbound|9001||" in line for line in lines), lines


def test_the_tcp_checkpoint_reaches_notebook_21s_end_state_and_back(lab):
    """``lab.ensure("tcp-80-20")`` (scenario.py): the 80/20 TCP route in one call; the canary undoes it."""
    try:
        lab.ensure("tcp-80-20")
        weights = [c["weight"] for c in tcp_proxy(lab, "0.0.0.0_9001")["weighted_clusters"]["clusters"]]
        assert weights == [80, 20]
    finally:
        lab.ensure("canary-90-10")
    assert "cluster" in tcp_proxy(lab, "0.0.0.0_9001")  # back to the Service's default cluster
