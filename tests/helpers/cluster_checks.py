"""Static checks of the deployment files in cluster/ (the tests live in tests/unit/cluster/test_cluster_configs.py).

* Ray cluster-launcher YAMLs (cluster/aws.yaml, cluster/gcp.yaml) validate against the JSON
  schema shipped inside the installed ``ray`` package and pass Ray's own config preparation;
  the head is CPU-only, GPU worker types are 8xH100, autoscaling bounds are sane, and setup
  installs exactly the pinned igan release with the constraint files.
* KubeRay manifests parse, use ray.io/v1 RayCluster/RayJob, declare GPU worker groups with GPU
  limits, node selectors and tolerations, all point at one pinned image, and keep checkpoints on
  shared (ReadWriteMany) or object storage.
* The MLflow deployment takes every credential from Secrets (materialised by ExternalSecrets),
  runs with basic auth, PostgreSQL and proxied S3 artifacts, and is reachable only in-cluster.
* Every Ray process finds the Inception weights: each Ray pod and RayJob submitter sets
  IGAN_INCEPTION_WEIGHTS to one value, and each launcher node's ``ray start`` exports it; the value
  is a bucket URI or a path on a mounted volume or in the image.
* Launcher node commands are valid bash; the image's COPY sources survive its .dockerignore.
* The lock-down (cluster/README.md, "Security"): Ray token authentication on every Ray process,
  autoscaler and job submitter, with the token from the secret store; Ray's ports open only to the
  cluster's own pods, its RayJob submitters and the KubeRay operator (NetworkPolicy), and the
  launchers' dashboard on the head's loopback; every pod non-root with a restrictive
  securityContext; images pinned by digest; downloaded installers checked against a pinned
  SHA-256 before they run; MLflow reached only over TLS, through its Ingress.

Each property is a ``*_problems`` function returning a list of messages; the tests assert the
real files give none, and that deliberately broken copies give some (so the checks can fail).
No pytest here: the module is plain functions over parsed files.
"""
from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
LAUNCHERS = [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"]
K8S_FILES = sorted(p for p in CLUSTER.rglob("*.yaml") if p not in LAUNCHERS)

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
_PINS = dict(
    line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().split()
    if "==" in line and not line.startswith("#")
)
RAY_VERSION = _PINS["ray"]
WHEEL = f"igan-{VERSION}-py3-none-any.whl"

# Instance types with 8 H100s (AWS p5 family, GCP A3 H100 machine types) and GPU families a
# CPU-only head must not use.
H100X8_INSTANCES = {"p5.48xlarge", "a3-highgpu-8g", "a3-megagpu-8g", "a3-edgegpu-8g"}
GPU_INSTANCE = re.compile(r"^(p\d\w*|g\d\w*|dl\d\w*|trn\d\w*|inf\d\w*)\.|^(a2|a3|a4|g2)-")


# ---------------------------------------------------------------------------------------------
# helpers

def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def k8s_docs() -> list[tuple[Path, dict]]:
    docs = []
    for path in K8S_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def ray_schema() -> dict:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


def strings(node):
    """Every string value (not key, not comment) in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def pod_specs(doc: dict) -> list[dict]:
    """Every pod spec in a manifest: Deployment templates, RayCluster head/worker templates
    (also those embedded in a RayJob)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found


def containers(doc: dict) -> list[dict]:
    return [c for spec in pod_specs(doc) for c in spec.get("containers", []) + spec.get("initContainers", [])]


def ray_cluster_specs(docs) -> list[tuple[str, dict]]:
    """(name, RayCluster spec) for every RayCluster and every RayJob that embeds one."""
    out = []
    for _, doc in docs:
        if doc.get("kind") == "RayCluster":
            out.append((doc["metadata"]["name"], doc["spec"]))
        elif doc.get("kind") == "RayJob" and "rayClusterSpec" in doc["spec"]:
            out.append((doc["metadata"]["name"], doc["spec"]["rayClusterSpec"]))
    return out


def gpu_count(container: dict) -> int:
    return int((container.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu", 0))


def flag(entrypoint: str, name: str) -> str | None:
    words = shlex.split(entrypoint)
    return words[words.index(name) + 1] if name in words else None


# ---------------------------------------------------------------------------------------------
# property checks (each returns a list of problems)

def launcher_schema_problems(cfg: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(ray_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(cfg)]


def launcher_topology_problems(cfg: dict) -> list[str]:
    problems = []
    types = cfg.get("available_node_types", {})
    head_name = cfg.get("head_node_type")
    head = types.get(head_name, {})
    node_config = head.get("node_config", {})
    instance = node_config.get("InstanceType") or node_config.get("machineType") or ""
    if head.get("resources", {}).get("GPU", 0) != 0:
        problems.append("head node advertises GPUs")
    if "GPU" not in head.get("resources", {}):
        problems.append("head must declare GPU: 0 explicitly (Ray would auto-detect otherwise)")
    if GPU_INSTANCE.search(instance) or node_config.get("guestAccelerators"):
        problems.append(f"head instance {instance!r} is a GPU machine")
    if head.get("resources", {}).get("CPU", 0) != 0:
        problems.append("head should take no Ray tasks (resources CPU: 0)")

    workers = {name: t for name, t in types.items() if name != head_name}
    gpu_types = {name: t for name, t in workers.items() if t.get("resources", {}).get("GPU", 0) > 0}
    if not gpu_types:
        problems.append("no GPU worker type")
    for name, t in gpu_types.items():
        nc = t["node_config"]
        inst = nc.get("InstanceType") or nc.get("machineType")
        if t["resources"]["GPU"] != 8 or inst not in H100X8_INSTANCES:
            problems.append(f"{name}: expected an 8xH100 type with resources GPU: 8, got {inst} / {t['resources']}")
        if t.get("min_workers", 0) != 0:
            problems.append(f"{name}: GPU nodes should scale to zero (min_workers 0)")

    max_workers = cfg.get("max_workers", -1)
    for name, t in workers.items():
        lo, hi = t.get("min_workers", 0), t.get("max_workers")
        if hi is None or not (0 <= lo <= hi) or hi < 1:
            problems.append(f"{name}: bad bounds min_workers={lo} max_workers={hi}")
        elif hi > max_workers:
            problems.append(f"{name}: max_workers {hi} exceeds the global max_workers {max_workers}")
    if sum(t.get("min_workers", 0) for t in workers.values()) > max_workers:
        problems.append("sum of min_workers exceeds max_workers")
    if head.get("max_workers", 0) not in (0, None):
        problems.append("head node type must not scale")
    if not cfg.get("idle_timeout_minutes", 0) > 0:
        problems.append("idle_timeout_minutes must be > 0 so idle GPU nodes are returned")
    return problems


def launcher_pin_problems(cfg: dict) -> list[str]:
    problems = []
    setup = "\n".join(cfg.get("setup_commands", []) + cfg.get("head_setup_commands", [])
                      + cfg.get("worker_setup_commands", []))
    installs = [c for c in cfg.get("setup_commands", []) if "pip install" in c]
    if not installs:
        problems.append("no pip install in setup_commands")
    for cmd in installs:
        if WHEEL not in cmd:
            problems.append(f"install does not use the pinned wheel {WHEEL}: {cmd}")
        if not re.search(r"-c \S*constraints\.txt", cmd) or "constraints-cloud.txt" not in cmd:
            problems.append(f"install lacks -c constraints.txt / constraints-cloud.txt: {cmd}")
        if re.search(r"\s-U\s|--upgrade|@\s*(main|master|HEAD)\b|igan==(?!" + re.escape(VERSION) + ")", cmd):
            problems.append(f"install is not pinned: {cmd}")
    if f"'{VERSION}'" not in setup or f"'{RAY_VERSION}'" not in setup:
        problems.append("setup does not verify the installed igan / ray versions")
    if not re.search(r"github\.com/astral-sh/uv/releases/download/\d+\.\d+\.\d+/uv-\S+\.tar\.gz", setup):
        problems.append("uv is not downloaded as the release archive of a pinned version")
    mounts = cfg.get("file_mounts", {})
    if mounts.get("~/igan-release") != "dist/igan-release":
        problems.append("file_mounts must carry dist/igan-release (cluster/build-release.sh) to ~/igan-release")
    script = (CLUSTER / "build-release.sh").read_text()
    if f"pinned={VERSION}" not in script:
        problems.append("cluster/build-release.sh pins a different version")
    for cmd in cfg.get("head_start_ray_commands", []) + cfg.get("worker_start_ray_commands", []):
        if "ray start" in cmd and "igan-venv/bin/ray" not in cmd:
            problems.append(f"ray must start from the pinned venv: {cmd}")
    return problems


CREDENTIAL_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def literal_secret_problems(docs) -> list[str]:
    problems = []
    for path, doc in docs:
        where = f"{path.relative_to(ROOT)}:{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"{where}: a Secret with values is committed")
        for text in strings(doc):
            if CREDENTIAL_IN_URL.search(text):
                problems.append(f"{where}: credentials inside a URL: {text[:60]}")
        for c in containers(doc):
            for env in c.get("env", []):
                sensitive = re.search(r"PASSWORD|SECRET|TOKEN|KEY|STORE_URI|DATABASE_URI", env["name"])
                if sensitive and "value" in env:
                    problems.append(f"{where}: {env['name']} has a literal value")
                if sensitive and not env.get("valueFrom", {}).get("secretKeyRef"):
                    problems.append(f"{where}: {env['name']} does not come from a secretKeyRef")
    return problems


def secret_source_problems(docs) -> list[str]:
    """Every secretKeyRef names a Secret (and key) that an ExternalSecret materialises."""
    produced: dict[str, set[str]] = {}
    for _, doc in docs:
        if doc.get("kind") == "ExternalSecret":
            assert doc["apiVersion"].startswith("external-secrets.io/")
            target = doc["spec"]["target"]["name"]
            produced[target] = {d["secretKey"] for d in doc["spec"]["data"]}
    problems = []
    for path, doc in docs:
        for c in containers(doc):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if not ref:
                    continue
                if ref["name"] not in produced:
                    problems.append(f"{path.name}: secret {ref['name']} is not produced by an ExternalSecret")
                elif not ref.get("optional") and ref["key"] not in produced[ref["name"]]:
                    problems.append(f"{path.name}: key {ref['key']} missing from ExternalSecret {ref['name']}")
    return problems


def kuberay_problems(docs) -> list[str]:
    problems = []
    ray_docs = [(p, d) for p, d in docs if d.get("apiVersion", "").startswith("ray.io")]
    kinds = {d["kind"] for _, d in ray_docs}
    if kinds != {"RayCluster", "RayJob"}:
        problems.append(f"expected RayCluster and RayJob manifests, got {sorted(kinds)}")
    for path, doc in ray_docs:
        if doc["apiVersion"] != "ray.io/v1":
            problems.append(f"{path.name}: apiVersion {doc['apiVersion']} (want ray.io/v1)")
    cluster_names = {d["metadata"]["name"] for _, d in ray_docs if d["kind"] == "RayCluster"}
    for path, doc in ray_docs:
        if doc["kind"] == "RayJob":
            spec = doc["spec"]
            if not spec.get("entrypoint", "").startswith("igan "):
                problems.append(f"{path.name}: entrypoint is not an igan command")
            selector = spec.get("clusterSelector", {}).get("ray.io/cluster")
            if "rayClusterSpec" not in spec and selector not in cluster_names:
                problems.append(f"{path.name}: neither rayClusterSpec nor a clusterSelector naming a RayCluster")

    specs = ray_cluster_specs(docs)
    if not specs:
        problems.append("no RayCluster spec")
    for name, spec in specs:
        if spec.get("rayVersion") != RAY_VERSION:
            problems.append(f"{name}: rayVersion {spec.get('rayVersion')} != pinned ray {RAY_VERSION}")
        head = spec["headGroupSpec"]
        if any(gpu_count(c) for c in containers(head)):
            problems.append(f"{name}: head requests GPUs")
        if str(head.get("rayStartParams", {}).get("num-cpus")) != "0":
            problems.append(f"{name}: head should advertise num-cpus 0")
        if head.get("serviceType", "ClusterIP") != "ClusterIP":
            problems.append(f"{name}: head service is exposed ({head['serviceType']})")
        gpu_groups = 0
        for group in spec.get("workerGroupSpecs", []):
            gname = f"{name}/{group['groupName']}"
            pod = group["template"]["spec"]
            if not pod.get("nodeSelector"):
                problems.append(f"{gname}: no nodeSelector")
            lo, hi, n = group.get("minReplicas", 0), group.get("maxReplicas"), group.get("replicas", 0)
            if hi is None or not (0 <= lo <= n <= hi):
                problems.append(f"{gname}: replicas {n} outside [{lo}, {hi}]")
            gpus = [gpu_count(c) for c in pod["containers"]]
            if any(gpus):
                gpu_groups += 1
                requests = [(c.get("resources", {}).get("requests") or {}) for c in pod["containers"]]
                if any("nvidia.com/gpu" in r and int(r["nvidia.com/gpu"]) != g for r, g in zip(requests, gpus)):
                    problems.append(f"{gname}: GPU requests differ from limits")
                if not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])):
                    problems.append(f"{gname}: GPU group without an nvidia.com/gpu toleration")
        if gpu_groups == 0:
            problems.append(f"{name}: no worker group requests nvidia.com/gpu in limits")
    return problems


def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """``(name, tag, digest)`` of an image reference ``name[:tag][@digest]``."""
    name_tag, _, digest = ref.partition("@")
    last = name_tag.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    name = name_tag[: len(name_tag) - len(tag) - 1] if tag is not None else name_tag
    return name, tag, digest or None


def image_problems(docs) -> list[str]:
    images = {c["image"] for _, doc in docs for c in containers(doc)}
    problems = []
    if len(images) != 1:
        problems.append(f"manifests use {len(images)} images: {sorted(images)}")
    for image in images:
        _, tag, _ = split_image(image)
        if tag in (None, "latest") or tag != VERSION:
            problems.append(f"image {image} is not pinned to igan {VERSION}")
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    if f"ARG IGAN_VERSION={VERSION}" not in dockerfile or f"ARG RAY_VERSION={RAY_VERSION}" not in dockerfile:
        problems.append("cluster/Dockerfile does not build the pinned igan / ray versions")
    if not re.search(r"-c /opt/igan/constraints\.txt -c /opt/igan/constraints-cloud\.txt", dockerfile):
        problems.append("cluster/Dockerfile installs without the constraint files")
    return problems


def shared_storage_problems(docs) -> list[str]:
    problems = []
    rwx_claims = {
        d["metadata"]["name"] for _, d in docs
        if d.get("kind") == "PersistentVolumeClaim" and "ReadWriteMany" in d["spec"].get("accessModes", [])
    }
    specs = dict(ray_cluster_specs(docs))
    clusters = {d["metadata"]["name"]: d["spec"] for _, d in docs if d.get("kind") == "RayCluster"}

    def rwx_mounts(pod: dict) -> set[str]:
        claim_volumes = {
            v["name"] for v in pod.get("volumes", [])
            if v.get("persistentVolumeClaim", {}).get("claimName") in rwx_claims
        }
        return {m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])
                if m["name"] in claim_volumes}

    for name, spec in specs.items():
        pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec.get("workerGroupSpecs", [])]
        common = set.intersection(*(rwx_mounts(p) for p in pods))
        if not common:
            problems.append(f"{name}: no ReadWriteMany volume mounted on the head and every worker group")
    for path, doc in docs:
        if doc.get("kind") != "RayJob" or not doc["spec"]["entrypoint"].startswith("igan train"):
            continue
        storage = flag(doc["spec"]["entrypoint"], "--storage")
        spec = doc["spec"].get("rayClusterSpec") or clusters.get(doc["spec"].get("clusterSelector", {}).get("ray.io/cluster"))
        if storage is None:
            problems.append(f"{path.name}: igan train without --storage")
        elif not storage.startswith(("s3://", "gs://")):
            pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
            shared = set.intersection(*(rwx_mounts(p) for p in pods))
            if not any(storage == m or storage.startswith(m.rstrip("/") + "/") for m in shared):
                problems.append(f"{path.name}: --storage {storage} is neither object storage nor on a shared RWX volume")
    return problems


