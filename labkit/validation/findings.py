"""One problem in one object, as every stage reports it: where (file, document, Kind/name, field), what is
wrong and what to do, in the lab's one wording ("What to do: ...")."""

from __future__ import annotations

from dataclasses import dataclass

from labkit import manifests
from labkit.manifests import Resource

SEVERITIES = ("error", "warning")
#: "schema" and "admission": the cluster would reject it; "analysis": it is accepted and misbehaves.
STAGES = ("schema", "admission", "analysis")


@dataclass(frozen=True)
class Finding:
    """One problem in one object: where (file, document, Kind/name, field), what is wrong, what to do."""

    severity: str  # "error" | "warning"
    stage: str  # "schema" | "admission" | "analysis"
    source: str  # the file path, or <string>/<dict>
    index: int  # the 0-based YAML document in it
    kind: str
    name: str
    field: str
    message: str
    fix: str

    @property
    def file(self) -> str:
        """The file as the trainee reads it (relative to the repository when inside it)."""
        return manifests.display_source(self.source)

    @property
    def document(self) -> int:
        """The YAML document in the file, counting from 1 as editors do."""
        return self.index + 1

    @property
    def resource(self) -> str:
        return f"{self.kind}/{self.name}"

    def __str__(self) -> str:
        field = f" {self.field}:" if self.field else ""
        where = f"{self.file} (document {self.document}) {self.resource}"
        return f"{self.severity}: {where}{field} {self.message}. What to do: {self.fix}"


def finding(r: Resource, severity: str, stage: str, field: str, message: str, fix: str) -> Finding:
    return Finding(severity, stage, r.source, r.index, r.kind, r.name, field, message, fix)


def error(r: Resource, stage: str, field: str, message: str, fix: str) -> Finding:
    return finding(r, "error", stage, field, message, fix)
