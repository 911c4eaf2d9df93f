"""Mesh settings come from the same IstioOperator overlay istioctl installs, so both backends agree."""

from __future__ import annotations

import pytest

from labkit.errors import ManifestError
from labkit.mesh import MeshSettings, load_mesh_settings


def test_the_lab_install_overlay_gives_registry_only_and_stdout_access_logs():
    assert load_mesh_settings() == MeshSettings(
        outbound_policy="REGISTRY_ONLY",
        access_log_file="/dev/stdout",
        root_namespace="istio-system",
        trust_domain="cluster.local",
        profile="default",
    )


def test_absent_fields_take_istio_defaults(tmp_path):
    path = tmp_path / "install.yaml"
    path.write_text(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: x}\nspec: {}\n"
    )
    settings = load_mesh_settings(path)
    assert (settings.outbound_policy, settings.access_log_file) == ("ALLOW_ANY", None)  # Istio's defaults
    assert (settings.root_namespace, settings.trust_domain, settings.profile) == (
        "istio-system",
        "cluster.local",
        "default",
    )


def test_the_profile_is_read(tmp_path):
    path = tmp_path / "install.yaml"
    path.write_text(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: x}\n"
        "spec: {profile: minimal}\n"
    )
    assert load_mesh_settings(path).profile == "minimal"


def test_a_bad_outbound_mode_names_the_file_and_field(tmp_path):
    path = tmp_path / "install.yaml"
    path.write_text(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: x}\n"
        "spec: {meshConfig: {outboundTrafficPolicy: {mode: DENY}}}\n"
    )
    with pytest.raises(
        ManifestError,
        match=r"install.yaml \(document 1\) IstioOperator/x: field "
        r"spec.meshConfig.outboundTrafficPolicy.mode is 'DENY'; use one of REGISTRY_ONLY, ALLOW_ANY",
    ):
        load_mesh_settings(path)
