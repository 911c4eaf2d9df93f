"""``labkit validate PATH...``: every finding, one per line, and a summary; the exit code says whether the
cluster would take the files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from labkit import manifests, paths
from labkit.errors import ManifestError
from labkit.manifests import Resource
from labkit.validation.pipeline import validate


def main(argv: Sequence[str]) -> int:
    """Validate the files and folders in ``argv`` against the lab's apps; exit 1 on any error, else 0."""
    resources: list[Resource] = []
    unreadable = 0
    for path in argv:
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
