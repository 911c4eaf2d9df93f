"""Checks of what the mesh recorded: its metrics, access logs and peer identities."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from labkit import metrics as _metrics
from labkit import scenario
from labkit.checks.report import fail, passed
from labkit.mesh import load_mesh_settings

if TYPE_CHECKING:
    from labkit.lab import Lab
    from labkit.metrics import RequestCount


# --- telemetry ----------------------------------------------------------------------------------------------


def _samples(lab: Lab | Iterable[RequestCount]) -> list[RequestCount]:
    return lab.metrics() if hasattr(lab, "metrics") else list(lab)


def mutual_tls(
    lab: Lab | Iterable[RequestCount], source: str = "client", destination: str = "currency-converter"
) -> None:
    """Istio's metrics show ``source`` -> ``destination`` calls with connection_security_policy=mutual_tls."""
    calls = [
        s
        for s in _samples(lab)
        if s["reporter"] == "destination"
        and s["source_workload"] == source
        and s["destination_workload"].startswith(destination)
    ]
    secured = sum(s.value for s in calls if s["connection_security_policy"] == "mutual_tls")
    others = _metrics.group(calls, "connection_security_policy")
    if not secured or any(v for (policy,), v in others.items() if policy != "mutual_tls"):
        seen = ", ".join(f"{p}: {v:g}" for (p,), v in others.items()) or "no requests recorded"
        raise fail(
            f"{source} -> {destination} is not all mutual_tls in istio_requests_total ({seen})",
            "send traffic from the client first; `none` means plaintext: does the caller have a sidecar, "
            "and does a DestinationRule set tls.mode DISABLE?",
        )
    passed(
        f"{secured:g} requests {source} -> {destination} recorded with connection_security_policy=mutual_tls"
    )


def metrics_recorded(lab: Lab | Iterable[RequestCount], **labels: str) -> None:
    """istio_requests_total has requests matching every ``label=value`` given."""
    value = _metrics.total(_samples(lab), **labels)
    if not value:
        wanted = ", ".join(f"{k}={v}" for k, v in labels.items())
        raise fail(
            f"istio_requests_total has no requests with {wanted}",
            "send traffic first; on kind Prometheus scrapes every 15 s, so wait and run the check again",
        )
    passed(f"istio_requests_total{{{', '.join(f'{k}={v!r}' for k, v in labels.items())}}} = {value:g}")


def access_log_shows(lab: Lab, workload: str, text: str, tail: int = 200) -> None:
    """The last ``tail`` access-log lines of ``workload``'s proxy include ``text``."""
    lines = [line for line in lab.access_log(workload, tail=tail) if text in line]
    if not lines:
        raise fail(
            f"no access-log line of {workload} contains {text!r}",
            "meshConfig.accessLogFile must be /dev/stdout (cluster-config/istio/install.yaml); send "
            "traffic first",
        )
    passed(f"{len(lines)} access-log line(s) of {workload} contain {text!r}")


def access_log_filtered(
    lab: Lab, workloads: Iterable[str], marker: str, sent: Mapping[int, int], logged: Callable[[int], bool]
) -> None:
    """The access logs of ``workloads`` hold exactly the requests (their URL carries ``marker``) whose status
    ``logged`` accepts: ``sent`` counts the requests per status, as the caller saw them. A Telemetry's
    ``filter.expression`` decides which lines a proxy writes."""
    import time  # only for this check

    expected = sorted(code for code, n in sent.items() if logged(code) for _ in range(n))
    deadline = time.monotonic() + 3  # lines are flushed on a timer
    while True:
        lines = [line for w in workloads for line in lab.access_log(w, tail=500) if marker in line]
        codes = sorted(int(line.split('" ', 1)[1].split()[0]) for line in lines)
        if len(codes) >= len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if codes != expected:
        unwanted = sorted({c for c in codes if not logged(c)})
        raise fail(
            f"the access logs of {', '.join(workloads)} have {len(codes)} line(s) for these requests "
            f"({dict(Counter(codes)) or 'none'}); expected {len(expected)} ({dict(Counter(expected))})"
            + (f": lines for {unwanted} should have been filtered out" if unwanted else ""),
            "the Telemetry that selects the workload: providers [envoy], disabled not true, and "
            "accessLogging[].filter.expression (e.g. response.code >= 400); the most specific Telemetry "
            "wins (workload over namespace over the mesh's in istio-system)",
        )
    passed(f"{len(codes)} line(s) logged, only the requests the filter keeps ({dict(Counter(codes))})")


def peer_identity(lab: Lab | Iterable[RequestCount], source: str = "client", expected: str = "") -> None:
    """The server's sidecar saw ``source``'s SPIFFE identity (``source_principal``, from its mTLS cert):
    by default the lesson's ``source`` service account under the mesh's trust domain."""
    if not expected:
        namespace, _ = scenario.SOURCES.get(source, (scenario.NAMESPACE, source))
        expected = f"spiffe://{load_mesh_settings().trust_domain}/ns/{namespace}/sa/{source}"
    seen = {
        s.labels.get("source_principal", "unknown")
        for s in _samples(lab)
        if s["reporter"] == "destination" and s["source_workload"] == source
    }
    if expected not in seen:
        raise fail(
            f"the server never saw {expected} as the caller's identity "
            f"(seen: {', '.join(sorted(seen)) or 'none'})",
            "`unknown` means the call was plaintext (no client certificate): is mTLS on and does the "
            "caller have a sidecar? The identity comes from the caller's ServiceAccount",
        )
    passed(f"{source} authenticated as {expected}")
