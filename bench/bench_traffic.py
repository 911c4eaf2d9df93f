"""Max sustained request rate of labkit's load generator beside `hey` (Debian package `hey`), on the same
targets in the same run: the sample service directly, then through the local mesh's front door (the ingress
gateway -> v1/v2 over mTLS: hey dials TCP only, and the client sidecar's outbound listeners are Unix sockets
only the lab's user may open), and labkit alone through the client sidecar's socket (client -> v1/v2).

    .venv/bin/python bench/bench_traffic.py [--seconds 3] [--rounds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import labkit
from labkit import paths, traffic

URL = "http://currency-converter.payments-prod:8080/convert?from=NOK&to=EUR&amount=100"


@contextlib.contextmanager
def direct_app() -> Iterator[traffic.Resolver]:
    """The sample service on a free port, with a resolver that sends the logical URL to it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "VERSION": "v1"}
    proc = subprocess.Popen(
        [sys.executable, str(paths.SERVICE_DIR / "app.py")], env=env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        path = URL.split(":8080", 1)[1]
        yield lambda url: (
            f"http://127.0.0.1:{port}{path}",
            {"Host": "currency-converter.payments-prod:8080"},
        )
    finally:
        proc.terminate()
        proc.wait(10)


def labkit_rps(resolver: traffic.Resolver, seconds: float, concurrency: int) -> tuple[float, int]:
    result = traffic.send(resolver, URL, duration=seconds, concurrency=concurrency, progress=False)
    ok = sum(1 for o in result.outcomes if o.status == 200)
    return len(result) / result.elapsed, len(result) - ok


def hey_rps(resolver: traffic.Resolver, seconds: float, concurrency: int) -> float:
    target, headers = resolver(URL)
    host = ["-host", headers["Host"]] if "Host" in headers else []
    argv = ["hey", "-z", f"{seconds:g}s", "-c", str(concurrency), *host, target]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"could not read hey's output:\n{out}")
    return float(match.group(1))


def measure(name: str, resolver: traffic.Resolver, args: argparse.Namespace, hey: bool = True) -> None:
    """One table row. The machine is shared, so labkit and hey alternate for ``args.rounds`` rounds and the
    row shows medians: a load spike then hurts both tools, not only the one that happened to run. Without
    ``hey`` (a Unix socket), labkit alone."""
    ours, theirs, failed = [], [], 0
    for _ in range(args.rounds):
        rps, bad = labkit_rps(resolver, args.seconds, args.concurrency)
        ours.append(rps)
        failed += bad
        if hey:
            theirs.append(hey_rps(resolver, args.seconds, args.concurrency))
    note = f"  ({failed} failed)" if failed else ""
    if not theirs:
        spread = f"{min(ours):.0f}-{max(ours):.0f} / -"
        print(
            f"{name:<24} {statistics.median(ours):>13.0f} {'-':>10} {'-':>6}  {spread:>22}{note}", flush=True
        )
        return
    ratio = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
    spread = f"{min(ours):.0f}-{max(ours):.0f} / {min(theirs):.0f}-{max(theirs):.0f}"
    print(
        f"{name:<24} {statistics.median(ours):>13.0f} {statistics.median(theirs):>10.0f} {ratio:>6.2f}"
        f"  {spread:>22}{note}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("hey"):
        sys.exit("hey is not installed: apt-get install -y hey")

    print(f"concurrency {args.concurrency}, {args.rounds} alternating rounds of {args.seconds:g} s, medians")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"{'target':<24} {'labkit req/s':>13} {'hey req/s':>10} {'ratio':>6}  {'range labkit / hey':>22}")
    with direct_app() as resolver:
        measure("direct to the app", resolver, args)
    with tempfile.TemporaryDirectory() as state:
        lab = labkit.open("local", state=state)
        try:
            lab.up()
            lab.ensure("canary-90-10")
            for name in (
                "gateway-currency-converter.yaml",
                "virtual-service-currency-converter-ingress.yaml",
            ):
                lab.apply(paths.MESH / name)
            ingress = lab.resolver("ingress")  # the Gateway's port 80, whatever the Service's port
            measure("mesh via the ingress", lambda url: ingress(url.replace(":8080/", "/", 1)), args)
            measure("mesh via client sidecar", lab.resolver("client"), args, hey=False)
        finally:
            lab.down()


if __name__ == "__main__":
    main()
