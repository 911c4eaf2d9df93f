"""What a sidecar costs, measured by the trainee (notebook 11): one request path three ways (no sidecar, the
server's sidecar only, client and server sidecars with mutual TLS) at fixed rates, open loop, with the CPU and
memory each proxy used, beside Istio's published figures.

The figures come from a shared machine, so this module also says whether a measurement is *sound* (enough
requests per point, the asked rate reached, no errors: ``problems``); it never judges the machine's speed.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from labkit import scenario
from labkit.errors import LabError

if TYPE_CHECKING:
    from labkit.lab import Lab
    from labkit.traffic import TrafficResult

#: Istio's own figures (istio.io, docs/ops/deployment/performance-and-scalability, Istio 1.24): a sidecar with
#: 2 worker threads serving 1,000 HTTP requests/s of 1 KB payloads uses about 0.20 vCPU and 60 MB.
ISTIO_VCPU_PER_1000_RPS, ISTIO_MB = 0.20, 60
ISTIO_PAGE = "https://istio.io/latest/docs/ops/deployment/performance-and-scalability/"

#: A point needs this many requests: its p99 then rests on at least two requests beyond it.
MIN_REQUESTS = 200
#: A point counts only if at least this share of its scheduled requests was sent (open loop ends on time).
RATE_TOLERANCE = 0.05
PERCENTILES = (50, 90, 99)

DIRECT, SERVER, BOTH = "no sidecar", "server sidecar only", "client + server sidecars, mTLS"
#: The PeerAuthentication each path needs: a plaintext caller reaches the server's sidecar only if it is
#: PERMISSIVE; the two-sidecar path is measured under STRICT, as the lab runs it.
PERMISSIVE, STRICT = "mesh/peer-authentication-permissive.yaml", "mesh/peer-authentication-strict.yaml"


@dataclass(frozen=True)
class Mode:
    """How much to measure: CI's small mode (``LAB_QUICK=1``) or the full table."""

    fractions: tuple[float, ...]  # table rates, as fractions of the sustained rate
    repeats: int
    seconds: float  # per point (longer when MIN_REQUESTS needs it)
    ceiling: float  # the search for the sustained rate stops here

    @classmethod
    def from_env(cls) -> Mode:
        """``LAB_QUICK=1`` (set by notebook CI): two rates, two repeats, one second each."""
        if os.environ.get("LAB_QUICK", "") not in ("", "0"):
            return cls(fractions=(0.25, 0.5), repeats=2, seconds=1.0, ceiling=800)
        return cls(fractions=(0.2, 0.4, 0.6), repeats=5, seconds=4.0, ceiling=5000)


class Meter(Protocol):
    """One proxy's usage so far: CPU seconds, and memory in MB now (local: its process's resident set via
    psutil; kind: its container's cgroup working set, labkit/kind/usage.py)."""

    def usage(self) -> tuple[float, float]: ...


@dataclass(frozen=True)
class Path:
    """One way to the app: how to send at a rate, which proxies it crosses, which mTLS mode it needs."""

    name: str
    send: Callable[[float, float], TrafficResult]  # (rate, seconds) -> the run's outcomes
    proxies: dict[str, Meter] = field(default_factory=dict)  # label -> how to read that proxy's usage
    peer_authentication: str = STRICT


@dataclass
class Point:
    """One run of one path at one rate, and what its proxies used meanwhile."""

    path: str
    rate: float
    seconds: float
    repeat: int
    result: TrafficResult
    cpu: dict[str, float] = field(default_factory=dict)  # proxy label -> CPU seconds during the run
    rss_mb: dict[str, float] = field(default_factory=dict)  # proxy label -> its memory after it (Meter)

    @property
    def scheduled(self) -> int:
        return math.ceil(self.rate * self.seconds)

    @property
    def achieved(self) -> float:
        """Requests sent per second of the run. Open loop sends each on its schedule (late if the caller's
        connections are busy) and none after ``seconds``, so a path that cannot keep up leaves requests
        unsent; the last answer's latency is not part of the rate (it is in the percentiles), or one slow
        answer at the end of a 1 s run would count as a 5 % shortfall."""
        return len(self.result) / self.seconds

    @property
    def errors(self) -> dict[int | str, int]:
        return {k: v for k, v in self.result.codes().items() if k != 200}

    def ms(self) -> dict[int, float]:
        """p50/p90/p99 of the answered requests, in milliseconds (open loop: from the scheduled time)."""
        import numpy as np  # imported here: numpy is heavy and the module is imported by checks

        values = [o.latency for o in self.result.outcomes if o.status == 200]
        if not values:
            return {p: math.nan for p in PERCENTILES}
        return dict(zip(PERCENTILES, (np.percentile(values, PERCENTILES) * 1000).tolist(), strict=True))

    def __repr__(self) -> str:
        head = f"<Point {self.path} at {self.rate:.0f} rps, run {self.repeat + 1}"
        return f"{head}: {len(self.result)} requests, p99 {self.ms()[99]:.1f} ms>"

    def vcpu_per_1000(self, proxy: str) -> float:
        """CPU the proxy used, in vCPU per 1,000 requests per second (Istio's unit): CPU seconds per
        request, times 1,000."""
        return self.cpu[proxy] / len(self.result) * 1000 if len(self.result) else math.nan


