"""What the local backend runs for a workload's container: the lab's sample app, in echo mode for any image
that is not the sample's (so Istio's samples route and measure with no images), and, for an app that calls
other services (CALLS), where its sidecar's outbound listeners are.

On a cluster the kubelet runs the image and iptables sends the app's calls through its sidecar; here there is
no image and no iptables, so the app is told the way (see services/currency-converter/callgraph.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from labkit.meshmodel import alt_names

if TYPE_CHECKING:
    from labkit.local.topology import Instance, Topology

#: The sample app's image repository (labkit/kind/cluster.py builds it), with any registry and tag.
SAMPLE_REPOSITORY = "meshlab/currency-converter"
#: The app's env var that makes it call other services (callgraph.py), and the one the lab fills for it.
CALLS_ENV = "CALLS"
OUTBOUND_ENV = "MESHLAB_OUTBOUND"


def is_sample(image: str) -> bool:
    """Whether ``image`` is the lab's sample app (any registry, tag or digest); no image counts as it."""
    if not image:
        return True
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: -(len(last) - last.index(":"))]
    return name == SAMPLE_REPOSITORY or name.endswith("/" + SAMPLE_REPOSITORY)


def environment(topo: Topology, inst: Instance) -> dict[str, str]:
    """Env the lab adds to the app of ``inst``: MODE=echo for another image, the outbound map for a caller."""
    w = inst.workload
    env: dict[str, str] = {}
    if not is_sample(w.image):
        env["MODE"] = "echo"
    if CALLS_ENV in w.env or CALLS_ENV in w.env_fields:
        env[OUTBOUND_ENV] = json.dumps(outbound(topo, inst), sort_keys=True)
    return env


def outbound(topo: Topology, inst: Instance) -> dict:
    """Where the app's calls connect: its sidecar's outbound listener (socket) per Service port, or without a
    sidecar every name a pod in its namespace may use for a Service port and the endpoints behind it
    (kube-proxy)."""
    if inst.proxy is not None:
        return {"via": {str(port): str(sock) for port, sock in sorted(inst.proxy.outbound_sockets.items())}}
    namespace = inst.workload.namespace
    endpoints: dict[str, list[int]] = {}
    for service in topo.services:
        names = [service.fqdn, *alt_names(service.fqdn, namespace)]
        for port in service.ports:
            ports = [e.port for e in topo.endpoints(service, port)]
            for name in names:
                endpoints[f"{name}:{port.port}"] = ports
    return {"endpoints": endpoints}
