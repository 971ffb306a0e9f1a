"""Static checks of the deployment files in cluster/: the real files pass every check in
cluster_checks.py, and deliberately broken copies fail them (so each check can fail)."""
from __future__ import annotations

import copy
import re

import pytest
from helpers.cluster_checks import (CLUSTER, CREDENTIAL_IN_URL, INCEPTION_ENV, INSTALLER_SUMS, LAUNCHERS, WHEEL, containers,
                            digest_pin_problems, dockerfile_context_problems, dockerfile_runs, image_problems,
                            inception_env_problems, installer_hash_problems, installer_release_problems, k8s_docs,
                            kuberay_problems, launcher_auth_problems, launcher_commands, launcher_dashboard_problems,
                            launcher_env_problems, launcher_pin_problems, launcher_schema_problems,
                            launcher_shell_problems, launcher_topology_problems, literal_secret_problems, load_yaml,
                            mlflow_problems, mlflow_tls_problems, ray_auth_problems, ray_network_policy_problems,
                            ray_schema, secret_source_problems, security_context_problems, shared_storage_problems,
                            strings, train_job_problems)

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


# ---------------------------------------------------------------------------------------------
# the lock-down (cluster/README.md, "Security"): the real files pass ...

def test_ray_token_auth_everywhere_from_the_secret_store(docs):
    assert ray_auth_problems(docs) == []


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_nodes_use_the_token_from_the_secret_manager(path):
    assert launcher_auth_problems(load_yaml(path)) == []


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_dashboard_listens_on_loopback_only(path):
    assert launcher_dashboard_problems(load_yaml(path)) == []


def test_ray_ports_admit_only_own_pods_submitters_and_operator(docs):
    assert ray_network_policy_problems(docs) == []


def test_pods_run_non_root_and_unprivileged(docs):
    assert security_context_problems(docs) == []


def test_images_pinned_by_digest(docs):
    assert digest_pin_problems(docs) == []


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_installers_checked_by_hash(path):
    cfg = load_yaml(path)
    assert installer_hash_problems(launcher_commands(cfg)) == []
    assert installer_release_problems(cfg) == []


def test_dockerfile_pipes_no_download_into_a_shell():
    assert installer_hash_problems(dockerfile_runs(DOCKERFILE.read_text())) == []


def test_mlflow_only_over_tls(docs):
    assert mlflow_tls_problems(docs) == []


# ... and each lock-down check catches a broken copy

def _containers_named(docs, name):
    return [c for _, doc in docs for c in containers(doc) if c["name"] == name]


def _drop_env(container, name):
    container["env"] = [e for e in container["env"] if e["name"] != name]


def test_auth_check_catches_missing_or_literal_tokens(docs):
    bad = copy.deepcopy(docs)  # a worker group without RAY_AUTH_MODE
    cpu = next(g for g in bad[_find(bad, "RayCluster")][1]["spec"]["workerGroupSpecs"] if g["groupName"] == "cpu")
    _drop_env(cpu["template"]["spec"]["containers"][0], "RAY_AUTH_MODE")
    assert any("igan/cpu: RAY_AUTH_MODE" in p for p in ray_auth_problems(bad))

    bad = copy.deepcopy(docs)  # a submitter with a literal token
    submitter = _containers_named(bad, "ray-job-submitter")[0]
    for env in submitter["env"]:
        if env["name"] == "RAY_AUTH_TOKEN":
            env.pop("valueFrom")
            env["value"] = "0123456789abcdef"
    problems = ray_auth_problems(bad)
    assert any("literal RAY_AUTH_TOKEN" in p for p in problems)
    assert any("submitter: RAY_AUTH_TOKEN" in p for p in problems)
    assert literal_secret_problems(bad)

    bad = copy.deepcopy(docs)  # KubeRay would generate its own token; the autoscaler has none
    spec = bad[_find(bad, "RayCluster")][1]["spec"]
    del spec["authOptions"]["secretName"]
    spec["autoscalerOptions"]["env"] = []
    problems = ray_auth_problems(bad)
    assert any("authOptions" in p for p in problems) and any("autoscaler" in p for p in problems)

    bad = copy.deepcopy(docs)  # the token Secret is not made by the secret store
    del bad[_find(bad, "ExternalSecret", "igan-ray-token")]
    assert any("one ExternalSecret" in p for p in ray_auth_problems(bad))

    bad = copy.deepcopy(docs)  # turned off in one container
    head = bad[_find(bad, "RayCluster")][1]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    next(e for e in head["env"] if e["name"] == "RAY_AUTH_MODE")["value"] = "disabled"
    assert any("RAY_AUTH_MODE=disabled" in p for p in ray_auth_problems(bad))