def mlflow_ingresses(docs) -> list[dict]:
    """The Ingresses that route to the Service ``mlflow``."""
    def backends(ingress):
        for rule in ingress["spec"].get("rules", []):
            for path in (rule.get("http") or {}).get("paths", []):
                yield path["backend"].get("service", {}).get("name")
    return [d for _, d in docs if d.get("kind") == "Ingress" and "mlflow" in set(backends(d))]


def mlflow_uri(docs) -> str | None:
    """``https://HOST`` of the MLflow Ingress: the tracking URI of every client, in the cluster and
    outside it; None without exactly one MLflow Ingress with a host."""
    ingresses = mlflow_ingresses(docs)
    hosts = [r["host"] for i in ingresses for r in i["spec"].get("rules", []) if r.get("host")]
    return f"https://{hosts[0]}" if len(ingresses) == 1 and len(hosts) == 1 else None


def train_job_problems(docs) -> list[str]:
    """igan train's --workers x --gpus-per-worker fits the GPUs of the cluster it runs on, and its
    --tracking-uri is the MLflow Ingress (the one TLS path to the server)."""
    problems = []
    tracking_uri = mlflow_uri(docs)
    if tracking_uri is None:
        problems.append("no single Ingress with one host publishes the MLflow Service")
    trains = [(p, d) for p, d in docs if d.get("kind") == "RayJob" and d["spec"]["entrypoint"].startswith("igan train")]
    if not trains:
        problems.append("no RayJob runs igan train")
    for path, doc in trains:
        entry = doc["spec"]["entrypoint"]
        spec = doc["spec"].get("rayClusterSpec")
        workers, per = flag(entry, "--workers"), flag(entry, "--gpus-per-worker")
        if workers is None or per is None:
            problems.append(f"{path.name}: --workers / --gpus-per-worker missing")
            continue
        available = sum(
            group.get("replicas", 0) * sum(gpu_count(c) for c in group["template"]["spec"]["containers"])
            for group in (spec or {}).get("workerGroupSpecs", [])
        )
        if int(workers) * float(per) > available:
            problems.append(f"{path.name}: {workers} x {per} GPUs requested, the cluster has {available}")
        if flag(entry, "--preset") != "imagenet128" and "imagenet128" in path.name:
            problems.append(f"{path.name}: not the imagenet128 preset")
        if flag(entry, "--tracking-uri") != tracking_uri:
            problems.append(f"{path.name}: --tracking-uri is not {tracking_uri}")
    for _, doc in docs:
        for c in containers(doc):
            for env in c.get("env", []):
                if env["name"] == "MLFLOW_TRACKING_URI" and env.get("value") != tracking_uri:
                    problems.append(f"MLFLOW_TRACKING_URI {env.get('value')} != {tracking_uri}")
    return problems


