"""`labkit tour` for real on the local backend: every step checked, an offline HTML report, lab stopped."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from labkit import tour
from labkit.backends.local import LocalLab

pytestmark = [pytest.mark.mesh, pytest.mark.timeout(600)]


def run_tour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool = False) -> tuple[int, Path]:
    monkeypatch.setenv("LAB_STATE", str(tmp_path / "state"))
    report = tmp_path / "report" / "tour.html"
    code = tour.main(argparse.Namespace(report=str(report), keep=keep, backend="local"))
    return code, report


def test_tour_passes_every_check_writes_an_offline_report_and_stops_the_lab(tmp_path, monkeypatch, capsys):
    code, report = run_tour(tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "legacy client (no sidecar) refused" in out
    assert "connection_security_policy=mutual_tls" in out and "consistent with" in out
    assert "client authenticated as spiffe://cluster.local/ns/payments-prod/sa/client" in out
    assert "6/6 steps passed" in out and "Prometheus counted the 100 requests" in out
    page = report.read_text(encoding="utf-8")
    assert "every check passed" in page and "Configured vs observed split" in page
    assert "plotly.js v" in page and 'src="https://cdn' not in page  # plotly.js embedded: opens offline
    assert page.count("<h2><span class='ok'>✔</span>") == 6
    assert not LocalLab(tmp_path / "state").status().up


def test_tour_exits_1_and_reports_the_failed_check_when_the_split_is_wrong(tmp_path, monkeypatch, capsys):
    """The tour configures 50/50 but expects 90/10, as if the wrong file had been applied."""
    monkeypatch.setattr(tour, "CANARY_FILE", "mesh/virtual-service-currency-converter-50-50.yaml")
    monkeypatch.setattr(tour, "SPLIT_REQUESTS", 400)
    code, report = run_tour(tmp_path, monkeypatch, keep=True)
    out = capsys.readouterr().out
    assert code == 1
    assert "does not match the configured 90/10" in out and "3/4 steps passed" in out
    page = report.read_text(encoding="utf-8")
    assert "a check FAILED" in page and "<span class='bad'>✘</span>" in page
    lab = LocalLab(tmp_path / "state")
    assert lab.status().up  # --keep left it running
    lab.down()


def test_an_unexpected_error_still_leaves_the_steps_so_far_in_the_report(tmp_path, monkeypatch):
    """Only LabError is a failed check; anything else propagates, after the report records the step."""

    def broken_up(self):
        print("starting...")
        raise RuntimeError("boom")

    monkeypatch.setattr(LocalLab, "up", broken_up)
    with pytest.raises(RuntimeError, match="boom"):
        run_tour(tmp_path, monkeypatch)
    page = (tmp_path / "report" / "tour.html").read_text(encoding="utf-8")
    assert "<span class='bad'>✘</span> 1. Start the mesh (lab.up)" in page and "starting..." in page
