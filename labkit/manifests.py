"""Load manifests from any source into Resources that remember where they came from, so every error can say
which file, which document and which object is wrong; plus the canary VirtualService builder."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from labkit import paths
from labkit.errors import ManifestError

Source = str | os.PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML that, like kubectl's strict decoding, refuses a key written twice in one mapping (PyYAML
    would silently keep the last: a second ``weight:`` line overrides the first)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges keys; it is not a key itself
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the key {key!r} appears twice in one mapping. What to do: keep one",
                key_node.start_mark,
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)

#: Kinds that live outside any namespace (``metadata.namespace`` is ignored for them, as the API server does).
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "RuntimeClass",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "APIService",
    }
)

#: Configuration files read by a command-line tool (kind, istioctl), not objects of the Kubernetes API: no
#: metadata is required, the tool checks them, and the lab never applies them.
TOOL_CONFIGS = frozenset({("kind.x-k8s.io", "Cluster"), ("install.istio.io", "IstioOperator")})


@dataclass(frozen=True)
class Resource:
    """One Kubernetes object and where it was read: ``source`` (a path, ``<string>`` or ``<dict>``) and
    the 0-based ``index`` of its YAML document there (empty documents count, so indexes match the file)."""

    body: dict
    source: str
    index: int

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion", ""))

    @property
    def group(self) -> str:
        """The API group: ``networking.istio.io``, ``apps``, or ``""`` for the core group (``v1``)."""
        group, _, _ = self.api_version.rpartition("/")
        return group

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def metadata(self) -> dict:
        meta = self.body.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        if self.kind in CLUSTER_SCOPED or (self.group, self.kind) in TOOL_CONFIGS:
            return ""
        return str(self.metadata.get("namespace") or "default")

    @property
    def spec(self) -> dict:
        spec = self.body.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def labels(self) -> dict[str, str]:
        labels = self.metadata.get("labels")
        return dict(labels) if isinstance(labels, dict) else {}

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What makes an object unique in a cluster: (group, kind, namespace, name)."""
        return (self.group, self.kind, self.namespace, self.name)

    @property
    def where(self) -> str:
        """``cluster-config/mesh/x.yaml (document 1) VirtualService/currency-converter``, counting from 1."""
        return f"{display_source(self.source)} (document {self.index + 1}) {self.kind}/{self.name}"


def display_source(source: str) -> str:
    """A file path relative to the repository root when it is inside it (shorter to read), else as given."""
    if source.startswith("<"):
        return source
    try:
        return Path(source).resolve().relative_to(paths.ROOT.resolve()).as_posix()
    except ValueError:
        return source


def load(src: Source) -> list[Resource]:
    """Read every object from a file, a folder (``*.yaml``/``*.yml``, recursively, sorted), YAML text, a dict
    or a list of dicts; ``kind: List`` is expanded. Bad input: ManifestError naming file and document.
    A one-line string is a path unless it holds a colon and names nothing on disk (then it is YAML text)."""
    if isinstance(src, Mapping):
        return _objects(dict(src), "<dict>", 0)
    if is_path(src):
        return _load_path(Path(src))  # type: ignore[arg-type]  # a str or a PathLike
    if isinstance(src, str):
        return _load_text(src, "<string>")
    if isinstance(src, Sequence):
        resources: list[Resource] = []
        for i, doc in enumerate(src):
            resources += _objects(doc, "<dict>", i)
        return resources
    raise ManifestError(
        f"cannot read manifests from a {type(src).__name__}: pass a path, YAML text, a dict or a list"
    )


def is_path(src: Source) -> bool:
    """``src`` names a file or folder that ``load`` reads from disk, rather than holding the objects."""
    return isinstance(src, os.PathLike) or (isinstance(src, str) and _looks_like_path(src))


def _looks_like_path(text: str) -> bool:
    """One line naming a file/folder, ending in .yaml/.yml, or without a colon (so it cannot be an object)."""
    if "\n" in text:
        return False
    return text.endswith((".yaml", ".yml")) or ":" not in text or os.path.exists(text)


def _load_path(path: Path) -> list[Resource]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise ManifestError(
                f"{display_source(str(path))}: the folder has no *.yaml or *.yml files. What to do: pass the "
                "folder that holds the manifests, or name them *.yaml"
            )
        return [r for f in files for r in _load_path(f)]
    if not path.is_file():
        raise ManifestError(
            f"{display_source(str(path))}: no such file or folder. What to do: check the path and the "
            "current folder"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{display_source(str(path))}: not a text file (not UTF-8): {exc.reason}. What to do: pass a "
            "YAML manifest"
        ) from exc
    return _load_text(text, str(path))


def _load_text(text: str, source: str) -> list[Resource]:
    resources: list[Resource] = []
    index = -1
    try:
        for index, doc in enumerate(yaml.load_all(text, Loader=_Loader)):  # noqa: B007 (index used on error)
            if doc is not None:
                resources += _objects(doc, source, index)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = f"{exc.problem} ({exc.context})" if exc.context else str(exc.problem)
        if not isinstance(exc, yaml.constructor.ConstructorError):
            problem += (
                ". What to do: check the indentation and the brackets/quotes on that line and the line above"
            )
        raise ManifestError(
            f"{display_source(source)} (document {index + 2}): invalid YAML{at}: {problem}"
        ) from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{display_source(source)}: invalid YAML: {exc}") from exc
    if not resources:
        raise ManifestError(
            f"{display_source(source)}: no Kubernetes objects (the file is empty or only comments). "
            "What to do: add a manifest or remove the file"
        )
    return resources


def _objects(doc: Any, source: str, index: int) -> list[Resource]:
    """The object(s) in one document: itself, or the items of a ``kind: List``."""
    where = f"{display_source(source)} (document {index + 1})"
    if not isinstance(doc, Mapping):
        raise ManifestError(
            f"{where}: expected a Kubernetes object (a mapping with apiVersion, kind and metadata), "
            f"got a {type(doc).__name__}. What to do: remove a stray '-' or fix the indentation"
        )
    doc = dict(doc)
    for field in ("apiVersion", "kind"):
        if not isinstance(doc.get(field), str) or not doc[field]:
            raise ManifestError(
                f"{where}: the object has no {field}. What to do: start every manifest with apiVersion "
                "and kind"
            )
    if doc["kind"] == "List" or (doc["kind"].endswith("List") and isinstance(doc.get("items"), list)):
        items = doc.get("items")
        if not isinstance(items, list):
            raise ManifestError(f"{where}: kind {doc['kind']} needs an 'items' list. What to do: add items")
        return [r for item in items for r in _objects(item, source, index)]
    resource = Resource(body=doc, source=source, index=index)
    if (resource.group, resource.kind) not in TOOL_CONFIGS:
        meta = doc.get("metadata")
        if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) or not meta["name"]:
            raise ManifestError(
                f"{where} {doc['kind']}: the object has no metadata.name. What to do: give it a name"
            )
    return [resource]
