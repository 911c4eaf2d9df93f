"""kind orchestration and the one ``_run``, against fake kind/docker executables (tests/fakes/bin) that stand
in for tools this machine cannot run: they record their argv and replay the real tools' documented output and
exit codes, so these tests check labkit's commands, reuse logic and error messages, not kind itself."""

from __future__ import annotations

import pytest
from fakes import harness

from labkit.command import run
from labkit.errors import CommandError, ToolNotFoundError
from labkit.kind import cluster


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return harness.install(tmp_path, monkeypatch)


def test_create_uses_the_lab_config_its_own_kubeconfig_and_waits(fake, tmp_path):
    assert cluster.create() is True
    [create] = [c for c in fake.calls("kind") if c[1:3] == ["create", "cluster"]]
    assert create[create.index("--name") + 1] == "meshlab"
    assert create[create.index("--config") + 1].endswith("cluster-config/kind/cluster.yaml")
    assert create[create.index("--kubeconfig") + 1] == str(tmp_path / "state" / "kind" / "kubeconfig")
    assert "--wait" in create
    assert "kind-meshlab" in cluster.kubeconfig().read_text()
    assert not (tmp_path / "home" / ".kube").exists(), "~/.kube/config must never be touched"


def test_existing_cluster_is_reused_without_create(fake):
    fake.add_cluster("meshlab")
    assert cluster.create() is False
    assert not [c for c in fake.calls("kind") if c[1] == "create"]
    assert cluster.kubeconfig().exists(), (
        "the reused cluster's credentials are exported to the lab kubeconfig"
    )


def test_node_already_exist_error_from_create_means_reuse(fake):
    # kind get clusters did not list it (e.g. created meanwhile) but create reports the documented message.
    msg = 'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "meshlab"\n'
    fake.respond("kind", ["create", "cluster"], stderr=msg, rc=1)
    fake.respond("kind", ["export", "kubeconfig"], stderr='Set kubectl context to "kind-meshlab"\n')
    assert cluster.create() is False
    assert [c for c in fake.calls("kind") if c[1:3] == ["export", "kubeconfig"]]


def test_other_create_failures_raise_with_output_and_fix(fake):
    msg = 'ERROR: failed to create cluster: command "docker run ..." failed: port is already allocated\n'
    fake.respond("kind", ["create", "cluster"], stderr=msg, rc=1)
    with pytest.raises(CommandError) as err:
        cluster.create()
    assert err.value.returncode == 1
    assert "port is already allocated" in str(err.value)
    assert "kind delete cluster --name meshlab" in str(err.value)


def test_delete_is_idempotent(fake):
    fake.add_cluster("meshlab")
    cluster.delete()
    cluster.delete()  # kind exits 0 for a missing cluster too
    assert not cluster.exists()
    assert len([c for c in fake.calls("kind") if c[1:3] == ["delete", "cluster"]]) == 2


def test_image_is_built_then_loaded_into_the_named_cluster(fake):
    fake.add_cluster("meshlab")
    cluster.build_image()
    cluster.load_image()
    docker_build = fake.calls("docker")[0]
    assert docker_build[1:4] == ["build", "-t", "meshlab/currency-converter:0.1.0"]
    assert docker_build[4].endswith("services/currency-converter")
    assert fake.calls("kind")[-1][1:] == [
        "load",
        "docker-image",
        "meshlab/currency-converter:0.1.0",
        "--name",
        "meshlab",
    ]


def test_load_into_a_cluster_that_does_not_exist_is_refused_like_kind(fake):
    cluster.build_image()
    with pytest.raises(CommandError, match='no nodes found for cluster "meshlab"'):
        cluster.load_image()


def test_containerd_image_store_failure_falls_back_to_save_and_image_archive(fake):
    fake.add_cluster("meshlab")
    fake.containerd_store()
    cluster.build_image()
    cluster.load_image()
    [save] = [c for c in fake.calls("docker") if c[1] == "save"]
    assert save[save.index("--platform") + 1] == cluster.node_platform()
    archive = save[save.index("-o") + 1]
    assert fake.calls("kind")[-1][1:] == ["load", "image-archive", archive, "--name", "meshlab"]


def test_other_load_failures_are_not_retried_as_an_archive(fake):
    fake.add_cluster("meshlab")
    fake.respond("kind", ["load", "docker-image"], stderr="ERROR: some other failure\n", rc=1)
    cluster.build_image()
    with pytest.raises(CommandError, match="some other failure"):
        cluster.load_image()
    assert not [c for c in fake.calls("docker") if c[1] == "save"]


def test_kind_refuses_a_config_with_an_unknown_field_like_kind(fake, tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: control-plane\n"
        "  extraPortMapping: []\n"
    )
    with pytest.raises(CommandError, match='json: unknown field "extraPortMapping"'):
        cluster.create(config=config)


def test_a_reused_cluster_without_the_lab_port_mapping_is_detected(fake):
    fake.add_cluster("meshlab", ports=())
    problem = cluster.port_mapping_problem()
    assert "does not publish port 8080" in problem
    assert "What to do: `kind delete cluster --name meshlab`" in problem
    fake.add_cluster("meshlab")  # created with cluster.yaml
    assert cluster.port_mapping_problem() is None


def test_a_cluster_created_with_the_lab_config_publishes_its_ports(fake):
    cluster.create()
    assert cluster.port_mapping_problem() is None


def test_loading_an_image_that_was_not_built_says_to_build_it(fake):
    with pytest.raises(CommandError) as err:
        cluster.load_image()
    assert "not present locally" in str(err.value)
    assert "docker build -t meshlab/currency-converter:0.1.0" in str(err.value)


def test_run_times_out_with_the_command_named(fake):
    fake.respond("kind", ["get", "clusters"], sleep=5)
    with pytest.raises(CommandError) as err:
        run(["kind", "get", "clusters"], timeout=1)
    assert err.value.returncode is None
    assert "`kind get clusters` timed out" in str(err.value)


def test_run_merges_the_environment_and_passes_input(fake, monkeypatch):
    monkeypatch.setenv("LAB_ONLY_IN_PARENT", "kept")
    result = run(
        [
            "python3",
            "-c",
            "import os,sys; print(os.environ['LAB_ONLY_IN_PARENT'], os.environ['EXTRA'], sys.stdin.read())",
        ],
        timeout=30,
        env={"EXTRA": "added"},
        input="piped",
    )
    assert result.stdout.split() == ["kept", "added", "piped"]


def test_missing_tool_names_it_and_how_to_get_it(fake, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolNotFoundError, match="`kind` was not found on PATH; run `labkit tools install`"):
        cluster.exists()