def mlflow_problems(docs) -> list[str]:
    problems = []
    for path, doc in docs:
        if doc.get("kind") == "Service" and doc["spec"].get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"{path.name}: Service {doc['metadata']['name']} is {doc['spec']['type']}")
        if doc.get("kind") == "Service" and doc["spec"].get("type") is None:
            problems.append(f"{path.name}: Service {doc['metadata']['name']} should state type: ClusterIP")
        if doc.get("kind") in ("Gateway", "HTTPRoute"):
            problems.append(f"{path.name}: {doc['kind']} exposes a service")
        if doc.get("kind") == "Ingress" and doc not in mlflow_ingresses(docs):
            problems.append(f"{path.name}: Ingress {doc['metadata']['name']} publishes something else than "
                            "MLflow (only MLflow is published, over TLS)")
    deployments = [d for _, d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == "mlflow"]
    if len(deployments) != 1:
        return problems + ["expected one Deployment named mlflow"]
    deployment = deployments[0]
    (server,) = [c for c in containers(deployment) if c["name"] == "mlflow"]
    command = " ".join(server.get("command", []) + server.get("args", []))
    env = {e["name"]: e for e in server.get("env", [])}
    if "mlflow server" not in command or "--app-name basic-auth" not in command:
        problems.append("mlflow server does not run with --app-name basic-auth")
    match = re.search(r'--backend-store-uri "?\$\{?(\w+)\}?', command)
    if not match or not env.get(match.group(1), {}).get("valueFrom", {}).get("secretKeyRef"):
        problems.append("--backend-store-uri does not come from a Secret")
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        if not env.get(name, {}).get("valueFrom", {}).get("secretKeyRef"):
            problems.append(f"{name} is not set from a Secret")
    if not re.search(r"--artifacts-destination s3://\S+", command) or "--serve-artifacts" not in command:
        problems.append("artifacts are not proxied to an S3-compatible destination")
    if "--host 0.0.0.0" in command and "--allowed-hosts" not in command:
        problems.append("server binds all interfaces without --allowed-hosts")
    if "psycopg2-binary" not in (CLUSTER / "constraints-cloud.txt").read_text():
        problems.append("no PostgreSQL driver pinned for the backend store")

    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    policies = [d for _, d in docs if d.get("kind") == "NetworkPolicy"
                and d["spec"]["podSelector"].get("matchLabels", {}).items() <= pod_labels.items()
                and d["spec"]["podSelector"].get("matchLabels")]
    if not policies:
        problems.append("no NetworkPolicy selects the MLflow pods")
    for policy in policies:
        if "Ingress" not in policy["spec"].get("policyTypes", []):
            problems.append("NetworkPolicy does not restrict ingress")
        for rule in policy["spec"].get("ingress", []):
            if not rule.get("from"):
                problems.append("NetworkPolicy has an ingress rule open to every source")
    return problems


def _pod_labels(doc: dict, pod_spec: dict) -> dict:
    """Labels of the template that holds ``pod_spec``."""
    def walk(node):
        if isinstance(node, dict):
            if node.get("spec") is pod_spec:
                return node.get("metadata", {}).get("labels", {})
            for value in node.values():
                found = walk(value)
                if found is not None:
                    return found
        elif isinstance(node, list):
            for value in node:
                found = walk(value)
                if found is not None:
                    return found
        return None
    return walk(doc) or {}


# ---------------------------------------------------------------------------------------------
# Inception weights: every Ray process finds them through one environment variable

INCEPTION_ENV = "IGAN_INCEPTION_WEIGHTS"
#: Where a launcher YAML's bucket lives, by provider type.
BUCKET_SCHEMES = {"aws": "s3://", "gcp": "gs://"}
LAUNCHER_COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands",
                         "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


