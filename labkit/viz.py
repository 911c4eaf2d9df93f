"""Plotly figures of the split, latency, status codes and the mesh topology. Every trace has a fixed ``uid``
so notebook outputs stay stable between runs.

Importing this module makes plotly display every figure with two representations: plotly's own mimetype
(interactive in JupyterLab; data only, no plotly.js bundle in the saved notebook) and a PNG of the same figure
(kaleido, with Debian's ``chromium``), which nbconvert's HTML and PDF handouts show. Without a Chromium the
PNG is left out and the live notebook is unchanged.
"""

from __future__ import annotations

import base64
import functools
import math
import os
import shutil
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io import base_renderers

from labkit import trafficgraph

if TYPE_CHECKING:
    from labkit.metrics import RequestCount
    from labkit.stats import SplitReport
    from labkit.traffic import TrafficResult

COLORS = {"v1": "#1f77b4", "v2": "#ff7f0e", "v3": "#2ca02c"}
CONFIGURED, OK, DEGRADED, FAILING = "#7f7f7f", "#2ca02c", "#ff9f1c", "#d62728"


#: The static image's size in pixels (a handout page's width).
IMAGE_WIDTH, IMAGE_HEIGHT = 900, 480


#: Set (1) when executing notebooks for a handout (``nbconvert --execute``): figures then also carry a PNG.
#: Not by default: JupyterLab ranks image/png above plotly's mimetype and would show the static picture
#: instead of the interactive chart.
STATIC_FIGURES_ENV = "LAB_STATIC_FIGURES"


class _WithImage(base_renderers.MimetypeRenderer):
    """plotly's mimetype, plus ``image/png`` of the same figure for handouts (``LAB_STATIC_FIGURES=1``)
    when a Chromium can draw it."""

    def to_mimebundle(self, fig_dict: dict) -> dict:
        bundle = base_renderers.PlotlyRenderer().to_mimebundle(fig_dict)
        if os.environ.get(STATIC_FIGURES_ENV, "") in ("", "0"):
            return bundle
        png = png_image(go.Figure(fig_dict))
        if png is not None:
            bundle["image/png"] = base64.b64encode(png).decode()
        return bundle


@functools.cache
def _chromium() -> bool:
    return any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def _image(fig: go.Figure, fmt: str, width: int | None = None, height: int | None = None) -> bytes:
    """``fig`` rendered by kaleido (it drives Chromium) with plotly.js from the plotly package and no MathJax:
    kaleido's default MathJax comes from a CDN, a network lookup per render that an offline laptop waits for
    (plotly's ``to_image`` cannot turn it off); the lab's figures have no LaTeX. Tried a second time when
    kaleido ran its script before Chromium had loaded the page ("kaleido_scopes is not defined", a race of
    kaleido's own on a loaded machine: plotly/Kaleido#214)."""
    import kaleido  # imported on first use: keeps `import labkit` fast
    from kaleido.errors import JavascriptError

    size = {"width": width or fig.layout.width, "height": height or fig.layout.height}
    opts = {"format": fmt} | {k: v for k, v in size.items() if v}
    spec = fig.to_dict()
    try:
        return kaleido.calc_fig_sync(spec, opts=opts, kopts={"mathjax": False})
    except JavascriptError as err:
        if "kaleido_scopes is not defined" not in str(err):
            raise
    return kaleido.calc_fig_sync(spec, opts=opts, kopts={"mathjax": False})


def png_image(fig: go.Figure) -> bytes | None:
    """``fig`` as PNG bytes, or None when no Chromium is installed."""
    if not _chromium():
        return None
    return _image(fig, "png", IMAGE_WIDTH, IMAGE_HEIGHT)


pio.renderers["labkit"] = _WithImage()
pio.renderers.default = "labkit"


def color(version: str) -> str:
    return COLORS.get(version, "#9467bd")


def percent(shares: Iterable[float]) -> list[float | None]:
    """Shares 0..1 as percentages; NaN (an empty window) becomes None: a gap in the line, valid in JSON."""
    return [None if math.isnan(s) else 100 * s for s in shares]


def split_bars(report: SplitReport, title: str = "Configured vs observed split") -> go.Figure:
    """Bars of configured and observed share per version; the observed bars carry their Wilson interval."""
    versions = list(report.shares)
    shares = [report.shares[v] for v in versions]
    fig = go.Figure(
        layout={"title": title, "barmode": "group", "yaxis": {"title": "share %", "range": [0, 105]}}
    )
    if report.expected is not None:
        configured = [100 * report.expected.get(v, 0.0) for v in versions]
        fig.add_bar(x=versions, y=configured, name="configured", marker_color=CONFIGURED, uid="configured")
    fig.add_bar(
        x=versions,
        y=[100 * s.share for s in shares],
        name=f"observed ({100 * report.confidence:g} % interval)",
        marker_color=[color(v) for v in versions],
        error_y={
            "type": "data",
            "symmetric": False,
            "array": [100 * (s.high - s.share) for s in shares],
            "arrayminus": [100 * (s.share - s.low) for s in shares],
        },
        uid="observed",
    )
    fig.add_annotation(text=report.verdict(), showarrow=False, xref="paper", yref="paper", x=0, y=1.08)
    return fig


