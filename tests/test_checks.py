"""The notebooks' check functions: each passes on data showing the step worked, and fails on the wrong
data with a message that names the problem and what to look at. The data are real TrafficResult, Status
and RequestCount objects: no mocks."""

from __future__ import annotations

import pytest

from labkit import checks, lesson, stats
from labkit.errors import CheckFailed, LabError
from labkit.metrics import RequestCount
from labkit.status import Status, WorkloadStatus
from labkit.traffic import Outcome, TrafficResult


def traffic(*groups: tuple[int, int | None, str | None], error: str | None = None, flags: str | None = None):
    """A TrafficResult from (count, status, version) groups."""
    outcomes = [
        Outcome(
            t=i * 0.01,
            status=status,
            version=version,
            latency=0.01,
            error=error if status is None else None,
            flags=flags,
        )
        for count, status, version in groups
        for i in range(count)
    ]
    return TrafficResult(outcomes, url=lesson.URL)


class FakeLab:
    """Only the data a check reads: a Status and metric samples."""

    backend = "local"

    def __init__(self, status: Status, samples: list[RequestCount] = (), log: list[str] = ()) -> None:
        self._status, self._samples, self._log = status, list(samples), list(log)

    def status(self) -> Status:
        return self._status

    def metrics(self, name: str = "istio_requests_total") -> list[RequestCount]:
        return self._samples

    def access_log(self, workload: str, tail: int = 50) -> list[str]:
        return self._log[-tail:]


def workloads(sidecar_v2: bool = True, ready_v2: int = 1) -> list[WorkloadStatus]:
    return [
        WorkloadStatus("currency-converter-v1", "payments-prod", "v1", 1, 1, True),
        WorkloadStatus("currency-converter-v2", "payments-prod", "v2", 1, ready_v2, sidecar_v2),
        WorkloadStatus("client", "payments-prod", "v1", 1, 1, True),
        WorkloadStatus("legacy-client", "legacy", "v1", 1, 1, False),
    ]


def sample(
    policy: str, source: str = "client", principal: str | None = None, value: float = 10
) -> RequestCount:
    labels = {
        "reporter": "destination",
        "source_workload": source,
        "destination_workload": "currency-converter-v1",
        "destination_version": "v1",
        "response_code": "200",
        "connection_security_policy": policy,
    }
    if principal:
        labels["source_principal"] = principal
    return RequestCount(labels, value)


# --- the lab ------------------------------------------------------------------------------------------------


def test_lab_is_up_passes_on_a_healthy_lab_and_prints_a_tick(capsys):
    checks.lab_is_up(FakeLab(Status("local", True, workloads())))
    assert capsys.readouterr().out.startswith("✔ local lab is up")


def test_lab_is_up_fails_when_down_or_unready():
    with pytest.raises(CheckFailed, match=r"not running[\s\S]*lab.up\(\)"):
        checks.lab_is_up(FakeLab(Status("local", False)))
    with pytest.raises(CheckFailed, match="currency-converter-v2 0/1"):
        checks.lab_is_up(FakeLab(Status("local", True, workloads(ready_v2=0))))


def test_check_failed_is_an_assertion_so_a_notebook_cell_fails():
    with pytest.raises(AssertionError):
        checks.lab_is_down(FakeLab(Status("local", True, workloads())))
    checks.lab_is_down(FakeLab(Status("local", False)))


def test_sidecars_injected_names_the_workload_without_one():
    checks.sidecars_injected(FakeLab(Status("local", True, workloads())))
    with pytest.raises(
        CheckFailed, match=r"no sidecar in payments-prod: currency-converter-v2[\s\S]*rollout restart"
    ):
        checks.sidecars_injected(FakeLab(Status("local", True, workloads(sidecar_v2=False))))
    with pytest.raises(CheckFailed, match="no workloads in namespace nowhere"):
        checks.sidecars_injected(FakeLab(Status("local", True, workloads())), "nowhere")