def inception_weight_file() -> str:
    """The weight file that ``igan train`` and ``igan tune`` check before they start (the default
    kind of ``igan.metrics.inception_net.check_weights``)."""
    import inspect

    from igan.metrics.inception_net import WEIGHT_FILES, check_weights  # torch: only when a check runs

    return WEIGHT_FILES[inspect.signature(check_weights).parameters["kind"].default]


def weight_file_names() -> set[str]:
    """The file names of every Inception-v3 kind igan loads."""
    from igan.metrics.inception_net import WEIGHT_FILES

    return set(WEIGHT_FILES.values())


def weights_reach(target: str, values: set[str]) -> bool:
    """Whether a weight file copied to ``target`` is what an IGAN_INCEPTION_WEIGHTS of ``values``
    names: the file itself, or a file in the folder (a value ending in ``/``)."""
    folder = target.rsplit("/", 1)[0] + "/"
    return any(target == v or (v.endswith("/") and folder == v) for v in values)


def env_value(container: dict, name: str) -> str | None:
    """The literal value of env var ``name`` in ``container``, else None."""
    for env in container.get("env", []):
        if env["name"] == name:
            return env.get("value")
    return None


def ray_pods(spec: dict) -> list[tuple[str, dict]]:
    """``(group, pod spec)`` for the head and every worker group of a RayCluster spec."""
    return [("head", spec["headGroupSpec"]["template"]["spec"])] + [
        (g["groupName"], g["template"]["spec"]) for g in spec.get("workerGroupSpecs", [])]


def image_files(dockerfile: str) -> set[str]:
    """Absolute paths that uncommented ``COPY`` lines without ``--from`` put into the image: a
    folder source (``src/``) as its destination folder, a file as ``dest/<name>`` or ``dest``."""
    out = set()
    for line in dockerfile.splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        *sources, dest = [w for w in words[1:] if not w.startswith("--")]
        if not dest.startswith("/"):
            continue  # relative to WORKDIR: build inputs, not runtime files
        for src in sources:
            if src.endswith("/") or not dest.endswith("/"):
                out.add(dest)
            else:
                out.add(dest + src.rsplit("/", 1)[-1])
    return out


def _weights_location_problem(where: str, value: str, mounts: set[str], baked: set[str], buckets=("s3://", "gs://")):
    """Why IGAN_INCEPTION_WEIGHTS=``value`` cannot give the weights to a process that sees
    ``mounts`` and the image's ``baked`` paths, or None. The value is a folder (ending in ``/``)
    or the file igan train checks; it lies in one of ``buckets``, on a mount or in the image."""
    name = inception_weight_file()
    if not value.endswith("/") and value.rsplit("/", 1)[-1] != name:
        return f"{where}: {INCEPTION_ENV}={value} is neither a folder (ending in /) nor {name}, the file igan train checks"
    if value.startswith(tuple(buckets)):
        return None
    if "://" in value:
        return f"{where}: {INCEPTION_ENV}={value}: not a bucket URI ({', '.join(buckets)}) or a path"
    path = value.rstrip("/")
    if any(path == b.rstrip("/") or path.startswith(b.rstrip("/") + "/") for b in baked) \
            or any(path.startswith(m.rstrip("/") + "/") for m in mounts):
        return None
    return f"{where}: {INCEPTION_ENV}={value} is neither on a mounted volume {sorted(mounts)} nor in the image"


def inception_env_problems(docs, dockerfile: str | None = None) -> list[str]:
    """Every Ray pod (the head and each worker group of every RayCluster, also those a RayJob
    embeds) and every RayJob's submitter pod sets IGAN_INCEPTION_WEIGHTS, all to one literal value:
    a bucket URI or a path. In a Ray pod a path lies on a volume that pod mounts or in the image.
    (The submitter only runs ``ray job submit``: the driver runs on the head, so its copy is
    checked for agreement only.)"""
    dockerfile = (CLUSTER / "Dockerfile").read_text() if dockerfile is None else dockerfile
    baked = image_files(dockerfile)
    problems, values = [], {}
    for name, spec in ray_cluster_specs(docs):
        for group, pod in ray_pods(spec):
            where = f"{name}/{group}"
            ray_container = pod["containers"][0]  # KubeRay runs Ray in the first container
            value = env_value(ray_container, INCEPTION_ENV)
            if value is None:
                problems.append(f"{where}: container {ray_container['name']} sets no {INCEPTION_ENV}")
                continue
            values[where] = value
            mounts = {m["mountPath"] for m in ray_container.get("volumeMounts", [])}
            problem = _weights_location_problem(where, value, mounts, baked)
            if problem:
                problems.append(problem)
    for path, doc in docs:
        if doc.get("kind") != "RayJob":
            continue
        where = f"{doc['metadata']['name']}/submitter"
        template = doc["spec"].get("submitterPodTemplate")
        if not template:
            problems.append(f"{path.name}: no submitterPodTemplate (the submitter would run another image "
                            f"without {INCEPTION_ENV})")
            continue
        value = env_value(template["spec"]["containers"][0], INCEPTION_ENV)
        if value is None:
            problems.append(f"{where}: sets no {INCEPTION_ENV}")
        else:
            values[where] = value
    if len(set(values.values())) > 1:
        problems.append(f"{INCEPTION_ENV} differs between pods: {values}")
    return problems


def start_exports(command: str) -> dict[str, str]:
    """``NAME: value`` for each ``export NAME=value`` in a shell command before its ``ray start``
    (what the started Ray node, and so every driver and worker on it, inherits)."""
    head = command.split("ray start", 1)[0]
    return dict(re.findall(r"\bexport\s+(\w+)=([^\s;]+)", head))


def launcher_mounts(cfg: dict) -> set[str]:
    """Mount points of the network file systems that setup_commands mount (``mount ... HOST:/PATH DIR``)."""
    setup = "\n".join(cfg.get("setup_commands", []))
    return set(re.findall(r"\bmount\s[^\n]*?\s\S+:\S*\s+(/[\w./-]+)", setup))


def launcher_env_problems(cfg: dict) -> list[str]:
    """The ``ray start`` of the head and of the worker nodes export the same IGAN_INCEPTION_WEIGHTS
    and MLFLOW_TRACKING_URI. The weights are in the provider's bucket (s3:// on AWS, gs:// on GCP)
    or on a file system that setup_commands mount on every node."""
    problems, seen = [], {}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg.get(key, []) if "ray start" in c]
        if len(starts) != 1:
            problems.append(f"{key}: expected one ray start command, found {len(starts)}")
            continue
        env = start_exports(starts[0])
        for name in (INCEPTION_ENV, "MLFLOW_TRACKING_URI"):
            if name not in env:
                problems.append(f"{key}: ray start does not export {name}")
            else:
                seen.setdefault(name, {})[key] = env[name]
    for name, by_key in seen.items():
        if len(set(by_key.values())) > 1:
            problems.append(f"{name} differs between head and worker nodes: {by_key}")
    scheme = BUCKET_SCHEMES.get(cfg.get("provider", {}).get("type"))
    for key, value in seen.get(INCEPTION_ENV, {}).items():
        buckets = (scheme,) if scheme else ()
        problem = _weights_location_problem(key, value, launcher_mounts(cfg), set(), buckets=buckets)
        if problem:
            problems.append(problem)
    return problems


def launcher_shell_problems(cfg: dict) -> list[str]:
    """Every command the launcher runs on a node is valid bash (``bash -n``)."""
    import subprocess

    problems = []
    for key in LAUNCHER_COMMAND_KEYS:
        for i, command in enumerate(cfg.get(key) or []):
            res = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            if res.returncode != 0:
                problems.append(f"{key}[{i}]: {res.stderr.strip().splitlines()[-1]}")
    return problems


