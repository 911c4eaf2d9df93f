"""labkit.manifests: every source form, document indexes, error messages, and the canary builder."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit import canary, manifests, paths
from labkit.errors import LabError, ManifestError

SA = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: payments-prod\n"
VS_90_10 = paths.MESH / "virtual-service-currency-converter-90-10.yaml"


def sa(name: str) -> str:
    return SA.format(name=name)


def test_load_file_keeps_document_indexes_true_to_the_file(tmp_path: Path) -> None:
    # Document 2 is empty and document 3 only a comment: both skipped, but still counted.
    path = tmp_path / "sa.yaml"
    path.write_text(sa("a") + "---\n---\n# nothing here\n---\n" + sa("b"))
    resources = manifests.load(path)
    assert [(r.name, r.index) for r in resources] == [("a", 0), ("b", 3)]
    assert {r.source for r in resources} == {str(path)}
    assert resources[1].where == f"{path} (document 4) ServiceAccount/b"


def test_load_folder_is_recursive_and_sorted(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.yml").write_text(sa("from-b"))
    (tmp_path / "a.yaml").write_text(sa("from-a"))
    (tmp_path / "sub" / "c.yaml").write_text(sa("from-c"))
    (tmp_path / "notes.txt").write_text("not a manifest")
    assert [r.name for r in manifests.load(tmp_path)] == ["from-a", "from-b", "from-c"]
    assert [r.name for r in manifests.load(str(tmp_path))] == ["from-a", "from-b", "from-c"]


def test_load_yaml_text_dict_and_list() -> None:
    text = manifests.load(sa("t1") + "---\n" + sa("t2"))
    assert [(r.name, r.source, r.index) for r in text] == [("t1", "<string>", 0), ("t2", "<string>", 1)]
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments-prod"}}
    (one,) = manifests.load(body)
    assert (one.source, one.index, one.kind, one.name) == ("<dict>", 0, "Namespace", "payments-prod")
    listed = manifests.load([body, {**body, "metadata": {"name": "legacy"}}])
    assert [(r.name, r.index) for r in listed] == [("payments-prod", 0), ("legacy", 1)]


def test_kind_list_is_expanded_under_its_document_index() -> None:
    text = (
        sa("first")
        + "---\napiVersion: v1\nkind: List\nitems:\n"
        + "".join(
            f"  - {{apiVersion: v1, kind: Service, metadata: {{name: {n}, namespace: x}}}}\n"
            for n in ("s1", "s2")
        )
    )
    assert [(r.kind, r.name, r.index) for r in manifests.load(text)] == [
        ("ServiceAccount", "first", 0),
        ("Service", "s1", 1),
        ("Service", "s2", 1),
    ]


def test_resource_properties() -> None:
    (vs,) = manifests.load(VS_90_10)
    assert (vs.api_version, vs.group, vs.version, vs.kind) == (
        "networking.istio.io/v1",
        "networking.istio.io",
        "v1",
        "VirtualService",
    )
    assert vs.key == ("networking.istio.io", "VirtualService", "payments-prod", "currency-converter")
    assert vs.spec["hosts"] == ["currency-converter"]
    assert vs.where == (
        "cluster-config/mesh/virtual-service-currency-converter-90-10.yaml (document 1) "
        "VirtualService/currency-converter"
    )
    ns, *_ = manifests.load(paths.APPS / "currency-converter.yaml")
    assert (ns.kind, ns.namespace, ns.group, ns.labels) == (
        "Namespace",
        "",
        "",
        {"istio-injection": "enabled"},
    )
    (plain,) = manifests.load({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    assert plain.namespace == "default"
    assert plain.spec == {} and plain.labels == {}


def test_kind_cluster_config_needs_no_metadata() -> None:
    (cluster,) = manifests.load(paths.KIND_CONFIG)
    assert (cluster.group, cluster.kind, cluster.name) == ("kind.x-k8s.io", "Cluster", "")


@pytest.mark.parametrize("missing", ["no/such/file.yaml", "no/such/folder", Path("no/such/folder")])
def test_missing_path_is_named(missing: str | Path) -> None:
    with pytest.raises(ManifestError, match=r"no/such/(file\.yaml|folder): no such file or folder"):
        manifests.load(missing)


def test_malformed_yaml_names_file_document_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    # Line 10 has two "key: value" on one line: PyYAML stops at the second colon.
    path.write_text(sa("ok") + "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a: b\n")
    with pytest.raises(ManifestError) as exc:
        manifests.load(path)
    message = str(exc.value)
    assert (
        f"{path} (document 2): invalid YAML at line 10, column 10: mapping values are not allowed" in message
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", r"<string> \(document 1\): expected a Kubernetes object .* got a list"),
        ("just words\n", r"<string> \(document 1\): expected a Kubernetes object .* got a str"),
        ("kind: Service\nmetadata: {name: s}\n", r"<string> \(document 1\): the object has no apiVersion"),
        ("apiVersion: v1\nmetadata: {name: s}\n", r"<string> \(document 1\): the object has no kind"),
        (
            sa("ok") + "---\napiVersion: v1\nkind: Service\n",
            r"\(document 2\) Service: the object has no metadata",
        ),
        ("# only a comment\n", r"<string>: no Kubernetes objects"),
    ],
)
def test_not_an_object_is_rejected(text: str, expected: str) -> None:
    with pytest.raises(ManifestError, match=expected):
        manifests.load(text)


def test_path_like_strings_are_paths_and_other_strings_yaml(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="missing.yml: no such file"):
        manifests.load("missing.yml")
    # A one-line string with a colon that names nothing on disk is YAML text.
    (ns,) = manifests.load("{apiVersion: v1, kind: Namespace, metadata: {name: x}}")
    assert ns.source == "<string>"


def test_canary_virtual_service_matches_the_90_10_file() -> None:
    (vs,) = manifests.load(VS_90_10)
    built = canary.virtual_service("currency-converter", {"v1": 90, "v2": 10})
    assert built == vs.body


def test_canary_virtual_service_keeps_the_order_given() -> None:
    built = canary.virtual_service("svc", {"v2": 25, "v1": 75}, namespace="shop")
    route = built["spec"]["http"][0]["route"]
    assert [(d["destination"]["subset"], d["weight"]) for d in route] == [("v2", 25), ("v1", 75)]
    assert built["metadata"] == {"name": "svc", "namespace": "shop"}
    assert {d["destination"]["host"] for d in route} == {"svc"}


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"v1": 110, "v2": -10}, "weight of subset 'v2' is -10. What to do: use a weight of 0 or more"),
        ({"v1": 90.5, "v2": 9.5}, "weight of subset 'v1' is 90.5. What to do: use a whole number"),
        ({"v1": "90"}, "weight of subset 'v1' is '90'. What to do: use a whole number"),
        ({"v1": True}, "use a whole number"),
        ({"v1": 0, "v2": 0}, "all weights for currency-converter are 0"),
        ({}, "no weights given"),
    ],
)
def test_canary_virtual_service_rejects_bad_weights(weights: dict, expected: str) -> None:
    with pytest.raises(LabError, match=expected):
        canary.virtual_service("currency-converter", weights)


def test_yaml_merge_keys_work_and_duplicate_keys_are_refused() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  <<: {a: '1'}\n  b: '2'\n"
    (cm,) = manifests.load(text)
    assert cm.body["data"] == {"a": "1", "b": "2"}
    with pytest.raises(ManifestError, match=r"line 7, column 3: the key 'b' appears twice in one mapping"):
        manifests.load(text + "  b: '3'\n")


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "image.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ManifestError, match="image.yaml: not a text file"):
        manifests.load(path)


def test_the_kubectl_line_names_a_file_as_typed_from_the_repository_root(tmp_path: Path) -> None:
    from labkit.lab import kubectl_line

    strict = paths.MESH / "peer-authentication-strict.yaml"
    assert kubectl_line("apply", strict) == (
        "# on a cluster: kubectl apply -f cluster-config/mesh/peer-authentication-strict.yaml"
    )
    assert kubectl_line("apply", str(paths.APPS)) == "# on a cluster: kubectl apply -R -f cluster-config/apps"
    outside = tmp_path / "mine.yaml"
    outside.write_text(STRICT_TEXT)
    assert kubectl_line("delete", outside) == f"# on a cluster: kubectl delete -f {outside}"
    assert kubectl_line("apply", STRICT_TEXT).endswith("kubectl apply -f -   (these objects' YAML on stdin)")
    assert kubectl_line("apply", {"kind": "x"}) == kubectl_line("apply", [{"kind": "x"}])


STRICT_TEXT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
"""
