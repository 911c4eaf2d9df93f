"""Charts: event labels that never overlap or leave the plot, the topology's error count, and the static
image every figure carries for exported handouts (real kaleido + Chromium where installed)."""

from __future__ import annotations

import shutil

import plotly.io as pio
import pytest

from labkit import viz
from labkit.metrics import RequestCount


def _extent(annotation: dict, seconds_per_char: float) -> tuple[float, float]:
    width = len(annotation["text"]) * seconds_per_char
    x = annotation["x"]
    return (x - width, x) if annotation["xanchor"] == "right" else (x, x + width)


@pytest.mark.parametrize(
    "events",
    [
        [(10.0, "100 %"), (10.0, "done"), (10.2, "10 %"), (10.3, "ROLLBACK")],  # 05: done, then a new rollout
        [(t, "ROLLBACK") for t in range(0, 60, 3)],
        [(59.5, "ROLLBACK"), (0.0, "stopped")],  # at the right edge: must not be cut
    ],
)
def test_event_labels_never_overlap_and_stay_inside_the_axis(events: list[tuple[float, str]]) -> None:
    layout = viz.event_layout(events, (0.0, 60.0))
    per_char = viz.LABEL_CHAR_PX * 60.0 / viz.PLOT_PX
    placed = [(a["yshift"], _extent(a, per_char)) for a in layout["annotations"]]
    for i, (row, (a, b)) in enumerate(placed):
        assert a >= -1e-9 and b <= 60.0 + 1e-9, (events[i], a, b)
        for other_row, (c, d) in placed[i + 1 :]:
            assert row != other_row or b <= c or d <= a, "two labels overlap"
    assert layout["margin"]["t"] >= 50 + viz.ROW_PX * len({row for row, _ in placed})


def test_topology_counts_4xx_and_5xx_as_errors_and_draws_text_not_a_lock_glyph() -> None:
    def count(code: str, value: float) -> RequestCount:
        labels = {
            "reporter": "destination",
            "source_workload": "client",
            "destination_workload": "currency-converter-v1",
            "destination_service": "currency-converter.payments-prod.svc.cluster.local",
            "response_code": code,
            "connection_security_policy": "mutual_tls",
        }
        return RequestCount(labels, value)

    fig = viz.topology([count("200", 240), count("403", 30)])
    label = next(a.text for a in fig.layout.annotations if a.text)
    assert "11.1% err" in label and "mTLS" in label
    assert all(ord(ch) < 0x2500 for ch in label), f"a glyph a PNG font may not have: {label!r}"


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (make system-deps)")
def test_figures_render_offline_from_local_scripts_only(monkeypatch, tmp_path) -> None:
    """kaleido's page loads plotly.js from the plotly package and no MathJax from a CDN: an offline laptop
    would wait for that lookup on every render."""
    from kaleido._page_generator import PageGenerator

    pages = []
    generate = PageGenerator.generate_index
    monkeypatch.setattr(
        PageGenerator, "generate_index", lambda self: pages.append(generate(self)) or pages[-1]
    )
    assert viz.png_image(viz.topology([]))[:8] == b"\x89PNG\r\n\x1a\n"
    assert viz.export(viz.topology([]), tmp_path / "graph.svg").read_text().startswith("<svg")
    assert pages and not [p for p in pages if "http://" in p or "https://" in p]


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (make system-deps)")
def test_a_figure_for_a_handout_carries_a_png_next_to_plotly_s_mimetype(monkeypatch) -> None:
    fig = viz.topology([])
    assert pio.renderers.default == "labkit"
    live = pio.renderers["labkit"].to_mimebundle(fig.to_dict())
    assert set(live) == {"application/vnd.plotly.v1+json"}  # JupyterLab would show a PNG, not the chart
    monkeypatch.setenv(viz.STATIC_FIGURES_ENV, "1")
    bundle = pio.renderers["labkit"].to_mimebundle(fig.to_dict())
    assert "application/vnd.plotly.v1+json" in bundle
    assert bundle["image/png"][:8] == "iVBORw0K"  # base64 of the PNG signature


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (make system-deps)")
def test_a_render_that_lost_kaleidos_page_load_race_is_tried_again(monkeypatch) -> None:
    """On a loaded machine kaleido may run its script before Chromium loaded the page (plotly/Kaleido#214):
    the figure is rendered again, by real kaleido, instead of failing a handout. Here the first render is
    made to lose that race; any other JavaScript error still fails."""
    import kaleido
    from kaleido.errors import JavascriptError

    real, calls = kaleido.calc_fig_sync, []

    def losing_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise JavascriptError("{'description': 'ReferenceError: kaleido_scopes is not defined'}")
        return real(*args, **kwargs)

    monkeypatch.setattr(kaleido, "calc_fig_sync", losing_first)
    assert viz.png_image(viz.topology([]))[:8] == b"\x89PNG\r\n\x1a\n" and len(calls) == 2

    def other_error(*args, **kwargs):
        raise JavascriptError("{'description': 'ReferenceError: Plotly is not defined'}")

    monkeypatch.setattr(kaleido, "calc_fig_sync", other_error)
    with pytest.raises(JavascriptError, match="Plotly is not defined"):
        viz.png_image(viz.topology([]))
