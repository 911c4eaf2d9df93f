"""Drive one notebook in JupyterLab through the page, as a trainee would: open, Run All, read the charts."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Locator, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from browser.server import JupyterLab

T = TypeVar("T")

#: The text of every code cell's prompt: "[ ]:" never ran, "[*]:" running or queued, "[3]:" done.
PROMPTS_JS = (
    "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent)"
)

#: What one plotly graph div holds and draws: its SVG, how many bars, and each trace's data by uid.
GRAPH_JS = """el => ({
    svg: !!el.querySelector('svg.main-svg'),
    bars: el.querySelectorAll('g.trace.bars g.point path').length,
    traces: (el.data || []).map(t => ({
        uid: t.uid, name: t.name, type: t.type, x: t.x, y: t.y, text: t.text,
    })),
    annotations: ((el.layout || {}).annotations || []).map(a => a.text),
})"""

#: Tracebacks shown in the page (JupyterLab renders errors as stderr), so a failing cell is reported at once.
ERRORS_JS = """() => [...document.querySelectorAll(".jp-OutputArea-output[data-mime-type$='stderr'],"
    + " .jp-OutputArea-output[data-mime-type$='error']")]
    .map(e => e.innerText).filter(t => t.includes('Traceback (most recent call last)'))"""


class NotebookPage:
    """One notebook open in ``page``; ``shot(name)`` saves a PNG to ``artifacts``."""

    def __init__(self, page: Page, server: JupyterLab, artifacts: Path) -> None:
        self.page = page
        self.server = server
        self.artifacts = artifacts
        self.shots: list[Path] = []

    def shot(self, name: str, element: Locator | None = None) -> Path:
        """Save the page (or just ``element``, scrolled into view) as the next numbered PNG."""
        path = self.artifacts / f"{len(self.shots) + 1:02d}-{name}.png"
        if element is not None:
            element.screenshot(path=path)
        else:
            self.page.screenshot(path=path)
        self.shots.append(path)
        return path

    def open(self, notebook: str, timeout: float = 60) -> None:
        """Open ``notebook`` (relative to the server root) in a fresh workspace; wait for an idle kernel."""
        self.page.goto(self.server.url(f"/lab/tree/{notebook}") + "&reset", timeout=timeout * 1000)
        self.page.wait_for_selector(
            ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout * 1000
        )

    def prompts(self) -> list[str]:
        return self.page.evaluate(PROMPTS_JS)

    def run_all(self, timeout: float = 60) -> None:
        """Run > Run All Cells, retried until a prompt shows the kernel took it (the "did nothing" race)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.page.locator(".jp-Notebook .jp-Cell").first.click()
            self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            self.page.locator("li[data-command='runmenu:run-all']").click()
            try:
                self.page.wait_for_function(
                    f"() => ({PROMPTS_JS})().some(p => /\\[(\\*|\\d+)\\]/.test(p))", timeout=5000
                )
                return
            except PlaywrightTimeout:
                self.page.keyboard.press("Escape")
        raise TimeoutError(f"Run All never started a cell within {timeout:.0f} s; prompts: {self.prompts()}")

    def wait_executed(self, timeout: float) -> None:
        """Wait until every code cell has an execution count; fail early on a traceback."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            errors = self.page.evaluate(ERRORS_JS)
            if errors:
                raise AssertionError("a cell failed:\n" + "\n---\n".join(errors))
            prompts = self.prompts()
            if prompts and all(re.search(r"\[\d+\]", p) for p in prompts):
                return
            self.page.wait_for_timeout(500)
        raise TimeoutError(f"cells still not executed after {timeout:.0f} s: {self.prompts()}")

    def graph(self, plot: Locator) -> dict[str, Any]:
        """The plotly graph div ``plot`` as the browser holds it (see ``GRAPH_JS``)."""
        return plot.evaluate(GRAPH_JS)

    def poll(self, probe: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str) -> T:
        """Call ``probe`` every 0.25 s until ``ok`` accepts its value; fail with the last value seen."""
        deadline = time.monotonic() + timeout
        value = probe()
        while not ok(value):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f} s; last seen: {value!r}")
            self.page.wait_for_timeout(250)
            value = probe()
        return value

    def add_cell_and_run(self, code: str, timeout: float = 60) -> Locator:
        """Insert a code cell below the last one, type ``code``, Ctrl+Enter; return its output area."""
        self.page.locator(".jp-Notebook .jp-Cell").last.locator(
            ".jp-InputArea-prompt"
        ).click()  # not a widget
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("b")
        self.page.keyboard.press("Enter")
        self.page.keyboard.insert_text(code)
        self.page.keyboard.press("Control+Enter")  # run it and stay on it
        cells = self.page.locator(".jp-Notebook .jp-CodeCell")
        cell = cells.nth(cells.count() - 1)  # pinned: later cells must not move this locator
        prompt = cell.locator(".jp-InputArea-prompt")
        self.poll(
            prompt.text_content, lambda p: bool(re.search(r"\[\d+\]", p or "")), timeout, "new cell ran"
        )
        errors = self.page.evaluate(ERRORS_JS)
        assert not errors, "the added cell failed:\n" + "\n".join(errors)
        return cell.locator(".jp-OutputArea")
