"""The local lab's applied state: what a trainee applied on top of ``cluster-config/apps``, as the state
folder's ``applied.yaml`` keeps it so that every kernel (and the next ``up()``) runs the same lab.

It holds two sorts of object, handled apart: mesh configuration (Istio, the Gateway API, the Secrets a
Gateway names), which istiod serves live over xDS; and edited Kubernetes objects of the apps, which replace
the manifests' own and restart the processes they describe. The caller holds the state folder's lock around
a read-modify-write (``LocalState.lock``). The apps are validated once per version of them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from labkit import manifests, paths
from labkit.files import write_atomic
from labkit.manifests import Resource
from labkit.meshmodel import is_istio

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: re-read on every apply


def is_mesh_config(res: Resource) -> bool:
    """Mesh configuration, applied live: Istio's APIs and the Gateway API (translated like them), and the
    Secrets a Gateway's credentialName names (read live by istiod too: local/credentials.py)."""
    secret = (res.group, res.kind) == ("", "Secret")
    return is_istio(res.group) or res.group == "gateway.networking.k8s.io" or secret


def load(path: Path) -> list[Resource]:
    """The applied resources saved at ``path`` (none when nothing was applied yet)."""
    if not path.is_file():
        return []
    entries = yaml.load(path.read_text(), Loader=_Loader) or []
    return [Resource(body=e["body"], source=e["source"], index=e["index"]) for e in entries]


def save(path: Path, resources: list[Resource]) -> None:
    """Save ``resources`` with the file and document each came from, so errors keep naming them."""
    entries = [{"source": r.source, "index": r.index, "body": r.body} for r in resources]
    write_atomic(path, yaml.safe_dump(entries, sort_keys=False))


def mesh_config(applied: list[Resource]) -> list[Resource]:
    """The mesh configuration in ``applied`` (what the translator turns into Envoy config)."""
    return [r for r in applied if is_mesh_config(r)]


def apps(applied: list[Resource]) -> list[Resource]:
    """cluster-config/apps/*.yaml, with the Kubernetes objects a trainee re-applied replacing theirs."""
    by_key = {r.key: r for r in manifests.load(paths.APPS)}
    by_key.update({r.key: r for r in applied if not is_mesh_config(r)})
    return list(by_key.values())


def running(applied: list[Resource]) -> list[Resource]:
    """What the lab runs with ``applied``: the apps with their edits, then the mesh configuration."""
    return apps(applied) + mesh_config(applied)


def validate_apps(apps: list[Resource], marker: Path) -> None:
    """Validate the apps, skipping it when exactly these were validated before: validation takes seconds
    and ``up()`` runs often. ``marker`` keeps the digest of the apps last validated."""
    digest = hashlib.sha256(json.dumps([r.body for r in apps], sort_keys=True).encode()).hexdigest()
    if marker.is_file() and marker.read_text() == digest:
        return
    from labkit import validation  # imported on first use: loading its schemas takes seconds

    validation.check(apps)
    write_atomic(marker, digest)