def test_versions_running_needs_each_version_ready():
    checks.versions_running(FakeLab(Status("local", True, workloads())), "v1", "v2")
    with pytest.raises(CheckFailed, match="currency-converter v2 is not running"):
        checks.versions_running(FakeLab(Status("local", True, workloads(ready_v2=0))), "v1", "v2")


def test_install_settings_compares_the_overlay_with_the_lab_s_choices():
    settings = lesson.install_settings()
    checks.install_settings(settings, profile="default", access_log="/dev/stdout", outbound="REGISTRY_ONLY")
    with pytest.raises(CheckFailed, match="outbound is 'REGISTRY_ONLY', expected 'ALLOW_ANY'"):
        checks.install_settings(settings, outbound="ALLOW_ANY")


def test_install_settings_reads_the_istio_operator_like_the_local_backend(tmp_path):
    path = tmp_path / "install.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n---\n"
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: x}\n"
        "spec: {profile: minimal}\n"
    )
    assert lesson.install_settings(path)["profile"] == "minimal"  # the operator, not the first document


# --- traffic ------------------------------------------------------------------------------------------------


def test_all_ok_passes_on_200s_and_fails_listing_codes_and_errors():
    checks.all_ok(traffic((20, 200, "v1")))
    bad = traffic((18, 200, "v1"), (2, None, None), error="connection reset")
    with pytest.raises(CheckFailed, match=r"2 of 20 requests[\s\S]*connection reset[\s\S]*NC = missing"):
        checks.all_ok(bad)
    with pytest.raises(CheckFailed, match="no requests were sent"):
        checks.all_ok(traffic())


def test_refused_passes_when_no_plaintext_request_is_answered():
    checks.refused(traffic((20, None, None), error="connection reset"))
    with pytest.raises(CheckFailed, match=r"still got a 2xx[\s\S]*peer-authentication-strict.yaml"):
        checks.refused(traffic((19, None, None), (1, 200, "v1"), error="connection reset"))


def test_split_matches_accepts_a_90_10_sample_and_rejects_50_50():
    ninety_ten = traffic((362, 200, "v1"), (38, 200, "v2"))
    checks.split_matches(ninety_ten, {"v1": 90, "v2": 10})
    fifty_fifty = traffic((205, 200, "v1"), (195, 200, "v2"))
    with pytest.raises(
        CheckFailed, match=r"does not match the configured 90/10[\s\S]*VirtualService is applied"
    ):
        checks.split_matches(fifty_fifty, {"v1": 90, "v2": 10})


def test_split_matches_rejects_a_version_with_weight_zero_and_no_answers():
    with pytest.raises(CheckFailed, match="does not match the configured 100/0"):
        checks.split_matches(traffic((99, 200, "v1"), (1, 200, "v2")), {"v1": 100, "v2": 0})
    with pytest.raises(CheckFailed, match="no answer carried a version"):
        checks.split_matches(traffic((10, None, None), error="refused"), {"v1": 90, "v2": 10})


def test_only_version():
    checks.only_version(traffic((30, 200, "v1")), "v1")
    with pytest.raises(CheckFailed, match="expected every answer from v1, got v2: 3"):
        checks.only_version(traffic((27, 200, "v1"), (3, 200, "v2")), "v1")


def test_status_share_is_an_exact_binomial_test_with_the_lab_s_level(capsys):
    checks.status_share(traffic((97, 503, None), (103, 200, "v1")), 503, expected=0.5)
    line = capsys.readouterr().out
    assert "97 of 200 requests answered 503 (48.5%;" in line and "at 99.999 %" in line, line
    assert "100 %" not in line  # the old label rounded 99.9 % up to "100 % interval"
    with pytest.raises(CheckFailed, match=r"NOT consistent with 50%[\s\S]*What the requests got: 200 req"):
        checks.status_share(traffic((20, 503, None), (180, 200, "v1")), 503, expected=0.5)


