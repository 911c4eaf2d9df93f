"""labkit.validation: the lab's own manifests pass, and every typical trainee mistake in tests/broken/ is
reported with its file, document, object and field, at the stage the real cluster would catch it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import canary, cli, manifests, paths, validation
from labkit.errors import ManifestError, ValidationError

BROKEN = Path(__file__).parent / "broken"
DESTINATION_RULE = paths.MESH / "destination-rule-currency-converter.yaml"
GATEWAY = paths.MESH / "gateway-currency-converter.yaml"


@pytest.fixture(scope="module")
def context() -> list[manifests.Resource]:
    """The lab as the lessons find it: the apps, the DestinationRule with subsets v1 and v2, the Gateway."""
    return manifests.load(paths.APPS) + manifests.load(DESTINATION_RULE) + manifests.load(GATEWAY)


def findings_for(name: str, context: list[manifests.Resource]) -> list[validation.Finding]:
    return validation.validate(manifests.load(BROKEN / name), context=context)


def cluster_config_files() -> list[Path]:
    return sorted(p for p in paths.CLUSTER_CONFIG.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize(
    "path", cluster_config_files(), ids=lambda p: str(p.relative_to(paths.CLUSTER_CONFIG))
)
def test_every_cluster_config_file_validates(path: Path, context: list[manifests.Resource]) -> None:
    resources = manifests.load(path)
    if path.parent.parent == paths.CLUSTER_CONFIG / "examples":  # an example's own Services and subsets
        context = [r for p in path.parent.glob("*.yaml") if p != path for r in manifests.load(p)]
    if path.parent == paths.CLUSTER_CONFIG / "tasks":  # a task's own Gateways, ServiceEntries and stand-ins
        context = context + [r for p in path.parent.glob("*.yaml") if p != path for r in manifests.load(p)]
    findings = validation.validate(resources, context=context)
    if path.name == "virtual-service-currency-converter-missing-subset.yaml":  # the deliberate mistake
        assert [(f.stage, f.field) for f in findings] == [
            ("analysis", "spec.http[0].route[1].destination.subset")
        ]
    else:
        assert findings == [], "\n".join(map(str, findings))
    validation.check(resources, context=context)  # nothing the cluster would reject


VS, DR, PA = (
    "VirtualService/currency-converter",
    "DestinationRule/currency-converter",
    "PeerAuthentication/default",
)
DEPLOY = "Deployment/currency-converter-v3"
ROUTE = "spec.http[0].route"

# file, document (1-based), Kind/name, field, stage, severity, words of the message
BROKEN_CASES = [
    (
        "unknown-kind.yaml",
        1,
        "VirtualServce/currency-converter",
        "kind",
        "schema",
        "error",
        "did you mean VirtualService",
    ),
    (
        "unknown-field-weigth.yaml",
        1,
        VS,
        f"{ROUTE}[1].weigth",
        "schema",
        "error",
        "unknown field 'weigth' (did you mean 'weight'?)",
    ),
    (
        "misspelled-destinaton.yaml",
        1,
        VS,
        f"{ROUTE}[0].destinaton",
        "schema",
        "error",
        "did you mean 'destination'",
    ),
    (
        "wrong-type-weight.yaml",
        1,
        VS,
        f"{ROUTE}[0].weight",
        "schema",
        "error",
        "'ninety' is not a whole number",
    ),
    (
        "fault-abort-typo.yaml",
        1,
        VS,
        "spec.http[0].fault.abort.httpStatuss",
        "schema",
        "error",
        "'httpStatus'?",
    ),
    ("missing-subset.yaml", 1, VS, f"{ROUTE}[1].destination.subset", "analysis", "error", "subset 'v3'"),
    ("weight-total-zero.yaml", 1, VS, ROUTE, "admission", "error", "add up to 0"),
    ("negative-weight.yaml", 1, VS, f"{ROUTE}[1].weight", "admission", "error", "weight -10 is negative"),
    (
        "bad-host.yaml",
        1,
        VS,
        f"{ROUTE}[0].destination.host",
        "analysis",
        "error",
        "no Service or ServiceEntry",
    ),
    ("http-rule-without-route.yaml", 1, VS, "spec.http[0]", "admission", "error", "no route, redirect or"),
    (
        "port-level-mtls-without-selector.yaml",
        1,
        PA,
        "spec.portLevelMtls",
        "admission",
        "error",
        "needs a workload selector",
    ),
    (
        "duplicate-resource.yaml",
        2,
        DR,
        "metadata.name",
        "admission",
        "error",
        "already defined in tests/broken/duplicate-resource.yaml (document 1)",
    ),
    (
        "wrong-api-version.yaml",
        1,
        VS,
        "apiVersion",
        "schema",
        "error",
        "istio.io/v2; it exists in networking.istio.io/v1, networking.istio.io/v1beta1",
    ),
    (
        "virtual-service-in-security-group.yaml",
        1,
        VS,
        "apiVersion",
        "schema",
        "error",
        "not exist in security.istio.io/v1; it exists in networking.istio.io/v1",
    ),
    (
        "deployment-wrong-type.yaml",
        1,
        DEPLOY,
        "spec.replicas",
        "schema",
        "error",
        "'two' is not a whole number",
    ),
    (
        "deployment-unknown-field.yaml",
        1,
        DEPLOY,
        "spec.template.spec.contianers",
        "schema",
        "error",
        "did you mean 'containers'",
    ),
    (
        "peer-authentication-strikt.yaml",
        1,
        PA,
        "spec.mtls.mode",
        "schema",
        "error",
        "'STRIKT' is not an allowed value",
    ),
    (
        "subset-labels-match-nothing.yaml",
        1,
        DR,
        "spec.subsets[1].labels",
        "analysis",
        "warning",
        "has the labels version=v9",
    ),
    (
        "gateway-not-found.yaml",
        1,
        "VirtualService/currency-converter-ingress",
        "spec.gateways[0]",
        "analysis",
        "error",
        "Gateway 'currency-gw' does not exist in namespace payments-prod",
    ),
    (
        "peer-authentication-strlct.yaml",
        1,
        PA,
        "spec.mtls.mode",
        "schema",
        "error",
        "'STRlCT' is not an allowed value",
    ),
    # admission parity with istiod (pkg/config/validation) and the API server
    (
        "virtual-service-without-hosts.yaml",
        1,
        VS,
        "spec.hosts",
        "analysis",
        "error",
        "delegate VirtualService",
    ),
    (
        "virtual-service-mesh-wildcard-host.yaml",
        1,
        VS,
        "spec.hosts[0]",
        "admission",
        "error",
        "wildcard host * is not allowed for a VirtualService bound to the mesh",
    ),
    (
        "duplicate-subset-names.yaml",
        1,
        DR,
        "spec.subsets[1].name",
        "admission",
        "error",
        "duplicate subset name 'v1'",
    ),
    (
        "name-not-dns1123.yaml",
        1,
        "VirtualService/Currency_Converter",
        "metadata.name",
        "admission",
        "error",
        "'Currency_Converter' is not a valid DNS-1123 subdomain",
    ),
    (
        "service-entry-wildcard-host.yaml",
        1,
        "ServiceEntry/everything",
        "spec.hosts[0]",
        "admission",
        "error",
        "host '*' is not allowed in a ServiceEntry",
    ),
    (
        "retries-attempts-zero.yaml",
        1,
        VS,
        "spec.http[0].retries.attempts",
        "admission",
        "error",
        "attempts is 0 (retries disabled) but perTryTimeout and retryOn are set",
    ),
    (
        "regex-not-re2.yaml",
        1,
        VS,
        "spec.http[0].match[0].headers.x-canary.regex",
        "admission",
        "error",
        "regex '*' is not valid RE2 syntax: no argument for repetition operator",
    ),
    (
        "regex-not-re2.yaml",
        2,
        "VirtualService/currency-converter-admin",
        "spec.http[0].match[0].uri.regex",
        "admission",
        "error",
        "regex '/(?!health).*' is not valid RE2 syntax: invalid perl operator: (?!",
    ),
    (
        "fault-percentage-out-of-range.yaml",
        1,
        VS,
        "spec.http[0].fault.abort.percentage.value",
        "admission",
        "error",
        "percentage 150 is not in range 0, or 0.0001 to 100",
    ),
    (
        "retry-on-unknown.yaml",
        1,
        VS,
        "spec.http[0].retries.retryOn",
        "admission",
        "error",
        "'gateway-errors' is not a valid retryOn policy",
    ),
    (
        "service-entry-none-with-endpoints.yaml",
        1,
        "ServiceEntry/fx-rates",
        "spec.endpoints[0]",
        "admission",
        "error",
        "resolution NONE takes no endpoints",
    ),
    (
        "service-entry-static-hostname.yaml",
        1,
        "ServiceEntry/fx-rates",
        "spec.endpoints[0].address",
        "admission",
        "error",
        "'fx-rates.external.svc.cluster.local' is not an IP address, which resolution STATIC needs",
    ),
    (
        "service-entry-undeclared-port.yaml",
        1,
        "ServiceEntry/fx-rates",
        "spec.endpoints[0].ports.https",
        "admission",
        "error",
        "endpoint port 'https' is not defined by the ServiceEntry's ports",
    ),
    (
        "port-level-mtls-empty-match-labels.yaml",
        1,
        PA,
        "spec.portLevelMtls",
        "admission",
        "error",
        "portLevelMtls needs a workload selector with labels",
    ),
    (
        "timeout-not-a-duration.yaml",
        1,
        VS,
        "spec.http[0].timeout",
        "admission",
        "error",
        "'5 seconds' is not a duration",
    ),
    (
        "policy-selects-nothing.yaml",
        1,
        "AuthorizationPolicy/currency-converter-allow-client",
        "spec.selector.matchLabels",
        "analysis",
        "warning",
        "no workload in namespace payments-prod has the labels app=currency_converter",
    ),
]


@pytest.mark.parametrize(("name", "document", "obj", "field", "stage", "severity", "words"), BROKEN_CASES)
def test_broken_manifest_is_reported_precisely(
    name: str,
    document: int,
    obj: str,
    field: str,
    stage: str,
    severity: str,
    words: str,
    context: list[manifests.Resource],
) -> None:
    findings = findings_for(name, context)
    matching = [f for f in findings if f.field == field and f.index + 1 == document]
    assert matching, f"no finding for {field}; got:\n" + "\n".join(map(str, findings))
    finding = matching[0]
    assert (f"{finding.kind}/{finding.name}", finding.index + 1) == (obj, document)
    assert (finding.stage, finding.severity) == (stage, severity)
    assert words in finding.message
    assert finding.fix
    line = str(finding)
    assert line.startswith(f"{severity}: tests/broken/{name} (document {document}) {obj} {field}: ")
    assert "\n" not in line and f"What to do: {finding.fix}" in line


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "malformed-yaml.yaml",
            "tests/broken/malformed-yaml.yaml (document 2): invalid YAML at line 15, column 7",
        ),
        ("empty.yaml", "tests/broken/empty.yaml: no Kubernetes objects"),
        ("not-an-object.yaml", "tests/broken/not-an-object.yaml (document 1): expected a Kubernetes object"),
        (
            "duplicate-key.yaml",
            "tests/broken/duplicate-key.yaml (document 1): invalid YAML at line 16, column 11: "
            "the key 'weight' appears twice",
        ),
    ],
)
def test_unreadable_manifest_names_file_and_document(name: str, expected: str) -> None:
    with pytest.raises(ManifestError) as exc:
        manifests.load(BROKEN / name)
    assert expected in str(exc.value)


def test_every_broken_file_is_covered() -> None:
    unreadable = {"malformed-yaml.yaml", "empty.yaml", "not-an-object.yaml", "duplicate-key.yaml"}
    covered = {case[0] for case in BROKEN_CASES} | unreadable
    assert covered == {p.name for p in BROKEN.glob("*.yaml")}


def test_weights_not_summing_to_100_only_warn(context: list[manifests.Resource]) -> None:
    vs = canary.virtual_service("currency-converter", {"v1": 75, "v2": 35})
    findings = validation.check(manifests.load(vs), context=context)
    assert [(f.severity, f.stage, f.field) for f in findings] == [
        ("warning", "analysis", "spec.http[0].route")
    ]
    assert "add up to 110" in findings[0].message
    assert "relative weights: v1 68.2%, v2 31.8%" in findings[0].message


def test_canary_builder_output_is_clean(context: list[manifests.Resource]) -> None:
    vs = canary.virtual_service("currency-converter", {"v1": 90, "v2": 10})
    assert validation.validate(manifests.load(vs), context=context) == []


def test_check_lets_a_missing_subset_through_to_teach_503_nc(context: list[manifests.Resource]) -> None:
    resources = manifests.load(BROKEN / "missing-subset.yaml")
    (finding,) = validation.check(resources, context=context)
    assert (finding.severity, finding.stage) == ("warning", "analysis")
    assert "503 and flag NC" in finding.message
    with pytest.raises(ValidationError):
        validation.check(resources, context=context, strict=True)


def test_check_raises_on_what_istiod_rejects(context: list[manifests.Resource]) -> None:
    with pytest.raises(ValidationError) as exc:
        validation.check(manifests.load(BROKEN / "weight-total-zero.yaml"), context=context)
    assert [(f.stage, f.field) for f in exc.value.findings] == [("admission", "spec.http[0].route")]
    assert "tests/broken/weight-total-zero.yaml (document 1) VirtualService/currency-converter" in str(
        exc.value
    )


def test_v1beta1_is_validated_like_v1(context: list[manifests.Resource]) -> None:
    vs = canary.virtual_service("currency-converter", {"v1": 90, "v2": 10})
    good = {**vs, "apiVersion": "networking.istio.io/v1beta1"}
    assert validation.validate(manifests.load(good), context=context) == []
    route = good["spec"]["http"][0]["route"][0]
    bad = {**good, "spec": {**good["spec"], "http": [{"route": [{**route, "wieght": 5}]}]}}
    (finding,) = validation.validate(manifests.load(bad), context=context)
    assert (finding.field, finding.source) == ("spec.http[0].route[0].wieght", "<dict>")


def test_short_host_resolves_in_the_virtual_services_namespace(context: list[manifests.Resource]) -> None:
    vs = canary.virtual_service("currency-converter", {"v1": 100}, namespace="default")
    (finding,) = validation.validate(manifests.load(vs), context=context)
    assert finding.field == "spec.http[0].route[0].destination.host"
    assert "means currency-converter.default.svc.cluster.local" in finding.message
    assert "currency-converter.payments-prod.svc.cluster.local" in finding.fix


def test_service_entry_hosts_count_as_known(context: list[manifests.Resource]) -> None:
    entry = manifests.load(paths.MESH / "service-entry-fx-rates.yaml")
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "fx", "namespace": "payments-prod"},
        "spec": {
            "hosts": ["api.fxrates.example"],
            "http": [{"route": [{"destination": {"host": "api.fxrates.example"}}]}],
        },
    }
    assert validation.validate(manifests.load(vs), context=context + entry) == []
    (finding,) = validation.validate(manifests.load(vs), context=context)
    assert finding.field == "spec.http[0].route[0].destination.host"


def test_free_form_maps_stay_open(context: list[manifests.Resource]) -> None:
    # Header names, labels and selectors are user data, not schema fields.
    header_match = manifests.load(paths.MESH / "virtual-service-currency-converter-header-match.yaml")
    assert validation.validate(header_match, context=context) == []
    body = header_match[0].body
    body = {**body, "metadata": {**body["metadata"], "labels": {"team": "payments", "anything-goes": "yes"}}}
    assert validation.validate(manifests.load(body), context=context) == []


def test_cross_file_duplicates_are_alternatives_not_errors(context: list[manifests.Resource]) -> None:
    both = manifests.load(paths.MESH / "peer-authentication-strict.yaml") + manifests.load(
        paths.MESH / "peer-authentication-permissive.yaml"
    )
    (finding,) = validation.validate(both, context=context)
    assert (finding.severity, finding.field) == ("warning", "metadata.name")
    assert "only the last one stays" in finding.message


def test_cli_exit_codes_and_output(capsys: pytest.CaptureFixture[str]) -> None:
    canary = [
        str(paths.APPS),
        str(DESTINATION_RULE),
        str(paths.MESH / "virtual-service-currency-converter-90-10.yaml"),
    ]
    assert cli.main(["validate", *canary]) == 0
    out = capsys.readouterr().out
    objects = len(manifests.load(paths.APPS)) + 2
    assert out.strip().splitlines() == [f"{objects} object(s) checked: 0 error(s), 0 warning(s)"]

    assert cli.main(["validate", str(BROKEN / "unknown-field-weigth.yaml"), str(DESTINATION_RULE)]) == 1
    out = capsys.readouterr().out
    assert (
        "error: tests/broken/unknown-field-weigth.yaml (document 1) VirtualService/currency-converter "
        "spec.http[0].route[1].weigth: unknown field 'weigth'" in out
    )
    assert out.strip().splitlines()[-1] == "2 object(s) checked: 1 error(s), 0 warning(s)"

    assert cli.main(["validate", str(BROKEN / "subset-labels-match-nothing.yaml")]) == 0  # warnings only
    assert "1 warning(s)" in capsys.readouterr().out

    assert cli.main(["validate", str(BROKEN / "empty.yaml"), str(DESTINATION_RULE)]) == 1
    out = capsys.readouterr().out
    assert "error: tests/broken/empty.yaml: no Kubernetes objects" in out
    assert "1 object(s) checked: 1 error(s)" in out

    assert cli.main(["validate", "no/such/dir"]) == 1
    assert "no/such/dir: no such file or folder" in capsys.readouterr().out


def test_an_object_with_schema_errors_does_not_derail_the_others(context: list[manifests.Resource]) -> None:
    broken_rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "broken", "namespace": "payments-prod"},
        "spec": {"host": 8080, "subsets": [{"name": "v3", "labels": {"version": "v3"}}]},
    }
    vs = canary.virtual_service("currency-converter", {"v1": 90, "v2": 10})
    vs["spec"]["http"][0]["route"][1]["weight"] = None  # null means "not set": a weight of 0
    findings = validation.validate(manifests.load([broken_rule, vs]), context=context)
    assert [(f.name, f.field) for f in findings] == [("broken", "spec.host"), ("currency-converter", ROUTE)]
    assert findings[0].message == "8080 is not a string"
    assert "add up to 90, not 100" in findings[1].message


# Fields whose generated models use nullable wrappers, "exactly one of" variants, maps and numbers:
# all valid in Istio 1.31, so none may be reported.
VALID_ISTIO = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: zoo, namespace: payments-prod}
spec:
  hosts: [currency-converter]
  http:
    - match:
        - headers: {end-user: {exact: jason}, x-trace: {regex: ".*"}}
          uri: {prefix: /convert}
          queryParams: {debug: {exact: "1"}}
          ignoreUriCase: true
          method: {exact: GET}
      fault:
        delay: {fixedDelay: 0.5s, percentage: {value: 12.5}}
        abort: {grpcStatus: UNAVAILABLE, percentage: {value: 1}}
      retries: {attempts: 3, perTryTimeout: 0.2s, retryOn: "5xx,connect-failure"}
      timeout: 1.5s
      mirror: {host: currency-converter, subset: v2, port: {number: 8080}}
      mirrorPercentage: {value: 5.5}
      headers:
        request: {set: {x-lab: "yes"}, remove: [x-debug]}
        response: {add: {x-served-by: mesh}}
      rewrite: {uri: /v1/convert}
      route:
        - destination: {host: currency-converter, subset: v1, port: {number: 8080}}
          weight: 100
          headers: {response: {set: {x-version: v1}}}
    - redirect: {uri: /convert, redirectCode: 301}
    - directResponse: {status: 503, body: {string: "maintenance"}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: zoo, namespace: payments-prod}
spec:
  host: currency-converter
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1, connectTimeout: 30ms}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1, idleTimeout: 5s}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
      - port: {number: 8080}
        loadBalancer: {simple: ROUND_ROBIN}
  subsets:
    - name: v1
      labels: {version: v1}
      trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: zoo, namespace: payments-prod}
spec:
  selector: {matchLabels: {app: currency-converter}}
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: zoo, namespace: payments-prod}
spec:
  selector: {matchLabels: {app: currency-converter}}
  action: DENY
  rules:
    - from: [{source: {notNamespaces: [payments-prod], ipBlocks: [10.0.0.0/8]}}]
      to: [{operation: {methods: [POST], notPaths: [/healthz], ports: ["8080"]}}]
      when: [{key: "request.headers[x-token]", values: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: zoo, namespace: payments-prod}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
  location: MESH_EXTERNAL
  endpoints: [{address: api.example.com, ports: {https: 8443}, weight: 1}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: zoo, namespace: payments-prod}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 443, name: https, protocol: HTTPS}
      hosts: ["payments-prod/*"]
      tls: {mode: SIMPLE, credentialName: zoo-cert}
"""


