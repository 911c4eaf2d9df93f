"""Notebook CI: every notebook runs top to bottom on the local backend (kind: ``LAB_BACKEND=kind``),
committed notebooks carry no outputs, and a lesson broken on purpose is caught by its CHECK cell with the
trainee's message.

The notebooks share one lab (one ``LAB_STATE`` per test run) and run in file order, as a trainee would; each
starts with ``lab.ensure(...)``, so any one of them also runs alone. Any ``notebooks/*.ipynb`` is collected.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from labkit import paths
from labkit.nbtest import strip_widget_state

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT = 180


@pytest.fixture(scope="session")
def lab_env(tmp_path_factory: pytest.TempPathFactory):
    """The kernel environment: the backend from LAB_BACKEND (default local), a lab state shared by the run.

    The lab is stopped at the end even when a notebook failed before ``22-clean-up`` ran.
    """
    backend = os.environ.get("LAB_BACKEND", "local")
    state = os.environ.get("LAB_STATE") or str(tmp_path_factory.mktemp("lab-state"))
    # LAB_QUICK=1: lessons that measure (11) run their small mode; LAB_QUICK=0 runs the full tables.
    env = {"LAB_BACKEND": backend, "LAB_STATE": state, "LAB_QUICK": os.environ.get("LAB_QUICK", "1")}
    yield env
    if backend == "local":
        from labkit.backends.local import LocalLab

        LocalLab(Path(state)).down()


@pytest.mark.notebooks
@pytest.mark.timeout(900)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(notebook: Path, nb_regression, lab_env) -> None:
    """pytest-notebook executes it; a failing CHECK cell raises CellExecutionError and fails the test."""
    nb_regression.exec_env = lab_env
    nb_regression.exec_cwd = str(paths.NOTEBOOKS)
    nb_regression.exec_timeout = CELL_TIMEOUT
    nb_regression.post_processors = ("coalesce_streams", "strip_widget_state")
    # Committed notebooks carry no outputs: compare the sources only, never what the cells printed.
    nb_regression.diff_ignore = (
        "/cells/*/outputs",
        "/cells/*/execution_count",
        "/cells/*/metadata/execution",
        "/metadata/language_info",
        "/metadata/widgets",
    )
    nb_regression.check(str(notebook))


def test_committed_notebooks_carry_no_outputs() -> None:
    assert NOTEBOOKS, "no notebooks found in notebooks/"
    dirty = []
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
                dirty.append(f"{path.name} cell {i}")
        if "widgets" in nb.metadata:
            dirty.append(f"{path.name} metadata.widgets")
    assert not dirty, f"strip outputs before committing (.venv/bin/nbstripout notebooks/*.ipynb): {dirty}"


#: Notebooks whose kubectl/istioctl steps are answered on every backend (issue #11/#13; others follow).
ANSWERED_EVERYWHERE = ("02", "03", "06", "07", "08", "09")


def test_each_kubectl_step_gets_the_labs_own_answer_on_every_backend() -> None:
    """A ``lesson.command`` cell only prints its line on the local backend (no Kubernetes): beside it the
    cell asks the lab the same question (``lab.get``, ``lab.proxy_config``, ``lab.mtls_mode`` ...), so no
    step is skipped; and no cell is kind-only."""
    import re

    unanswered = []
    for path in (p for p in NOTEBOOKS if p.name[:2] in ANSWERED_EVERYWHERE):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            asks = re.findall(r"\blab\.(\w+)\(", cell.source)
            if "lesson.command(" in cell.source and not asks or "kind_only" in cell.source:
                unanswered.append(f"{path.name} cell {i}")
    assert not unanswered, f"kubectl/istioctl steps answered only on kind: {unanswered}"


def test_every_notebook_has_the_lesson_parts() -> None:
    """Title, goals, time, a CHECK cell, an exercise with a collapsed solution, troubleshooting, nav bar."""
    for path in NOTEBOOKS:
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        parts = (
            "# ",
            "Learning goals",
            "Time:",
            "CHECK",
            "<details>",
            "Troubleshooting",
            "<!--NAVIGATION-->",
        )
        for part in parts:
            assert part in text, f"{path.name} lacks {part!r}"
        assert "checks." in text, f"{path.name} has no check call"


def _client(nb: nbformat.NotebookNode, **options) -> NotebookClient:
    where = {"metadata": {"path": str(paths.NOTEBOOKS)}}
    return NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources=where, **options)


def _cell(nb: nbformat.NotebookNode, text: str) -> int:
    """The index of the one cell whose source contains ``text``."""
    hits = [i for i, c in enumerate(nb.cells) if text in c.source]
    assert len(hits) == 1, f"{text!r} is in cells {hits}"
    return hits[0]


#: (notebook, the cell after which the lesson is broken, the breaking code, the CHECK cell, what it must say)
BROKEN = [
    (
        "04-canary-90-10",
        "print(*lab.apply(vs)",
        "lab.apply(lesson.manifest_path('mesh/virtual-service-currency-converter-50-50.yaml'))",
        "checks.split_matches(result",
        ["does not match the configured 90/10", "What to do: look at which VirtualService is applied"],
    ),
    (
        "07-resilience",
        'retry = lesson.show("mesh/virtual-service-currency-converter-timeout-retry.yaml")',
        "retry = lesson.manifest_path('mesh/virtual-service-currency-converter-90-10.yaml')  # no retries",
        "checks.error_share_at_most(with_retry",
        ["NOT consistent with at most 0.62%", "What to do: look at the applied VirtualService's retries"],
    ),
    (
        "03-strict-mtls",
        "print(*lab.apply(strict)",
        "lab.apply(permissive)\nlegacy_after = lab.send(lesson.URL, n=20, source='legacy')",
        "checks.refused(legacy_after",
        ["still got a 2xx", "mTLS is not STRICT", "Also possible: leftover configuration"],
    ),
    (
        "03-strict-mtls",
        'pod_urls = lab.pod_urls("currency-converter-v1")',
        "lab.apply(permissive)  # the pod's inbound port then answers plaintext",
        "checks.direct_dials_refused(lab",
        ["directly", "still got a 2xx", "mTLS is not STRICT"],
    ),
    (
        "08-zero-trust",
        'lesson.show("mesh/authorization-policy-currency-converter-deny-all.yaml")',
        "deny = lesson.manifest_path('mesh/authorization-policy-currency-converter-allow-client.yaml')",
        "checks.forbidden(denied",
        ["expected 403 (RBAC: access denied)", "Response flags seen:"],
    ),
    (
        "16-ingress-and-secure-ingress",
        "print(*lab.apply(ingress_route)",
        "lab.delete(ingress)  # the Gateway beside the routes, not beside the gateway's Service\n"
        "for src in (ingress, ingress_route):\n"
        "    lab.apply(src.read_text().replace('namespace: istio-system', 'namespace: payments-prod'))\n"
        "via_gateway_api = lab.send(EDGE, n=20, source='ingress')",
        "checks.all_ok(via_gateway_api)",
        ["20 of 20 requests to currency-converter failed"],
    ),
    (
        "09-observability",
        "print(proxy_status_table(lab.proxy_status()))",
        "import os, signal\nfrom labkit.local import processes\n"
        "os.kill(processes.record(lab.files.run_dir, 'istiod').pid, signal.SIGKILL)  # istiod dies",
        "checks.proxies_synced(lab)",
        ["not every proxy runs the newest config", "(not connected)", "lab.status() names a proxy"],
    ),
]


@pytest.mark.notebooks
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("name", "after", "breaking", "check", "says"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_lesson_is_caught_by_its_check_cell(lab_env, name, after, breaking, check, says) -> None:
    """A trainee's mistake inserted in the lesson (the wrong file, a missing step): the CHECK cell must fail,
    with the message telling the trainee what to look at. The next notebook's setup puts the lab back."""
    nb = nbformat.read(paths.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nb.cells.insert(_cell(nb, after) + 1, nbformat.v4.new_code_cell(breaking))
    nb.cells = nb.cells[: _cell(nb, check) + 1]  # stop at the check: the rest needs the step to have worked
    with pytest.raises(CellExecutionError) as caught:
        _client(nb).execute(env={**os.environ, **lab_env})
    message = str(caught.value)
    assert "CheckFailed" in message
    for text in says:
        assert text in message


def _midway(nb: nbformat.NotebookNode) -> tuple[int, float]:
    """Where a trainee interrupts: a rollout in progress (05), else a long send inserted after the middle
    code cell, with the fixed state the lesson has there. Returns the cell and its time budget."""
    rollouts = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "rollout(wait=True" in c.source
    ]
    if rollouts:
        return rollouts[0], 6.0
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    at = code[len(code) // 2] + 1
    nb.cells.insert(
        at, nbformat.v4.new_code_cell("lab.send(lesson.URL, duration=120, qps=20, progress=False)")
    )
    return at, 3.0


PAIRS = list(zip(NOTEBOOKS[2:-1], NOTEBOOKS[3:], strict=True))  # 02 -> 03 ... 21 -> 22-clean-up


@pytest.mark.notebooks
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("interrupted", "following"), PAIRS, ids=[f"{a.stem[:2]}-then-{b.stem[:2]}" for a, b in PAIRS]
)
def test_after_a_notebook_interrupted_midway_the_next_one_passes(lab_env, interrupted, following) -> None:
    """The kernel is interrupted (nbclient: the cell's time budget runs out) in the middle of a notebook,
    with its configuration half done (a fault, a policy, a FAIL_RATE, a rollout's traffic); the next notebook
    must still pass top to bottom: its first cell resets the lab."""
    env = {**os.environ, **lab_env}
    nb = nbformat.read(interrupted, as_version=4)
    at, budget = _midway(nb)
    nb.cells = nb.cells[: at + 1]
    timeouts = {id(nb.cells[at]): budget}
    client = _client(nb, interrupt_on_timeout=True, allow_errors=True)
    client.timeout_func = lambda cell: timeouts.get(id(cell), CELL_TIMEOUT)
    client.execute(env=env)
    errors = [o for o in nb.cells[at].outputs if o.output_type == "error"]
    assert [o.ename for o in errors] == ["KeyboardInterrupt"], f"{interrupted.name}: not interrupted"
    _client(nbformat.read(following, as_version=4)).execute(env=env)  # raises CellExecutionError on a failure


