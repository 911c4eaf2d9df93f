"""The local lab's 127.0.0.1 ports: allocated once and persisted, so a new kernel finds the same lab, and
checked free before anything binds them. Only what any caller may dial has a port (a sidecar's inbound
listener, an app without a sidecar, the gateway); the rest are Unix sockets (labkit.state names them)."""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from labkit.errors import PortInUseError
from labkit.files import write_atomic

if TYPE_CHECKING:
    from labkit.local.topology import Topology


class Ports:
    """Every port of the topology by what it is for (``app/<ns>/<instance>`` of an app without a sidecar,
    ``inbound/<proxy>/<target port>``, ``gateway/<proxy>/<port>``), persisted
    in ``ports.json``: a new kernel finds the same lab, and adding a workload, a ServiceEntry or a Gateway
    gives only the new things new ports, so nothing else restarts and the ingress URL stays."""

    def __init__(self, file: Path) -> None:
        self.file = file
        saved = json.loads(file.read_text()) if file.is_file() else {}
        self.by_key: dict[str, int] = saved.get("ports", {})  # an older labkit's "sequence": new ports
        self._saved = dict(self.by_key)

    def assign(self, topo: Topology) -> bool:
        """Give every port of ``topo`` its saved number, or a free one; True if any is new (unsaved)."""
        slots = _slots(topo)
        for key, set_port in slots.items():
            if key not in self.by_key:
                self.by_key[key] = self._free()
            set_port(self.by_key[key])
        return any(key not in self._saved for key in slots)

    def _free(self) -> int:
        """A free port, kept bound (SO_REUSEPORT, no listen) by this process until the lab's istiod holds it
        (``release``), so no other program takes it while the lab starts (certificates take seconds)."""
        taken = set(self.by_key.values())
        while True:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in taken:
                _pending[port] = s
                return port
            s.close()

    def save(self, topo: Topology) -> None:
        """Persist the ports ``topo`` uses (those of removed workloads are dropped)."""
        self.by_key = {key: self.by_key[key] for key in _slots(topo)}
        write_atomic(self.file, json.dumps({"ports": self.by_key}, indent=0, sort_keys=True))
        self._saved = dict(self.by_key)


def _slots(topo: Topology) -> dict[str, Callable[[int], None]]:
    """Every port of ``topo`` by key, as a setter for it."""
    slots: dict[str, Callable[[int], None]] = {}
    for inst in topo.instances:
        if inst.proxy is None:  # behind a sidecar the app's ports are Unix sockets (state.py)
            slots[f"app/{inst.workload.namespace}/{inst.name}"] = functools.partial(setattr, inst, "app_port")
            for number in inst.tcp_ports:
                key = f"app-tcp/{inst.workload.namespace}/{inst.name}/{number}"
                slots[key] = functools.partial(inst.tcp_ports.__setitem__, number)
    for proxy in topo.proxies.values():
        slots[f"stats/{proxy.id}"] = functools.partial(setattr, proxy, "stats_port")
        for kind, ports in (("inbound", proxy.inbound_ports), ("gateway", proxy.gateway_ports)):
            for number in ports:
                slots[f"{kind}/{proxy.id}/{number}"] = functools.partial(ports.__setitem__, number)
    return slots


#: Ports this process allocated and keeps bound until istiod holds them (Ports._free).
_pending: dict[int, socket.socket] = {}


def release(*only: int) -> None:
    """Close the sockets that kept newly allocated ports (``only`` these, else all: istiod holds them now,
    or the start failed)."""
    for port in only or list(_pending):
        sock = _pending.pop(port, None)
        if sock is not None:
            sock.close()


def check_free(ports: dict[int, str], ports_file: Path) -> None:
    """Raise PortInUseError for the first of ``ports`` (port -> owning process) another process holds."""
    for port, owner in sorted(ports.items()):
        if port in _pending:
            continue  # ours, kept bound since it was allocated
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no clash
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise PortInUseError(
                    f"port 127.0.0.1:{port}, which the lab's {owner} needs, is already in use{_holder(port)}",
                    f"stop that process, or delete {ports_file} so the lab picks new ports",
                ) from None


def _holder(port: int) -> str:
    """`` (held by pid N: cmdline)`` when psutil can tell who listens on ``port``."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return ""
    for conn in conns:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            try:
                cmd = " ".join(psutil.Process(conn.pid).cmdline())[:120]
            except psutil.Error:
                cmd = "?"
            return f" (held by pid {conn.pid}: {cmd})"
    return ""