def test_valid_istio_fields_are_not_reported(context: list[manifests.Resource]) -> None:
    resources = manifests.load(VALID_ISTIO)
    assert [r.kind for r in resources] == [
        "VirtualService",
        "DestinationRule",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "ServiceEntry",
        "Gateway",
    ]
    findings = validation.validate(resources, context=context)
    assert findings == [], "\n".join(map(str, findings))


def test_int_or_string_accepts_both_and_explains_either() -> None:
    service = next(
        r.body for r in manifests.load(paths.APPS / "currency-converter.yaml") if r.kind == "Service"
    )
    named = {
        **service,
        "spec": {**service["spec"], "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    assert validation.validate(manifests.load(named)) == []
    listed = {**service, "spec": {**service["spec"], "ports": [{"port": 80, "targetPort": [8080]}]}}
    (finding,) = validation.validate(manifests.load(listed))
    assert (finding.field, finding.message) == (
        "spec.ports[0].targetPort",
        "[8080] is not a string or a whole number",
    )
    assert finding.fix == "write a number (8080) or a name (http)"


# --- the schema cache: a fresh process with a warm cache must not import the Istio models -----------------

FRESH_PROCESS = """
import json, sys
from labkit import manifests, paths, validation
findings = validation.validate(manifests.load(sys.argv[1]), context=manifests.load(paths.APPS))
models = sorted({name.partition(".")[0] for name in sys.modules} & {"cloudcoil", "pydantic"})
print(json.dumps({"findings": [str(f) for f in findings], "imported": models}))
"""
WEIGTH = (
    "error: tests/broken/unknown-field-weigth.yaml (document 1) VirtualService/currency-converter "
    "spec.http[0].route[1].weigth: unknown field 'weigth' (did you mean 'weight'?). "
    "What to do: rename it to 'weight'"
)
REGENERATED = {"findings": [WEIGTH], "imported": ["cloudcoil", "pydantic"]}
FROM_CACHE = {"findings": [WEIGTH], "imported": []}


def validate_in_fresh_process(cache: Path) -> dict:
    """Findings for a VirtualService with a misspelled field, and which model packages got imported."""
    argv = [sys.executable, "-c", FRESH_PROCESS, str(BROKEN / "unknown-field-weigth.yaml")]
    env = {**os.environ, "LAB_CACHE": str(cache)}
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(run.stdout)


def test_warm_schema_cache_spares_importing_the_models(tmp_path: Path) -> None:
    cache = tmp_path / "not" / "yet"
    assert validate_in_fresh_process(cache) == REGENERATED
    assert len(list(cache.glob("istio-schemas-*.json"))) == 1
    assert validate_in_fresh_process(cache) == FROM_CACHE


def test_damaged_schema_cache_is_regenerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path))
    cut_short = '{"networking.istio.io/v1": {"VirtualService": {"type": "obj'
    validation.schemas.cache_file().write_text(cut_short)
    assert validate_in_fresh_process(tmp_path) == REGENERATED
    assert validate_in_fresh_process(tmp_path) == FROM_CACHE