def test_one_confidence_level_whose_union_bound_keeps_a_whole_run_under_one_in_a_thousand():
    assert pytest.approx(0.99999) == checks.CONFIDENCE and checks.LEVEL == "99.999 %"
    assert stats.CHECKS_PER_RUN * (1 - checks.CONFIDENCE) <= 0.001 + 1e-12


def test_exact_test_false_failure_rate_is_bounded_by_construction():
    """Over every possible outcome of n=300 draws at the expected rate, the probability mass the check
    rejects is at most 1 - CONFIDENCE (computed exactly, not sampled)."""
    from scipy import stats as sps

    for expected, alternative in ((0.05, "two-sided"), (0.5, "two-sided"), (0.00625, "greater")):
        rejected = sum(
            sps.binom.pmf(k, 300, expected)
            for k in range(301)
            if not checks._test(k, 300, expected, alternative)[0]
        )
        assert rejected <= 1 - checks.CONFIDENCE, (expected, rejected)


def test_slow_share_counts_requests_over_the_delay():
    delayed = [Outcome(t=0, status=200, version="v1", latency=2.01 if i % 2 else 0.01) for i in range(40)]
    checks.slow_share(TrafficResult(delayed), 2.0, expected=0.5)
    with pytest.raises(CheckFailed, match=r"0 of 50 requests took 2 s or more[\s\S]*fault.delay"):
        checks.slow_share(traffic((50, 200, "v1")), 2.0, expected=0.5)


def test_forbidden_and_blocked_egress():
    checks.forbidden(traffic((10, 403, None)))
    with pytest.raises(CheckFailed, match="expected 403"):
        checks.forbidden(traffic((9, 403, None), (1, 200, "v1")))
    checks.blocked_egress(traffic((10, 502, None)))
    checks.blocked_egress(traffic((10, None, None), error="name does not resolve"))
    with pytest.raises(CheckFailed, match=r"were not blocked[\s\S]*REGISTRY_ONLY"):
        checks.blocked_egress(traffic((10, 200, None)))


def test_latency_and_error_share_and_flags():
    fast = traffic((50, 200, "v1"))
    checks.faster_than(fast, 0.5, quantile=1.0)
    with pytest.raises(CheckFailed, match="latency is 0.01 s, not below 0.005 s"):
        checks.faster_than(fast, 0.005)
    # 07's retries: v2 gets 10 %, fails half its tries, 4 tries: 0.1 * 0.5**4 = 0.625 % fail in a correct lab
    checks.error_share_at_most(traffic((294, 200, "v1"), (6, 500, "v2")), 0.1 * 0.5**4)
    with pytest.raises(CheckFailed, match=r"15 of 300 requests failed[\s\S]*NOT consistent with at most"):
        checks.error_share_at_most(traffic((285, 200, "v1"), (15, 500, "v2")), 0.1 * 0.5**4)  # no retries
    checks.flags_seen(traffic((5, 503, None), flags="FI"), "FI")
    with pytest.raises(CheckFailed, match=r"no request carried response flag UH \(flags seen: FI: 5"):
        checks.flags_seen(traffic((5, 503, None), flags="FI"), "UH")
    with pytest.raises(CheckFailed, match=r"flags seen: none; refused: 5\)[\s\S]*never reached a sidecar"):
        checks.flags_seen(traffic((5, None, None), error="refused"), "UH")


def test_every_traffic_failure_names_leftover_configuration_the_reset_and_the_flags():
    with pytest.raises(CheckFailed) as caught:
        checks.all_ok(traffic((12, 503, None), (8, 200, "v1"), flags="FI"))
    message = str(caught.value)
    assert "Response flags seen: FI: 20" in message and "FI = fault injected" in message
    assert "leftover configuration from an earlier or interrupted notebook" in message
    assert "lab.reset(" in message and "labkit reset" in message