def problems(points: Iterable[Point]) -> list[str]:
    """Why a measurement cannot be trusted: too few requests, the rate not reached, errors. Empty: sound."""
    out = []
    for p in points:
        where = f"{p.path} at {p.rate:.0f} rps (run {p.repeat + 1})"
        if len(p.result) < MIN_REQUESTS:
            out.append(f"{where}: {len(p.result)} requests, fewer than the {MIN_REQUESTS} a p99 needs")
        if p.achieved < (1 - RATE_TOLERANCE) * p.rate:
            out.append(
                f"{where}: reached {p.achieved:.0f} rps, more than {RATE_TOLERANCE:.0%} short of the asked "
                f"rate ({len(p.result)} of {p.scheduled} requests sent in its {p.seconds:.1f} s)"
            )
        if p.errors:
            out.append(f"{where}: {sum(p.errors.values())} errors {p.errors}")
    return out


def measure(path: Path, rate: float, seconds: float, repeat: int = 0) -> Point:
    """Send ``rate`` rps on ``path`` for ``seconds`` (longer if needed for MIN_REQUESTS)."""
    seconds = max(seconds, MIN_REQUESTS / rate)
    before = {k: meter.usage()[0] for k, meter in path.proxies.items()}
    result = path.send(rate, seconds)
    after = {k: meter.usage() for k, meter in path.proxies.items()}
    cpu = {k: used - before[k] for k, (used, _) in after.items()}
    return Point(path.name, rate, seconds, repeat, result, cpu, {k: mb for k, (_, mb) in after.items()})


@dataclass(frozen=True)
class _Process:
    """A local Envoy's process (psutil): CPU time and resident memory."""

    process: Any

    def usage(self) -> tuple[float, float]:
        times = self.process.cpu_times()
        return float(times.user + times.system), self.process.memory_info().rss / 2**20


def sustained_rate(path: Path, mode: Mode, start: float = 100) -> tuple[float | None, list[Point]]:
    """Double the rate from ``start`` until a point is not sound (rate missed or errors) or ``mode.ceiling``
    is passed; the last sound rate, or None if even ``start`` was not, and every probe. Each probe lasts as
    long as a table point: a rate held for one second may not hold for four."""
    rate, best, probes = start, None, []
    while rate <= mode.ceiling:
        point = measure(path, rate, mode.seconds)
        probes.append(point)
        if problems([point]):
            break
        best, rate = rate, rate * 2
    return best, probes


def table_rates(sustained: float, mode: Mode) -> list[float]:
    """The table's rates: fractions of the sustained rate, rounded to 10 rps."""
    return sorted({max(10.0, round(sustained * f, -1)) for f in mode.fractions})


def run(lab: Lab, paths: Sequence[Path], rates: Sequence[float], mode: Mode) -> list[Point]:
    """Every path at every rate, ``mode.repeats`` times. Paths alternate within a round, so a load spike on
    the shared machine hurts all of them, not the one that happened to run then."""
    from labkit import lesson  # imported here: the notebook layer's helpers, used only when measuring

    points: list[Point] = []
    current = None
    try:
        for repeat in range(mode.repeats):
            for path in sorted(paths, key=lambda p: p.peer_authentication != PERMISSIVE):  # fewer applies
                if path.peer_authentication != current:
                    lab.apply(lesson.manifest_path(path.peer_authentication), quiet=True)
                    current = path.peer_authentication
                points += [measure(path, rate, mode.seconds, repeat) for rate in rates]
    finally:  # also after Ctrl-C: the lab runs STRICT, as the lessons expect
        if current not in (None, STRICT):
            lab.apply(lesson.manifest_path(STRICT), quiet=True)
    return points


