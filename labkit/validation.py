"""Check manifests before they reach a mesh, the way the cluster would: schemas (API server, Istio's CRDs),
istiod's admission rules, and istioctl-analyze-style checks against the rest of the lab, so a trainee sees
"file, document, object, field: what is wrong, what to do" instead of a bare 503 later.

Schemas are never typed by hand:
- Kubernetes kinds: the pinned OpenAPI schemas shipped by ``kubernetes-validate`` (strict variant: unknown
  fields are errors, as with ``kubectl apply``'s default strict field validation).
- Istio kinds: JSON Schema generated from the maintained models of ``cloudcoil-models-istio``, pinned at
  1.24.2.1: the newest release that installs on Python < 3.14 (Istio 1.31 serves the same kinds and versions).
  The models ignore unknown fields, so ``additionalProperties: false`` is added to every object schema that
  lists its properties (free-form maps such as labels, selectors and headers list none and stay open): a
  misspelled ``weigth`` is the most common trainee mistake and must be reported. Generating them takes
  seconds, so they are cached as JSON (``LAB_CACHE``, else ``~/.cache/meshlab``): a warm process never
  imports the models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.resources
import json
import os
import pkgutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import referencing

from labkit import manifests, paths
from labkit.errors import ManifestError, ValidationError
from labkit.manifests import Resource

if TYPE_CHECKING:
    import jsonschema
    from jsonschema.exceptions import ValidationError as SchemaError

#: The Kubernetes version whose schemas we validate against: the kind node image's (kind/cluster.yaml), inside
#: Istio 1.31's supported range 1.32-1.36.
KUBERNETES_VERSION = "1.36"

#: Files read by a command-line tool (istioctl, kind), not applied to the API server; those tools check them.
TOOL_CONFIGS = manifests.TOOL_CONFIGS | {("install.istio.io", "IstioOperator")}

#: Kinds whose pod template (or the pod itself) carries the labels that Services and subsets select on.
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod"})

_BLOCKING_STAGES = ("schema", "admission")


@dataclass(frozen=True)
class Finding:
    """One problem in one object: where (file, document, Kind/name, field), what is wrong, what to do."""

    severity: str  # "error" | "warning"
    stage: str  # "schema" | "admission" (the cluster would reject it) | "analysis" (accepted, misbehaves)
    source: str
    index: int
    kind: str
    name: str
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{manifests.display_source(self.source)} (document {self.index + 1}) {self.kind}/{self.name}"
        field = f" {self.field}:" if self.field else ""
        return f"{self.severity}: {where}{field} {self.message}. Fix: {self.fix}"


def _finding(r: Resource, severity: str, stage: str, field: str, message: str, fix: str) -> Finding:
    return Finding(severity, stage, r.source, r.index, r.kind, r.name, field, message, fix)


def validate(resources: Iterable[Resource], *, context: Iterable[Resource] = ()) -> list[Finding]:
    """Every finding for ``resources``; ``context`` is the rest of the lab (its apps) for cross-checks."""
    resources = list(resources)
    findings = _duplicates(resources)
    valid = []
    for r in resources:
        schema = _schema_findings(r)
        findings += schema
        if not schema:  # the semantic checks rely on the shapes the schema guarantees
            valid.append(r)
            findings += _admission_findings(r)
    world: dict[tuple[str, str, str, str], Resource] = {r.key: r for r in context}
    world.update((r.key, r) for r in valid)  # what the cluster holds once these are applied
    registry = _Registry(world.values())
    for r in valid:
        findings += _analysis_findings(r, registry)
    return findings


def check(
    resources: Iterable[Resource], *, context: Iterable[Resource] = (), strict: bool = False
) -> list[Finding]:
    """Raise ValidationError if the cluster would reject ``resources`` (any error at all when ``strict``);
    else return the findings to print, as warnings: analysis errors such as a missing subset are let through,
    so the lab can apply them and show their runtime outcome (503 NC)."""
    findings = validate(resources, context=context)
    if any(f.severity == "error" and (strict or f.stage in _BLOCKING_STAGES) for f in findings):
        raise ValidationError(findings)
    return [dataclasses.replace(f, severity="warning") for f in findings]


def main(paths_: Sequence[str]) -> int:
    """``labkit validate PATH...``: print every finding and a summary; exit 1 on any error, else 0."""
    resources: list[Resource] = []
    unreadable = 0
    for path in paths_:
        try:
            resources += manifests.load(Path(path))
        except ManifestError as exc:
            print(f"error: {exc}")
            unreadable += 1
    context = manifests.load(paths.APPS) if paths.APPS.is_dir() else []
    findings = validate(resources, context=context)
    for finding in findings:
        print(finding)
    errors = unreadable + sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    print(f"{len(resources)} object(s) checked: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


# --- schema stage -------------------------------------------------------------------------------------------


def _schema_findings(r: Resource) -> list[Finding]:
    if (r.group, r.kind) in TOOL_CONFIGS:
        return []
    validator = _istio_validator(r.api_version, r.kind) or _kubernetes_validator(r.api_version, r.kind)
    if validator is None:
        return [_unknown_kind(r)]
    body = _without_nulls(r.body)  # the API server treats null as "not set"
    errors = sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
    findings = []
    for field, message, fix in (described for e in errors for described in _describe(e)):
        if (
            r.group.endswith("istio.io")
            and message.startswith("unknown field")
            and "did you mean" not in message
        ):
            fix += f" ({_ISTIO_MODELS_NOTE})"
        findings.append(_finding(r, "error", "schema", field, message, fix))
    return findings


def _unknown_kind(r: Resource) -> Finding:
    known = _known_kinds()
    versions = [av for av, kind in known if kind == r.kind]
    if r.group not in {av.rpartition("/")[0] for av, _ in known} and not r.group.endswith("istio.io"):
        other = f"; {r.kind} of Istio is apiVersion {versions[0]}" if versions else ""
        return _finding(
            r,
            "error",
            "schema",
            "apiVersion",
            f"labkit has no schema for API group {r.group!r} ({r.api_version})",
            f"this lab checks the Kubernetes {KUBERNETES_VERSION} built-in kinds and Istio's kinds{other}",
        )
    if versions:
        return _finding(
            r,
            "error",
            "schema",
            "apiVersion",
            f"{r.kind} does not exist in {r.api_version}; it exists in {', '.join(versions)}",
            f"set apiVersion: {versions[0]}",
        )
    close = difflib.get_close_matches(r.kind, sorted({kind for _, kind in known}), n=1)
    if close:
        return _finding(
            r,
            "error",
            "schema",
            "kind",
            f"unknown kind {r.kind!r} in {r.api_version} (did you mean {close[0]}?)",
            f"write kind: {close[0]}",
        )
    return _finding(
        r,
        "error",
        "schema",
        "kind",
        f"unknown kind {r.kind!r} in {r.api_version}",
        f"check the spelling; this lab checks the Kubernetes {KUBERNETES_VERSION} built-in kinds and Istio's "
        "kinds (VirtualService, DestinationRule, Gateway, ServiceEntry, PeerAuthentication, ...)",
    )


def _describe(error: SchemaError) -> Iterator[tuple[str, str, str]]:
    """(field, message, fix) for one schema error, in a trainee's words."""
    field = _field_path(error.absolute_path)
    value, schema = error.instance, error.schema
    if error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[SchemaError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        if all(sub.validator == "type" for sub in error.context):
            types = " or ".join(_type_name(sub.validator_value) for sub in error.context)
            yield field, f"{value!r} is not {types}", _type_fix(types)
            return
        # The generated models list a permissive base model first and its "exactly one of" variants after it:
        # explain the branch that failed least (the base), which names the real mistake.
        best = min(branches.values(), key=len)
        for sub in best:
            yield from _describe(sub)
        return
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        for extra in sorted(set(value) - set(allowed)):
            close = difflib.get_close_matches(extra, allowed, n=1, cutoff=0.6)
            where = _join(field, extra)
            if close:
                yield (
                    where,
                    f"unknown field {extra!r} (did you mean {close[0]!r}?)",
                    f"rename it to {close[0]!r}",
                )
            else:
                yield (
                    where,
                    f"unknown field {extra!r}",
                    f"remove it; the fields allowed here are {', '.join(allowed)}",
                )
        return
    if error.validator == "required":
        for missing in [k for k in error.validator_value if k not in value]:
            yield _join(field, missing), "required field is missing", f"add {missing}"
        return
    if error.validator == "type":
        types = _type_name(error.validator_value)
        yield field, f"{value!r} is not {types}", _type_fix(types)
        return
    if error.validator == "enum":
        allowed = [v for v in error.validator_value if v is not None]
        yield field, f"{value!r} is not an allowed value", f"use one of: {', '.join(map(str, allowed))}"
        return
    if error.validator == "const":
        yield field, f"{value!r} is not allowed here", f"use {error.validator_value!r}"
        return
    yield field, error.message, "compare the field with the reference documentation of this kind"


def _type_name(types: str | list[str]) -> str:
    names = {"integer": "a whole number", "string": "a string", "object": "a mapping", "array": "a list"}
    names |= {"boolean": "true/false", "number": "a number"}
    listed = [types] if isinstance(types, str) else [t for t in types if t != "null"]
    return " or ".join(names.get(t, t) for t in listed)


def _type_fix(types: str) -> str:
    if "a string" in types and "whole number" in types:  # Kubernetes IntOrString, e.g. a port
        return "write a number (8080) or a name (http)"
    if "whole number" in types or "a number" in types:
        return "write a number without quotes, e.g. 90"
    if "a mapping" in types or "a list" in types:
        return "check the indentation: a list has '- ' items, a mapping has 'key: value' lines"
    if "a string" in types:
        return 'quote the value, e.g. "true" or "8080"'
    return f"write {types}"


def _field_path(parts: Iterable[Any]) -> str:
    path = ""
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, str(part))
    return path


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


