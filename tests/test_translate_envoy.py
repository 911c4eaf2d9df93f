"""Real Envoy 1.40 accepts what the translator generates, for every proxy, in the lab's scenarios."""

from __future__ import annotations

from envoy_check import configs, envoy_validate


def test_envoy_accepts_the_canary_checkpoint(tmp_path):
    topo, cfgs = configs(
        tmp_path / "state",
        "peer-authentication-strict.yaml",
        "destination-rule-currency-converter.yaml",
        "virtual-service-currency-converter-90-10.yaml",
    )
    envoy_validate(topo, cfgs, tmp_path)
