"""How long ``lab.reset`` takes to bring a lab with leftovers (a fault VirtualService, a deny-all policy, v2's
FAIL_RATE) back to the canary checkpoint, and a clean lab (nothing to do), on one local lab; prints both.

    .venv/bin/python bench/bench_reset.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import labkit
from labkit import lesson, paths

LEFTOVERS = (
    "mesh/virtual-service-currency-converter-fault-abort.yaml",
    "mesh/authorization-policy-currency-converter-deny-all.yaml",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ["LAB_STATE"] = tempfile.mkdtemp(prefix="bench-reset-")
    lab = labkit.open("local")
    try:
        lab.reset("canary-90-10")
        dirty, clean = [], []
        for _ in range(args.runs):
            for rel in LEFTOVERS:
                lab.apply(paths.CLUSTER_CONFIG / rel, quiet=True)
            lesson.set_env(lab, "currency-converter-v2", FAIL_RATE="1")
            start = time.monotonic()
            lab.reset("canary-90-10")
            dirty.append(time.monotonic() - start)
            start = time.monotonic()
            lab.reset("canary-90-10")
            clean.append(time.monotonic() - start)
    finally:
        lab.down()
    runs = f"({args.runs} runs)"
    print(f"reset with leftovers: median {statistics.median(dirty):.2f} s, max {max(dirty):.2f} s {runs}")
    print(f"reset of a clean lab: median {statistics.median(clean):.2f} s, max {max(clean):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
