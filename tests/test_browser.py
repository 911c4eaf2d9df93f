"""The lab's notebooks in a real JupyterLab, in headless Chromium, against the real local mesh.

What a trainee sees: the charts render as plotly graphs (not a text repr), the live canary chart follows the
weight slider, a failing v2 is rolled back, and the 90/10 notebook shows its chart and its "✔" check.
Screenshots of each step go to ``$LAB_ARTIFACTS/browser/<test>/`` (default ``artifacts/browser/<test>/``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from browser.notebook import NotebookPage
from browser.server import JupyterLab
from playwright.sync_api import Locator

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason=f"{CHROMIUM} not found (apt-get install chromium); in CI (CI set) these tests must run",
    ),
]


def artifacts_dir() -> Path:
    path = Path(os.environ.get("LAB_ARTIFACTS", ROOT / "artifacts")) / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """JupyterLab on a copy of notebooks/, its kernels' mesh in a temp LAB_STATE; all stopped afterwards."""
    work = tmp_path_factory.mktemp("jupyterlab")
    root = work / "root"
    shutil.copytree(
        ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints")
    )
    state = work / "lab-state"
    server = JupyterLab(root, work, env={"LAB_STATE": str(state)})
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.copy(server.log, artifacts_dir() / "jupyterlab.log")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("LAB_STATE", str(state))
            import labkit

            labkit.open().down()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, chromium_sandbox=False, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def notebook(jupyterlab: JupyterLab, browser, request: pytest.FixtureRequest) -> Iterator[NotebookPage]:
    """A fresh page; afterwards a last screenshot, and the test's kernel shut down (its traffic with it)."""
    artifacts = artifacts_dir() / request.node.name
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    console: list[str] = []  # the page's errors, kept with the screenshots
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    nb = NotebookPage(page, jupyterlab, artifacts)
    try:
        yield nb
    finally:
        try:
            nb.shot("final")
        finally:
            (artifacts / "console-errors.txt").write_text("\n".join(console))
            context.close()
            jupyterlab.remember_processes()
            for session in jupyterlab.api("GET", "/api/sessions"):
                jupyterlab.api("DELETE", f"/api/sessions/{session['id']}", timeout=30)


def test_canary_90_10_notebook_shows_chart_and_check(notebook: NotebookPage) -> None:
    notebook.open("notebooks/04-canary-90-10.ipynb")
    notebook.run_all()
    notebook.wait_executed(timeout=180)
    notebook.shot("executed")

    check = notebook.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']")
    split_checks = check.filter(has_text=re.compile(r"✔ v2 got .*consistent with the configured 10"))
    assert split_checks.count() == 2  # the Istio APIs' CHECK and the optional Gateway API section's
    split_checks.first.scroll_into_view_if_needed()
    assert split_checks.first.is_visible()
    notebook.shot("check-passed")

    plot = notebook.page.locator(".jp-OutputArea .js-plotly-plot").last
    plot.scroll_into_view_if_needed()
    graph = notebook.poll(
        lambda: notebook.graph(plot), lambda g: g["svg"] and g["bars"] >= 4, 30, "bars drawn"
    )
    notebook.shot("chart")
    bars = {t["uid"]: dict(zip(t["x"], t["y"], strict=True)) for t in graph["traces"] if t["type"] == "bar"}
    assert bars["configured"] == {"v1": 90, "v2": 10}, bars
    assert 3 < bars["observed"]["v2"] < 20 and abs(sum(bars["observed"].values()) - 100) < 0.1, bars
    assert not notebook.page.get_by_text(re.compile(r"^Figure(Widget)?\(")).count(), (
        "a chart fell back to text"
    )


def _key_slider_to(page, handle: Locator, value: int) -> None:
    """Move a slider with the keyboard on its handle (5 % a key press), as a trainee without a mouse can."""
    handle.focus()
    for _ in range(25):
        now = float(handle.get_attribute("aria-valuenow") or "nan")
        if now == value:
            return
        page.keyboard.press("ArrowRight" if now < value else "ArrowLeft")