def with_and_without(
    lab: Lab, path: Path, rate: float, mode: Mode, change: str | dict, label: str
) -> list[Point]:
    """``path`` at ``rate`` as the lab runs, and with ``change`` applied (a cluster-config file name or a
    manifest dict; its points are named ``"<path> (<label>)"``), alternating per round; ``change`` is deleted
    again at the end."""
    from labkit import lesson  # imported here: the notebook layer's helpers, used only when measuring

    source = lesson.manifest_path(change) if isinstance(change, str) else change
    changed = replace(path, name=f"{path.name} ({label})")
    points = []
    try:
        for repeat in range(mode.repeats):
            points.append(measure(path, rate, mode.seconds, repeat))
            lab.apply(source, quiet=True)
            points.append(measure(changed, rate, mode.seconds, repeat))
            lab.delete(source, quiet=True)
    finally:
        lab.delete(source, quiet=True)
    return points


# --- the three paths, per backend --------------------------------------------------------------------------


def paths(lab: Lab, url: str = scenario.URL, concurrency: int = 16) -> list[Path]:
    """The paths this backend can measure, open loop, with each proxy's usage. Local: all three. Kind: the
    load tool runs inside the caller's pod, and every pod of the app has a sidecar, so only the two mesh
    paths; each proxy read from its container's cgroup (labkit/kind/usage.py)."""
    if lab.backend != "local":
        return _kind_paths(lab, url, concurrency)
    return _local_paths(lab, url, concurrency)


def _kind_paths(lab: Any, url: str, concurrency: int) -> list[Path]:
    """From the legacy pod (no sidecar) and from the client's, both to v1's pod (the lesson routes every
    request there), load.py open loop at the asked rate."""
    from labkit.kind import usage  # imported here: only the kind backend's measurement reads cgroups

    def in_pod(source: str) -> Callable[[float, float], TrafficResult]:
        return lambda rate, s: lab.send(url, duration=s, qps=rate, open_loop=True, concurrency=concurrency,
                                        source=source, progress=False)  # fmt: skip

    v1 = f"{scenario.SERVICE}-{scenario.BASELINE}"
    server: dict[str, Meter] = {"server sidecar": usage.sidecar(lab.kube, lab.target, scenario.NAMESPACE, v1)}
    client_ns, client = scenario.SOURCES["client"]
    both = {"client sidecar": usage.sidecar(lab.kube, lab.target, client_ns, client), **server}
    return [Path(SERVER, in_pod("legacy"), server, PERMISSIVE), Path(BOTH, in_pod("client"), both)]


def _local_paths(lab: Any, url: str, concurrency: int) -> list[Path]:
    """Direct to v1's app (its Unix socket: only its sidecar and the lab's user reach it), to v1's sidecar
    inbound port (plaintext), and through the client's sidecar (with every request routed to v1, so all three
    reach the same process)."""
    # imported here: only the local backend's measurement reads processes (keeps `import labkit` fast)
    import psutil

    from labkit import traffic
    from labkit.local import processes
    from labkit.local.supervisor import envoy_name

    topo = lab._require_up()
    v1 = next(i for i in topo.instances if i.workload.name == f"{scenario.SERVICE}-{scenario.BASELINE}")
    client = next(p for p in topo.sidecars if p.workload == "client")
    inbound = next(iter(v1.proxy.inbound_ports.values()))
    parts = urlsplit(url)
    rest = parts.path + (f"?{parts.query}" if parts.query else "")

    def to(where: int | str) -> traffic.Resolver:
        target = where if isinstance(where, str) else f"http://127.0.0.1:{where}{rest}"
        return lambda _: (target, {"Host": parts.netloc})

    def sender(resolver: traffic.Resolver) -> Callable[[float, float], TrafficResult]:
        return lambda rate, s: traffic.send(resolver, url, duration=s, qps=rate, open_loop=True,
                                            concurrency=concurrency, progress=False)  # fmt: skip

    def process(proxy: Any) -> psutil.Process:
        rec = processes.record(lab.files.run_dir, envoy_name(proxy))
        if rec is None or not processes.is_alive(rec):
            raise LabError(f"the Envoy of {proxy.id} is not running; lab.up() restarts it")
        return psutil.Process(rec.pid)

    server: dict[str, Meter] = {"server sidecar": _Process(process(v1.proxy))}
    return [
        Path(DIRECT, sender(to(v1.url(rest))), peer_authentication=PERMISSIVE),
        Path(SERVER, sender(to(inbound)), server, peer_authentication=PERMISSIVE),
        Path(BOTH, sender(lab.resolver("client")), {"client sidecar": _Process(process(client)), **server}),
    ]


