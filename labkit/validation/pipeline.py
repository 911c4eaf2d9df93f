"""The stages in order: schema, then admission for the objects whose shape is right, then analysis against
everything the cluster would hold."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from labkit.errors import ValidationError
from labkit.manifests import Resource
from labkit.meshmodel import CLUSTER_DOMAIN, Registry
from labkit.validation import admission, analysis, gateway_api, schema
from labkit.validation.findings import Finding

_BLOCKING_STAGES = ("schema", "admission")


def validate(
    resources: Iterable[Resource], *, context: Iterable[Resource] = (), domain: str = CLUSTER_DOMAIN
) -> list[Finding]:
    """Every finding for ``resources``; ``context`` is the rest of the lab (its apps) for cross-checks;
    ``domain`` the cluster domain short names expand to (MeshSettings.cluster_domain)."""
    resources = list(resources)
    findings = admission.duplicates(resources)
    valid = []
    for r in resources:
        shape = schema.findings(r)
        findings += shape
        if not shape:  # the semantic checks rely on the shapes the schema guarantees
            valid.append(r)
            findings += admission.findings(r) + gateway_api.admission(r)
    world: dict[tuple[str, str, str, str], Resource] = {r.key: r for r in context}
    world.update((r.key, r) for r in valid)  # what the cluster holds once these are applied
    registry = Registry(world.values(), domain)
    for r in valid:
        findings += analysis.findings(r, registry) + gateway_api.conflicts(r, world.values(), domain)
        findings += gateway_api.references(r)
    return findings


def check(
    resources: Iterable[Resource],
    *,
    context: Iterable[Resource] = (),
    strict: bool = False,
    domain: str = CLUSTER_DOMAIN,
) -> list[Finding]:
    """Raise ValidationError if the cluster would reject ``resources`` (any error at all when ``strict``);
    else return the findings to print, as warnings: analysis errors such as a missing subset are let through,
    so the lab can apply them and show their runtime outcome (503 NC)."""
    findings = validate(resources, context=context, domain=domain)
    if any(f.severity == "error" and (strict or f.stage in _BLOCKING_STAGES) for f in findings):
        raise ValidationError(findings)
    return [dataclasses.replace(f, severity="warning") for f in findings]