# ---------------------------------------------------------------------------------------------
# the image's build context

def dockerignore_admits(path: str, patterns: list[str]) -> bool:
    """Whether a ``.dockerignore`` with ``patterns`` keeps ``path`` (relative to the context) in the
    build context: the last pattern matching the path or one of its parent folders decides, ``!``
    re-includes."""
    import fnmatch

    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    admitted = True
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], pattern[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatchcase(p, pattern) for p in prefixes)
        if hit:
            admitted = negate
    return admitted


def dockerfile_context_problems(dockerfile: str, dockerignore: str) -> list[str]:
    """Every source of an uncommented ``COPY`` (without ``--from``) is in the build context that the
    Dockerfile's ``.dockerignore`` leaves."""
    patterns = [ln.strip() for ln in dockerignore.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    problems = []
    for line in dockerfile.splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for src in [w for w in words[1:] if not w.startswith("--")][:-1]:
            if not dockerignore_admits(src, patterns):
                problems.append(f"COPY {src}: excluded from the build context by Dockerfile.dockerignore")
    return problems


# ---------------------------------------------------------------------------------------------
# the lock-down: who reaches the cluster, with what, and what runs there

#: Stands for a SHA-256 only the operator can supply (an image digest, an installer hash). It makes
#: `docker build`, the pods and node setup fail until it is replaced (cluster/README.md, "Image
#: digests and installer hashes"); anything else that is not 64 hex digits is a mistake.
SHA256_PLACEHOLDER = "REPLACE-ME"
SHA256_VALUE = re.compile(rf"^(?:[0-9a-f]{{64}}|{SHA256_PLACEHOLDER})$")
#: The checksum file of what the launcher nodes download, carried to them in the release.
INSTALLER_SUMS = CLUSTER / "installers.sha256"
#: The key of the token in its Secret: the one KubeRay's authOptions.secretName reads.
TOKEN_KEY = "auth_token"
#: Ray's first release with token authentication.
TOKEN_AUTH_SINCE = (2, 52)
#: Pod labels naming the Ray cluster a pod belongs to, and the cluster a RayJob submitter submits to.
CLUSTER_LABEL = "igan.io/ray-cluster"
SUBMITTER_LABEL = "igan.io/ray-submitter"
LOOPBACK = {"127.0.0.1", "localhost"}
#: Secret-manager reads on a launcher node, by provider: the secret's name is group 1.
SECRET_READS = {"aws": re.compile(r"aws secretsmanager get-secret-value\b[^|>]*--secret-id[ =](\S+)"),
                "gcp": re.compile(r"gcloud secrets versions access \S+ --secret[ =](\S+)")}


def _where(path: Path, doc: dict) -> str:
    return f"{path.relative_to(ROOT)}:{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"


def _env(container: dict | None) -> dict[str, dict]:
    return {e["name"]: e for e in (container or {}).get("env") or []}


def ray_templates(spec: dict) -> list[tuple[str, dict]]:
    """``(group, pod template)`` for the head and every worker group of a RayCluster spec."""
    return [("head", spec["headGroupSpec"]["template"])] + [
        (g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]


def _labels(template: dict) -> dict:
    return (template.get("metadata") or {}).get("labels") or {}


def job_target(doc: dict) -> str | None:
    """The Ray cluster a RayJob runs on: its own (named like the job) or the one it selects."""
    spec = doc["spec"]
    if "rayClusterSpec" in spec:
        return doc["metadata"]["name"]
    return spec.get("clusterSelector", {}).get("ray.io/cluster")


def token_secrets(docs) -> set[str]:
    """Names of the Secrets an ExternalSecret fills with a Ray token (key ``auth_token``)."""
    return {d["spec"]["target"]["name"] for _, d in docs if d.get("kind") == "ExternalSecret"
            and any(item["secretKey"] == TOKEN_KEY for item in d["spec"].get("data", []))}


def _token_env_problems(where: str, env: dict[str, dict], secret: str | None) -> list[str]:
    problems = []
    if env.get("RAY_AUTH_MODE", {}).get("value") != "token":
        problems.append(f"{where}: RAY_AUTH_MODE is not token")
    ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef") or {}
    if (ref.get("name"), ref.get("key")) != (secret, TOKEN_KEY) or ref.get("optional"):
        problems.append(f"{where}: RAY_AUTH_TOKEN does not come from Secret {secret}, key {TOKEN_KEY}")
    return problems


def ray_auth_problems(docs) -> list[str]:
    """Token authentication on Kubernetes: one ExternalSecret makes the token Secret; every RayCluster
    spec (also those a RayJob embeds) sets ``authOptions`` to token mode with that Secret, so KubeRay
    neither generates another nor talks to the dashboard without it; every Ray container, the
    autoscaler and every RayJob submitter set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from the Secret;
    no container turns it off or carries a literal token."""
    problems = []
    if tuple(int(x) for x in RAY_VERSION.split(".")[:2]) < TOKEN_AUTH_SINCE:
        problems.append(f"ray {RAY_VERSION} has no token authentication (since {'.'.join(map(str, TOKEN_AUTH_SINCE))})")
    secrets = token_secrets(docs)
    if len(secrets) != 1:
        problems.append(f"expected one ExternalSecret that makes the Ray token (key {TOKEN_KEY}), "
                        f"found {sorted(secrets)}")
    secret = min(secrets) if secrets else None
    for name, spec in ray_cluster_specs(docs):
        auth = spec.get("authOptions") or {}
        if auth.get("mode") != "token" or auth.get("secretName") != secret:
            problems.append(f"{name}: authOptions is not {{mode: token, secretName: {secret}}}: {auth}")
        for group, template in ray_templates(spec):
            problems += _token_env_problems(f"{name}/{group}", _env(template["spec"]["containers"][0]), secret)
        if spec.get("enableInTreeAutoscaling"):
            env = {e["name"]: e for e in (spec.get("autoscalerOptions") or {}).get("env") or []}
            problems += _token_env_problems(f"{name}/autoscaler", env, secret)
    for path, doc in docs:
        if doc.get("kind") != "RayJob":
            continue
        template = doc["spec"].get("submitterPodTemplate")
        if not template:
            problems.append(f"{path.name}: no submitterPodTemplate, so nothing gives the submitter the token")
        else:
            problems += _token_env_problems(f"{doc['metadata']['name']}/submitter",
                                            _env(template["spec"]["containers"][0]), secret)
    for path, doc in docs:
        for c in containers(doc):
            env = _env(c)
            mode = env.get("RAY_AUTH_MODE", {}).get("value", "token")
            if mode != "token":
                problems.append(f"{_where(path, doc)}: {c['name']} sets RAY_AUTH_MODE={mode}")
            if "value" in env.get("RAY_AUTH_TOKEN", {}):
                problems.append(f"{_where(path, doc)}: {c['name']} has a literal RAY_AUTH_TOKEN")
    return problems


def launcher_commands(cfg: dict) -> list[tuple[str, str]]:
    """``(key[i], command)`` for every shell command the launcher runs on a node."""
    return [(f"{key}[{i}]", c) for key in LAUNCHER_COMMAND_KEYS for i, c in enumerate(cfg.get(key) or [])]


def _home(path: str) -> str:
    return re.sub(r"^(\$HOME|\$\{HOME\})/", "~/", path)


def launcher_token_file(cfg: dict) -> str | None:
    """The file a setup command writes the Ray token to, read from the provider's secret manager
    with a 0600 mode (``umask 077`` or ``chmod 600``), as ``~/...``; None when no command does."""
    read = SECRET_READS.get(cfg.get("provider", {}).get("type"))
    for command in cfg.get("setup_commands") or []:
        target = re.search(r">\s*(\S*auth_token)\b", command)
        private = re.search(r"\bumask 0?077\b", command) or (target and f"chmod 600 {target.group(1)}" in command)
        if read and read.search(command) and target and private:
            return _home(target.group(1))
    return None


def launcher_auth_problems(cfg: dict) -> list[str]:
    """Token authentication on launcher VMs: setup reads the token from the provider's secret
    manager into a 0600 file; the head's and every worker's ``ray start`` export RAY_AUTH_MODE=token
    and RAY_AUTH_TOKEN_PATH naming that file, so every driver and worker inherits both; no command
    carries a token or turns authentication off."""
    problems = []
    token_file = launcher_token_file(cfg)
    if token_file is None:
        problems.append("setup_commands: no command writes the Ray token from the secret manager to a 0600 file")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in (c for c in cfg.get(key) or [] if "ray start" in c):
            env = start_exports(command)
            if env.get("RAY_AUTH_MODE") != "token":
                problems.append(f"{key}: ray start does not export RAY_AUTH_MODE=token")
            if token_file and _home(env.get("RAY_AUTH_TOKEN_PATH", "")) != token_file:
                problems.append(f"{key}: ray start does not export RAY_AUTH_TOKEN_PATH={token_file}")
    for where, command in launcher_commands(cfg):
        if re.search(r"\bRAY_AUTH_TOKEN=", command):
            problems.append(f"{where}: sets RAY_AUTH_TOKEN in the command (a token belongs in the secret manager)")
        if re.search(r"\bRAY_AUTH_MODE=(?!token\b)", command):
            problems.append(f"{where}: sets RAY_AUTH_MODE to something else than token")
    return problems


def launcher_dashboard_problems(cfg: dict) -> list[str]:
    """The head's dashboard and job API answer on its loopback only (reached with `ray dashboard`,
    an SSH tunnel): the head's ``ray start`` says ``--dashboard-host`` 127.0.0.1 or localhost."""
    problems = []
    for command in (c for c in cfg.get("head_start_ray_commands") or [] if "ray start" in c):
        hosts = re.findall(r"--dashboard-host[= ](\S+)", command)
        if not hosts:
            problems.append("head_start_ray_commands: ray start does not state --dashboard-host=127.0.0.1")
        problems += [f"head_start_ray_commands: --dashboard-host={h} listens beyond the head's loopback"
                     for h in hosts if h not in LOOPBACK]
    return problems


def _all_templates(docs) -> list[tuple[str, dict, tuple[str, str | None]]]:
    """``(where, labels, role)`` of every pod template: role ``("ray", cluster)`` for a Ray pod,
    ``("submitter", cluster)`` for a RayJob submitter, ``("other", None)`` for any other pod."""
    out = []
    for name, spec in ray_cluster_specs(docs):
        out += [(f"{name}/{group}", _labels(t), ("ray", name)) for group, t in ray_templates(spec)]
    for path, doc in docs:
        if doc.get("kind") == "RayJob" and doc["spec"].get("submitterPodTemplate"):
            out.append((f"{doc['metadata']['name']}/submitter", _labels(doc["spec"]["submitterPodTemplate"]),
                        ("submitter", job_target(doc))))
        elif doc.get("kind") not in ("RayJob", "RayCluster"):
            out += [(_where(path, doc), _pod_labels(doc, spec), ("other", None)) for spec in pod_specs(doc)]
    return out


def _selects(selector: dict | None, labels: dict) -> bool:
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and match.items() <= labels.items()


def _peer_role(peer: dict, cluster: str, templates, namespace: str) -> tuple[str | None, str | None]:
    """What an ingress peer of cluster ``cluster``'s policy (in ``namespace``) admits: ``("own",
    None)`` (only its own pods), ``("submitter", None)`` (also its RayJob submitters),
    ``("operator", None)`` (selected pods of one named other namespace), else ``(None, why it
    admits too much)``."""
    if "ipBlock" in peer:
        return None, f"ipBlock {peer['ipBlock']}"
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if pods is None or pods.get("matchExpressions") or not pods.get("matchLabels"):
        return None, "every pod of the namespace selected" if namespaces is not None else "every pod of the namespace"
    if namespaces is not None:
        named = namespaces.get("matchLabels") or {}
        if set(named) != {"kubernetes.io/metadata.name"} or namespaces.get("matchExpressions"):
            return None, f"namespaceSelector {namespaces} does not name one namespace"
        if named["kubernetes.io/metadata.name"] != namespace:
            return "operator", None
    admitted = {(where, role) for where, labels, role in templates if _selects(pods, labels)}
    outsiders = sorted(w for w, role in admitted if role not in (("ray", cluster), ("submitter", cluster)))
    if outsiders:
        return None, f"podSelector {pods['matchLabels']} also admits {outsiders}"
    return ("own", None) if all(role == ("ray", cluster) for _, role in admitted) else ("submitter", None)


def _ports(rule: dict) -> set:
    return {p.get("port") for p in rule.get("ports") or []}


def ray_network_policy_problems(docs) -> list[str]:
    """Each Ray cluster's pods carry ``igan.io/ray-cluster: <cluster>`` and are selected by a
    NetworkPolicy that restricts ingress; its rules admit only the cluster's own pods (any port),
    and, on the dashboard port alone, the submitters of the RayJobs that run on it (label
    ``igan.io/ray-submitter``) and pods of one named other namespace (the KubeRay operator). No
    rule is open, no ipBlock, no selector that reaches other pods. Every submitter and the operator
    are admitted, or RayJobs could not run."""
    problems = []
    templates = _all_templates(docs)
    policies = [d for _, d in docs if d.get("kind") == "NetworkPolicy"]
    for name, spec in ray_cluster_specs(docs):
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        dashboard = next((p["containerPort"] for p in head.get("ports", []) if p.get("name") == "dashboard"), 8265)
        mine = [(where, labels) for where, labels, role in templates if role == ("ray", name)]
        subs = [(where, labels) for where, labels, role in templates if role == ("submitter", name)]
        for where, labels in mine:
            if labels.get(CLUSTER_LABEL) != name:
                problems.append(f"{where}: pod template lacks the label {CLUSTER_LABEL}: {name}")
        for where, labels in subs:
            if labels.get(SUBMITTER_LABEL) != name:
                problems.append(f"{where}: pod template lacks the label {SUBMITTER_LABEL}: {name}")
        covering = [p for p in policies if "Ingress" in p["spec"].get("policyTypes", [])
                    and any(_selects(p["spec"]["podSelector"], labels) for _, labels in mine)]
        for where, labels in mine:
            if not any(_selects(p["spec"]["podSelector"], labels) for p in covering):
                problems.append(f"{where}: no NetworkPolicy restricts ingress to these pods")
        admitted = {"submitter": set(), "operator": False}
        for policy in covering:
            pname = policy["metadata"]["name"]
            for rule in policy["spec"].get("ingress") or []:
                if not rule.get("from"):
                    problems.append(f"{pname}: an ingress rule without 'from' admits every source")
                    continue
                ports = _ports(rule)
                for peer in rule["from"]:
                    role, why = _peer_role(peer, name, templates, policy["metadata"].get("namespace"))
                    if why:
                        problems.append(f"{pname}: admits {why}")
                    elif role != "own" and (not ports or ports - {dashboard}):
                        problems.append(f"{pname}: admits the {role} on {sorted(ports) or 'every port'}, "
                                        f"not only the dashboard port {dashboard}")
                    elif role == "submitter":
                        admitted["submitter"] |= {w for w, labels in subs if _selects(peer["podSelector"], labels)}
                    elif role == "operator":
                        admitted["operator"] = True
        for where, _ in subs:
            if where not in admitted["submitter"]:
                problems.append(f"{where}: no NetworkPolicy rule admits it to {name}'s dashboard port {dashboard}")
        if not admitted["operator"] and covering:
            problems.append(f"{name}: no NetworkPolicy rule admits the KubeRay operator's namespace "
                            f"on port {dashboard}")
    return problems


def dockerfile_uid(dockerfile: str) -> int | None:
    """The numeric user of the image's last ``USER`` line (``USER 1000`` or ``USER 1000:1000``)."""
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.M)
    user = users[-1].split(":")[0] if users else ""
    return int(user) if user.isdigit() else None


def _container_security_problems(where: str, pod: dict, container: dict, uid: int | None) -> list[str]:
    pod_sc, sc = pod.get("securityContext") or {}, container.get("securityContext") or {}

    def get(key):
        return sc.get(key, pod_sc.get(key))

    problems = []
    if get("runAsNonRoot") is not True:
        problems.append(f"{where}: runAsNonRoot is not true")
    user = get("runAsUser")
    if not isinstance(user, int) or user == 0 or user != uid:
        problems.append(f"{where}: runAsUser {user} is not the image's non-root user {uid}")
    if (get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{where}: no RuntimeDefault seccompProfile")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []) or (sc.get("capabilities") or {}).get("add"):
        problems.append(f"{where}: capabilities do not drop ALL (or add some back)")
    if sc.get("privileged"):
        problems.append(f"{where}: privileged")
    mounts = {m["mountPath"].rstrip("/") for m in container.get("volumeMounts") or []}
    if sc.get("readOnlyRootFilesystem") and "/tmp" not in mounts:
        problems.append(f"{where}: read-only root file system without a volume at /tmp (Ray writes /tmp/ray)")
    return problems


def security_context_problems(docs, dockerfile: str | None = None) -> list[str]:
    """Every container of every pod (Ray head and workers, RayJob submitters, MLflow) runs as the
    image's numeric non-root user with runAsNonRoot, a RuntimeDefault seccomp profile, no privilege
    escalation, all capabilities dropped and not privileged; a read-only root file system comes
    with a writable /tmp. The pods share no host namespace. The KubeRay-injected autoscaler gets no
    privilege escalation and drops all capabilities. The Dockerfile makes that user and runs as it."""
    dockerfile = (CLUSTER / "Dockerfile").read_text() if dockerfile is None else dockerfile
    uid = dockerfile_uid(dockerfile)
    problems = []
    if uid is None or uid == 0:
        problems.append("cluster/Dockerfile: the last USER is not a numeric non-root uid")
    elif not re.search(rf"useradd\b[^\n]*--uid {uid}\b", dockerfile):
        problems.append(f"cluster/Dockerfile: no useradd --uid {uid} for its USER")
    for path, doc in docs:
        for pod in pod_specs(doc):
            for flag_ in ("hostNetwork", "hostPID", "hostIPC"):
                if pod.get(flag_):
                    problems.append(f"{_where(path, doc)}: {flag_}")
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                problems += _container_security_problems(f"{_where(path, doc)}/{c['name']}", pod, c, uid)
    for name, spec in ray_cluster_specs(docs):
        if spec.get("enableInTreeAutoscaling"):
            sc = (spec.get("autoscalerOptions") or {}).get("securityContext") or {}
            drops = (sc.get("capabilities") or {}).get("drop") or []
            if sc.get("allowPrivilegeEscalation") is not False or "ALL" not in drops:
                problems.append(f"{name}/autoscaler: securityContext does not forbid privilege escalation and drop ALL")
    return problems


def _digest_problem(where: str, ref: str) -> str | None:
    _, _, digest = split_image(ref)
    if digest is None:
        return f"{where}: {ref} is not pinned by digest (@sha256:...)"
    if not digest.startswith("sha256:") or not SHA256_VALUE.match(digest[len("sha256:"):]):
        return f"{where}: {ref}: the digest is neither 64 hex digits nor the placeholder sha256:{SHA256_PLACEHOLDER}"
    return None


def dockerfile_bases(dockerfile: str) -> list[str]:
    """The images the Dockerfile's ``FROM`` lines start from, global ``ARG`` defaults substituted and
    earlier stages (``FROM x AS name`` ... ``FROM name``) left out."""
    args, stages, bases = {}, set(), []
    for line in dockerfile.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "ARG" and not bases and not stages and "=" in words[1]:
            key, value = words[1].split("=", 1)
            args[key] = value
        elif words[0] == "FROM":
            ref = next(w for w in words[1:] if not w.startswith("--"))
            ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), ref)
            if ref not in stages:
                bases.append(ref)
            if len(words) >= 4 and words[-2].upper() == "AS":
                stages.add(words[-1])
    return bases