def share_over_time(
    times: Sequence[float],
    shares: Mapping[str, Sequence[float]],
    configured: Sequence[tuple[float, Mapping[str, float]]] = (),
    errors: Sequence[float] | None = None,
    events: Sequence[tuple[float, str]] = (),
    title: str = "Observed share over time",
) -> go.Figure:
    """Stacked areas of each version's rolling share (the canary at the bottom), the configured weights as a
    dashed step line on the boundaries the areas should follow, the error rate, and labelled events.

    ``configured`` is ``[(t, {version: share 0..1}), ...]`` in time order, from when each weight took effect.
    """
    fig = go.Figure(
        layout={
            "title": title,
            "xaxis": {"title": "time (s)"},
            "yaxis": {"title": "%", "range": [0, 105]},
            "legend": {"orientation": "h", "y": -0.2},
        }
    )
    versions = sorted(set(shares) | {v for _, w in configured for v in w}, reverse=True)
    for v in versions:
        fig.add_scatter(
            x=list(times),
            y=percent(shares.get(v, [])),
            name=f"{v} observed",
            stackgroup="observed",
            line={"color": color(v), "width": 0.5},
            uid=f"observed-{v}",
        )
    end = [max(times[-1], configured[-1][0])] if len(times) and configured else []
    for i, v in enumerate(versions[:-1]):
        below = versions[: i + 1]
        boundary = [100 * sum(w.get(u, 0.0) for u in below) for _, w in configured]
        fig.add_scatter(
            x=[t for t, _ in configured] + end,
            y=boundary + (boundary[-1:] if end else []),  # the last weight holds until `end`, if any
            name=f"{'+'.join(below)} configured",
            mode="lines",
            line={"shape": "hv", "dash": "dash", "color": "black"},
            uid=f"configured-{v}",
        )
    if errors is not None:
        fig.add_scatter(
            x=list(times),
            y=percent(errors),
            name="error rate",
            mode="lines",
            line={"color": FAILING},
            uid="error-rate",
        )
    fig.add_scatter(
        x=[t for t, _ in events],
        y=[100] * len(events),
        hovertext=[text for _, text in events],
        name="events",
        mode="markers",
        marker={"symbol": "triangle-down", "color": "black"},
        uid="events",
        showlegend=False,
    )
    x_range = (times[0] if len(times) else 0.0, times[-1] if len(times) else 1.0)
    fig.update_layout(event_layout(events, x_range))
    return fig


#: Event labels: font size; one character's width at that size, in pixels, and the plot's width, both on
#: the generous side so labels measured with them never overlap; the height of one row of labels.
LABEL_FONT, LABEL_CHAR_PX, PLOT_PX, ROW_PX = 11, 8.0, 450.0, 18


def event_layout(events: Sequence[tuple[float, str]], x_range: tuple[float, float]) -> dict:
    """Layout for labelled events above the plot: a dotted line at each, its label in the first row where
    it overlaps no other label, anchored so it stays inside the x range; the top margin grows with the rows.

    A label's width in seconds is its length times ``LABEL_CHAR_PX`` pixels at the axis' scale."""
    low, high = x_range
    span = max(high - low, 1e-9)
    seconds_per_px = span / PLOT_PX
    rows: list[list[tuple[float, float]]] = []
    annotations, shapes = [], []
    for t, text in events:
        width = len(text) * LABEL_CHAR_PX * seconds_per_px
        right = t + width > high  # would be cut at the right edge: extend to the left of the mark instead
        left_end, right_end = (t - width, t) if right else (t, t + width)
        row = next(
            (i for i, used in enumerate(rows) if all(b <= left_end or a >= right_end for a, b in used)),
            len(rows),
        )
        if row == len(rows):
            rows.append([])
        rows[row].append((left_end, right_end))
        annotations.append(
            {
                "x": t, "y": 1.0, "yshift": 2 + ROW_PX * row, "xref": "x", "yref": "paper", "text": text,
                "showarrow": False, "xanchor": "right" if right else "left", "yanchor": "bottom",
                "font": {"size": LABEL_FONT}, "bgcolor": "white",
            }
        )  # fmt: skip
        shapes.append(
            {
                "type": "line", "x0": t, "x1": t, "xref": "x", "y0": 0, "y1": 1, "yref": "paper",
                "line": {"dash": "dot", "width": 1, "color": "black"},
            }
        )  # fmt: skip
    return {
        "annotations": annotations,
        "shapes": shapes,
        "xaxis": {"range": [low, high]},
        "margin": {"t": 50 + ROW_PX * len(rows)},
        "title": {"y": 0.98, "yanchor": "top"},
    }