def test_live_split_follows_slider_and_rolls_back(notebook: NotebookPage) -> None:
    page = notebook.page
    notebook.open("notebooks/05-live-traffic-split.ipynb")
    notebook.run_all()

    # While Run All works through the lesson (apply 25 %, a healthy rollout, a failing one), the control's
    # chart is a live plotly graph with data, not a text repr. The last cell closes that control.
    first_chart = page.locator(".jp-OutputArea-output .widget-vbox .js-plotly-plot").first
    notebook.poll(
        lambda: first_chart.count() and notebook.graph(first_chart),
        lambda g: bool(g) and g["svg"] and any(t["uid"] == "observed-v2" and t["y"] for t in g["traces"]),
        180,
        "the control's chart holds data during Run All",
    )
    notebook.shot("chart-during-run-all", first_chart)
    notebook.wait_executed(timeout=240)
    notebook.shot("executed")

    # A fresh control, as the exercise makes one, driven through the page.
    control = notebook.add_cell_and_run(
        'control = widgets.canary_control(lab, service="currency-converter", qps=200)\ncontrol'
    )
    chart = control.locator(".js-plotly-plot")
    status = control.locator(".widget-html").filter(has_text="rollout").first  # the log view is below

    def slider(version: str) -> Locator:
        return control.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=version))

    def trace(uid: str) -> dict:
        return next((t for t in notebook.graph(chart)["traces"] if t["uid"] == uid), {"x": [], "y": []})

    def observed_v2() -> float | None:
        y = trace("observed-v2")["y"]
        return y[-1] if y else None

    def rollbacks() -> int:
        return sum("ROLLBACK" in str(text) for text in notebook.graph(chart)["annotations"])

    chart.scroll_into_view_if_needed()
    assert chart.locator("svg.main-svg").count(), "the chart is not a plotly graph"
    assert "FigureWidget(" not in control.inner_text(), "the chart fell back to its text repr"

    # Traffic on: the chart fills with the observed share (the notebook left the lab at 90/10).
    control.get_by_role("button", name="Send traffic").click()
    before = notebook.poll(observed_v2, lambda v: v is not None and v < 30, 30, "observed v2 share charted")
    notebook.shot("traffic-on")

    # v2 to 50 % with the keyboard on the slider's handle; the kernel keeps v1 at 100 - v2.
    _key_slider_to(page, slider("v2").locator(".noUi-handle"), 50)
    v1_readout = slider("v1").locator(".widget-readout")
    notebook.poll(v1_readout.inner_text, lambda text: text.strip() == "50", 15, "v1 follows to 50")
    control.get_by_role("button", name="Apply").click()
    applied = time.monotonic()
    notebook.poll(
        lambda: trace("configured-v2")["y"][-1:], lambda y: y == [50], 15, "configured 50 % charted"
    )
    after = notebook.poll(observed_v2, lambda v: abs(v - 50) <= 8, 30, "observed v2 near 50 %")
    notebook.shot("observed-50")
    print(f"observed v2 {before:.0f} % -> {after:.0f} % {time.monotonic() - applied:.1f} s after Apply")

    # v2 starts failing (as in the notebook's step 3); the rollout must put all traffic back on v1.
    notebook.add_cell_and_run('lesson.set_env(lab, "currency-converter-v2", FAIL_RATE="0.5")')
    chart.scroll_into_view_if_needed()
    errors = notebook.poll(
        lambda: trace("error-rate")["y"][-1:], lambda y: y and y[0] > 5, 30, "errors charted"
    )
    control.get_by_role("button", name="Progressive rollout").click()
    notebook.poll(rollbacks, lambda n: n == 1, 60, "a ROLLBACK mark on the chart")
    notebook.poll(status.inner_text, lambda text: "rolled back" in text, 10, "status shows the rollback")
    assert trace("configured-v2")["y"][-1] == 0, trace("configured-v2")
    assert slider("v2").locator(".noUi-handle").get_attribute("aria-valuenow") in ("0", "0.0")
    notebook.shot("rolled-back")
    print(f"rolled back with {errors[0]:.0f} % errors charted: {status.inner_text()}")
    notebook.poll(observed_v2, lambda v: v <= 2, 30, "observed v2 back to 0 %")
    notebook.shot("v2-drained")


def test_in_gateway_api_mode_the_slider_moves_the_http_route_and_the_chart_follows(
    notebook: NotebookPage, jupyterlab: JupyterLab
) -> None:
    """The control switched to the Gateway API with its toggle, in a one-cell notebook of its own (05 runs
    whole in the test above)."""
    page = notebook.page
    setup = (
        "import labkit\nfrom labkit import lesson, widgets\n\nlab = labkit.open()\n"
        'lab.ensure("canary-90-10")\n'
        'lab.apply(lesson.manifest_path("gateway-api/service-currency-converter-versions.yaml"))\n'
        'control = widgets.canary_control(lab, service="currency-converter", qps=200)\ncontrol'
    )
    own = nbformat.read(jupyterlab.root / "notebooks" / "05-live-traffic-split.ipynb", as_version=4)
    own.cells = [nbformat.v4.new_code_cell(setup)]  # 05's kernelspec, so no kernel dialog
    nbformat.write(own, jupyterlab.root / "notebooks" / "gateway-api.ipynb")
    notebook.open("notebooks/gateway-api.ipynb")
    notebook.run_all()
    notebook.wait_executed(timeout=180)
    control = page.locator(".jp-OutputArea").first
    chart = control.locator(".js-plotly-plot")
    chart.scroll_into_view_if_needed()

    def last(uid: str) -> float | None:
        trace = next((t for t in notebook.graph(chart)["traces"] if t["uid"] == uid), {"y": []})
        return trace["y"][-1] if trace["y"] else None

    control.get_by_role("button", name="Gateway API").click()  # the toggle: Apply now writes an HTTPRoute
    control.get_by_role("button", name="Send traffic").click()
    notebook.poll(lambda: last("observed-v2"), lambda v: v is not None and v < 30, 30, "observed v2 charted")
    v2 = control.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text="v2"))
    _key_slider_to(page, v2.locator(".noUi-handle"), 50)
    control.get_by_role("button", name="Apply").click()
    notebook.poll(lambda: last("configured-v2"), lambda v: v == 50, 15, "configured 50 % charted")
    notebook.poll(
        lambda: last("observed-v2"), lambda v: v is not None and abs(v - 50) <= 8, 30, "v2 near 50 %"
    )
    notebook.shot("gateway-api-50")

    routes = notebook.add_cell_and_run(
        'control.stop()\n(route,) = lab.get("httproutes", "payments-prod")\n'
        'print("HTTPRoute", [b["weight"] for b in route.spec["rules"][0]["backendRefs"]], '
        '"VirtualServices", len(lab.get("virtualservices", "payments-prod")))'
    )
    notebook.poll(routes.inner_text, lambda t: "HTTPRoute" in t, 30, "the kernel's answer")
    assert "HTTPRoute [50, 50] VirtualServices 0" in routes.inner_text()
    assert "(HTTPRoute)" in control.inner_text()  # the log line says which object the slider wrote
