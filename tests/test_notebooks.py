"""Notebook CI: every notebook runs top to bottom on the local backend (kind: ``LAB_BACKEND=kind``),
committed notebooks carry no outputs, and a lesson broken on purpose is caught by its CHECK cell with the
trainee's message.

The notebooks share one lab (one ``LAB_STATE`` per test run) and run in file order, as a trainee would; each
starts with ``lab.ensure(...)``, so any one of them also runs alone. Any ``notebooks/*.ipynb`` is collected.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from labkit import paths

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT = 180


@pytest.fixture(scope="session")
def lab_env(tmp_path_factory: pytest.TempPathFactory):
    """The kernel environment: the backend from LAB_BACKEND (default local), a lab state shared by the run.

    The lab is stopped at the end even when a notebook failed before ``10-clean-up`` ran.
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


@pytest.mark.notebooks
@pytest.mark.timeout(300)
def test_a_broken_lesson_is_caught_by_its_check_cell(lab_env) -> None:
    """Notebook 04 with the 50/50 VirtualService applied where it expects 90/10 (a trainee's wrong file):
    the CHECK cell must fail, with the message telling the trainee what to look at."""
    nb = nbformat.read(paths.NOTEBOOKS / "04-canary-90-10.ipynb", as_version=4)
    apply_at = next(i for i, c in enumerate(nb.cells) if "apply-canary" in c.metadata.get("tags", []))
    wrong = paths.CLUSTER_CONFIG / "mesh" / "virtual-service-currency-converter-50-50.yaml"
    nb.cells.insert(apply_at + 1, nbformat.v4.new_code_cell(f"lab.apply({str(wrong)!r})"))
    check_at = next(i for i, c in enumerate(nb.cells) if "check-split" in c.metadata.get("tags", []))
    nb.cells = nb.cells[: check_at + 1]  # stop at the check: the rest needs the step to have worked
    where = {"metadata": {"path": str(paths.NOTEBOOKS)}}
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources=where)
    with pytest.raises(CellExecutionError) as caught:
        client.execute(env={**os.environ, **lab_env})
    message = str(caught.value)
    assert "CheckFailed" in message
    assert "does not match the configured 90/10" in message
    assert "What to look at: which VirtualService is applied" in message
    # The broken run must not leak into the next notebook: put the lesson's state back.
    import labkit

    env = {**os.environ, **lab_env}
    if env["LAB_BACKEND"] == "local":
        from labkit.backends.local import LocalLab

        LocalLab(Path(lab_env["LAB_STATE"])).ensure("canary-90-10")
    else:
        labkit.open(env["LAB_BACKEND"]).ensure("canary-90-10")