def latency(result: TrafficResult, percentiles: tuple[float, ...] = (50, 90, 99)) -> go.Figure:
    """Latency percentiles (ms) per version, one group of bars per percentile."""
    table = result.latency(percentiles)
    fig = go.Figure(layout={"title": "Latency by version", "barmode": "group", "yaxis": {"title": "ms"}})
    for v, values in table.items():
        fig.add_bar(
            x=[f"p{p:g}" for p in percentiles],
            y=[1000 * values[p] for p in percentiles],
            name=v,
            marker_color=color(v),
            uid=f"latency-{v}",
        )
    return fig


def status_codes(result: TrafficResult) -> go.Figure:
    """Stacked bars: for each version, how many requests ended with each status code or connection error."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for o in result.outcomes:
        table[str(o.status) if o.status is not None else o.error or "error"][o.version or "no response"] += 1
    versions = sorted({v for row in table.values() for v in row})
    fig = go.Figure(
        layout={"title": "Status codes by version", "barmode": "stack", "yaxis": {"title": "requests"}}
    )
    for code in sorted(table):
        fig.add_bar(x=versions, y=[table[code].get(v, 0) for v in versions], name=code, uid=f"code-{code}")
    return fig


def topology(
    samples: Iterable[RequestCount],
    before: Iterable[RequestCount] | None = None,
    seconds: float | None = None,
    title: str = "Mesh traffic",
) -> go.Figure:
    """A Kiali-like graph from ``istio_requests_total``: workloads as nodes; edges labelled with requests
    (req/s given a snapshot ``before`` taken ``seconds`` earlier), share of the caller's traffic to that
    service, error rate (4xx and 5xx answers and no answer), and "mTLS" when the connection was mutual TLS
    (text, not a lock emoji: a PNG export has no emoji font and would draw an empty box)."""
    edges = trafficgraph.edges(samples, before)
    nodes = trafficgraph.layout(edges)
    fig = go.Figure(
        layout={
            "title": title,
            "showlegend": False,
            "xaxis": {
                "visible": False,
                "range": [-0.5, max((x for x, _ in nodes.values()), default=0) + 0.5],
            },
            "yaxis": {
                "visible": False,
                "range": [-0.6, max((y for _, y in nodes.values()), default=0) + 0.6],
            },
            "plot_bgcolor": "white",
        }
    )
    for (src, dst), e in sorted(edges.items()):
        (x0, y0), (x1, y1) = nodes[src], nodes[dst]
        rate = f"{e.requests / seconds:.1f} req/s" if seconds else f"{e.requests:g} req"
        security = "mTLS" if e.mtls else "plaintext"
        fig.add_annotation(
            x=x1,
            y=y1,
            ax=x0,
            ay=y0,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=2,
            arrowwidth=2,
            arrowcolor=_health(e.error_rate),
            standoff=18,
            startstandoff=18,
            text="",
        )
        fig.add_annotation(  # 40 % of the way along, so edges that cross mid-way keep their labels apart
            x=x0 + 0.4 * (x1 - x0),
            y=y0 + 0.4 * (y1 - y0),
            showarrow=False,
            bgcolor="white",
            font={"size": 10},
            text=f"{rate} · {e.share:.0%} · {e.error_rate:.1%} err · {security}",
        )
    names = sorted(nodes)
    fig.add_scatter(
        x=[nodes[n][0] for n in names],
        y=[nodes[n][1] for n in names],
        text=[_label(n) for n in names],
        mode="markers+text",
        textposition="bottom center",
        marker={"size": 26, "color": "#e8eef7", "line": {"width": 2, "color": "#1f3b73"}},
        uid="workloads",
        hoverinfo="text",
    )
    return fig


def _label(workload: str) -> str:
    return "outside the mesh<br>(no sidecar)" if workload == "unknown" else workload


def _health(error_rate: float) -> str:
    """Kiali's edge colours: green healthy, orange degraded, red failing."""
    return OK if error_rate == 0 else DEGRADED if error_rate < 0.05 else FAILING


def export(fig: go.Figure, path: str | Path) -> Path:
    """Write ``fig`` as a self-contained ``.html`` page, or an image (``.png``/``.svg``/``.pdf``) via kaleido,
    which needs a Chromium (Debian: ``apt-get install chromium``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".html":
        fig.write_html(path, include_plotlyjs=True)
    else:
        path.write_bytes(_image(fig, path.suffix.lstrip(".")))
    return path
