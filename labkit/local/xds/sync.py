"""The lab's side of the control plane: publish a snapshot, wait until the proxies ACK it, and read each
proxy's sync state as ``istioctl proxy-status`` shows it (SYNCED, STALE, NACK per type)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from labkit.errors import LabError
from labkit.local.xds import snapshot, store
from labkit.status import ProxyStatus

#: How long apply waits for every affected proxy's ACK (100 proxies ACK in well under a second).
ACK_TIMEOUT = 10.0


class SyncError(LabError):
    """A proxy NACKed the new config, or did not ACK it in time."""


#: The snapshot index this process last wrote or read, by its path: (its identity on disk, the snapshot).
_SERVED: dict[Path, tuple[tuple[int, ...], dict[str, Any]]] = {}
#: The resource lists of those snapshots, by state folder (store.py).
_LISTS: dict[Path, store.Lists] = {}


def publish(state_root: Path, snap: dict[str, Any], enc: snapshot.Encoder) -> bool:
    """Write the snapshot istiod serves (``enc``: the one that built it); True if it changed (then istiod
    must be told, by SIGHUP)."""
    changed = store.write(state_root, snap, enc)
    _remember(snapshot.snapshot_file(state_root), snap)
    _LISTS[state_root] = {
        (url, t["version"]): t["resources"] for n in snap["nodes"].values() for url, t in n["types"].items()
    }
    return changed


def served(state_root: Path) -> dict[str, Any] | None:
    """The snapshot istiod serves (None before the first publish); read again only when the file changed
    since this process last wrote or read it (another kernel of the lab may have published)."""
    file = snapshot.snapshot_file(state_root)
    try:
        key = _identity(file)
        known = _SERVED.get(file)
        if known is not None and known[0] == key:
            return known[1]
        snap = store.read(state_root, _LISTS.setdefault(state_root, {}))
    except (OSError, ValueError):
        return None
    _remember(file, snap)
    return snap


def _identity(file: Path) -> tuple[int, ...]:
    st = file.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _remember(file: Path, snap: dict[str, Any]) -> None:
    try:
        _SERVED[file] = (_identity(file), snap)
    except OSError:
        _SERVED.pop(file, None)


def read(state_root: Path) -> dict[str, Any]:
    """istiod's sync.json, or {} while there is none (or it is being replaced)."""
    try:
        return json.loads(snapshot.sync_file(state_root).read_text())
    except (OSError, ValueError):
        return {}


def loaded(state_root: Path, pid: int, snap: dict[str, Any]) -> bool:
    """True once istiod ``pid`` has loaded ``snap`` (after its start or a SIGHUP)."""
    sync = read(state_root)
    return sync.get("pid") == pid and sync.get("version") == snap["version"]


def changed_nodes(old: dict[str, Any] | None, new: dict[str, Any], only: str = "") -> list[str]:
    """The nodes of ``new`` whose config (of type ``only``, or any) differs from ``old``'s."""
    before = {
        n: {"types": {u: t for u, t in node["types"].items() if only in ("", u)}}
        for n, node in (old or {}).get("nodes", {}).items()
    }
    new = {
        "nodes": {
            n: {"types": {u: t for u, t in node["types"].items() if only in ("", u)}}
            for n, node in new["nodes"].items()
        }
    }
    return [
        n
        for n, node in new["nodes"].items()
        if snapshot.expected(node) != snapshot.expected(before.get(n, {"types": {}}))
    ]


def pending(
    sync: dict[str, Any], snap: dict[str, Any], nodes: list[str], old: dict[str, Any] | None = None
) -> tuple[list[str], list[str]]:
    """(proxies not yet in sync, NACK descriptions naming the resources that changed since ``old``)."""
    waiting, nacks = [], []
    for node in nodes:
        want = snapshot.expected(snap["nodes"][node])
        have = sync.get("nodes", {}).get(node, {}).get("types", {})
        for url, version in want.items():
            short = snapshot.SHORT[url]
            status = have.get(short, {})
            nack = status.get("nack")
            if nack and nack.get("version") == version:
                names = _changed(old, snap, node, url)
                what = f" of {', '.join(names)}" if names else ""
                nacks.append(
                    f"{snap['nodes'][node]['proxy']} rejected its {short} update{what} (NACK): "
                    f"{nack['error'].strip()}"
                )
            elif status.get("acked") != version:
                waiting.append(snap["nodes"][node]["proxy"])
                break
    return sorted(set(waiting)), nacks


def _changed(old: dict[str, Any] | None, snap: dict[str, Any], node: str, url: str) -> list[str]:
    """The names of ``node``'s resources of type ``url`` that differ from ``old``'s (or are new)."""
    before = (old or {}).get("nodes", {}).get(node, {}).get("types", {}).get(url, {}).get("resources", [])
    was = {_name(r): r for r in before}
    now = snap["nodes"][node]["types"][url]["resources"]
    return [repr(_name(r)) for r in now if was.get(_name(r)) != r]


def _name(resource: dict[str, Any]) -> str:
    return resource.get("name") or resource.get("cluster_name") or "?"


def wait_acked(
    state_root: Path,
    snap: dict[str, Any],
    nodes: list[str],
    old: dict[str, Any] | None = None,
    timeout: float = ACK_TIMEOUT,
) -> None:
    """Return once each of ``nodes`` ACKed its version of ``snap``; SyncError naming every proxy that NACKed
    (with Envoy's message) or did not answer within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        waiting, nacks = pending(read(state_root), snap, nodes, old)
        if not waiting and not nacks:
            return
        if nacks and not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    lines = nacks + [f"{p} did not ACK the new config within {timeout:g} s" for p in waiting]
    raise SyncError(
        "the control plane pushed the change, but not every proxy took it; each keeps serving its last "
        "accepted config:\n  "
        + "\n  ".join(lines)
        + "\nWhat to do: "
        + (
            "read Envoy's message above, fix or delete the resource it names, and apply again; "
            if nacks
            else ""
        )
        + "lab.proxy_status() shows each proxy's state; lab.status() names a proxy that is not running"
    )


def status(state_root: Path, snap: dict[str, Any] | None) -> list[ProxyStatus]:
    """Every proxy of ``snap`` with each type SYNCED (ACKed what was sent), STALE (sent, not ACKed yet, or
    not sent the newest), NACK (rejected the newest), or NOT SENT (nothing of that type for it)."""
    if snap is None:
        return []
    sync = read(state_root).get("nodes", {})
    rows = []
    for node, data in sorted(snap["nodes"].items(), key=lambda kv: kv[1]["proxy"]):
        want = snapshot.expected(data)
        have = sync.get(node, {})
        types, errors = {}, {}
        for url in snapshot.ORDER:
            short = snapshot.SHORT[url]
            status = have.get("types", {}).get(short, {})
            nack = status.get("nack")
            if url not in want:
                types[short] = "NOT SENT"
            elif nack and nack.get("version") == want[url]:
                types[short], errors[short] = "NACK", nack["error"]
            elif status.get("acked") == want[url]:
                types[short] = "SYNCED"
            else:
                types[short] = "STALE"
        rows.append(
            ProxyStatus(data["proxy"], types, snapshot.version([want]), bool(have.get("connected")), errors)
        )
    return rows