# --- what the trainee reads --------------------------------------------------------------------------------


def _spread(values: Sequence[float], digits: int = 2) -> str:
    """median [min, max] over the repeats."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def latency_rows(points: Sequence[Point]) -> list[dict[str, str]]:
    """One row per path and rate: achieved rate, p50/p90/p99 in ms as median [min, max] over the repeats."""
    rows = []
    for (path, rate), group in _groups(points).items():
        figures = [p.ms() for p in group]
        row = {"path": path, "rate": f"{rate:.0f}", "achieved": _spread([p.achieved for p in group], 0)}
        row |= {f"p{q} ms": _spread([f[q] for f in figures]) for q in PERCENTILES}
        rows.append(row)
    return rows


def added_rows(points: Sequence[Point], baseline: str = DIRECT) -> list[dict[str, str]]:
    """Latency each mesh path adds over ``baseline``, paired by repeat (runs of the same round)."""
    groups, rows = _groups(points), []
    for (path, rate), group in groups.items():
        base = {p.repeat: p.ms() for p in groups.get((baseline, rate), [])}
        if path == baseline or not base:
            continue
        deltas = {q: [p.ms()[q] - base[p.repeat][q] for p in group if p.repeat in base] for q in PERCENTILES}
        rows.append({"path": path, "rate": f"{rate:.0f}"} | {f"+p{q} ms": _spread(deltas[q]) for q in deltas})
    return rows


def resource_rows(points: Sequence[Point]) -> list[dict[str, str]]:
    """Per proxy and rate: vCPU per 1,000 rps and memory, beside Istio's figures."""
    rows = []
    for (path, rate), group in _groups(points).items():
        for proxy in group[0].cpu:
            rows.append({
                "path": path,
                "proxy": proxy,
                "rate": f"{rate:.0f}",
                "vCPU per 1,000 rps": _spread([p.vcpu_per_1000(proxy) for p in group]),
                "Istio's vCPU": f"{ISTIO_VCPU_PER_1000_RPS:.2f}",
                "memory MB": _spread([p.rss_mb[proxy] for p in group], 0),
                "Istio's MB": f"{ISTIO_MB}",
            })  # fmt: skip
    return rows


def _groups(points: Sequence[Point]) -> dict[tuple[str, float], list[Point]]:
    out: dict[tuple[str, float], list[Point]] = {}
    for p in points:
        out.setdefault((p.path, p.rate), []).append(p)
    return out


def table(rows: list[dict[str, str]], title: str = "") -> Any:
    """A plotly table of ``rows`` (pandas is not a dependency)."""
    import plotly.graph_objects as go  # imported here: plotly is only needed to show the figures

    if not rows:
        return go.Figure(layout={"title": f"{title} (nothing measured)"})
    columns = list(rows[0])
    cells = [[r[c] for r in rows] for c in columns]
    height = 60 + 28 * (len(rows) + 1) + (30 if title else 0)
    fig = go.Figure(go.Table(header={"values": columns}, cells={"values": cells}))
    fig.update_layout(title=title or None, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def chart(points: Sequence[Point], percentile: int = 99) -> Any:
    """Latency at ``percentile`` against the asked rate, one line per path; bars span the repeats."""
    import plotly.graph_objects as go  # imported here: plotly is only needed to show the figures

    fig = go.Figure()
    by_path: dict[str, dict[float, list[float]]] = {}
    for p in points:
        by_path.setdefault(p.path, {}).setdefault(p.rate, []).append(p.ms()[percentile])
    for path, by_rate in by_path.items():
        rates = sorted(by_rate)
        mid = [statistics.median(by_rate[r]) for r in rates]
        fig.add_trace(
            go.Scatter(
                x=rates, y=mid, name=path, mode="lines+markers", uid=path,
                error_y={"type": "data", "symmetric": False,
                         "array": [max(by_rate[r]) - m for r, m in zip(rates, mid, strict=True)],
                         "arrayminus": [m - min(by_rate[r]) for r, m in zip(rates, mid, strict=True)]},
            )
        )  # fmt: skip
    fig.update_layout(
        title=f"p{percentile} latency per path (median of the repeats; bars: min–max)",
        xaxis_title="asked rate (requests/s)",
        yaxis_title=f"p{percentile} latency (ms)",
    )
    return fig