def test_the_run_s_statistical_checks_fit_the_false_failure_budget() -> None:
    """stats.CONFIDENCE is set so that CHECKS_PER_RUN checks fail a correct CI run under 1 in 1,000; this
    module's run executes the notebooks' statistical checks this many times, 30 of that budget at most (the
    rest is the test modules' measured splits; see labkit/stats.py)."""
    from labkit import stats

    statistical = (
        "checks.split_matches(",
        "checks.status_share(",
        "checks.slow_share(",
        "checks.error_share_at_most(",
    )
    count = sum(
        c.source.count(name)
        for path in NOTEBOOKS
        for c in nbformat.read(path, as_version=4).cells
        if c.cell_type == "code"
        for name in statistical
    )
    assert (
        count == 11
    )  # 04: 2, 05: 2 (Istio API, Gateway API), 07: 4, 10: 2, 20: 1 (the contents page, checks.py)
    in_a_run = (
        count  # every notebook top to bottom
        + count  # every notebook after 02 again, each after an interrupted one
        + 3  # the interrupted halves: 05's split before its rollout, 07's abort and delay shares
        + 3  # the broken lessons: 07's three shares before its failing retry check (04, 20 fail on purpose)
        + 4  # the HTML exports of 04 and 05, two each
    )
    assert in_a_run <= 35  # of stats.CHECKS_PER_RUN: the rest is the test modules' measured splits
    assert stats.CHECKS_PER_RUN * (1 - stats.CONFIDENCE) <= 0.001 + 1e-12


