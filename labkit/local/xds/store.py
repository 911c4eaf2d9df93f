"""The snapshot on disk, content-addressed: a small index (``snapshot.json``: each proxy's version per type)
and one file per resource list, named by its type and version (``lists/RDS-<version>.json``). A version is
the hash of its list's text, so a list file never changes once written, and a reader (istiod on SIGHUP, a
second kernel) reads only the lists it has not read before: a weight change at 100 sidecars is a few
route lists, not the whole mesh's config again."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from labkit.files import write_atomic
from labkit.local.xds import snapshot

#: Lists read or written by this process, by (type URL, version): what they hold never changes.
Lists = dict[tuple[str, str], list[Any]]


def lists_folder(state_root: Path) -> Path:
    return snapshot.folder(state_root) / "lists"


def list_file(state_root: Path, url: str, version: str) -> Path:
    return lists_folder(state_root) / f"{snapshot.SHORT[url]}-{version}.json"


def _index(snap: dict[str, Any]) -> dict[str, Any]:
    """``snap`` with each type's resources replaced by their version."""
    nodes = {
        node: {**data, "types": {url: typed["version"] for url, typed in data["types"].items()}}
        for node, data in snap["nodes"].items()
    }
    return {**snap, "nodes": nodes}


def write(state_root: Path, snap: dict[str, Any], enc: snapshot.Encoder) -> bool:
    """Write the lists of ``snap`` not on disk yet, then its index (the reader's cue); remove the lists no
    longer named by it or by the index it replaces (a reader may still be reading that one). True if the
    index changed. ``enc`` has the lists' text (snapshot.build made it)."""
    try:
        before = read_index(state_root)["nodes"]
    except (OSError, ValueError):
        before = {}  # the first snapshot, or one of an older labkit (its lists were in one file)
    folder = lists_folder(state_root)
    folder.mkdir(parents=True, exist_ok=True)
    on_disk = set(os.listdir(folder))
    keep = set()
    for data in snap["nodes"].values():
        for url, typed in data["types"].items():
            path = list_file(state_root, url, typed["version"])
            keep.add(path.name)
            if path.name not in on_disk:
                write_atomic(path, enc.list_text(typed["resources"]))
                on_disk.add(path.name)
    text = json.dumps(_index(snap), separators=(",", ":"))
    changed = write_atomic(snapshot.snapshot_file(state_root), text)
    for data in before.values():
        for url, version in data["types"].items():
            keep.add(list_file(state_root, url, version).name)
    for name in on_disk - keep:
        if not name.startswith("."):  # another writer's file being written
            (folder / name).unlink(missing_ok=True)
    return changed


def read_index(state_root: Path) -> dict[str, Any]:
    """The index: ``{"version", "hold", "nodes": {node id: {"proxy", "types": {type URL: version}}}}``
    (ValueError if the file holds none)."""
    body = json.loads(snapshot.snapshot_file(state_root).read_text())
    try:
        for data in body["nodes"].values():
            if not all(url in snapshot.SHORT and isinstance(v, str) for url, v in data["types"].items()):
                raise TypeError(data["types"])
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"not a snapshot index: {err!r}") from err
    return body


def read_list(state_root: Path, url: str, version: str) -> list[Any]:
    """One resource list (FileNotFoundError once a newer index replaced the one naming it twice over)."""
    found = json.loads(list_file(state_root, url, version).read_text())
    if not isinstance(found, list):
        raise ValueError(f"{list_file(state_root, url, version)} holds no resource list")
    return found


def read(state_root: Path, cache: Lists) -> dict[str, Any]:
    """The snapshot in ``snapshot.build``'s shape, each list from ``cache`` or its file; afterwards
    ``cache`` holds exactly the lists this snapshot names. ValueError if the files hold no snapshot."""
    body = read_index(state_root)
    lists: Lists = {}
    for data in body["nodes"].values():
        for url, version in data["types"].items():
            if (url, version) not in lists:
                found = cache.get((url, version))
                lists[url, version] = found if found is not None else read_list(state_root, url, version)
        data["types"] = {u: {"version": v, "resources": lists[u, v]} for u, v in data["types"].items()}
    cache.clear()
    cache.update(lists)
    return body
