"""CPU seconds a fresh process spends importing labkit.validation and validating, cold (empty schema cache:
the Istio schemas are generated from the models) and warm (read from the cache), for the two calls the lab
makes: one VirtualService against the apps (``lab.apply``), and the apps themselves (``lab.up``; Kubernetes
kinds only, so they never need the Istio schemas and cold matches warm).

    .venv/bin/python bench/bench_validation.py [--runs 5]

CPU time (user + system, of the child process), not wall time: on a shared machine wall time mostly
measures the neighbours.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile

CASES = {
    "VirtualService + apps context": (
        "from labkit import manifests, paths, validation\n"
        "vs = manifests.canary_virtual_service('currency-converter', {'v1': 90, 'v2': 10})\n"
        "validation.validate(manifests.load(vs), context=manifests.load(paths.APPS))\n"
    ),
    "apps (Kubernetes kinds)": (
        "from labkit import manifests, paths, validation\nvalidation.check(manifests.load(paths.APPS))\n"
    ),
}


def cpu_seconds(code: str, cache: str) -> float:
    """User + system CPU seconds of a fresh Python process running ``code`` with LAB_CACHE=``cache``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "LAB_CACHE": cache}, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm runs per case (the median is printed)")
    args = parser.parse_args()
    print(f"{'fresh process':32} {'cold':>8} {'warm':>8}   (CPU seconds)")
    print(f"{'python -c pass':32} {'':8} {statistics.median(cpu_seconds('pass', '') for _ in range(3)):8.2f}")
    for name, code in CASES.items():
        with tempfile.TemporaryDirectory() as cache:
            cold = cpu_seconds(code, cache)
            warm = statistics.median(cpu_seconds(code, cache) for _ in range(args.runs))
        print(f"{name:32} {cold:8.2f} {warm:8.2f}")


if __name__ == "__main__":
    main()