#: Where the Istio models live: one module per API group and version, e.g. ``networking.istio.io/v1``.
_ISTIO_MODELS = "cloudcoil.models.istio"
_ISTIO_MODELS_NOTE = "labkit's Istio schemas are Istio 1.24's: a field added since is reported as unknown too"

#: apiVersion -> kind -> JSON Schema
_IstioSchemas = dict[str, dict[str, dict[str, Any]]]


@functools.cache
def _istio_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    if not api_version.partition("/")[0].endswith("istio.io"):  # spares Kubernetes kinds the Istio schemas
        return None
    schema = _istio_schemas().get(api_version, {}).get(kind)
    return None if schema is None else _validator_class()(schema)


@functools.cache
def _istio_schemas() -> _IstioSchemas:
    """Every Istio kind's closed schema, stable versions first. Importing the models and generating schemas
    from them costs seconds of CPU, so they are generated once and kept in a cache file; a cache file that is
    missing or damaged is regenerated, one that cannot be written leaves the schemas in memory only."""
    path = _schema_cache_file()
    schemas = _read_schemas(path)
    if schemas is None:
        schemas = _generate_istio_schemas()
        _write_atomically(path, json.dumps(schemas))
    return schemas


def _schema_cache_file() -> Path:
    """One file per version of the models, of pydantic (which writes the schemas) and of this module (which
    post-processes them), so an upgrade or an edit never reads stale schemas. The folder: ``LAB_CACHE``, else
    ``$XDG_CACHE_HOME/meshlab``, else ``~/.cache/meshlab``."""
    models = importlib.metadata.version(_ISTIO_MODELS)
    key = hashlib.sha256(f"{models} {importlib.metadata.version('pydantic')}".encode())
    key.update(Path(__file__).read_bytes())
    return _cache_folder() / f"istio-schemas-{models}-{key.hexdigest()[:16]}.json"


