"""The schema stage: an object's shape against its kind's schema (what the API server checks first), each
error in a trainee's words: the field, what is wrong, and a suggestion for a misspelled name or value."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from labkit.manifests import TOOL_CONFIGS, Resource
from labkit.meshmodel import is_istio
from labkit.validation import gateway_api, schemas
from labkit.validation.findings import Finding, error
from labkit.validation.schemas import KUBERNETES_VERSION

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError as SchemaError


def findings(r: Resource) -> list[Finding]:
    """Every schema error of one object; a kind without a schema is one error naming the closest kind."""
    if (r.group, r.kind) in TOOL_CONFIGS:
        return []
    validator = (
        schemas.istio_validator(r.api_version, r.kind)
        or gateway_api.validator(r.api_version, r.kind)
        or schemas.kubernetes_validator(r.api_version, r.kind)
    )
    if validator is None:
        return [_unknown_kind(r)]
    body = _without_nulls(r.body)  # the API server treats null as "not set"
    errors = sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
    out = []
    for field, message, fix in (described for e in errors for described in _describe(e)):
        if is_istio(r.group) and message.startswith("unknown field") and "did you mean" not in message:
            fix += f" ({schemas.ISTIO_MODELS_NOTE})"
        out.append(error(r, "schema", field, message, fix))
    return out


def _unknown_kind(r: Resource) -> Finding:
    known = schemas.known_kinds()
    versions = [av for av, kind in known if kind == r.kind]
    if r.group not in {av.rpartition("/")[0] for av, _ in known} and not is_istio(r.group):
        other = f"; {r.kind} of Istio is apiVersion {versions[0]}" if versions else ""
        return error(
            r,
            "schema",
            "apiVersion",
            f"labkit has no schema for API group {r.group!r} ({r.api_version})",
            f"this lab checks the Kubernetes {KUBERNETES_VERSION} built-in kinds and Istio's kinds{other}",
        )
    if versions:
        return error(
            r,
            "schema",
            "apiVersion",
            f"{r.kind} does not exist in {r.api_version}; it exists in {', '.join(versions)}",
            f"set apiVersion: {versions[0]}",
        )
    close = difflib.get_close_matches(r.kind, sorted({kind for _, kind in known}), n=1)
    if close:
        return error(
            r,
            "schema",
            "kind",
            f"unknown kind {r.kind!r} in {r.api_version} (did you mean {close[0]}?)",
            f"write kind: {close[0]}",
        )
    return error(
        r,
        "schema",
        "kind",
        f"unknown kind {r.kind!r} in {r.api_version}",
        f"check the spelling; this lab checks the Kubernetes {KUBERNETES_VERSION} built-in kinds and Istio's "
        "kinds (VirtualService, DestinationRule, Gateway, ServiceEntry, PeerAuthentication, ...)",
    )


def _describe(err: SchemaError) -> Iterator[tuple[str, str, str]]:
    """(field, message, fix) for one schema error, in a trainee's words."""
    field = _field_path(err.absolute_path)
    value, schema = err.instance, err.schema
    if err.validator in ("anyOf", "oneOf") and err.context:
        branches: dict[Any, list[SchemaError]] = {}
        for sub in err.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        if all(sub.validator == "type" for sub in err.context):
            types = " or ".join(_type_name(sub.validator_value) for sub in err.context)
            yield field, f"{value!r} is not {types}", _type_fix(types)
            return
        # The generated models list a permissive base model first and its "exactly one of" variants after it:
        # explain the branch that failed least (the base), which names the real mistake.
        best = min(branches.values(), key=len)
        for sub in best:
            yield from _describe(sub)
        return
    if err.validator == "additionalProperties":
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
    if err.validator == "required":
        for missing in [k for k in err.validator_value if k not in value]:
            yield _join(field, missing), "required field is missing", f"add {missing}"
        return
    if err.validator == "type":
        types = _type_name(err.validator_value)
        yield field, f"{value!r} is not {types}", _type_fix(types)
        return
    if err.validator == "enum":
        allowed = [v for v in err.validator_value if v is not None]
        yield field, f"{value!r} is not an allowed value", f"use one of: {', '.join(map(str, allowed))}"
        return
    if err.validator == "minItems":
        count = err.validator_value
        yield field, f"needs at least {count} item{'s' if count != 1 else ''}", "add the missing list items"
        return
    if err.validator in ("minimum", "maximum"):
        bound = "at least" if err.validator == "minimum" else "at most"
        yield field, f"{value!r} is out of range", f"use a number {bound} {err.validator_value}"
        return
    if err.validator == "pattern":
        examples = schema.get("examples")
        fix = f"write it like {' or '.join(examples)}" if examples else f"match {err.validator_value}"
        yield field, f"{value!r} is not in the expected format", fix
        return
    if err.validator == "maxItems":
        count = err.validator_value
        yield field, f"has {len(value)} items, more than the {count} allowed", f"keep at most {count} items"
        return
    if err.validator == "const":
        yield field, f"{value!r} is not allowed here", f"use {err.validator_value!r}"
        return
    yield field, err.message, "compare the field with the reference documentation of this kind"


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
