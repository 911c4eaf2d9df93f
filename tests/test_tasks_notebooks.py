"""Notebooks 12-21 (Istio's tasks) broken on purpose, as a trainee would break them: the CHECK cell
must fail with the trainee's message (the pattern of tests/test_notebooks.py). The lessons themselves run top
to bottom in tests/test_notebooks.py, which collects every notebook."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from labkit import paths

pytestmark = pytest.mark.notebooks

CELL_TIMEOUT = 180
#: A policy with ``values`` where ``notValues`` was meant: it denies exactly the admins.
VALUES_FOR_NOT_VALUES = """
from labkit.manifests import load
wrong = load(deny)[0].body
wrong["spec"]["rules"][0]["when"][0] = {"key": "request.headers[x-token]", "values": ["admin"]}
lab.apply(wrong)
"""
#: The edge policy in the service's namespace instead of the gateway's: it selects no gateway.
EDGE_POLICY_IN_WRONG_NAMESPACE = """
from labkit.manifests import load
wrong = load(edge_policy)[0].body
wrong["metadata"]["namespace"] = "payments-prod"
edge_policy = wrong
"""
#: Only the RequestAuthentication where the policy that requires a token was meant: no token still passes.
AUTHN_FOR_POLICY = "require = authn"
#: The workload Telemetry without its filter: it logs every request.
TELEMETRY_WITHOUT_FILTER = """
from labkit.manifests import load
wrong = load(errors_only)[0].body
del wrong["spec"]["accessLogging"][0]["filter"]
errors_only = wrong
"""
#: A query without ``reporter``: it adds the caller's and the server's count of every request.
BOTH_REPORTERS = """
QUERY = QUERY.replace('reporter="source", ', '')
before = checks.settled_counts(lab, QUERY)
fresh = lab.send(lesson.URL, n=200)
"""

#: The Secret in the service's namespace instead of the gateway's: Istio finds no credential.
SECRET_IN_WRONG_NAMESPACE = """
lab.delete(secret)
lab.apply(edge.tls_secret("currency-credential", "payments-prod", server))
"""
#: SIMPLE where MUTUAL was meant: any client gets in.
SIMPLE_FOR_MUTUAL = "lab.apply(https_gateway)"
#: The provider's CA in the gateway's namespace instead of the client's: the sidecar finds no credential.
CA_IN_WRONG_NAMESPACE = """
lab.delete(ca_secret)
ca_secret["metadata"]["namespace"] = "istio-system"
lab.apply(ca_secret)
"""

#: (notebook, the cell after which the lesson is broken, the breaking code, the CHECK cell, what it must say)
BROKEN = [
    (
        "12-request-routing",
        "print(*lab.apply(vs)",
        "lab.apply(lesson.manifest_path('mesh/virtual-service-currency-converter-header-match.yaml'))",
        'checks.only_version(jason, "v2")',
        ["expected every answer from v2", "What to do: look at the VirtualService that is applied"],
    ),
    (
        "13-traffic-mirroring",
        "print(*lab.apply(vs)",
        "lab.apply(lesson.manifest_path('mesh/virtual-service-currency-converter-100-0.yaml'))  # no mirror",
        'checks.mirrored(lab, "currency-converter-v2", run, sent=50)',
        [
            "received 0 mirrored copies of 50 requests",
            "What to do: look at the applied VirtualService's mirror",
        ],
    ),
    (
        "14-circuit-breaking",
        "print(*lab.apply(dr)",
        "lab.apply(lesson.manifest_path('mesh/destination-rule-currency-converter.yaml'))  # no pool",
        "checks.circuit_breaker_trips(levels)",
        ["the circuit breaker did not trip", "What to do: look at the applied DestinationRule's"],
    ),
    (
        "15-explicit-deny",
        "print(*lab.apply(deny)",
        VALUES_FOR_NOT_VALUES,
        'checks.forbidden(no_token, what="a call without x-token")',
        ["expected 403 (RBAC: access denied) for a call without x-token"],
    ),
    (
        "15-explicit-deny",
        'edge_policy = lesson.show("tasks/authorization-policy-ingress-only-convert.yaml")',
        EDGE_POLICY_IN_WRONG_NAMESPACE,
        'checks.forbidden(outside_headers, what="/headers from outside")',
        ["expected 403 (RBAC: access denied) for /headers from outside"],
    ),
    (
        "18-end-user-jwt",
        'require = lesson.show("tasks/authorization-policy-currency-converter-require-jwt.yaml")',
        AUTHN_FOR_POLICY,
        'checks.forbidden(no_token, what="a call without a token")',
        ["expected 403 (RBAC: access denied) for a call without a token", "200: 20"],
    ),
    (
        "19-telemetry-api",
        'errors_only = lesson.show("tasks/telemetry-currency-converter-errors-only.yaml")',
        TELEMETRY_WITHOUT_FILTER,
        "checks.access_log_filtered(lab, SERVERS, marker, sent, logged=lambda code: code >= 400)",
        ["lines for [200] should have been filtered out", "accessLogging[].filter.expression"],
    ),
    (
        "20-tcp-traffic-shifting",
        "print(*lab.apply(vs)",
        "lab.apply(lesson.manifest_path('tasks/virtual-service-tcp-echo-50-50.yaml'))",
        'checks.split_matches(result, {"v1": 80, "v2": 20})',
        ["does not match the configured 80/20", "What to do: look at which VirtualService is applied"],
    ),
    (
        "21-querying-metrics",
        "QUERY = (",
        BOTH_REPORTERS,
        "checks.prometheus_counted(lab, QUERY, before, fresh)",
        ["every request twice", "What to do: look at the query's filters"],
    ),
    (
        "16-ingress-and-secure-ingress",
        'secret = edge.tls_secret("currency-credential", "istio-system", server)',
        SECRET_IN_WRONG_NAMESPACE,
        'checks.https_ok(served, what="currency.example.com")',
        ["expected HTTP 200 for currency.example.com over TLS, but it was refused", "What to do: look at"],
    ),
    (
        "16-ingress-and-secure-ingress",
        "print(*lab.apply(mutual)",
        SIMPLE_FOR_MUTUAL,
        'checks.tls_refused(no_cert, what="a client without a certificate")',
        ["expected the gateway to refuse a client without a certificate in the TLS handshake"],
    ),
    (
        "17-egress-tls-origination",
        'STANDIN_TLS = paths.ROOT / "services"',
        CA_IN_WRONG_NAMESPACE,
        'checks.all_ok(originated, what="api.fxrates.example over TLS origination")',
        ["20 of 20 requests to api.fxrates.example over TLS origination failed", "What to do: look at"],
    ),
]


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory: pytest.TempPathFactory):
    """The kernels' environment: the local backend in a state folder of this module; stopped at the end."""
    state = tmp_path_factory.mktemp("lab-state")
    yield {"LAB_BACKEND": "local", "LAB_STATE": str(state)}
    from labkit.backends.local import LocalLab

    LocalLab(Path(state)).down()


