"""Static checks of the deployment files in cluster/: the real files pass every check in
cluster_checks.py, and deliberately broken copies fail them (so each check can fail)."""
from __future__ import annotations

import copy

import pytest
from cluster_checks import (CLUSTER, CREDENTIAL_IN_URL, LAUNCHERS, WHEEL, image_problems, k8s_docs,
                            kuberay_problems, launcher_pin_problems, launcher_schema_problems,
                            launcher_topology_problems, literal_secret_problems, load_yaml, mlflow_problems,
                            ray_schema, secret_source_problems, shared_storage_problems, strings,
                            train_job_problems)

# ---------------------------------------------------------------------------------------------
# tests on the real files

@pytest.fixture(scope="module")
def docs():
    return k8s_docs()


def test_schema_file_ships_with_ray():
    schema = ray_schema()
    assert "available_node_types" in schema["properties"]
    assert set(schema["required"]) >= {"cluster_name", "provider"}


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_validates_against_ray_schema(path):
    assert launcher_schema_problems(load_yaml(path)) == []


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_passes_ray_config_preparation(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(load_yaml(path)))
    validate_config(prepared)  # schema again after defaults, plus Ray's cross-field checks
    assert prepared["provider"]["type"] == path.stem


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_head_cpu_only_gpu_workers_and_bounds(path):
    assert launcher_topology_problems(load_yaml(path)) == []


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_setup_installs_pinned_release(path):
    assert launcher_pin_problems(load_yaml(path)) == []


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_has_no_literal_credentials(path):
    assert [s for s in strings(load_yaml(path)) if CREDENTIAL_IN_URL.search(s)] == []


def test_manifests_parse_and_are_namespaced(docs):
    assert docs, "no Kubernetes manifests under cluster/"
    for path, doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "igan", f"{path.name}: {doc['kind']}"


def test_kuberay_manifests(docs):
    assert kuberay_problems(docs) == []


def test_one_pinned_image_everywhere(docs):
    assert image_problems(docs) == []


def test_checkpoints_on_shared_or_object_storage(docs):
    assert shared_storage_problems(docs) == []


def test_train_job_fits_cluster_and_tracks_to_mlflow(docs):
    assert train_job_problems(docs) == []


def test_no_literal_secrets(docs):
    assert literal_secret_problems(docs) == []


def test_secrets_come_from_the_secret_store(docs):
    assert secret_source_problems(docs) == []


def test_mlflow_server_private_authenticated_postgres_s3(docs):
    assert mlflow_problems(docs) == []


# ---------------------------------------------------------------------------------------------
# the checks catch broken files

def _find(docs, kind, name=None):
    for i, (_, doc) in enumerate(docs):
        if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name):
            return i
    raise LookupError(kind)


def test_checks_catch_broken_launcher():
    cfg = load_yaml(CLUSTER / "aws.yaml")
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["ray.worker.h100x8"]["resources"]["GPU"] = "8"  # schema: integer
    assert launcher_schema_problems(bad)
    bad = copy.deepcopy(cfg)
    bad["available_node_types"][bad["head_node_type"]]["resources"]["GPU"] = 8
    bad["available_node_types"][bad["head_node_type"]]["node_config"]["InstanceType"] = "p5.48xlarge"
    assert len(launcher_topology_problems(bad)) >= 2
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["ray.worker.h100x8"]["min_workers"] = 5
    assert launcher_topology_problems(bad)
    bad = copy.deepcopy(cfg)
    bad["setup_commands"] = [c.replace(WHEEL, "igan") for c in bad["setup_commands"]]
    assert launcher_pin_problems(bad)


def test_checks_catch_broken_manifests(docs):
    bad = copy.deepcopy(docs)
    i = _find(bad, "RayCluster")
    group = bad[i][1]["spec"]["workerGroupSpecs"][0]
    del group["template"]["spec"]["tolerations"]
    bad[i][1]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = "rayproject/ray:latest"
    assert kuberay_problems(bad) and image_problems(bad)

    bad = copy.deepcopy(docs)
    i = _find(bad, "RayJob", "igan-train-imagenet128")
    bad[i][1]["spec"]["entrypoint"] = bad[i][1]["spec"]["entrypoint"].replace(
        "/mnt/shared/igan-checkpoints", "/tmp/igan-checkpoints").replace("--workers 16", "--workers 32")
    assert shared_storage_problems(bad) and train_job_problems(bad)

    bad = copy.deepcopy(docs)
    i = _find(bad, "Deployment", "mlflow")
    server = bad[i][1]["spec"]["template"]["spec"]["containers"][0]
    server["env"][0] = {"name": "MLFLOW_BACKEND_STORE_URI", "value": "postgresql://mlflow:hunter2@db:5432/mlflow"}
    server["args"] = [a.replace("--app-name basic-auth", "") for a in server["args"]]
    bad[_find(bad, "Service", "mlflow")][1]["spec"]["type"] = "LoadBalancer"
    assert literal_secret_problems(bad) and len(mlflow_problems(bad)) >= 3
