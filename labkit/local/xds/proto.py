"""The translator's JSON resources as protobuf ``Any`` messages, through ``google.protobuf.json_format``.

Each ``"@type"`` names a message of Envoy's data-plane-api; the ``xds-protos`` package holds them as
generated ``*_pb2`` modules, one folder per proto package. Importing all of them takes seconds and hundreds
of MB, so only the folders of the types a resource names are imported (their dependencies follow). A field
or type the installed protos do not know raises ``ProtoError`` naming the resource: the same check Envoy's
own parser would make, before anything reaches a proxy.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, json_format, symbol_database

from labkit.errors import LabError

_loaded: set[str] = set()


class ProtoError(LabError):
    """A resource the installed Envoy protos (xds-protos) cannot represent."""


def _import_package(package: str) -> None:
    """Import every ``*_pb2`` module of the proto ``package`` (say ``envoy.config.cluster.v3``)."""
    if package in _loaded:
        return
    _loaded.add(package)
    top = package.split(".", 1)[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return  # google.protobuf's own well-known types are always loaded
    folder = Path(next(iter(spec.submodule_search_locations)), *package.split(".")[1:])
    for module in sorted(folder.glob("*_pb2.py")):
        importlib.import_module(f"{package}.{module.stem}")


def _types(value: Any, out: set[str]) -> set[str]:
    if isinstance(value, dict):
        if isinstance(value.get("@type"), str):
            out.add(value["@type"].rsplit("/", 1)[-1])
        for item in value.values():
            _types(item, out)
    elif isinstance(value, list):
        for item in value:
            _types(item, out)
    return out


def load_types(resource: dict[str, Any]) -> None:
    """Make every message type ``resource`` names (at any depth) known to the protobuf runtime."""
    pool = symbol_database.Default().pool
    for name in _types(resource, set()):
        try:
            pool.FindMessageTypeByName(name)
        except KeyError:
            _import_package(name.rsplit(".", 1)[0])


def to_any(resource: dict[str, Any], where: str) -> any_pb2.Any:
    """``resource`` (JSON with its ``@type``) as an ``Any``; ProtoError names ``where`` and the problem."""
    load_types(resource)
    try:
        return json_format.ParseDict(resource, any_pb2.Any())
    except (json_format.ParseError, TypeError, KeyError) as err:
        name = resource.get("name") or resource.get("cluster_name") or "?"
        raise ProtoError(
            f"{where}: resource {name!r} ({resource.get('@type')}) does not fit Envoy's protos: {err}. "
            "What to do: this is a labkit bug; report it with this message"
        ) from None
