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
    if not re.search(r"astral\.sh/uv/\d+\.\d+\.\d+/install\.sh", setup):
        problems.append("uv installer is not pinned to a version")
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


def image_problems(docs) -> list[str]:
    images = {c["image"] for _, doc in docs for c in containers(doc)}
    problems = []
    if len(images) != 1:
        problems.append(f"manifests use {len(images)} images: {sorted(images)}")
    for image in images:
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else None
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


def train_job_problems(docs) -> list[str]:
    """igan train's --workers x --gpus-per-worker fits the GPUs of the cluster it runs on, and its
    --tracking-uri is the in-cluster MLflow Service."""
    problems = []
    service = next(d for _, d in docs if d.get("kind") == "Service" and d["metadata"]["name"] == "mlflow")
    port = service["spec"]["ports"][0]["port"]
    mlflow_uri = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port}"
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
        if flag(entry, "--tracking-uri") != mlflow_uri:
            problems.append(f"{path.name}: --tracking-uri is not {mlflow_uri}")
    for _, doc in docs:
        for c in containers(doc):
            for env in c.get("env", []):
                if env["name"] == "MLFLOW_TRACKING_URI" and env.get("value") != mlflow_uri:
                    problems.append(f"MLFLOW_TRACKING_URI {env.get('value')} != {mlflow_uri}")
    return problems


def mlflow_problems(docs) -> list[str]:
    problems = []
    for path, doc in docs:
        if doc.get("kind") == "Service" and doc["spec"].get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"{path.name}: Service {doc['metadata']['name']} is {doc['spec']['type']}")
        if doc.get("kind") == "Service" and doc["spec"].get("type") is None:
            problems.append(f"{path.name}: Service {doc['metadata']['name']} should state type: ClusterIP")
        if doc.get("kind") in ("Ingress", "Gateway", "HTTPRoute"):
            problems.append(f"{path.name}: {doc['kind']} exposes a service")
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
    # The pods that hold MLflow credentials are the ones the policy lets in.
    allowed = [peer.get("podSelector", {}).get("matchLabels", {}) for p in policies
               for rule in p["spec"].get("ingress", []) for peer in rule.get("from", [])]
    for path, doc in docs:
        for pod in pod_specs(doc):
            uses_login = any(e["name"] == "MLFLOW_TRACKING_PASSWORD" for c in pod["containers"] for e in c.get("env", []))
            if not uses_login:
                continue
            labels = _pod_labels(doc, pod)
            if not any(sel and sel.items() <= labels.items() for sel in allowed):
                problems.append(f"{path.name}: a pod with MLflow credentials is not allowed by the NetworkPolicy")
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
