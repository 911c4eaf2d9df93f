"""Check manifests before they reach a mesh, the way the cluster would: schemas (API server, Istio's CRDs),
admission (istiod's validating webhook and the API server's rules), and istioctl-analyze-style analysis
against the rest of the lab, so a trainee sees "file, document, object, field: what is wrong, what to do"
instead of a bare 503 later. One module per stage; pipeline runs them in order."""

from __future__ import annotations

from labkit.errors import ValidationError
from labkit.manifests import TOOL_CONFIGS
from labkit.meshmodel import WORKLOAD_KINDS
from labkit.validation.cli import main
from labkit.validation.findings import Finding
from labkit.validation.pipeline import check, validate
from labkit.validation.schemas import KUBERNETES_VERSION

__all__ = [
    "KUBERNETES_VERSION",
    "TOOL_CONFIGS",
    "WORKLOAD_KINDS",
    "Finding",
    "ValidationError",
    "check",
    "main",
    "validate",
]