def test_unusable_schema_cache_folder_leaves_schemas_in_memory(tmp_path: Path) -> None:
    # A folder below a regular file cannot be created, even by root (who may write to read-only folders).
    (tmp_path / "a-file").write_text("")
    assert validate_in_fresh_process(tmp_path / "a-file" / "cache") == REGENERATED
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


# More of istiod's rules (pkg/config/validation), each with the field it names: (kind, spec, field, words).
ISTIOD_RULES = [
    (
        "VirtualService",
        "{hosts: [a, a], http: [{route: [{destination: {host: a}}]}]}",
        "spec.hosts[1]",
        "duplicate hosts",
    ),
    ("VirtualService", "{hosts: [a]}", "spec", "http, tcp or tls must be provided"),
    (
        "VirtualService",
        "{hosts: [a_b], http: [{route: [{destination: {host: a}}]}]}",
        "spec.hosts[0]",
        "not a valid DNS name",
    ),
    (
        "VirtualService",
        "{gateways: [gw], http: [{route: [{destination: {host: a}}]}]}",
        "spec.gateways",
        "delegate",
    ),
    (
        "VirtualService",
        "{hosts: [a], http: [{route: [{destination: {host: '*'}}]}]}",
        "spec.http[0].route[0].destination.host",
        "invalid destination host *",
    ),
    (
        "VirtualService",
        "{hosts: [a], http: [{route: [{destination: {host: a, subset: V_1}}]}]}",
        "spec.http[0].route[0].destination.subset",
        "not a DNS-1123 label",
    ),
    (
        "VirtualService",
        "{hosts: [a], http: [{fault: {}, route: [{destination: {host: a}}]}]}",
        "spec.http[0].fault",
        "abort and/or a delay",
    ),
    (
        "VirtualService",
        "{hosts: [a], http: [{fault: {abort: {httpStatus: 700}}, route: [{destination: {host: a}}]}]}",
        "spec.http[0].fault.abort.httpStatus",
        "not in range 200-599",
    ),
    (
        "VirtualService",
        "{hosts: [a], http: [{fault: {delay: {exponentialDelay: 1s}}, route: [{destination: {host: a}}]}]}",
        "spec.http[0].fault.delay.exponentialDelay",
        "not supported yet",
    ),
    (
        "VirtualService",
        "{hosts: [a], http: [{fault: {delay: {fixedDelay: 500us}}, route: [{destination: {host: a}}]}]}",
        "spec.http[0].fault.delay.fixedDelay",
        "at least 1ms",
    ),
    (
        "VirtualService",
        "{hosts: [a], http: [{mirror: {host: b}, mirrorPercentage: {value: 101}, "
        "route: [{destination: {host: a}}]}]}",
        "spec.http[0].mirrorPercentage.value",
        "not in range 0 to 100",
    ),
    (
        "VirtualService",
        "{hosts: [a], http: [{retries: {attempts: -1}, route: [{destination: {host: a}}]}]}",
        "spec.http[0].retries.attempts",
        "cannot be negative",
    ),
    (
        "VirtualService",
        "{hosts: [a], http: [{retries: {attempts: 2, retryOn: '5xx, reset'}, "
        "route: [{destination: {host: a}}]}]}",
        "spec.http[0].retries.retryOn",
        "' reset' is not a valid retryOn policy",
    ),
    (
        "VirtualService",
        "{hosts: [a], http: [{match: [{uri: {prefix: ''}}], route: [{destination: {host: a}}]}]}",
        "spec.http[0].match[0].uri.prefix",
        "should not be empty",
    ),
    (
        "DestinationRule",
        "{host: a, trafficPolicy: {outlierDetection: {maxEjectionPercent: 120}}}",
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "not in range 0..100",
    ),
    (
        "DestinationRule",
        "{host: a, subsets: [{name: v1, trafficPolicy: {connectionPool: {tcp: {connectTimeout: '10'}}}}]}",
        "spec.subsets[0].trafficPolicy.connectionPool.tcp.connectTimeout",
        "not a duration",
    ),
    (
        "ServiceEntry",
        "{hosts: [a.example], ports: [{number: 80, name: a}, {number: 80, name: b}], resolution: DNS}",
        "spec.ports[1].number",
        "port 80 is already defined",
    ),
    (
        "ServiceEntry",
        "{hosts: [a.example], ports: [{number: 80, name: http, targetPort: 70000}], resolution: DNS}",
        "spec.ports[0].targetPort",
        "not in range 1..65535",
    ),
    (
        "PeerAuthentication",
        "{selector: {matchLabels: {app: a}}, portLevelMtls: {0: {mode: STRICT}}}",
        "spec.portLevelMtls.0",
        "not in range 1..65535",
    ),
    (
        "PeerAuthentication",
        "{selector: {matchLabels: {app: '*'}}, mtls: {mode: STRICT}}",
        "spec.selector.matchLabels.app",
        "wildcard is not supported in a selector",
    ),
    (
        "DestinationRule",
        "{host: a, trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {time: 0s}}}}}",
        "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
        "at least 1ms",
    ),
    (
        "VirtualService",
        "{hosts: [a], http: [{route: [{destination: {host: a, port: {number: 0}}}]}]}",
        "spec.http[0].route[0].destination.port.number",
        "not in range 1..65535",
    ),
    ("Gateway", "{servers: []}", "spec.servers", "at least one server"),
    ("AuthorizationPolicy", "{action: DENY}", "spec.rules", "DENY action without rules is meaningless"),
    ("AuthorizationPolicy", "{action: CUSTOM, rules: [{}]}", "spec.provider.name", "needs provider.name"),
    (
        "AuthorizationPolicy",
        "{provider: {name: x}, rules: [{}]}",
        "spec.provider",
        "only for the CUSTOM action",
    ),
    ("AuthorizationPolicy", "{rules: [{from: []}]}", "spec.rules[0].from", "must not be empty"),
    (
        "AuthorizationPolicy",
        "{rules: [{to: [{operation: {}}]}]}",
        "spec.rules[0].to[0].operation",
        "must not be empty",
    ),
    (
        "AuthorizationPolicy",
        "{rules: [{from: [{source: {principals: ['']}}]}]}",
        "spec.rules[0].from[0].source.principals[0]",
        "empty value not allowed",
    ),
    (
        "AuthorizationPolicy",
        "{rules: [{to: [{operation: {ports: ['9001', '70000']}}]}]}",
        "spec.rules[0].to[0].operation.ports[1]",
        "bad port '70000'",
    ),
    (
        "AuthorizationPolicy",
        "{rules: [{to: [{operation: {notPorts: [http]}}]}]}",
        "spec.rules[0].to[0].operation.notPorts[0]",
        "bad port 'http'",
    ),
    (
        "AuthorizationPolicy",
        "{rules: [{when: [{key: 'request.header[x-user]', values: [a]}]}]}",
        "spec.rules[0].when[0].key",
        "unknown attribute 'request.header[x-user]'",
    ),
    (
        "AuthorizationPolicy",
        "{rules: [{when: [{key: 'request.headers[]', values: [a]}]}]}",
        "spec.rules[0].when[0].key",
        "should have the format a[b]",
    ),
    (
        "AuthorizationPolicy",
        "{rules: [{when: [{key: 'destination.labels[app]', values: [a]}]}]}",
        "spec.rules[0].when[0].key",
        "replaced by the workload selector",
    ),
    (
        "AuthorizationPolicy",
        "{rules: [{when: [{key: source.ip}]}]}",
        "spec.rules[0].when[0]",
        "values or notValues",
    ),
    (
        "ServiceEntry",
        "{hosts: ['*.example.com'], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}",
        "spec.hosts[0]",
        "not a full name, which resolution DNS without endpoints",
    ),
    (
        "ServiceEntry",
        "{hosts: [a.example, b.example], ports: [{number: 5432, name: tcp, protocol: TCP}], resolution: DNS}",
        "spec.hosts",
        "several hosts with a non-HTTP, non-TLS port",
    ),
    (
        "Gateway",
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: []}]}",
        "spec.servers[0].hosts",
        "at least one host",
    ),
    (
        "Gateway",
        "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]}",
        "spec.servers[0].tls",
        "needs TLS settings",
    ),
    (
        "Gateway",
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}, "
        "{port: {number: 8080, name: http, protocol: HTTP}, hosts: ['*']}]}",
        "spec.servers[1].port.name",
        "already used by another server",
    ),
    (
        "Gateway",
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['Bad_NS/*']}]}",
        "spec.servers[0].hosts[0]",
        "namespace 'Bad_NS'",
    ),
    (
        "ServiceEntry",
        "{hosts: [], ports: [{number: 80, name: http}], resolution: DNS}",
        "spec.hosts",
        "needs at least 1 item",
    ),
    (
        "ServiceEntry",
        "{hosts: [a.example], ports: [{number: 80, name: http}, {number: 81, name: http}], resolution: DNS}",
        "spec.ports[1].name",
        "duplicate port name 'http'",
    ),
    (
        "ServiceEntry",
        "{hosts: [a.example], ports: [{number: 80, name: http}], resolution: DNS, "
        "endpoints: [{address: 'not a host'}]}",
        "spec.endpoints[0].address",
        "not a valid FQDN or an IP address",
    ),
]


