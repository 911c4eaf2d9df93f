"""Notebooks 16 (secure ingress) and 18 (egress TLS origination) broken on purpose, as a trainee would break
them: the CHECK cell must fail with the trainee's message (the pattern of tests/test_tasks_notebooks.py). The
lessons themselves run top to bottom in tests/test_notebooks.py."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from labkit import paths

pytestmark = pytest.mark.notebooks

INGRESS = "16-ingress-and-secure-ingress"
EGRESS = "17-egress-tls-origination"
#: The Secret in the service's namespace instead of the gateway's: Istio finds no credential.
SECRET_IN_WRONG_NAMESPACE = """
lab.delete(secret)
lab.apply(edge.tls_secret("currency-credential", "payments-prod", server))
"""
#: SIMPLE where MUTUAL was meant: any client gets in.
SIMPLE_FOR_MUTUAL = "lab.apply(https_gateway)"
#: The provider's CA in the gateway's namespace instead of the client's: the sidecar finds no credential.
CA_IN_WRONG_NAMESPACE = """
ca_secret["metadata"]["namespace"] = "istio-system"
"""

BROKEN = [
    (
        INGRESS,
        'secret = edge.tls_secret("currency-credential", "istio-system", server)',
        SECRET_IN_WRONG_NAMESPACE,
        'checks.https_ok(served, what="currency.example.com")',
        ["expected HTTP 200 for currency.example.com over TLS, but it was refused", "What to do: look at"],
    ),
    (
        INGRESS,
        "print(*lab.apply(mutual)",
        SIMPLE_FOR_MUTUAL,
        'checks.tls_refused(no_cert, what="a client without a certificate")',
        ["expected the gateway to refuse a client without a certificate in the TLS handshake"],
    ),
    (
        EGRESS,
        'STANDIN_TLS = paths.ROOT / "services"',
        "lab.delete(ca_secret)\n" + CA_IN_WRONG_NAMESPACE.strip() + "\nlab.apply(ca_secret)",
        'checks.all_ok(originated, what="api.fxrates.example over TLS origination")',
        ["20 of 20 requests to api.fxrates.example over TLS origination failed", "What to do: look at"],
    ),
]


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("lab-state")
    yield {"LAB_BACKEND": "local", "LAB_STATE": str(state)}
    from labkit.backends.local import LocalLab

    LocalLab(Path(state)).down()


def _cell(nb: nbformat.NotebookNode, text: str) -> int:
    hits = [i for i, c in enumerate(nb.cells) if text in c.source]
    assert len(hits) == 1, f"{text!r} is in cells {hits}"
    return hits[0]


def _put_back(state: str) -> None:
    """What a broken run may leave: the gateways, the edge routes, the Secrets; then the canary checkpoint."""
    from labkit.backends.local import LocalLab

    lab = LocalLab(Path(state))
    tasks = paths.CLUSTER_CONFIG / "tasks"
    for name in ("destination-rule-fx-rates-tls-origination.yaml", "service-entry-fx-rates-tls.yaml"):
        lab.delete(tasks / name)
    lab.delete(tasks / "virtual-service-currency-converter-edge.yaml")
    lab.delete(tasks / "gateway-currency-converter-https.yaml")
    lab.delete(paths.CLUSTER_CONFIG / "mesh" / "gateway-currency-converter.yaml")
    for namespace in ("istio-system", "payments-prod"):
        for name in ("currency-credential", "fx-rates-ca"):
            meta = {"name": name, "namespace": namespace}
            lab.delete({"apiVersion": "v1", "kind": "Secret", "metadata": meta})
    lab.ensure("canary-90-10")


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("name", "after", "breaking", "check", "says"), BROKEN, ids=["secret-namespace", "simple", "ca-namespace"]
)
def test_a_broken_tls_lesson_is_caught_by_its_check_cell(lab_env, name, after, breaking, check, says):
    nb = nbformat.read(paths.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nb.cells.insert(_cell(nb, after) + 1, nbformat.v4.new_code_cell(breaking.strip()))
    nb.cells = nb.cells[: _cell(nb, check) + 1]  # stop at the check: the rest needs the step to have worked
    where = {"metadata": {"path": str(paths.NOTEBOOKS)}}
    client = NotebookClient(nb, timeout=180, kernel_name="python3", resources=where)
    try:
        with pytest.raises(CellExecutionError) as caught:
            client.execute(env={**os.environ, **lab_env})
    finally:
        _put_back(lab_env["LAB_STATE"])
    message = str(caught.value)
    assert "CheckFailed" in message
    for text in says:
        assert text in message