def test_launcher_auth_check_catches_open_or_literal_tokens():
    cfg = load_yaml(CLUSTER / "aws.yaml")
    bad = copy.deepcopy(cfg)  # a worker node started without token authentication
    bad["worker_start_ray_commands"] = [c.replace("export RAY_AUTH_MODE=token;", "")
                                        for c in bad["worker_start_ray_commands"]]
    assert launcher_auth_problems(bad) == ["worker_start_ray_commands: ray start does not export RAY_AUTH_MODE=token"]
    bad = copy.deepcopy(cfg)  # a literal token instead of the file from the secret manager
    bad["head_start_ray_commands"] = [c.replace("export RAY_AUTH_TOKEN_PATH=$HOME/.ray/auth_token;",
                                                "export RAY_AUTH_TOKEN=0123456789abcdef;")
                                      for c in bad["head_start_ray_commands"]]
    problems = launcher_auth_problems(bad)
    assert any("RAY_AUTH_TOKEN_PATH" in p for p in problems) and any("sets RAY_AUTH_TOKEN" in p for p in problems)
    bad = copy.deepcopy(cfg)  # the token file readable by everyone on the node
    bad["setup_commands"] = [c.replace("umask 077 && mkdir -p ~/.ray", "mkdir -p ~/.ray").replace(
        "chmod 600 ~/.ray/auth_token", "chmod 644 ~/.ray/auth_token") for c in bad["setup_commands"]]
    assert any("0600 file" in p for p in launcher_auth_problems(bad))
    bad = copy.deepcopy(cfg)  # the dashboard on every interface again
    bad["head_start_ray_commands"] = [c.replace("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")
                                      for c in bad["head_start_ray_commands"]]
    assert launcher_dashboard_problems(bad) == [
        "head_start_ray_commands: --dashboard-host=0.0.0.0 listens beyond the head's loopback"]


