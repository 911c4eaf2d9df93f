"""The schemas manifests are checked against, never typed by hand, and their cache.

- Kubernetes kinds: the pinned OpenAPI schemas shipped by ``kubernetes-validate`` (strict variant: unknown
  fields are errors, as with ``kubectl apply``'s default strict field validation).
- Istio kinds: JSON Schema generated from the maintained models of ``cloudcoil-models-istio``, pinned at
  1.24.2.1: the newest release that installs on Python < 3.14 (Istio 1.31 serves the same kinds and versions).
  The models ignore unknown fields, so ``additionalProperties: false`` is added to every object schema that
  lists its properties (free-form maps such as labels, selectors and headers list none and stay open): a
  misspelled ``weigth`` is the most common trainee mistake and must be reported. Generating them takes
  seconds, so they are cached as JSON (``LAB_CACHE``, else the user cache folder ``platformdirs`` names):
  a warm process never imports the models.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.resources
import json
import os
import pkgutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs
import referencing

from labkit.files import write_atomic
from labkit.meshmodel import is_istio

if TYPE_CHECKING:
    import jsonschema

#: The Kubernetes version whose schemas we validate against: the kind node image's (kind/cluster.yaml), inside
#: Istio 1.31's supported range 1.32-1.36.
KUBERNETES_VERSION = "1.36"

_ISTIO_MODELS = "cloudcoil.models.istio"
ISTIO_MODELS_NOTE = "labkit's Istio schemas are Istio 1.24's: a field added since is reported as unknown too"

#: apiVersion -> kind -> JSON Schema
_IstioSchemas = dict[str, dict[str, dict[str, Any]]]


@functools.cache
def istio_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    if not is_istio(api_version.partition("/")[0]):  # spares Kubernetes kinds the Istio schemas
        return None
    schema = _istio_schemas().get(api_version, {}).get(kind)
    return None if schema is None else validator_class()(schema)


@functools.cache
def _istio_schemas() -> _IstioSchemas:
    """Every Istio kind's closed schema, stable versions first. Importing the models and generating schemas
    from them costs seconds of CPU, so they are generated once and kept in a cache file; a cache file that is
    missing or damaged is regenerated, one that cannot be written leaves the schemas in memory only."""
    path = cache_file()
    schemas = _read_schemas(path)
    if schemas is None:
        schemas = _generate_istio_schemas()
        # Atomic, so a process reading in parallel (pytest workers, kernels) sees the whole file or none; a
        # read-only or unusable folder is skipped silently: the cache only saves time.
        with contextlib.suppress(OSError):
            write_atomic(path, json.dumps(schemas))
    return schemas


def cache_file() -> Path:
    """One file per version of the models, of pydantic (which writes the schemas) and of this module (which
    post-processes them), so an upgrade or an edit never reads stale schemas. The folder: ``LAB_CACHE``,
    else the user cache folder (``platformdirs``: ``$XDG_CACHE_HOME/meshlab`` or ``~/.cache/meshlab``)."""
    models = importlib.metadata.version(_ISTIO_MODELS)
    key = hashlib.sha256(f"{models} {importlib.metadata.version('pydantic')}".encode())
    key.update(Path(__file__).read_bytes())
    return _cache_folder() / f"istio-schemas-{models}-{key.hexdigest()[:16]}.json"


def _cache_folder() -> Path:
    if os.environ.get("LAB_CACHE"):
        return Path(os.environ["LAB_CACHE"])
    return Path(platformdirs.user_cache_dir("meshlab", appauthor=False))


def _read_schemas(path: Path) -> _IstioSchemas | None:
    """The cached schemas, or None when the file is missing, unreadable or not what we write."""
    try:
        schemas = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if isinstance(schemas, dict) and schemas and all(isinstance(kinds, dict) for kinds in schemas.values()):
        return schemas
    return None


def _generate_istio_schemas() -> _IstioSchemas:
    """The closed JSON Schema of every top-level kind in the models (the slow path: seconds of CPU)."""
    import pydantic  # imported here, with the models: a warm cache needs neither

    package = importlib.import_module(_ISTIO_MODELS)
    schemas: _IstioSchemas = {}
    for info in pkgutil.walk_packages(package.__path__, f"{_ISTIO_MODELS}."):
        group, _, version = info.name.removeprefix(f"{_ISTIO_MODELS}.").partition(".")
        if not version or info.ispkg:
            continue
        module = importlib.import_module(info.name)
        kinds = schemas.setdefault(f"{group}.istio.io/{version}", {})
        for model in vars(module).values():
            if (
                isinstance(model, type)
                and issubclass(model, pydantic.BaseModel)
                and model.__module__ == info.name
            ):
                fields = {f.alias or name: f for name, f in model.model_fields.items()}
                if fields.get("apiVersion") and fields.get("kind") and "spec" in fields:
                    kinds[fields["kind"].default] = _closed(model.model_json_schema(by_alias=True))
    return dict(sorted(schemas.items(), key=lambda item: _version_rank(item[0])))


@functools.cache
def validator_class() -> type[jsonschema.Draft202012Validator]:
    """jsonschema's validator, imported without its optional "iri" format checker: when ``rfc3987_syntax``
    is installed (by Jupyter's ``jsonschema[format-nongpl]``), importing jsonschema compiles its grammars,
    ~2.5 s of CPU. labkit passes no format checker, so it loses nothing; the block lasts for this import."""
    block = "rfc3987_syntax" not in sys.modules
    if block:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # makes its import raise ImportError
    try:
        from jsonschema import Draft202012Validator  # imported on first use: keeps `import labkit` fast
    finally:
        if block:
            del sys.modules["rfc3987_syntax"]
    return Draft202012Validator


def known_kinds() -> list[tuple[str, str]]:
    """(apiVersion, kind) of every kind we can validate, stable versions first, for error messages."""
    istio = [(av, kind) for av, kinds in _istio_schemas().items() for kind in kinds]
    return istio + list(_kubernetes_kinds())


def _version_rank(api_version: str) -> tuple[int, str]:
    """Stable versions first, then beta, then alpha, so error messages suggest the preferred one."""
    version = api_version.rpartition("/")[2]
    return ("alpha" in version) * 2 + ("beta" in version), api_version


def _closed(node: Any) -> Any:
    """The generated schema without nullable wrappers (nulls are stripped from the input instead, so errors
    point at the real field), and unknown fields forbidden in every object that lists its properties."""
    if isinstance(node, list):
        return [_closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _closed(v) for k, v in node.items()}
    options = node.get("anyOf")
    if options is not None:
        options = [o for o in options if o != {"type": "null"}]
        node.pop("default", None)
        if len(options) == 1:
            del node["anyOf"]
            node.update(options[0])
        else:
            node["anyOf"] = options
    if node.get("properties"):
        node["additionalProperties"] = False
    return node


@functools.cache
def _kubernetes_definitions() -> dict:
    validator_class()  # kubernetes_validate imports jsonschema: let it find it imported without the grammars
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    text = (folder / f"v{KUBERNETES_VERSION}.0-local-strict" / "_definitions.json").read_text(
        encoding="utf-8"
    )
    return json.loads(text)


@functools.cache
def _kubernetes_kinds() -> dict[tuple[str, str], str]:
    """(apiVersion, kind) -> definition name, for every kind the Kubernetes API serves."""
    kinds = {}
    for name, definition in _kubernetes_definitions()["$defs"].items():
        gvks = definition.get("x-kubernetes-group-version-kind", [])
        if len(gvks) == 1 and "apiVersion" in definition.get("properties", {}):
            gvk = gvks[0]
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            kinds[(api_version, gvk["kind"])] = name
    return dict(sorted(kinds.items(), key=lambda item: _version_rank(item[0][0])))


@functools.cache
def kubernetes_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    name = _kubernetes_kinds().get((api_version, kind))
    if name is None:
        return None
    definitions = _kubernetes_definitions()
    resource = referencing.Resource.from_contents(definitions)
    registry: referencing.Registry = resource @ referencing.Registry()
    schema = {"$id": "https://kubernetes.io/api/labkit", "$ref": f"/api/_definitions.json#/$defs/{name}"}
    return validator_class()(schema, registry=registry)
