"""The local lab's 127.0.0.1 ports: allocated once and persisted, so a new kernel finds the same lab, and
checked free before anything binds them."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from labkit.errors import PortInUseError
from labkit.files import write_atomic

if TYPE_CHECKING:
    from labkit.local.topology import Topology


class Ports:
    """A port allocator that replays the saved sequence (``ports.json``).

    The topology of the apps takes its ports in a fixed call order, so replaying the saved sequence gives it
    the same ports again. Listener ports added later for applied ServiceEntries and Gateways depend on the
    order things were applied, so those are saved per proxy instead and restored as they were.
    """

    def __init__(self, file: Path) -> None:
        self.file = file
        saved = json.loads(file.read_text()) if file.is_file() else {}
        self.ports: list[int] = saved.get("sequence", [])
        self.listeners: dict[str, dict[str, dict[str, int]]] = saved.get("listeners", {})
        self.next = 0

    def __call__(self) -> int:
        if self.next == len(self.ports):
            self.ports.append(self._free())
        self.next += 1
        return self.ports[self.next - 1]

    def _free(self) -> int:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in self.ports:
                return port

    def restore(self, topo: Topology) -> None:
        """Give the proxies their saved extra listener ports; from now on, hand out only new ports."""
        base = set(self.ports[: self.next])
        for proxy in topo.proxies.values():
            saved = self.listeners.get(proxy.id, {})
            for mine, ports in (("outbound", proxy.outbound_ports), ("gateway", proxy.gateway_ports)):
                for port, local in saved.get(mine, {}).items():
                    if local not in base:  # an apps change can hand a saved port to an app: allocate anew
                        ports.setdefault(int(port), local)
        self.next = len(self.ports)

    def save(self, topo: Topology) -> None:
        listeners = {
            p.id: {"outbound": p.outbound_ports, "gateway": p.gateway_ports} for p in topo.proxies.values()
        }
        write_atomic(self.file, json.dumps({"sequence": self.ports, "listeners": listeners}))


def check_free(ports: dict[int, str], ports_file: Path) -> None:
    """Raise PortInUseError for the first of ``ports`` (port -> owning process) another process holds."""
    for port, owner in sorted(ports.items()):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no clash
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise PortInUseError(
                    f"port 127.0.0.1:{port}, which the lab's {owner} needs, is already in use"
                    f"{_holder(port)}. What to do: stop that process, or delete {ports_file} so the lab "
                    "picks new ports."
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
