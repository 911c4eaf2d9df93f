"""The CHECK functions of notebooks 12-15, 18 and 19 on recorded data: each passes on a working lesson's
numbers and fails, with its "What to do: look at ...", on a broken one's (the same checks run on real traffic
in the notebooks)."""

from __future__ import annotations

import pytest

from labkit import checks
from labkit.errors import CheckFailed
from labkit.traffic import Outcome, TrafficResult


def result(*codes: tuple[int | None, str | None, int]) -> TrafficResult:
    """Outcomes from (status, flags, how many)."""
    outcomes = [
        Outcome(0.0, s, "v1", 0.01, None if s else "connection reset", f)
        for s, f, k in codes
        for _ in range(k)
    ]
    return TrafficResult(outcomes)


class Recorded:
    """A lab's read side, as recorded: an access log and the proxy's counters."""

    def __init__(self, log: list[str] | None = None, overflow: int = 0):
        self.log, self.overflow = log or [], overflow

    def access_log(self, workload: str, tail: int = 50) -> list[str]:
        return self.log[-tail:]

    def proxy_stats(self, workload: str, contains: str = "") -> dict[str, int]:
        return {
            "cluster.outbound|8080|v1|cc.ns.svc.cluster.local;.upstream_rq_pending_overflow": self.overflow
        }


def test_circuit_breaker_trips_prints_codes_per_level_like_fortio(capsys):
    checks.circuit_breaker_trips({1: result((200, None, 30)), 3: result((200, None, 18), (503, "UO", 12))})
    out = capsys.readouterr().out
    assert "-c 1: 30 calls  Code 200 : 30 (100.0%)" in out
    assert "-c 3: 30 calls  Code 200 : 18 (60.0%)  Code 503 : 12 (40.0%)" in out
    assert "12 turned away with 503 UO" in out


@pytest.mark.parametrize(
    ("levels", "says"),
    [
        ({1: result((200, None, 30)), 3: result((200, None, 30))}, "the circuit breaker did not trip"),
        (
            {1: result((200, None, 29), (503, "UO", 1)), 3: result((503, "UO", 30))},
            "at concurrency 1 not every",
        ),
        (
            {1: result((200, None, 30)), 3: result((503, "UH", 5), (503, "UO", 5))},
            "failed otherwise than 503 UO",
        ),
    ],
)
def test_circuit_breaker_trips_fails_without_overflow_or_with_other_errors(levels, says):
    with pytest.raises(CheckFailed, match=says) as caught:
        checks.circuit_breaker_trips(levels)
    assert "connectionPool" in str(caught.value)


def test_overflow_counted_compares_the_proxy_counter_with_the_calls():
    runs = [result((200, None, 10)), result((200, None, 5), (503, "UO", 7))]
    checks.overflow_counted(Recorded(overflow=10 + 7), before=10, results=runs)
    with pytest.raises(CheckFailed, match="counted 0 pending overflows, the calls saw 7 503 UO"):
        checks.overflow_counted(Recorded(overflow=10), before=10, results=runs)


def lines(marker: str, k: int) -> list[str]:
    return [f'"GET /convert?run={marker} HTTP/1.1" 200' for _ in range(k)] + ['"GET /other HTTP/1.1" 200'] * 3


def test_mirrored_wants_every_copy_at_100_percent():
    checks.mirrored(Recorded(lines("m1", 50)), "currency-converter-v2", "m1", sent=50)
    with pytest.raises(CheckFailed, match="received 49 mirrored copies of 50"):  # recorded: no copy is late
        checks.mirrored(Recorded(lines("m1", 49)), "currency-converter-v2", "m1", sent=50, wait=0)


def test_mirrored_share_passes_a_right_percentage_and_fails_a_wrong_one():
    checks.mirrored(Recorded(lines("h", 96)), "currency-converter-v2", "h", sent=200, percent=50, wait=0)
    with pytest.raises(CheckFailed, match="not consistent with mirrorPercentage 50 %"):
        checks.mirrored(Recorded(lines("h", 40)), "currency-converter-v2", "h", sent=200, percent=50, wait=0)


class Arriving:
    """A lab whose mirror copies reach the access log one read after the check first looks."""

    def __init__(self, late: list[str]) -> None:
        self.late, self.reads = late, 0

    def access_log(self, workload: str, tail: int = 50) -> list[str]:
        self.reads += 1
        return self.late if self.reads > 1 else []


def test_mirrored_waits_for_copies_still_in_flight():
    lab = Arriving(lines("late", 50))
    checks.mirrored(lab, "currency-converter-v2", "late", sent=50)  # type: ignore[arg-type]
    assert lab.reads == 2


def test_unauthenticated_passes_on_401_and_names_the_request_authentication_otherwise(capsys):
    checks.unauthenticated(result((401, None, 5)), what="an expired token")
    assert "an expired token refused by the JWT check: 5/5 answered 401" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"expected 401 .* for an expired token, but 5 of 5 were not") as e:
        checks.unauthenticated(result((200, None, 5)), what="an expired token")
    assert "What to do: look at the RequestAuthentication" in str(e.value)


def _line(status: int, marker: str) -> str:
    request = f'"GET /status/{status}?m={marker} HTTP/1.1"'
    return f'[2026-12-01T15:00:00.000Z] {request} {status} - via_upstream - "-" 0 0 1 1'


def test_access_log_filtered_wants_exactly_the_lines_the_filter_keeps(capsys):
    sent = {200: 2, 404: 1, 500: 1}
    kept = Recorded([_line(404, "m1"), _line(500, "m1"), _line(200, "other")])
    checks.access_log_filtered(kept, ["v1"], "m1", sent, logged=lambda code: code >= 400)
    assert "2 line(s) logged" in capsys.readouterr().out
    everything = Recorded([_line(200, "m1"), _line(200, "m1"), _line(404, "m1"), _line(500, "m1")])
    with pytest.raises(CheckFailed, match=r"lines for \[200\] should have been filtered out"):
        checks.access_log_filtered(everything, ["v1"], "m1", sent, logged=lambda code: code >= 400)
    with pytest.raises(CheckFailed, match=r"have 0 line\(s\) for these requests"):
        checks.access_log_filtered(Recorded([]), ["v1"], "m1", {404: 1}, logged=lambda code: code >= 400)