def test_network_policy_check_catches_open_ray_ports(docs):
    bad = copy.deepcopy(docs)  # no policy for the training cluster
    del bad[_find(bad, "NetworkPolicy", "igan-train-imagenet128-ray")]
    assert any("igan-train-imagenet128/head: no NetworkPolicy" in p for p in ray_network_policy_problems(bad))

    bad = copy.deepcopy(docs)  # "own pods" widened to every igan pod: MLflow and the other cluster get in
    policy = bad[_find(bad, "NetworkPolicy", "igan-ray")][1]
    policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] = {"app.kubernetes.io/part-of": "igan"}
    assert any("also admits" in p and "mlflow" in p for p in ray_network_policy_problems(bad))

    bad = copy.deepcopy(docs)  # a rule open to every source, and one from anywhere on the internet
    rules = bad[_find(bad, "NetworkPolicy", "igan-ray")][1]["spec"]["ingress"]
    rules.append({"ports": [{"port": 8265}]})
    rules.append({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
    problems = ray_network_policy_problems(bad)
    assert any("without 'from'" in p for p in problems) and any("ipBlock" in p for p in problems)

    bad = copy.deepcopy(docs)  # "the operator's namespace" pointed at igan itself: every igan pod gets in
    operator = bad[_find(bad, "NetworkPolicy", "igan-ray")][1]["spec"]["ingress"][1]["from"][1]
    operator["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] = "igan"
    operator["podSelector"]["matchLabels"] = {"app.kubernetes.io/part-of": "igan"}
    assert any("also admits" in p for p in ray_network_policy_problems(bad))

    bad = copy.deepcopy(docs)  # submitters and operator let onto the GCS port too
    rule = bad[_find(bad, "NetworkPolicy", "igan-ray")][1]["spec"]["ingress"][1]
    rule["ports"].append({"protocol": "TCP", "port": 6379})
    assert any("not only the dashboard port" in p for p in ray_network_policy_problems(bad))

    bad = copy.deepcopy(docs)  # a submitter without its label: its RayJob could not submit
    tune = bad[_find(bad, "RayJob", "igan-tune-imagenet128")][1]
    del tune["spec"]["submitterPodTemplate"]["metadata"]["labels"]["igan.io/ray-submitter"]
    problems = ray_network_policy_problems(bad)
    assert any("lacks the label igan.io/ray-submitter" in p for p in problems)
    assert any("igan-tune-imagenet128/submitter: no NetworkPolicy rule admits it" in p for p in problems)


def test_security_context_check_catches_root_and_privileges(docs):
    bad = copy.deepcopy(docs)  # root in the training cluster's workers
    train = bad[_find(bad, "RayJob", "igan-train-imagenet128")][1]
    train["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    assert any("ray-worker: runAsUser 0" in p for p in security_context_problems(bad))

    bad = copy.deepcopy(docs)  # a submitter that may escalate, keeps its capabilities, has no seccomp
    template = bad[_find(bad, "RayJob", "igan-shard-imagenet")][1]["spec"]["submitterPodTemplate"]["spec"]
    template["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": True}
    del template["securityContext"]["seccompProfile"]
    problems = security_context_problems(bad)
    assert sum("ray-job-submitter" in p for p in problems) >= 3

    bad = copy.deepcopy(docs)  # a read-only root without a writable /tmp: Ray could not start
    head = bad[_find(bad, "RayCluster")][1]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["volumeMounts"] = [m for m in head["volumeMounts"] if m["mountPath"] != "/tmp"]
    assert any("without a volume at /tmp" in p for p in security_context_problems(bad))

    dockerfile = DOCKERFILE.read_text()  # an image that runs as root, or as a user it does not make
    assert security_context_problems(docs, dockerfile.replace("USER 1000:1000", "USER root"))
    assert any("useradd" in p for p in security_context_problems(docs, dockerfile.replace("--uid 1000", "--uid 1001")))


def test_digest_check_catches_tag_only_images(docs):
    bad = copy.deepcopy(docs)
    bad[_find(bad, "Deployment", "mlflow")][1]["spec"]["template"]["spec"]["containers"][0]["image"] = \
        "registry.example.com/igan/igan:0.1.0"
    assert any("not pinned by digest" in p for p in digest_pin_problems(bad))
    for c in (c for _, doc in bad for c in containers(doc)):
        c["image"] = "registry.example.com/igan/igan:0.1.0@sha256:0123abcd"  # a truncated digest
    assert any("neither 64 hex digits" in p for p in digest_pin_problems(bad))
    assert image_problems(bad) == []  # still one image of igan 0.1.0: the digest check is what catches it
    for c in (c for _, doc in bad for c in containers(doc)):
        c["image"] = "registry.example.com/igan/igan:0.1.0@sha256:" + "ab" * 32
    assert digest_pin_problems(bad) == []

    dockerfile = DOCKERFILE.read_text()
    unpinned = dockerfile.replace("python:3.11-slim-bookworm@sha256:REPLACE-ME", "python:3.11-slim-bookworm")
    assert unpinned != dockerfile
    assert any("Dockerfile FROM" in p for p in digest_pin_problems(docs, unpinned))


def test_installer_check_catches_unverified_downloads():
    cfg = load_yaml(CLUSTER / "aws.yaml")
    commands = launcher_commands(cfg)
    old = [("setup_commands[0]",
            "command -v ~/.local/bin/uv >/dev/null || curl -LsSf https://astral.sh/uv/0.13.9/install.sh | sh")]
    assert any("pipes a download into a shell" in p for p in installer_hash_problems(old))

    unchecked = [(w, re.sub(r"\(cd /tmp && grep [^)]*\) &&", "", c)) for w, c in commands]
    assert unchecked != commands
    assert any("without checking its SHA-256" in p for p in installer_hash_problems(unchecked))

    archive = "/tmp/uv-x86_64-unknown-linux-gnu.tar.gz"
    unpacked_first = [(w, c.replace(f"-o {archive}", f"-o {archive} && tar -xzf {archive}")) for w, c in commands]
    assert unpacked_first != commands
    assert any("without checking its SHA-256" in p for p in installer_hash_problems(unpacked_first))

    sums = INSTALLER_SUMS.read_text()
    assert any("does not list" in p for p in installer_hash_problems(commands, ""))
    assert any("malformed" in p for p in installer_hash_problems(commands, sums.replace("REPLACE-ME", "deadbeef")))
    assert installer_hash_problems(commands, sums.replace("REPLACE-ME", "0" * 64)) == []

    dockerfile = DOCKERFILE.read_text().replace(
        "RUN apt-get update", "RUN curl -fsSL https://example.com/x.sh | bash \\\n && apt-get update")
    assert any("pipes a download into a shell" in p for p in installer_hash_problems(dockerfile_runs(dockerfile)))

    bad = copy.deepcopy(cfg)
    bad["file_mounts"] = {}
    assert installer_release_problems(bad)


def test_tls_check_catches_plain_http_mlflow(docs):
    bad = copy.deepcopy(docs)  # a plain-HTTP Ingress
    ingress = bad[_find(bad, "Ingress", "mlflow")][1]
    del ingress["spec"]["tls"]
    ingress["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}
    problems = mlflow_tls_problems(bad)
    assert any("hosts without TLS" in p for p in problems) and any("plain HTTP" in p for p in problems)
    assert any("cert-manager" in p for p in problems)

    bad = copy.deepcopy(docs)  # a pod and a job that still talk to the Service in clear text
    head = bad[_find(bad, "RayCluster")][1]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    next(e for e in head["env"] if e["name"] == "MLFLOW_TRACKING_URI")["value"] = "http://mlflow.igan.svc:5000"
    job = bad[_find(bad, "RayJob", "igan-tune-imagenet128")][1]["spec"]
    job["entrypoint"] = job["entrypoint"].replace("https://mlflow.igan.example.com", "http://mlflow.igan.svc:5000")
    assert sum("not over TLS" in p for p in mlflow_tls_problems(bad)) == 2

    bad = copy.deepcopy(docs)  # the MLflow pods admit Ray pods directly, bypassing the Ingress
    policy = bad[_find(bad, "NetworkPolicy", "mlflow-ingress")][1]
    policy["spec"]["ingress"][0]["from"].append({"podSelector": {"matchLabels": {"igan.io/ray-cluster": "igan"}}})
    assert any("not only the ingress controller" in p for p in mlflow_tls_problems(bad))

    bad = copy.deepcopy(docs)  # a second Ingress that publishes the Ray dashboard
    extra = copy.deepcopy(bad[_find(bad, "Ingress", "mlflow")])
    extra[1]["metadata"]["name"] = "ray-dashboard"
    backend = extra[1]["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    backend["service"] = {"name": "igan-head-svc", "port": {"number": 8265}}
    bad.append(extra)
    assert any("publishes something else than MLflow" in p for p in mlflow_problems(bad))

    launchers = {p.name: load_yaml(p) for p in LAUNCHERS}  # a VM cluster on plain HTTP
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        launchers["gcp.yaml"][key] = [c.replace("https://mlflow.igan.example.com", "http://mlflow.igan.internal:5000")
                                      for c in launchers["gcp.yaml"][key]]
    assert sum("not over TLS" in p for p in mlflow_tls_problems(docs, launchers)) == 2