def digest_pin_problems(docs, dockerfile: str | None = None) -> list[str]:
    """Every image a pod runs (also the autoscaler's, when set) and every base image of the
    Dockerfile is pinned by digest: ``@sha256:`` and 64 hex digits, or the documented placeholder."""
    dockerfile = (CLUSTER / "Dockerfile").read_text() if dockerfile is None else dockerfile
    problems = []
    for path, doc in docs:
        for c in containers(doc):
            problems.append(_digest_problem(f"{_where(path, doc)}/{c['name']}", c["image"]))
    for name, spec in ray_cluster_specs(docs):
        image = (spec.get("autoscalerOptions") or {}).get("image")
        if image:
            problems.append(_digest_problem(f"{name}/autoscaler", image))
    bases = dockerfile_bases(dockerfile)
    if not bases:
        problems.append("cluster/Dockerfile: no FROM")
    problems += [_digest_problem("cluster/Dockerfile FROM", ref) for ref in bases]
    return [p for p in problems if p]


#: A pipe into a shell or an interpreter that reads its program from the pipe (``| sh``,
#: ``| sudo bash``, ``| python3 -``), or a shell fed a download (``bash <(curl ...)``): what runs is
#: whatever the server sent. ``| python -c CODE`` is data into a program written here, and passes.
PIPE_TO_SHELL = re.compile(
    r"\|\s*(?:sudo\s+(?:-\S+\s+)*)?(?:\S*/)?(?:(?:ba|da|z|k)?sh|python[\d.]*|perl|ruby)(?=[\s;)]|$)(?!\s+-c\b)"
    r"|\b(?:ba)?sh\s+<\(\s*(?:curl|wget)\b|\b(?:ba)?sh\s+-c\s+[\"']?\$\((?:curl|wget)\b")
