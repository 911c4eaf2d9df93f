"""The one apply pipeline (labkit.lab.Lab.apply): load -> validate -> the backend's capability check -> apply,
the same on every backend. A typo gets the schema's message with its suggestion, "not supported by the local
backend" is said only of a field Istio accepts, and analysis warnings are shown, not thrown away."""

from __future__ import annotations

import pytest

from labkit import paths
from labkit.backends.kind import KubeLab
from labkit.errors import UnsupportedError, ValidationError
from labkit.kind import doctor

pytestmark = pytest.mark.mesh

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: currency-converter, namespace: payments-prod}
spec:
  hosts: [currency-converter]
  http:
  - route:
    - destination: {host: currency-converter, subset: v1}
      weight: 100
"""
STRICT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: payments-prod}
spec: {mtls: {mode: STRICT}}
"""
MISSING_SUBSET = paths.MESH / "virtual-service-currency-converter-missing-subset.yaml"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (VS.replace("weight: 100", "weigth: 100"), "unknown field 'weigth' (did you mean 'weight'?)"),
        (VS.replace("kind: VirtualService", "kind: VirtualServce"), "did you mean VirtualService?"),
        (STRICT.replace("STRICT", "STRlCT"), "'STRlCT' is not an allowed value"),
    ],
    ids=["field", "kind", "value"],
)
def test_a_typo_gets_the_schema_message_on_the_local_backend(lab, text, says):
    before = lab.apply(VS)  # a known state: the typo must change nothing
    with pytest.raises(ValidationError) as err:
        lab.apply(text)
    assert says in str(err.value)
    assert "not supported by the local backend" not in str(err.value)
    assert [c.action for c in lab.apply(VS)] == ["unchanged"], before


def test_a_valid_field_the_local_backend_does_not_run_is_refused_by_name(lab):
    cors = VS.replace(
        "  - route:", "  - corsPolicy: {allowOrigins: [{exact: 'https://x.example'}]}\n    route:"
    )
    with pytest.raises(UnsupportedError, match=r"spec\.http\[0\]\.corsPolicy.*not supported by the local"):
        lab.apply(cors)


def test_an_analysis_warning_is_shown_and_the_object_applied_locally(lab, capsys):
    lab.apply(paths.MESH / "destination-rule-currency-converter.yaml")
    changes = lab.apply(MISSING_SUBSET)
    out = capsys.readouterr().out
    assert "warning: " in out and "subset 'v3'" in out and "warning: warning" not in out
    assert [c.action for c in changes] in (["configured"], ["created"])
    result = lab.send("http://currency-converter.payments-prod:8080/convert?from=NOK&to=EUR&amount=1", n=100)
    assert 503 in result.codes()  # the runtime outcome the warning predicted: NC for the 10 % to v3
    lab.ensure("canary-90-10")


def test_an_analysis_warning_is_shown_on_kind_too(tmp_path, monkeypatch, capsys):
    """The kind backend against the fake API server (tests/fakes): it cannot run a cluster here."""
    from fakes import harness
    from fakes.apiserver import FakeApiServer

    harness.install(tmp_path, monkeypatch)
    harness.istio_release(tmp_path, monkeypatch)
    api = FakeApiServer().start()
    try:
        monkeypatch.setenv("FAKE_API_SERVER", api.url)
        monkeypatch.setattr(doctor, "HOST_PORTS", ())  # this shared machine's 8080 may be busy
        lab = KubeLab("kind")
        lab.up()
        capsys.readouterr()
        lab.apply(MISSING_SUBSET)
        out = capsys.readouterr().out
        assert "warning:" in out and "subset 'v3'" in out
    finally:
        api.stop()


def test_apply_and_delete_print_the_kubectl_command_they_stand_for_once(lab, capsys):
    capsys.readouterr()
    lab.apply(paths.MESH / "peer-authentication-strict.yaml")
    lab.apply(VS)  # objects in memory: their YAML would go to kubectl's stdin
    lab.delete(VS)
    assert capsys.readouterr().out.splitlines() == [
        "# on a cluster: kubectl apply -f cluster-config/mesh/peer-authentication-strict.yaml",
        "# on a cluster: kubectl apply -f -   (these objects' YAML on stdin)",
        "# on a cluster: kubectl delete -f -   (these objects' YAML on stdin)",
    ]
    lab.apply(VS, quiet=True)
    lab.delete(VS, quiet=True)
    assert capsys.readouterr().out == ""  # a script's applies stay silent
    lab.ensure("canary-90-10")
    assert "kubectl" not in capsys.readouterr().out  # reset's own applies say what changed, not a command


def test_every_check_runs_once_per_apply(lab, monkeypatch):
    from labkit import validation
    from labkit.local import supported

    calls = {"validation": 0, "supported": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += name == "validation" or args[3] == "spec"  # _walk recurses: count the top
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(validation, "check", counted("validation", validation.check))
    # _walk is what every caller of check_supported reaches, under whatever name it imported it
    monkeypatch.setattr(supported, "_walk", counted("supported", supported._walk))
    lab.apply(
        VS.replace("weight: 100", "weight: 100\n  - route: [{destination: {host: currency-converter}}]")
    )
    assert calls == {"validation": 1, "supported": 1}
    lab.ensure("canary-90-10")
