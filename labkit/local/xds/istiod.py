"""The lab's control plane process, ``python -m labkit.local.xds.istiod <state folder> <socket>``: Envoy's
aggregated discovery service (ADS, state of the world) over gRPC on the lab's private Unix socket, like
istiod's (pilot/pkg/xds/ads.go ``StreamAggregatedResources``).

It serves the snapshot in ``xds/`` (store.py), read at start and again on SIGHUP, which the lab sends after
writing a new one; so a restarted istiod serves the same config from the state folder. Per stream and type it
remembers the version and nonce it sent; a request carrying that nonce is an ACK, or a NACK when it has
``error_detail`` (pilot/pkg/xds/ads.go ``shouldRespond``). What each proxy was sent, ACKed and NACKed goes to
``xds/sync.json``, which ``lab.apply`` and ``lab.proxy_status()`` read (sync.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from labkit.files import write_atomic
from labkit.local.xds import proto, snapshot, store

#: A converted resource list, by (type URL, version): its ``Any`` messages and their names.
Converted = dict[tuple[str, str], tuple[list[Any], list[str]]]

#: How soon after a change sync.json is rewritten (batches the ACKs of one push into one write).
FLUSH_S = 0.005


class Control:
    """The served snapshot (as protobuf, converted once per changed type) and every proxy's sync state."""

    def __init__(self, state_root: Path) -> None:
        self.state_root = state_root
        self.version = ""
        self.served: dict[str, dict[str, tuple[str, list[Any]]]] = {}  # node -> type -> (version, [Any])
        self.lists: Converted = {}
        self.names: dict[str, dict[str, list[str]]] = {}  # node -> type -> resource names, in order
        self.streams: dict[str, Stream] = {}
        self.sync: dict[str, dict[str, Any]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self.error = ""
        self.held: dict[int, socket.socket] = {}
        self.wanted: set[int] = set()
        self.unheld: list[int] = []

    def load(self) -> None:
        """Read the snapshot's index and the lists it names that this istiod has not converted yet (a list
        file never changes, store.py); push to every stream."""
        try:
            snap, lists = self._read()
        except (OSError, ValueError) as err:
            self.error = f"cannot read {snapshot.snapshot_file(self.state_root)}: {err}"
            self.changed()
            return
        except proto.ProtoError as err:
            self.error = str(err)  # keep serving the last good snapshot, as istiod does on a bad config
            self.changed()
            return
        self.served = {
            node: {url: (version, lists[url, version][0]) for url, version in data["types"].items()}
            for node, data in snap["nodes"].items()
        }
        self.names = {
            node: {url: lists[url, version][1] for url, version in data["types"].items()}
            for node, data in snap["nodes"].items()
        }
        for node, data in snap["nodes"].items():
            self.sync.setdefault(node, {"proxy": data["proxy"], "connected": False, "types": {}})
        self.lists, self.version, self.error = lists, snap["version"], ""
        self.hold(set(snap.get("hold", [])))
        for stream in list(self.streams.values()):
            stream.push()
        self.changed()

    def _read(self, tries: int = 3) -> tuple[dict[str, Any], Converted]:
        """The index and every list it names, as ``Any`` messages with their names. A list file goes once
        a newer index replaced the one naming it twice over: then the newest index is read again."""
        snap = store.read_index(self.state_root)
        cache: dict[str, Any] = {}  # replicas of one workload share most resources: convert each once
        lists: Converted = {}
        try:
            for data in snap["nodes"].values():
                for url, version in data["types"].items():
                    if (url, version) not in lists:
                        known = self.lists.get((url, version))
                        lists[url, version] = known or self._convert((url, version), data["proxy"], cache)
        except FileNotFoundError:
            if not tries:
                raise
            return self._read(tries - 1)
        return snap, lists

    def _convert(self, key: tuple[str, str], proxy: str, cache: dict[str, Any]) -> tuple[list, list[str]]:
        resources = store.read_list(self.state_root, *key)
        where = f"{proxy} {snapshot.SHORT[key[0]]}"
        return [self.convert(r, where, cache) for r in resources], [_name(r) for r in resources]

    @staticmethod
    def convert(resource: dict[str, Any], where: str, cache: dict[str, Any]) -> Any:
        key = json.dumps(resource, separators=(",", ":"))
        if key not in cache:
            cache[key] = proto.to_any(resource, where)
        return cache[key]

    def hold(self, ports: set[int]) -> None:
        """Keep exactly ``ports`` bound without listen() and with SO_REUSEPORT: a connection is refused, as
        when nothing binds the port, another program cannot bind it, and Envoy's listener (reuse_port) can.
        A port another program took while no istiod held it (say, as a connection's source port) is tried
        again every second (``retry``) and listed in sync.json meanwhile: not fatal, as long as no listener
        needs it (one that does fails to bind, and that proxy NACKs saying so)."""
        self.wanted = ports
        for port in set(self.held) - ports:
            self.held.pop(port).close()
        for port in sorted(ports - set(self.held)):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            self.held[port] = sock
        unheld = sorted(ports - set(self.held))
        if unheld != self.unheld:
            self.unheld = unheld
            self.changed()

    async def retry(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.unheld:
                self.hold(self.wanted)

    def changed(self) -> None:
        """Write sync.json soon (once for a burst of ACKs)."""
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        self._flush = None
        body = {
            "pid": os.getpid(),
            "version": self.version,
            "error": self.error,
            "unheld": self.unheld,
            "nodes": self.sync,
        }
        write_atomic(snapshot.sync_file(self.state_root), json.dumps(body))


def _name(resource: dict[str, Any]) -> str:
    return resource.get("name") or resource.get("cluster_name") or ""


class Stream:
    """One Envoy's ADS stream: what it subscribed to, what was sent, its ACKs and NACKs."""

    def __init__(self, control: Control, node: str) -> None:
        self.control, self.node = control, node
        self.out: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] = asyncio.Queue()
        self.subscribed: dict[str, set[str]] = {}  # type -> names (empty: wildcard)
        self.sent: dict[str, tuple[str, str]] = {}  # type -> (version, nonce)
        self.nonces = itertools.count(1)

    def status(self, url: str) -> dict[str, Any]:
        types = self.control.sync[self.node]["types"]
        return types.setdefault(snapshot.SHORT.get(url, url), {"sent": "", "acked": "", "nack": None})

    def request(self, req: discovery_pb2.DiscoveryRequest) -> None:
        url, names = req.type_url, set(req.resource_names)
        sent = self.sent.get(url)
        if req.response_nonce and sent is not None:
            if req.response_nonce != sent[1]:
                return  # an answer to an older push: the newer one is on its way (ads.go shouldRespond)
            status = self.status(url)
            if req.HasField("error_detail"):
                status["nack"] = {"version": sent[0], "error": req.error_detail.message}
            else:
                status["acked"], status["nack"] = req.version_info, None
            self.control.changed()
            if names == self.subscribed.get(url):
                return
        self.subscribed[url] = names
        self.send(url)

    def push(self) -> None:
        """Send, in istiod's order, every subscribed type whose version changed, and the endpoints again
        after any cluster change: a modified cluster warms until it gets its ClusterLoadAssignment, and Envoy
        holds LDS and RDS back meanwhile (istiod's full push sends EDS after CDS the same way)."""
        served = self.control.served.get(self.node, {})
        clusters_sent = False
        for url in snapshot.ORDER:
            changed = served.get(url, ("", []))[0] != self.sent.get(url, ("", ""))[0]
            if url in self.subscribed and (changed or (url == snapshot.ENDPOINT and clusters_sent)):
                self.send(url)
                clusters_sent |= url == snapshot.CLUSTER

    def send(self, url: str) -> None:
        version, anys = self.control.served.get(self.node, {}).get(url, ("", []))
        wanted = self.subscribed.get(url) or set()
        if wanted and url not in snapshot.WILDCARD:
            names = self.control.names.get(self.node, {}).get(url, [])
            anys = [a for a, n in zip(anys, names, strict=True) if n in wanted]
        nonce = str(next(self.nonces))
        self.sent[url] = (version, nonce)
        self.status(url)["sent"] = version
        self.control.changed()
        self.out.put_nowait(
            discovery_pb2.DiscoveryResponse(version_info=version, resources=anys, type_url=url, nonce=nonce)
        )


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, control: Control) -> None:
        self.control = control

    async def StreamAggregatedResources(self, requests: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        first = await anext(aiter(requests), None)
        if first is None:
            return
        node = first.node.id
        if node not in self.control.served:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown proxy {node!r}: not in this lab")
        stream = Stream(self.control, node)
        self.control.streams[node] = stream  # a reconnect replaces the old stream
        self.control.sync.setdefault(node, {"proxy": node, "types": {}})["connected"] = True
        stream.request(first)

        async def read() -> None:
            try:
                async for req in requests:
                    stream.request(req)
            finally:
                stream.out.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (response := await stream.out.get()) is not None:
                yield response
        finally:
            reader.cancel()
            if self.control.streams.get(node) is stream:
                del self.control.streams[node]
                self.control.sync[node]["connected"] = False
                self.control.changed()


async def serve(state_root: Path, sock: Path) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    control = Control(state_root)
    loop.add_signal_handler(signal.SIGHUP, control.load)
    control.load()
    # on the lab's private Unix socket (its folder is 0700): no other user can read a proxy's config
    sock.unlink(missing_ok=True)  # a socket left by a killed istiod
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(control), server)
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    control.flush()  # sync.json with this pid: the lab's sign that istiod is up and has loaded the snapshot
    retry = asyncio.create_task(control.retry())
    await stop.wait()
    retry.cancel()
    await server.stop(grace=0.5)


def main(argv: list[str]) -> None:
    state_root, sock = Path(argv[0]), Path(argv[1])
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop handles it: a SIGHUP must never kill istiod
    asyncio.run(serve(state_root, sock))


if __name__ == "__main__":
    main(sys.argv[1:])