@pytest.mark.parametrize(("kind", "spec", "field", "words"), ISTIOD_RULES)
def test_istiod_rules_are_enforced_with_their_field(kind: str, spec: str, field: str, words: str) -> None:
    api = (
        "security.istio.io/v1"
        if kind in ("PeerAuthentication", "AuthorizationPolicy")
        else "networking.istio.io/v1"
    )
    text = f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x, namespace: ns}}\nspec: {spec}\n"
    findings = [f for f in validation.validate(manifests.load(text)) if f.field == field]
    assert findings, "\n".join(map(str, validation.validate(manifests.load(text))))
    assert words in findings[0].message and findings[0].fix


def test_a_bad_namespace_name_is_the_api_servers_error() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: Payments}\n"
    (finding,) = validation.validate(manifests.load(text))
    assert (finding.stage, finding.field) == ("admission", "metadata.namespace")
    assert "What to do: use lower-case letters, digits and '-', e.g. payments" in str(finding)


def test_a_service_name_must_be_a_dns_1035_label() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: 1st-svc, namespace: ns}\n"
    text += "spec: {ports: [{port: 80}]}\n"
    (finding,) = validation.validate(manifests.load(text))
    assert finding.field == "metadata.name" and "not a valid DNS-1035 label" in finding.message


def test_rbac_names_follow_their_own_rule() -> None:
    role = (
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: 'system:lab-reader'}\n"
    )
    assert validation.validate(manifests.load(role + "rules: []\n")) == []