def test_a_passing_check_prints_one_line_per_fact_and_returns_nothing(capsys):
    settings = lesson.install_settings()
    assert checks.install_settings(settings, profile="default", outbound="REGISTRY_ONLY") is None
    assert capsys.readouterr().out == "✔ profile = default\n✔ outbound = REGISTRY_ONLY\n"
    assert checks.split_matches(traffic((362, 200, "v1"), (38, 200, "v2")), {"v1": 90, "v2": 10}) is None
    assert len(capsys.readouterr().out.splitlines()) == 1


# --- telemetry ----------------------------------------------------------------------------------------------


def test_mutual_tls_reads_the_connection_security_policy_label():
    up = Status("local", True, workloads())
    checks.mutual_tls(FakeLab(up, [sample("mutual_tls")]))
    with pytest.raises(CheckFailed, match="none: 10"):
        checks.mutual_tls(FakeLab(up, [sample("mutual_tls"), sample("none")]))
    with pytest.raises(CheckFailed, match="no requests recorded"):
        checks.mutual_tls(FakeLab(up, []))


def test_peer_identity_needs_the_client_s_spiffe_id():
    up = Status("local", True, workloads())
    spiffe = "spiffe://cluster.local/ns/payments-prod/sa/client"
    checks.peer_identity(FakeLab(up, [sample("mutual_tls", principal=spiffe)]))
    with pytest.raises(CheckFailed, match="never saw spiffe://cluster.local/ns/payments-prod/sa/client"):
        checks.peer_identity(FakeLab(up, [sample("none", principal="unknown")]))


def test_metrics_recorded_and_access_log_shows():
    lab = FakeLab(
        Status("local", True, workloads()), [sample("mutual_tls")], ["[t] GET 200 outbound|8080|v2|x"]
    )
    checks.metrics_recorded(lab, destination_version="v1")
    with pytest.raises(CheckFailed, match="no requests with destination_version=v2"):
        checks.metrics_recorded(lab, destination_version="v2")
    checks.access_log_shows(lab, "client", "outbound|8080|v2")
    with pytest.raises(CheckFailed, match="no access-log line of client contains"):
        checks.access_log_shows(lab, "client", "outbound|8080|v3")


# --- lesson helpers -----------------------------------------------------------------------------------------


def test_show_prints_the_manifest_with_its_comments(capsys):
    path = lesson.show("mesh/peer-authentication-strict.yaml")
    out = capsys.readouterr().out
    assert path.name == "peer-authentication-strict.yaml"
    assert "mode: STRICT" in out and out.startswith(
        "# --- cluster-config/mesh/peer-authentication-strict.yaml"
    )
    assert "kubectl" not in out  # lab.apply(path) prints the command, once
    with pytest.raises(LabError, match="no such manifest"):
        lesson.show("mesh/nope.yaml")


def test_command_prints_the_line_and_runs_it_only_where_kubernetes_is(capsys, monkeypatch):
    ran: list[str] = []
    monkeypatch.setattr(lesson, "run", lambda line, timeout=60: ran.append(line) or "")
    lesson.command(FakeLab(Status("local", True)), "kubectl get vs -n payments-prod")
    assert capsys.readouterr().out.startswith("$ kubectl get vs -n payments-prod\n  (a Kubernetes command")
    assert ran == []
    kind = FakeLab(Status("kind", True))
    kind.backend = "kind"
    assert lesson.command(kind, "kubectl get vs -n payments-prod") is None  # quiet: nothing echoed twice
    assert ran == ["kubectl get vs -n payments-prod"]


def test_with_env_changes_only_the_named_variable():
    body = lesson.with_env("currency-converter-v2", FAIL_RATE="0.5")
    env = {e["name"]: e.get("value") for e in body["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FAIL_RATE"] == "0.5" and env["VERSION"] == "v2" and env["DELAY_MS"] == "0"
    assert lesson.with_env("currency-converter-v2")["metadata"]["name"] == "currency-converter-v2"
    with pytest.raises(LabError, match="no Deployment payments-prod/nope"):
        lesson.with_env("nope")