#: A command segment that runs or unpacks a file.
USES = re.compile(r"\b(?:tar|sh|bash|python[\d.]*|dpkg|install|unzip|chmod\s+\+x)\b")


def downloads(segment: str) -> list[str]:
    """File names that the ``curl``/``wget`` calls of a shell fragment save: ``curl -o FILE`` /
    ``--output FILE``, ``wget -O FILE``, else the URL's last part (``curl -O``, plain ``wget``)."""
    out = []
    for tool, args in re.findall(r"\b(curl|wget)\b([^&|;]*)", segment):
        urls = re.findall(r"(?:https?|ftp)://\S+", args)
        option = r"\s(?:-\w*o|--output)[ =](\S+)" if tool == "curl" else r"\s(?:-\w*O|--output-document)[ =]?(\S+)"
        named = re.search(option, args)
        if named:
            out.append(named.group(1).strip("'\"").rsplit("/", 1)[-1])
        elif tool == "wget" or re.search(r"\s(?:-\w*O|--remote-name)\b", args):
            out += [u.strip("'\"").rstrip("/").rsplit("/", 1)[-1] for u in urls]
    return out


def read_checksums(text: str) -> tuple[dict[str, str], list[str]]:
    """``{file name: sha256}`` of a ``sha256sum`` file, and its malformed lines."""
    sums, bad = {}, []
    for line in text.splitlines():
        match = re.match(r"^(\S+)  \*?(\S+)$", line)
        if match and SHA256_VALUE.match(match.group(1)):
            sums[match.group(2)] = match.group(1)
        elif line.strip():
            bad.append(line)
    return sums, bad


