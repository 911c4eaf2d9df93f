"""Notebook 07 (resilience: faults, retries, timeouts, ejection) run N times in a row on one local lab, as a
room of trainees would: prints each run's result and time, then how many passed (the statistical checks are
built at the lab's one level, labkit.stats.CONFIDENCE).

    .venv/bin/python bench/bench_notebook07.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from labkit import paths

NOTEBOOK = paths.NOTEBOOKS / "07-resilience.ipynb"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-07-"))
    env = {**os.environ, "LAB_BACKEND": "local", "LAB_STATE": str(state)}
    passed, times = 0, []
    try:
        for run in range(1, args.runs + 1):
            nb = nbformat.read(NOTEBOOK, as_version=4)
            client = NotebookClient(
                nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(paths.NOTEBOOKS)}}
            )
            start = time.monotonic()
            try:
                client.execute(env=env)
                verdict = "passed"
                passed += 1
            except CellExecutionError as exc:
                verdict = "FAILED: " + str(exc).strip().splitlines()[-1][:300]
            times.append(time.monotonic() - start)
            print(f"run {run:2d}: {times[-1]:5.1f} s  {verdict}", flush=True)
    finally:
        from labkit.backends.local import LocalLab

        LocalLab(state).down()
    print(f"notebook 07: {passed}/{args.runs} runs passed in a row, {sum(times) / len(times):.1f} s per run")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
