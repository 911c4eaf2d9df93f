"""``labkit tour``: the core of notebooks 01–05, 20 and 21 run headless, each step followed by its check,
and an HTML report.

Steps: start the mesh, deploy currency-converter v1/v2 with sidecars, STRICT mTLS proven both ways (the
legacy client is refused, the mesh client gets 200 over mutual TLS), then the 90/10 canary measured with
its interval and verdict; then connections shifted 80/20 by a TCP route, and Prometheus counting the
requests per version. Exit code 0 only if every check passed; the lab is stopped afterwards unless
``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit import checks, lesson, scenario
from labkit.errors import LabError
from labkit.lab import Lab

#: The canary the tour configures and then measures.
CANARY_FILE = "mesh/virtual-service-currency-converter-90-10.yaml"
CANARY = {"v1": 90, "v2": 10}
#: Requests sent to measure the split: enough for a 10 % share's interval (at the lab's confidence,
#: ``checks.CONFIDENCE``) to be about ±4 points.
SPLIT_REQUESTS = 1000
#: Notebook 20's TCP route and notebook 21's query (the client's requests to the service, one reporter).
TCP_FILE = "tasks/virtual-service-tcp-echo-80-20.yaml"
TCP_URL, TCP_SPLIT = f"tcp://tcp-echo.{scenario.NAMESPACE}:9001", {"v1": 80, "v2": 20}
PROMQL = (
    'sum by (destination_version) (istio_requests_total{reporter="source", source_workload="client", '
    f'destination_service="{scenario.SERVICE}.{scenario.NAMESPACE}.svc.cluster.local"}})'
)


@dataclass
class Step:
    """One step of the tour: what it did, what its check printed, and whether it passed."""

    title: str
    passed: bool = False
    output: str = ""
    seconds: float = 0.0


@dataclass
class Tour:
    """Runs steps in order, stops at the first failure, and keeps what the report needs."""

    lab: Lab
    steps: list[Step] = field(default_factory=list)
    figures: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.passed for s in self.steps)

    def step(self, title: str, action: Callable[[], Any]) -> Any:
        """Run ``action`` (the step and its check), echo and record its output; False when it failed."""
        print(f"\n== {title}", flush=True)
        step = Step(title)
        self.steps.append(step)
        buffer = io.StringIO()
        start = time.monotonic()
        result: Any = None
        try:
            with contextlib.redirect_stdout(buffer):
                result = action()
            step.passed = True
        except LabError as exc:  # CheckFailed included: its message is the trainee's next step
            buffer.write(f"✘ {exc}\n")
        finally:  # anything else (a bug, Ctrl-C) propagates, but the report still shows this step
            step.seconds = time.monotonic() - start
            step.output = buffer.getvalue()
        print(step.output, end="", flush=True)
        return result if step.passed else False


def run(lab: Lab, tour: Tour | None = None) -> Tour:
    """The tour's steps on ``lab``, recorded in ``tour`` (a new one by default); stops at the first step
    whose check fails."""
    tour = Tour(lab) if tour is None else tour

    def up() -> None:
        print(lab.up())
        checks.lab_is_up(lab)

    def deploy() -> None:
        for change in lab.ensure("deployed"):
            print(change)
        checks.versions_running(lab, "v1", "v2")
        checks.sidecars_injected(lab, scenario.NAMESPACE)
        checks.all_ok(lab.send(lesson.URL, n=50))

    def strict() -> None:
        for change in lab.apply(lesson.manifest_path("mesh/peer-authentication-strict.yaml")):
            print(change)
        checks.refused(lab.send(lesson.URL, n=20, source="legacy"), what="the legacy client (no sidecar)")
        checks.all_ok(lab.send(lesson.URL, n=50, source="client"), what="the mesh client")
        checks.mutual_tls(lab, source="client")
        checks.peer_identity(lab, source="client")

    def canary() -> Any:
        for rel in ("mesh/destination-rule-currency-converter.yaml", CANARY_FILE):
            for change in lab.apply(lesson.manifest_path(rel)):
                print(change)
        result = lab.send(lesson.URL, n=SPLIT_REQUESTS)
        print(result.summary())  # the check below prints the verdict, at the lab's confidence
        tour.figures.append(("Status codes", _viz().status_codes(result)))
        tour.figures.append(("Latency", _viz().latency(result)))
        tour.figures.insert(
            0, ("Configured vs observed split", _viz().split_bars(result.report(CANARY, checks.CONFIDENCE)))
        )
        checks.all_ok(result)
        checks.split_matches(result, CANARY)
        return result

    def tcp() -> None:
        for change in lab.apply(lesson.manifest_path(TCP_FILE)):
            print(change)
        result = lab.send_tcp(TCP_URL, n=400)
        print(result.summary())
        checks.all_echoed(result)
        checks.split_matches(result, TCP_SPLIT)

    def promql() -> None:
        before = checks.settled_counts(lab, PROMQL)
        checks.prometheus_counted(lab, PROMQL, before, lab.send(lesson.URL, n=100))

    steps = [
        ("1. Start the mesh (lab.up)", up),
        ("2. Deploy currency-converter v1 and v2, each with a sidecar", deploy),
        ("3. STRICT mTLS: legacy refused, client served over mutual TLS", strict),
        (f"4. Canary {CANARY['v1']}/{CANARY['v2']}: the split measured with its interval", canary),
        ("5. TCP traffic shifting: connections split 80/20 (notebook 20)", tcp),
    ]
    missing = _prometheus_missing(lab)
    if missing:
        print(f"\n(step 6, Prometheus, left out: {missing})")
    else:
        steps.append(("6. Prometheus counts the requests per version exactly (notebook 21)", promql))
    for title, action in steps:
        if tour.step(title, action) is False:
            break
    with contextlib.suppress(LabError):
        tour.figures.append(("Mesh traffic", _viz().topology(lab.metrics())))
    return tour


def _prometheus_missing(lab: Lab) -> str:
    """Why the local backend cannot run Prometheus here (its binary is missing, and how to get it), or ""."""
    if lab.backend != "local":
        return ""
    from labkit.local import prometheus  # the local engine, only for a local lab

    try:
        prometheus.binary()
    except LabError as exc:
        return str(exc)
    return ""


def _viz() -> Any:
    from labkit import viz  # imported on first use: keeps `import labkit` fast

    return viz


def write_report(tour: Tour, path: str | Path) -> Path:
    """One self-contained HTML page: every step with its check output, then the charts (plotly.js
    embedded once, so the report opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    verdict = "every check passed" if tour.ok else "a check FAILED"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Mesh Lab tour</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}pre{background:#f4f4f4;"
        "padding:.6em;white-space:pre-wrap}.ok{color:#1a7f37}.bad{color:#c62828}</style></head><body>",
        f"<h1>Mesh Lab tour ({html.escape(tour.lab.backend)} backend): "
        f"<span class='{'ok' if tour.ok else 'bad'}'>{verdict}</span></h1>",
    ]
    for step in tour.steps:
        mark = "<span class='ok'>✔</span>" if step.passed else "<span class='bad'>✘</span>"
        parts.append(f"<h2>{mark} {html.escape(step.title)} <small>({step.seconds:.1f} s)</small></h2>")
        parts.append(f"<pre>{html.escape(step.output)}</pre>")
    for i, (title, fig) in enumerate(tour.figures):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def main(args: argparse.Namespace) -> int:
    """``labkit tour --report PATH [--keep]``: 0 if every check passed, 1 otherwise."""
    import labkit  # imported on first use: keeps `import labkit` fast

    lab = labkit.open(getattr(args, "backend", None))
    tour = Tour(lab)
    try:
        run(lab, tour)  # into main's tour: steps done before an unexpected exception still reach the report
    finally:
        report = write_report(tour, args.report)
        if not getattr(args, "keep", False):
            print("\nstopping the lab (use --keep to leave it running)")
            lab.down()
    passed = sum(s.passed for s in tour.steps)
    print(f"\n{passed}/{len(tour.steps)} steps passed; report: {report}")
    return 0 if tour.ok else 1
