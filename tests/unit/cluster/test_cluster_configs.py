"""Static checks of the deployment files in cluster/: the real files pass every check in
cluster_checks.py, and deliberately broken copies fail them (so each check can fail)."""
from __future__ import annotations

import copy
import re

import pytest
from helpers.cluster_checks import (CLUSTER, CREDENTIAL_IN_URL, INCEPTION_ENV, LAUNCHERS, WHEEL, containers,
                            dockerfile_context_problems, image_problems, inception_env_problems, k8s_docs,
                            kuberay_problems, launcher_env_problems, launcher_pin_problems,
                            launcher_schema_problems, launcher_shell_problems, launcher_topology_problems,
                            literal_secret_problems, load_yaml, mlflow_problems, ray_schema,
                            secret_source_problems, shared_storage_problems, strings, train_job_problems)

DOCKERFILE, DOCKERIGNORE = CLUSTER / "Dockerfile", CLUSTER / "Dockerfile.dockerignore"

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


# ---------------------------------------------------------------------------------------------
# Inception weights on every Ray process; shell and build context

WEIGHTS_ON_SHARED = "/mnt/shared/inception/"


def test_every_ray_pod_and_submitter_gets_inception_weights(docs):
    assert inception_env_problems(docs) == []


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_nodes_export_inception_weights_and_mlflow(path):
    assert launcher_env_problems(load_yaml(path)) == []


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_commands_are_valid_bash(path):
    assert launcher_shell_problems(load_yaml(path)) == []


def test_dockerfile_copies_only_what_the_context_admits():
    assert dockerfile_context_problems(DOCKERFILE.read_text(), DOCKERIGNORE.read_text()) == []


def _set_weights(docs, value: str) -> None:
    """Point every IGAN_INCEPTION_WEIGHTS in ``docs`` at ``value``."""
    for _, doc in docs:
        for c in containers(doc):
            for env in c.get("env", []):
                if env["name"] == INCEPTION_ENV:
                    env["value"] = value


def test_checks_catch_missing_or_misplaced_inception_weights(docs):
    bad = copy.deepcopy(docs)  # the cpu group loses the variable
    i = _find(bad, "RayCluster")
    cpu = next(g for g in bad[i][1]["spec"]["workerGroupSpecs"] if g["groupName"] == "cpu")
    container = cpu["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != INCEPTION_ENV]
    assert any("igan/cpu" in p for p in inception_env_problems(bad))

    bad = copy.deepcopy(docs)  # the training cluster's head points elsewhere
    i = _find(bad, "RayJob", "igan-train-imagenet128")
    head = bad[i][1]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    for env in head["env"]:
        if env["name"] == INCEPTION_ENV:
            env["value"] = "s3://igan-data/inception/"
    assert any("differs" in p for p in inception_env_problems(bad))

    bad = copy.deepcopy(docs)  # a submitter without the template, and a path no Ray pod mounts
    del bad[_find(bad, "RayJob", "igan-tune-imagenet128")][1]["spec"]["submitterPodTemplate"]
    _set_weights(bad, "/data/inception/")
    problems = inception_env_problems(bad)
    assert any("submitterPodTemplate" in p for p in problems) and any("mounted volume" in p for p in problems)

    bad = copy.deepcopy(docs)  # a path in the image passes only when the Dockerfile copies the files there
    _set_weights(bad, "/opt/igan/inception/")
    dockerfile = DOCKERFILE.read_text()
    uncommented = dockerfile.replace("# COPY inception/", "COPY inception/")
    assert uncommented != dockerfile
    assert any("nor in the image" in p for p in inception_env_problems(bad, dockerfile))
    assert inception_env_problems(bad, uncommented) == []

    bad = copy.deepcopy(docs)  # the paper graph's file: igan train checks torchvision's and would stop
    _set_weights(bad, WEIGHTS_ON_SHARED + "pt_inception-2015-12-05-6726825d.pth")
    assert any("the file igan train checks" in p for p in inception_env_problems(bad))
    _set_weights(bad, WEIGHTS_ON_SHARED + "inception_v3_google-0cc3c7bd.pth")  # the file itself is fine
    assert inception_env_problems(bad) == []


def test_checks_catch_launcher_without_weights_or_shell():
    cfg = load_yaml(CLUSTER / "aws.yaml")
    bad = copy.deepcopy(cfg)
    bad["worker_start_ray_commands"] = [re.sub(r"export IGAN_INCEPTION_WEIGHTS=\S+;", "", c)
                                        for c in bad["worker_start_ray_commands"]]
    assert launcher_env_problems(bad) == ["worker_start_ray_commands: ray start does not export IGAN_INCEPTION_WEIGHTS"]
    bad = copy.deepcopy(cfg)  # a GCS URI on AWS
    bad["head_start_ray_commands"] = [c.replace("s3://", "gs://") for c in bad["head_start_ray_commands"]]
    bad["worker_start_ray_commands"] = [c.replace("s3://", "gs://") for c in bad["worker_start_ray_commands"]]
    assert launcher_env_problems(bad)
    bad = copy.deepcopy(cfg)  # exported after ray start: the node would not inherit it
    bad["head_start_ray_commands"] = [c.replace("export IGAN_INCEPTION_WEIGHTS", "true; : IGAN_INCEPTION_WEIGHTS")
                                      + "; export IGAN_INCEPTION_WEIGHTS=s3://igan-data/inception/x.pth"
                                      for c in bad["head_start_ray_commands"]]
    assert launcher_env_problems(bad)
    bad = copy.deepcopy(cfg)  # a path on a file system the nodes do not mount
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        bad[key] = [re.sub(r"s3://igan-data/inception/", "/mnt/other/", c) for c in bad[key]]
    assert any("mounted volume" in p for p in launcher_env_problems(bad))
    bad = copy.deepcopy(cfg)
    bad["setup_commands"] = [c.replace("/mnt/shared; }", "/mnt/shared;") for c in bad["setup_commands"]]
    assert launcher_shell_problems(bad)


def test_checks_catch_copy_outside_the_build_context():
    dockerfile, ignore = DOCKERFILE.read_text(), DOCKERIGNORE.read_text()
    uncommented = dockerfile.replace("# COPY inception/", "COPY inception/")
    assert dockerfile_context_problems(uncommented, ignore)  # the Dockerfile's comment says why
    assert dockerfile_context_problems(uncommented, ignore + "!inception\n") == []
    assert dockerfile_context_problems(dockerfile, ignore.replace("!pipelines\n", ""))
    assert dockerfile_context_problems(dockerfile, ignore + "pipelines\n")  # a later exclude wins