def installer_hash_problems(commands: list[tuple[str, str]], checksums: str | None = None) -> list[str]:
    """Nothing downloaded runs unchecked: no download is piped into a shell; every file a command
    downloads (``curl -o``, ``wget -O``) is listed in cluster/installers.sha256 (64 hex digits or the
    placeholder), and a ``sha256sum --check`` of it comes between the download and the first
    command that runs or unpacks it. ``commands``: ``(where, shell command)`` pairs, e.g.
    launcher_commands() or dockerfile_runs()."""
    checksums = INSTALLER_SUMS.read_text() if checksums is None else checksums
    sums, bad = read_checksums(checksums)
    problems = [f"cluster/installers.sha256: malformed line {line!r}" for line in bad]
    for where, command in commands:
        if PIPE_TO_SHELL.search(command):
            problems.append(f"{where}: pipes a download into a shell")
        segments = command.split("&&")
        for i, segment in enumerate(segments):
            for name in downloads(segment):
                if name not in sums:
                    problems.append(f"{where}: downloads {name}, which cluster/installers.sha256 does not list")
                later = segments[i + 1:]
                check = next((k for k, s in enumerate(later) if re.search(r"sha256sum\s+(?:--check|-c)\b", s)
                              and (name in s or "installers.sha256" in s)), None)
                use = next((k for k, s in enumerate(later) if name in s and USES.search(s)
                            and not re.search(r"sha256sum", s)), None)
                if check is None or (use is not None and use < check):
                    problems.append(f"{where}: runs or unpacks {name} without checking its SHA-256 first")
    return problems


def dockerfile_runs(dockerfile: str) -> list[tuple[str, str]]:
    """``("Dockerfile RUN n", command)`` for every RUN instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile)
    return [(f"cluster/Dockerfile RUN {i}", line.split(None, 1)[1]) for i, line in
            enumerate(ln for ln in text.splitlines() if ln.startswith("RUN "))]


def installer_release_problems(cfg: dict) -> list[str]:
    """The nodes get cluster/installers.sha256 with the release: build-release.sh copies it into
    dist/igan-release, which file_mounts carry to ~/igan-release, where setup reads it."""
    problems = []
    script = (CLUSTER / "build-release.sh").read_text()
    if not re.search(r"^cp\b[^\n]*cluster/installers\.sha256", script, flags=re.M):
        problems.append("cluster/build-release.sh does not copy cluster/installers.sha256 into the release")
    if (cfg.get("file_mounts") or {}).get("~/igan-release") != "dist/igan-release":
        problems.append("file_mounts do not carry dist/igan-release to ~/igan-release")
    if not any("~/igan-release/installers.sha256" in c for _, c in launcher_commands(cfg)):
        problems.append("no setup command checks against ~/igan-release/installers.sha256")
    return problems


def _ingress_tls_problems(ingress: dict) -> list[str]:
    name = f"Ingress {ingress['metadata']['name']}"
    annotations = ingress["metadata"].get("annotations") or {}
    spec = ingress["spec"]
    problems = []
    hosts = {r.get("host") for r in spec.get("rules", [])}
    covered = {h for entry in spec.get("tls") or [] if entry.get("secretName") for h in entry.get("hosts", [])}
    if None in hosts:
        problems.append(f"{name}: a rule without a host (no certificate can match it)")
    if hosts - {None} - covered:
        problems.append(f"{name}: hosts without TLS: {sorted(hosts - {None} - covered)}")
    if not any(k in annotations for k in ("cert-manager.io/cluster-issuer", "cert-manager.io/issuer")):
        problems.append(f"{name}: no cert-manager issuer annotation: nothing issues or renews its certificate")
    if any(k.endswith("/ssl-redirect") and str(v).lower() == "false" for k, v in annotations.items()):
        problems.append(f"{name}: answers plain HTTP (ssl-redirect false)")
    if not spec.get("ingressClassName"):
        problems.append(f"{name}: no ingressClassName: any (public) controller may serve it")
    return problems


def mlflow_tls_problems(docs, launchers: dict[str, dict] | None = None) -> list[str]:
    """MLflow is reached only over TLS through its Ingress: the Ingress has a certificate for every
    host (from cert-manager), serves no plain HTTP and names its controller class; the server
    accepts the Ingress's host name; its NetworkPolicy admits only the ingress controller (a named
    other namespace), so Ray pods go through the Ingress too; every MLFLOW_TRACKING_URI and
    --tracking-uri, in the manifests and in the launchers' ray start, is the Ingress's https URI."""
    launchers = {str(p.relative_to(ROOT)): load_yaml(p) for p in LAUNCHERS} if launchers is None else launchers
    problems = []
    ingresses = mlflow_ingresses(docs)
    uri = mlflow_uri(docs)
    if uri is None:
        problems.append(f"expected one Ingress with one host in front of the MLflow Service, found {len(ingresses)}")
    for ingress in ingresses:
        problems += _ingress_tls_problems(ingress)
    deployment = next((d for _, d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == "mlflow"), None)
    if uri and deployment:
        command = " ".join(a for c in containers(deployment) for a in c.get("command", []) + c.get("args", []))
        allowed = re.search(r'--allowed-hosts "?([^"\s]+)', command)
        if allowed and uri.removeprefix("https://") not in allowed.group(1).split(","):
            problems.append(f"mlflow server: --allowed-hosts lacks {uri.removeprefix('https://')}, the Ingress's host")
    for _, policy in docs:
        if policy.get("kind") != "NetworkPolicy" or policy["spec"]["podSelector"].get("matchLabels", {}).get(
                "app.kubernetes.io/name") != "mlflow":
            continue
        for rule in policy["spec"].get("ingress") or []:
            for peer in rule.get("from") or [{}]:
                named = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
                ns = named.get("kubernetes.io/metadata.name")
                pods = (peer.get("podSelector") or {}).get("matchLabels")
                if not ns or ns == policy["metadata"].get("namespace") or not pods:
                    problems.append(f"NetworkPolicy {policy['metadata']['name']}: admits {peer or 'every source'}, "
                                    "not only the ingress controller (MLflow traffic would bypass TLS)")
    seen = []
    for path, doc in docs:
        for c in containers(doc):
            value = _env(c).get("MLFLOW_TRACKING_URI", {}).get("value")
            if value is not None:
                seen.append((f"{_where(path, doc)}/{c['name']}", value))
        if doc.get("kind") == "RayJob" and flag(doc["spec"]["entrypoint"], "--tracking-uri"):
            seen.append((f"{path.name}: --tracking-uri", flag(doc["spec"]["entrypoint"], "--tracking-uri")))
    for name, cfg in launchers.items():
        for key in ("head_start_ray_commands", "worker_start_ray_commands"):
            for command in (c for c in cfg.get(key) or [] if "ray start" in c):
                if "MLFLOW_TRACKING_URI" in start_exports(command):
                    seen.append((f"{name} {key}", start_exports(command)["MLFLOW_TRACKING_URI"]))
    for where, value in seen:
        if not value.startswith("https://"):
            problems.append(f"{where}: MLflow at {value}, not over TLS")
        elif uri and value.rstrip("/") != uri:
            problems.append(f"{where}: MLflow at {value}, not through its Ingress {uri}")
    return problems