def _cell(nb: nbformat.NotebookNode, text: str) -> int:
    """The index of the one cell whose source contains ``text``."""
    hits = [i for i, c in enumerate(nb.cells) if text in c.source]
    assert len(hits) == 1, f"{text!r} is in cells {hits}"
    return hits[0]


def _put_back(state: str) -> None:
    """What a broken run may leave: the task's policies, gateways, routes and Secrets; then the canary
    checkpoint."""
    from labkit.backends.local import LocalLab

    lab = LocalLab(Path(state))
    for path in sorted((paths.CLUSTER_CONFIG / "tasks").glob("authorization-policy-*.yaml")):
        lab.delete(path)
    for doc in (
        "tasks/virtual-service-currency-converter-ingress-all.yaml",
        "tasks/destination-rule-fx-rates-tls-origination.yaml",
        "tasks/service-entry-fx-rates-tls.yaml",
        "tasks/virtual-service-currency-converter-edge.yaml",
        "tasks/gateway-currency-converter-https.yaml",
        "mesh/gateway-currency-converter.yaml",
    ):
        lab.delete(paths.CLUSTER_CONFIG / doc)
    for namespace in ("istio-system", "payments-prod"):
        for name in ("currency-credential", "fx-rates-ca"):
            lab.delete(
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}}
            )
    lab.delete(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "ingress-only-convert", "namespace": "payments-prod"},
        }
    )
    lab.ensure("canary-90-10")


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("name", "after", "breaking", "check", "says"),
    BROKEN,
    ids=[f"{b[0][:2]}-{i}" for i, b in enumerate(BROKEN)],
)
def test_a_broken_task_lesson_is_caught_by_its_check_cell(
    lab_env, name, after, breaking, check, says
) -> None:
    nb = nbformat.read(paths.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nb.cells.insert(_cell(nb, after) + 1, nbformat.v4.new_code_cell(breaking.strip()))
    nb.cells = nb.cells[: _cell(nb, check) + 1]  # stop at the check: the rest needs the step to have worked
    where = {"metadata": {"path": str(paths.NOTEBOOKS)}}
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources=where)
    try:
        with pytest.raises(CellExecutionError) as caught:
            client.execute(env={**os.environ, **lab_env})
    finally:
        _put_back(lab_env["LAB_STATE"])
    message = str(caught.value)
    assert "CheckFailed" in message
    for text in says:
        assert text in message