EXPORTED = ["04-canary-90-10", "05-live-traffic-split", "09-observability"]


@pytest.mark.notebooks
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    not shutil.which("chromium"), reason="needs Debian's chromium for the images (make system-deps)"
)
@pytest.mark.parametrize("name", EXPORTED)
def test_an_html_export_of_the_executed_notebook_shows_its_charts_as_images(lab_env, name, tmp_path) -> None:
    """nbconvert's HTML (what a handout is made from) shows a figure only as an image: every chart cell must
    carry one, and the saved notebook stays small (no plotly.js bundle in it)."""
    from nbconvert import HTMLExporter

    nb = nbformat.read(paths.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    _client(nb).execute(env={**os.environ, **lab_env, "LAB_STATIC_FIGURES": "1"})  # executed for a handout
    charts = [
        c
        for c in nb.cells
        if c.cell_type == "code" and any("image/png" in o.get("data", {}) for o in c.outputs)
    ]
    wanted = [
        c for c in nb.cells if c.cell_type == "code" and ("viz." in c.source or "snapshot()" in c.source)
    ]
    assert charts and len(charts) == len(wanted), [c.source for c in wanted]
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert html.count('src="data:image/png;base64,') >= len(wanted)
    # Saved as JupyterLab saves it (widget state is not saved by default: anywidget's state would hold the
    # 5 MB plotly.js bundle of each FigureWidget), the outputs add no plotly.js either: data and a PNG only.
    strip_widget_state(nb, {})
    saved = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, saved)
    assert saved.stat().st_size < 1_000_000, "an executed notebook should not embed plotly.js"


def test_each_notebook_links_to_the_one_before_and_after_it() -> None:
    """The lessons are one path: each notebook's "<" link names the previous file, its ">" link the next."""
    import re

    for before, path, after in zip([None, *NOTEBOOKS[:-1]], NOTEBOOKS, [*NOTEBOOKS[1:], None], strict=True):
        text = path.read_text()
        back = re.findall(r"\[< [^]]*\]\((\d\d-[\w-]+\.ipynb)\)", text)
        ahead = re.findall(r"\[[^]]* >\]\((\d\d-[\w-]+\.ipynb)\)", text)
        assert set(back) == ({before.name} if before else set()), path.name
        assert set(ahead) == ({after.name} if after else set()), path.name