def _cache_folder() -> Path:
    if os.environ.get("LAB_CACHE"):
        return Path(os.environ["LAB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "meshlab"


def _read_schemas(path: Path) -> _IstioSchemas | None:
    """The cached schemas, or None when the file is missing, unreadable or not what we write."""
    try:
        schemas = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if isinstance(schemas, dict) and schemas and all(isinstance(kinds, dict) for kinds in schemas.values()):
        return schemas
    return None


def _write_atomically(path: Path, text: str) -> None:
    """Write a temporary file and rename it over ``path``, so a process reading in parallel (pytest workers,
    notebook kernels) sees the whole file or none. A read-only or unusable folder is skipped silently: the
    cache only saves time."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared LAB_CACHE from other users
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)
            raise


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
def _validator_class() -> type[jsonschema.Draft202012Validator]:
    """jsonschema's validator, imported without its optional "iri" format checker: when ``rfc3987_syntax``
    is installed (by Jupyter's ``jsonschema[format-nongpl]``), importing jsonschema compiles its grammars,
    ~2.5 s of CPU. labkit passes no format checker, so it loses nothing; the block lasts for this import."""
    block = "rfc3987_syntax" not in sys.modules
    if block:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # makes its import raise ImportError
    try:
        from jsonschema import Draft202012Validator
    finally:
        if block:
            del sys.modules["rfc3987_syntax"]
    return Draft202012Validator


def _known_kinds() -> list[tuple[str, str]]:
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
    _validator_class()  # kubernetes_validate imports jsonschema: let it find it imported without the grammars
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
def _kubernetes_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    name = _kubernetes_kinds().get((api_version, kind))
    if name is None:
        return None
    definitions = _kubernetes_definitions()
    resource = referencing.Resource.from_contents(definitions)
    registry: referencing.Registry = resource @ referencing.Registry()
    schema = {"$id": "https://kubernetes.io/api/labkit", "$ref": f"/api/_definitions.json#/$defs/{name}"}
    return _validator_class()(schema, registry=registry)


# --- admission stage: what istiod's validating webhook rejects ---------------------------------------------


def _duplicates(resources: list[Resource]) -> list[Finding]:
    findings: list[Finding] = []
    seen: dict[tuple[str, str, str, str], Resource] = {}
    for r in resources:
        if (r.group, r.kind) in TOOL_CONFIGS:
            continue
        first = seen.setdefault(r.key, r)
        if first is r:
            continue
        earlier = f"{manifests.display_source(first.source)} (document {first.index + 1})"
        if first.source == r.source:
            findings.append(
                _finding(
                    r,
                    "error",
                    "admission",
                    "metadata.name",
                    f"{r.kind}/{r.name} (namespace {r.namespace or '-'}) is already defined in {earlier}",
                    "give one of them another name, or delete the copy",
                )
            )
        else:
            findings.append(
                _finding(
                    r,
                    "warning",
                    "admission",
                    "metadata.name",
                    f"also defined in {earlier}; applied together, only the last one stays",
                    "apply these files one at a time (they are alternatives), or rename one",
                )
            )
    return findings


def _admission_findings(r: Resource) -> list[Finding]:
    findings = []
    if r.group == "networking.istio.io" and r.kind == "VirtualService":
        for field, rule in _vs_rules(r):
            routes = rule.get("route") or []
            if (
                field.startswith("spec.http")
                and not routes
                and not _any_of(rule, "redirect", "directResponse", "delegate")
            ):
                findings.append(
                    _finding(
                        r,
                        "error",
                        "admission",
                        field,
                        "has no route, redirect or directResponse; istiod rejects it "
                        "(HTTP route, redirect or direct_response is required)",
                        "put fault, timeout and retries in the same http entry as the route they apply to",
                    )
                )
            weights = [d.get("weight") or 0 for d in routes]
            for j, weight in enumerate(weights):
                if weight < 0:
                    findings.append(
                        _finding(
                            r,
                            "error",
                            "admission",
                            f"{field}.route[{j}].weight",
                            f"weight {weight} is negative; istiod rejects it",
                            "use a weight of 0 or more (0 sends this destination no traffic)",
                        )
                    )
            if len(routes) > 1 and sum(weights) == 0 and min(weights) >= 0:
                findings.append(
                    _finding(
                        r,
                        "error",
                        "admission",
                        f"{field}.route",
                        "the weights add up to 0, so no request could be routed; istiod rejects it",
                        "give at least one destination a weight above 0",
                    )
                )
    if r.kind == "PeerAuthentication" and r.spec.get("portLevelMtls") and not r.spec.get("selector"):
        findings.append(
            _finding(
                r,
                "error",
                "admission",
                "spec.portLevelMtls",
                "portLevelMtls needs a workload selector; istiod rejects it on namespace/mesh-wide policies",
                "add spec.selector.matchLabels naming the workload whose ports these are",
            )
        )
    return findings


def _vs_rules(r: Resource) -> Iterator[tuple[str, dict]]:
    for proto in ("http", "tcp", "tls"):
        for i, rule in enumerate(r.spec.get(proto) or []):
            yield f"spec.{proto}[{i}]", rule


def _any_of(mapping: Mapping, *keys: str) -> bool:
    return any(mapping.get(k) for k in keys)


# --- analysis stage: accepted by the cluster, wrong at runtime (istioctl analyze) ---------------------------


class _Registry:
    """What the mesh would know once everything is applied: service hosts, subsets and workload labels."""

    def __init__(self, world: Iterable[Resource]) -> None:
        self.services: dict[str, Resource] = {}  # FQDN -> Service
        self.entry_hosts: set[str] = set()  # ServiceEntry hosts, wildcards included
        self.subsets: dict[str, set[str]] = {}  # FQDN -> subset names from every DestinationRule
        self.workloads: list[tuple[str, dict[str, str]]] = []  # (namespace, pod labels)
        self.gateways: set[tuple[str, str]] = set()  # (namespace, name) of Istio Gateways
        rules = []
        for r in world:
            if r.group == "" and r.kind == "Service":
                self.services[f"{r.name}.{r.namespace}.svc.cluster.local"] = r
            elif r.group == "networking.istio.io" and r.kind == "ServiceEntry":
                self.entry_hosts.update(h for h in r.spec.get("hosts") or [] if isinstance(h, str))
            elif r.group == "networking.istio.io" and r.kind == "DestinationRule":
                rules.append(r)
            elif r.group == "networking.istio.io" and r.kind == "Gateway":
                self.gateways.add((r.namespace, r.name))
            elif r.kind in WORKLOAD_KINDS:
                labels = r.labels if r.kind == "Pod" else _template_labels(r)
                self.workloads.append((r.namespace, labels))
        for r in rules:
            names = {str(s.get("name")) for s in r.spec.get("subsets") or [] if isinstance(s, Mapping)}
            self.subsets.setdefault(fqdn(r.spec.get("host", ""), r.namespace), set()).update(names)

    def knows(self, host: str) -> bool:
        if host in self.services or host in self.entry_hosts:
            return True
        return any(h.startswith("*.") and host.endswith(h[1:]) for h in self.entry_hosts)

    def pods_of(self, service: Resource) -> list[dict[str, str]]:
        selector = service.spec.get("selector") or {}
        return [
            labels
            for ns, labels in self.workloads
            if ns == service.namespace and selector and _matches(selector, labels)
        ]


def _template_labels(r: Resource) -> dict[str, str]:
    template = r.spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels")
    return dict(labels) if isinstance(labels, Mapping) else {}


def _matches(selector: Mapping, labels: Mapping) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def fqdn(host: str, namespace: str) -> str:
    """Istio's short-name rule: no dot -> ``<host>.<namespace>.svc.cluster.local``; a dotted name is taken
    as a full name as it is (``reviews.default`` is *not* expanded)."""
    return host if "." in host or host == "*" else f"{host}.{namespace}.svc.cluster.local"


def _analysis_findings(r: Resource, registry: _Registry) -> list[Finding]:
    if r.group == "security.istio.io":
        return _selector_findings(r, registry)
    if r.group != "networking.istio.io":
        return []
    if r.kind == "VirtualService":
        return _virtual_service_analysis(r, registry) + _gateway_findings(r, registry)
    if r.kind == "DestinationRule":
        return _destination_rule_analysis(r, registry)
    return []


def _selector_findings(r: Resource, registry: _Registry) -> list[Finding]:
    """A policy whose selector matches no workload applies to nothing (istioctl analyze IST0127). Policies in
    istio-system may target the ingress gateway, whose pods istioctl installs: those are not checked."""
    labels = (r.spec.get("selector") or {}).get("matchLabels") or {}
    if not labels or r.namespace == "istio-system":
        return []
    if any(ns == r.namespace and _matches(labels, pod) for ns, pod in registry.workloads):
        return []
    return [
        _finding(
            r,
            "warning",
            "analysis",
            "spec.selector.matchLabels",
            f"no workload in namespace {r.namespace} has the labels {_labels(labels)}, so this policy "
            "applies to nothing",
            "match the labels of the pods' template (kubectl get pods --show-labels), or drop the selector "
            "to apply the policy to the whole namespace",
        )
    ]


def _gateway_findings(r: Resource, registry: _Registry) -> list[Finding]:
    """Gateways a VirtualService binds to must exist (``mesh`` means the sidecars; a bare name is looked up in
    the VirtualService's namespace, ``ns/name`` in ``ns``)."""
    refs = [(f"spec.gateways[{k}]", g) for k, g in enumerate(r.spec.get("gateways") or [])]
    for i, rule in enumerate(r.spec.get("http") or []):
        for k, match in enumerate(rule.get("match") or []):
            refs += [
                (f"spec.http[{i}].match[{k}].gateways[{g}]", n)
                for g, n in enumerate(match.get("gateways") or [])
            ]
    findings = []
    for field, ref in refs:
        namespace, _, name = ref.rpartition("/")
        if ref == "mesh" or (namespace or r.namespace, name) in registry.gateways:
            continue
        findings.append(
            _finding(
                r,
                "error",
                "analysis",
                field,
                f"Gateway {name!r} does not exist in namespace {namespace or r.namespace}: these routes "
                "reach no gateway, so requests through the ingress are not routed by them",
                "create the Gateway (e.g. mesh/gateway-currency-converter.yaml) or correct the name; use "
                "<namespace>/<name> for a Gateway in another namespace",
            )
        )
    return findings


def _virtual_service_analysis(r: Resource, registry: _Registry) -> list[Finding]:
    findings = []
    for field, rule in _vs_rules(r):
        routes = rule.get("route") or []
        for j, route in enumerate(routes):
            findings += _destination_findings(
                r, registry, f"{field}.route[{j}].destination", route["destination"]
            )
        for mirror_field, mirror in _mirrors(field, rule):
            findings += _destination_findings(r, registry, mirror_field, mirror)
        weights = [d.get("weight") or 0 for d in routes]
        total = sum(weights)
        if len(routes) > 1 and total > 0 and total != 100 and min(weights) >= 0:
            shares = ", ".join(
                f"{_label(d)} {100 * w / total:.1f}%" for d, w in zip(routes, weights, strict=True)
            )
            findings.append(
                _finding(
                    r,
                    "warning",
                    "analysis",
                    f"{field}.route",
                    f"the weights add up to {total}, not 100; Envoy uses them as relative weights: {shares}",
                    "make the weights add up to 100 so they read as percentages",
                )
            )
    return findings


def _mirrors(field: str, rule: Mapping) -> Iterator[tuple[str, dict]]:
    if rule.get("mirror"):
        yield f"{field}.mirror", rule["mirror"]
    for k, mirror in enumerate(rule.get("mirrors") or []):
        yield f"{field}.mirrors[{k}].destination", mirror["destination"]


def _label(route: Mapping) -> str:
    destination = route["destination"]
    return destination.get("subset") or destination["host"]


def _destination_findings(
    r: Resource, registry: _Registry, field: str, destination: Mapping
) -> list[Finding]:
    host, subset = destination["host"], destination.get("subset")
    full = fqdn(host, r.namespace)
    if not registry.knows(full):
        return [_finding(r, "error", "analysis", f"{field}.host", *_unknown_host(host, full, r, registry))]
    defined = registry.subsets.get(full, set())
    if subset and subset not in defined:
        known = (
            f" (defined: {', '.join(sorted(defined))})" if defined else " (no DestinationRule for this host)"
        )
        return [
            _finding(
                r,
                "error",
                "analysis",
                f"{field}.subset",
                f"subset {subset!r} of {full} is not defined by any DestinationRule{known}; istiod accepts "
                "it, but every request routed here fails with 503 and flag NC (no cluster)",
                f"add subset {subset!r} to the DestinationRule for {host}, or route to a defined subset"
                if defined
                else f"apply a DestinationRule for {host} first (or validate it together with this file)",
            )
        ]
    return []


def _unknown_host(host: str, full: str, r: Resource, registry: _Registry) -> tuple[str, str]:
    message = f"host {host!r} means {full}, which no Service or ServiceEntry defines"
    if "." in host and registry.knows(f"{host}.svc.cluster.local"):
        return message, f"write the full name {host}.svc.cluster.local (a name with a dot is not expanded)"
    short = host.split(".")[0]
    elsewhere = sorted(h for h in registry.services if h.split(".")[0] == short)
    if elsewhere:
        return (
            message,
            f"write the full name {elsewhere[0]} (a short name resolves in the {r.namespace} namespace)",
        )
    return message, "correct the host, or create the Service (or a ServiceEntry for an external host)"


def _destination_rule_analysis(r: Resource, registry: _Registry) -> list[Finding]:
    host = r.spec.get("host", "")
    full = fqdn(host, r.namespace)
    if not registry.knows(full):
        message, fix = _unknown_host(host, full, r, registry)
        return [_finding(r, "warning", "analysis", "spec.host", message, fix)]
    service = registry.services.get(full)
    if service is None:  # a ServiceEntry: its endpoints are not workloads we can see
        return []
    pods = registry.pods_of(service)
    findings = []
    for i, subset in enumerate(r.spec.get("subsets") or []):
        labels = subset.get("labels") or {}
        if not any(_matches(labels, pod) for pod in pods):
            seen = sorted({f"{k}={v}" for pod in pods for k, v in pod.items() if k in labels})
            found = f"; the pods of {service.name} have {', '.join(seen)}" if seen else ""
            findings.append(
                _finding(
                    r,
                    "warning",
                    "analysis",
                    f"spec.subsets[{i}].labels",
                    f"no workload of Service {service.name} has the labels {_labels(labels)}{found}; "
                    "requests routed to this subset fail with 503 and flag UH (no healthy upstream)",
                    "make the subset's labels match the pod template labels of one version",
                )
            )
    return findings


def _labels(labels: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "(none)"
