"""A stand-in for Gateway API's ``standard-install.yaml`` (the real file cannot be downloaded here): the same
shape as the release's, read from kubernetes-sigs/gateway-api ``config/crd/standard`` as Istio's test copy
shows it (istio/istio tests/integration/pilot/testdata/gateway-api-crd.yaml at tag 1.30.3): one CRD per kind
with the bundle-version and channel annotations, names, scope and served versions (v1 the storage version),
then the ``safe-upgrades`` ValidatingAdmissionPolicy and its binding. The schemas are left open (the fake
API server checks bodies with labkit's own schemas instead)."""

from __future__ import annotations

import yaml

GROUP = "gateway.networking.k8s.io"
#: kind, plural, namespaced, versions served (storage first), short names.
KINDS = [
    ("GatewayClass", "gatewayclasses", False, ["v1", "v1beta1"], ["gc"]),
    ("Gateway", "gateways", True, ["v1", "v1beta1"], ["gtw"]),
    ("HTTPRoute", "httproutes", True, ["v1", "v1beta1"], []),
    ("GRPCRoute", "grpcroutes", True, ["v1"], []),
    ("ReferenceGrant", "referencegrants", True, ["v1", "v1beta1"], ["refgrant"]),
]


def crd(kind: str, plural: str, namespaced: bool, versions: list[str], short: list[str], bundle: str) -> dict:
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "annotations": {f"{GROUP}/bundle-version": bundle, f"{GROUP}/channel": "standard"},
        },
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": short, "categories": ["gateway-api"]},
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [
                {"name": v, "served": True, "storage": i == 0, "schema": schema,
                 "subresources": {"status": {}}}
                for i, v in enumerate(versions)
            ],
        },
    }  # fmt: skip


def standard_install(bundle: str = "v1.5.1") -> str:
    """The file's text: the CRDs, then the admission policy that refuses an older bundle over a newer one."""
    docs = [crd(*k, bundle=bundle) for k in KINDS]
    docs.append({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": f"safe-upgrades.{GROUP}",
                     "annotations": {f"{GROUP}/bundle-version": bundle, f"{GROUP}/channel": "standard"}},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
            "apiGroups": ["apiextensions.k8s.io"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
            "resources": ["customresourcedefinitions"]}]}},
    })  # fmt: skip
    docs.append(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": f"safe-upgrades.{GROUP}"},
            "spec": {"policyName": f"safe-upgrades.{GROUP}", "validationActions": ["Deny"]},
        }
    )
    return yaml.safe_dump_all(docs, sort_keys=False)
