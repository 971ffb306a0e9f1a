"""The commands of cluster/README.md and of the RayJob entrypoints, and static checks of them (the
tests live in tests/e2e/test_cluster_commands.py).

* :func:`readme_commands` and :func:`rayjob_commands` extract every simple command: from the
  README's ``bash`` code blocks (continuation lines joined, comments, redirections and ``&``/``;``
  separators handled, ``NAME=$(...)`` unwrapped, ``setsid`` dropped), from its inline code spans
  that carry a flag or a path, and from each RayJob's ``entrypoint``.
* :func:`parse_problems` parses every ``igan`` command (also those behind ``ray job submit --``)
  with igan's real argument parser, and every ``ray`` command with Ray's real click commands.
* :func:`placement_problems`: on the GPU clusters (README paths A and B, the RayJobs) ``igan train``
  and ``igan tune`` read the shards that the same path's ``igan shard`` writes, ask for GPUs that
  the cluster can give, and keep searches on a volume every node shares; look-ups name the preset's
  models.
* :func:`static_problems`: ``kubectl``, ``docker``, ``aws s3``, scripts and ``python -c`` commands
  refer to files, resources, ports and images that exist in the repository's manifests;
  ``aws secretsmanager`` and ``gcloud secrets`` name secrets that the nodes or an ExternalSecret
  read; ``sed`` edits files that exist.
* :func:`fixture_argv` turns a cluster command into one that runs on this machine at fixture scale.

Each ``*_problems`` function returns a list of messages; empty means the commands are fine.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from helpers.cluster_checks import (CLUSTER, INCEPTION_ENV, LAUNCHERS, ROOT, SECRET_READS, dockerfile_bases, env_value,
                            gpu_count, k8s_docs, launcher_mounts, load_yaml, pod_specs, ray_cluster_specs, ray_pods,
                            split_image, start_exports, weight_file_names, weights_reach)

README = CLUSTER / "README.md"
#: README sections whose commands run on the GPU clusters, and the path each belongs to.
GPU_SECTIONS = {"Path A: Kubernetes (KubeRay)": "A", "Path B: cloud VMs (Ray cluster launcher)": "B"}
#: Programs whose commands need no check (shell built-ins and process control).
IGNORED_PROGRAMS = {"export", "kill"}
CONTROL = {"&", "&&", "||", ";", "|"}
PLACEHOLDER = re.compile(r"\.\.\.|<[a-z]")


@dataclass(frozen=True)
class Command:
    """One simple command: its words, where it was found, and which GPU path (A, B) runs it, if any."""

    words: tuple[str, ...]
    source: str
    section: str = ""
    path: str | None = None
    inline: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        return f"{self.source}: {shlex.join(self.words)}"


# ---------------------------------------------------------------------------------------------
# extraction

def split_simple(line: str) -> list[list[str]]:
    """The simple commands of one shell line: redirections and comments dropped, split at ``&``,
    ``&&``, ``||``, ``;`` and ``|``, ``NAME=$(cmd ...)`` unwrapped to ``cmd ...``, leading variable
    assignments and ``setsid`` dropped."""
    line = re.sub(r"(?<=\s)\d?(>>|>&|>|<)\s*\S+", " ", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True  # only the separators split words, as in the shell
    words = list(lexer)
    out, current = [], []
    for word in words + [";"]:
        if word in CONTROL:
            if current:
                out.append(current)
            current = []
        else:
            current.append(word)
    simple = []
    for cmd in out:
        sub = re.match(r"^\w+=\$\((.+)$", cmd[0])
        if sub:
            cmd = [sub.group(1)] + cmd[1:]
            cmd[-1] = cmd[-1][:-1] if cmd[-1].endswith(")") else cmd[-1]
        while cmd and (re.match(r"^\w+=", cmd[0]) or cmd[0] == "setsid"):
            cmd = cmd[1:]
        if cmd:
            simple.append(cmd)
    return simple


def _is_inline_command(text: str) -> bool:
    """An inline code span is checked as a command when it names a program this module knows and
    carries a flag or a path (``igan tune`` alone is a name in a sentence, not a command)."""
    words = text.split()
    known = {"igan", "ray", "kubectl", "docker", "python", "pytest", "aws"}
    return (len(words) > 1 and words[0] in known and not PLACEHOLDER.search(text)
            and any(w.startswith("-") or "/" in w for w in words[1:]))


def readme_commands(text: str | None = None, source: str = "cluster/README.md") -> list[Command]:
    """Every simple command in the README's ``bash`` blocks and command-like inline code spans."""
    text = README.read_text() if text is None else text
    commands, section, fence, pending, start = [], "", None, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None and line.startswith("#"):
            section = line.lstrip("#").strip()
            continue
        if line.lstrip().startswith("```"):  # also a block indented under a list item
            fence = line.lstrip()[3:].strip() if fence is None else None
            continue
        where = dict(section=section, path=GPU_SECTIONS.get(section))
        if fence is not None:
            if fence != "bash":
                continue
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            for words in split_simple(pending + line):
                commands.append(Command(tuple(words), f"{source}:{start}", **where))
            pending = ""
        else:
            for span in re.findall(r"`([^`]+)`", line):
                if _is_inline_command(span):
                    for words in split_simple(span):
                        commands.append(Command(tuple(words), f"{source}:{number}", inline=True, **where))
    return commands


def rayjob_commands(docs=None) -> list[Command]:
    """The ``entrypoint`` of every RayJob: path A, on a GPU cluster."""
    docs = k8s_docs() if docs is None else docs
    return [Command(tuple(shlex.split(doc["spec"]["entrypoint"])), f"{path.relative_to(ROOT)}:entrypoint",
                    section=f"RayJob {doc['metadata']['name']}", path="A")
            for path, doc in docs if doc.get("kind") == "RayJob"]


def all_commands(readme: str | None = None, docs=None) -> list[Command]:
    """The README's commands, then the RayJobs' entrypoints."""
    return readme_commands(readme) + rayjob_commands(docs)


def igan_argv(cmd: Command) -> list[str] | None:
    """The ``igan`` arguments (after the word ``igan``) of a command, also behind
    ``ray job submit ... --``; None for any other command."""
    words = list(cmd.words)
    if words[:3] == ["ray", "job", "submit"] and "--" in words:
        words = words[words.index("--") + 1:]
    return words[1:] if words and words[0] == "igan" else None


def submitted_argv(cmd: Command) -> list[str] | None:
    """The entrypoint of a ``ray job submit ... -- ENTRYPOINT`` command, else None."""
    words = list(cmd.words)
    if words[:3] == ["ray", "job", "submit"] and "--" in words:
        return words[words.index("--") + 1:]
    return None


# ---------------------------------------------------------------------------------------------
# parsing with the real command lines

def parse_igan(argv: list[str]):
    """``(namespace, None)`` when igan's parser accepts ``argv``, else ``(None, its error line)``."""
    from pipelines.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv), None
    except SystemExit:
        return None, err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "rejected"


def parse_ray(args: list[str]) -> str | None:
    """None when Ray's own CLI accepts ``ray ARGS`` (subcommands resolved, options parsed, nothing
    run), else the error."""
    import click
    from ray.scripts.scripts import cli

    command, rest, path = cli, list(args), ["ray"]
    while isinstance(command, click.Group):
        if not rest:
            return f"{' '.join(path)}: missing subcommand"
        name = rest.pop(0)
        path.append(name)
        command = command.get_command(click.Context(command), name)
        if command is None:
            return f"no command {' '.join(path)}"
    try:
        command.make_context(path[-1], rest)
    except click.ClickException as exc:
        return f"{' '.join(path)}: {exc.format_message()}"
    return None


def parse_problems(commands: list[Command]) -> list[str]:
    """Every ``igan`` command parses with igan's parser and every ``ray`` command with Ray's."""
    problems = []
    for cmd in commands:
        if cmd.words[0] == "ray":
            error = parse_ray(list(cmd.words[1:]))
            if error:
                problems.append(f"{cmd}: {error}")
        argv = igan_argv(cmd)
        if argv is not None:
            _, error = parse_igan(argv)
            if error:
                problems.append(f"{cmd}: {error}")
    return problems


# ---------------------------------------------------------------------------------------------
# where the work runs

#: The least ``--wait-for-resources`` on a cluster that starts its GPU nodes on demand: an 8xH100
#: node boots and pulls the image or installs the CUDA wheels in 10-20 minutes.
MIN_GPU_WAIT_S = 1200.0


@dataclass
class GpuCluster:
    """What a GPU path offers: GPUs in all, GPUs and CPUs of one GPU node, shared mount points,
    and whether GPU nodes join on demand (an autoscaler) or are there when the job starts."""

    gpus: int
    node_gpus: int
    node_cpus: float
    shared: set[str]
    autoscaling: bool = True


def _k8s_cpus(container: dict) -> float:
    value = str((container.get("resources", {}).get("limits") or {}).get("cpu", "0"))
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def kuberay_cluster(spec: dict, fixed: bool) -> GpuCluster:
    """A RayCluster spec's GPUs (``replicas`` for a fixed cluster, ``maxReplicas`` for an
    autoscaling one), its largest GPU pod, and the mount points of the volumes every pod shares
    (every pod mounts an emptyDir at /tmp too, but each its own)."""
    gpus, node_gpus, node_cpus = 0, 0, 0.0
    for group in spec.get("workerGroupSpecs", []):
        container = group["template"]["spec"]["containers"][0]
        g = gpu_count(container)
        gpus += g * int(group.get("replicas" if fixed else "maxReplicas", 0) or 0)
        if g > node_gpus:
            node_gpus, node_cpus = g, _k8s_cpus(container)
    mounts = [{m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])
               if m["name"] in _shared_volumes(pod)} for _, pod in ray_pods(spec)]
    return GpuCluster(gpus, node_gpus, node_cpus, set.intersection(*mounts), autoscaling=not fixed)


#: Volume sources whose data lives on the node or in the pod: never shared between pods.
POD_LOCAL_VOLUMES = ("emptyDir", "hostPath", "configMap", "secret", "projected", "downwardAPI", "ephemeral")


def _shared_volumes(pod: dict) -> set[str]:
    """Names of a pod spec's volumes that other pods can mount too (claims, NFS, CSI, ...)."""
    return {v["name"] for v in pod.get("volumes", []) if not any(k in v for k in POD_LOCAL_VOLUMES)}


def launcher_cluster(cfg: dict) -> GpuCluster:
    """A launcher config's GPUs at full scale, its GPU node type, and the file systems every node mounts."""
    gpus, node_gpus, node_cpus = 0, 0, 0.0
    for node in cfg["available_node_types"].values():
        g = int(node.get("resources", {}).get("GPU", 0))
        gpus += g * int(node.get("max_workers", 0))
        if g > node_gpus:
            node_gpus, node_cpus = g, float(node["resources"].get("CPU", 0))
    return GpuCluster(gpus, node_gpus, node_cpus, launcher_mounts(cfg))


def launcher_configs() -> dict[str, dict]:
    """``{"cluster/aws.yaml": config, ...}``: the launcher configs by their path in the repository."""
    return {str(p.relative_to(ROOT)): load_yaml(p) for p in LAUNCHERS}


def clusters(docs=None, launchers: dict[str, dict] | None = None) -> dict[str, GpuCluster]:
    """The cluster each GPU command runs on, keyed ``RayJob <name>`` (path A) and ``B`` (the
    smallest of the launcher configs, so a command must fit both)."""
    docs = k8s_docs() if docs is None else docs
    launchers = launcher_configs() if launchers is None else launchers
    specs = dict(ray_cluster_specs(docs))
    out = {}
    for _, doc in docs:
        if doc.get("kind") != "RayJob":
            continue
        spec = doc["spec"]
        if "rayClusterSpec" in spec:
            cluster = kuberay_cluster(spec["rayClusterSpec"], fixed=True)
        else:
            cluster = kuberay_cluster(specs[spec["clusterSelector"]["ray.io/cluster"]], fixed=False)
        out[f"RayJob {doc['metadata']['name']}"] = cluster
    each = [launcher_cluster(cfg) for cfg in launchers.values()]
    out["B"] = GpuCluster(min(c.gpus for c in each), min(c.node_gpus for c in each),
                          min(c.node_cpus for c in each), set.intersection(*(c.shared for c in each)))
    return out


def _on(path: str, mounts: set[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def _needs_data(preset: str) -> bool:
    """Whether a preset reads shards (digits is sharded into a cache on first use; toy sets are in memory)."""
    from igan.data.memory import EMBEDDED
    from igan.evaluation import TOY_SETS
    from igan.presets import get_preset

    dataset = get_preset(preset).data.dataset
    return dataset not in EMBEDDED and dataset not in TOY_SETS


def placement_problems(commands: list[Command], docs=None, launchers: dict[str, dict] | None = None) -> list[str]:
    """On each GPU path (A: README path A and the RayJobs; B: README path B):

    * ``igan shard`` reads ``--src`` from a volume every node shares and writes to a bucket;
    * ``igan train`` / ``igan tune`` of a preset that reads shards pass ``--data``, equal to an
      ``igan shard --out`` of the same path;
    * ``igan train`` asks for GPUs (``--gpus-per-worker``) within the cluster's;
    * where GPU nodes start on demand, ``igan train`` / ``igan tune`` wait for them at least
      :data:`MIN_GPU_WAIT_S` (``--wait-for-resources``);
    * ``igan tune`` gives each trial whole GPUs per worker (``--gpus-per-trial`` a multiple of
      ``--workers-per-trial``) on one node, CPUs in the node's proportion, ``--max-concurrent``
      trials that the cluster holds, and ``--storage`` on a shared volume;
    * ``igan models`` / ``igan sample`` name ``igan-<preset>-generator`` of a preset trained or tuned
      on that path, and the ``champion`` alias only where a tune ran.
    """
    where = clusters(docs, launchers)
    problems = []
    parsed = []
    for cmd in commands:
        argv = igan_argv(cmd)
        if cmd.path is None or argv is None:
            continue
        args, error = parse_igan(argv)
        if args is not None:
            parsed.append((cmd, args))
    for path in sorted({c.path for c, _ in parsed}):
        mine = [(c, a) for c, a in parsed if c.path == path]
        outs = {a.out for _, a in mine if a.command == "shard"}
        presets = {a.preset or (a.space if a.command == "tune" else None) for _, a in mine
                   if a.command in ("train", "tune")} - {None}
        tuned = any(a.command == "tune" for _, a in mine)
        for cmd, args in mine:
            cluster = where.get(cmd.section if cmd.section.startswith("RayJob") else path)
            if cluster is None:  # a README path-A command outside a RayJob: the RayCluster's jobs
                cluster = next((c for k, c in where.items() if k.startswith("RayJob")), None)
            problems += [f"{cmd}: {p}" for p in _placement(args, cluster, outs, presets, tuned)]
    return problems


def _placement(args, cluster: GpuCluster, outs: set[str], presets: set[str], tuned: bool) -> list[str]:
    out = []
    if args.command == "shard":
        if args.src and args.src.startswith("/") and not _on(args.src, cluster.shared):
            out.append(f"--src {args.src} is not on a volume every node mounts {sorted(cluster.shared)}")
        if not args.out.startswith(("s3://", "gs://")) and not _on(args.out, cluster.shared):
            out.append(f"--out {args.out} is neither a bucket nor a shared volume")
    if args.command in ("train", "tune"):
        preset = args.preset or (args.space if args.command == "tune" else "digits")
        if _needs_data(preset):
            if not args.data:
                out.append(f"preset {preset} reads shards but the command has no --data")
            elif args.data not in outs:
                out.append(f"--data {args.data} is not what igan shard writes on this path ({sorted(outs)})")
        if cluster.autoscaling and args.wait_for_resources < MIN_GPU_WAIT_S:
            out.append(f"--wait-for-resources {args.wait_for_resources:g}: GPU nodes that start on demand take "
                       f"longer; wait at least {MIN_GPU_WAIT_S:g} s")
    if args.command == "train":
        workers = args.workers or 1
        if args.gpus_per_worker <= 0:
            out.append("igan train on a GPU cluster without --gpus-per-worker")
        elif workers * args.gpus_per_worker > cluster.gpus:
            out.append(f"{workers} x {args.gpus_per_worker:g} GPUs requested, the cluster has {cluster.gpus}")
    if args.command == "tune":
        g, w = args.gpus_per_trial, args.workers_per_trial
        if g <= 0:
            out.append("igan tune on a GPU cluster without --gpus-per-trial")
        else:
            if g % w or g < w:
                out.append(f"--gpus-per-trial {g:g} over --workers-per-trial {w}: not whole GPUs per worker")
            if g > cluster.node_gpus:
                out.append(f"--gpus-per-trial {g:g} exceeds one node's {cluster.node_gpus} GPUs")
            if args.cpus_per_trial / g > cluster.node_cpus / max(cluster.node_gpus, 1):
                out.append(f"--cpus-per-trial {args.cpus_per_trial:g} for {g:g} GPUs exceeds the node's "
                           f"{cluster.node_cpus:g} CPUs for {cluster.node_gpus} GPUs")
            if args.max_concurrent and args.max_concurrent * g > cluster.gpus:
                out.append(f"--max-concurrent {args.max_concurrent} x {g:g} GPUs exceeds the cluster's {cluster.gpus}")
        if args.max_concurrent is None:
            out.append("no --max-concurrent: igan tune would size the search by the GPUs present at its "
                       "start, none on a scaled-down cluster")
        if not args.storage or not _on(args.storage, cluster.shared):
            out.append(f"--storage {args.storage} is not on a volume every node mounts {sorted(cluster.shared)}")
    if args.command in ("models", "sample"):
        uri = args.name if args.command == "models" else args.model_uri
        match = re.match(r"^(?:models:/)?igan-([\w-]+?)-(generator|classifier)(?:@(\w+)|/\d+)?$", uri or "")
        if not match:
            out.append(f"{uri} is not an igan model name")
        else:
            if match.group(1) not in presets:
                out.append(f"model of preset {match.group(1)}, but this path trains {sorted(presets)}")
            if match.group(3) == "champion" and not tuned:
                out.append("the champion alias, but no igan tune on this path sets it")
    return out


# ---------------------------------------------------------------------------------------------
# the other commands: files, resources, images

def _kubectl(words: list[str]) -> tuple[str | None, str | None, list[str], dict]:
    """``(namespace, verb, positional args, options)`` of a kubectl command (``-f`` of ``apply``
    collected in options["-f"]; the boolean ``-f``/``-w`` of logs/get dropped)."""
    namespace, verb, positional, options = None, None, [], {"-f": []}
    i = 1
    while i < len(words):
        word = words[i]
        if word == "--":
            positional += words[i:]
            break
        if word in ("-n", "--namespace"):
            namespace, i = words[i + 1], i + 2
            continue
        if word == "-f" and verb == "apply":
            options["-f"].append(words[i + 1])
            i += 2
            continue
        if word in ("-l", "-o", "-c"):
            options[word], i = words[i + 1], i + 2
            continue
        if word.startswith("-"):
            i += 1
            continue
        if verb is None:
            verb = word
        else:
            positional.append(word)
        i += 1
    return namespace, verb, positional, options


def _resource(docs, kind: str, name: str, namespace: str | None):
    for _, doc in docs:
        if doc.get("kind") == kind and doc["metadata"]["name"] == name \
                and doc["metadata"].get("namespace") == namespace:
            return doc
    return None


def _service_ports(docs, name: str, namespace: str | None) -> set[int] | None:
    """Ports of Service ``name``, or of the head service KubeRay makes for RayCluster ``<x>-head-svc``
    (the head container's ports); None when there is no such service."""
    svc = _resource(docs, "Service", name, namespace)
    if svc is not None:
        return {int(p["port"]) for p in svc["spec"]["ports"]}
    if name.endswith("-head-svc"):
        cluster = _resource(docs, "RayCluster", name[: -len("-head-svc")], namespace)
        if cluster is not None:
            head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
            return {int(p["containerPort"]) for p in head.get("ports", [])}
    return None


def _kubectl_problems(cmd: Command, docs, weights: set[str]) -> list[str]:
    namespace, verb, args, options = _kubectl(list(cmd.words))
    problems = []
    if verb != "apply" and namespace != "igan":
        problems.append(f"kubectl {verb} outside the igan namespace ({namespace})")
    if verb == "apply":
        for target in options["-f"]:
            if not (ROOT / target).exists():
                problems.append(f"{target} does not exist")
    elif verb == "rollout":
        kind, _, name = args[1].partition("/")
        if kind not in ("deploy", "deployment") or _resource(docs, "Deployment", name, namespace) is None:
            problems.append(f"no Deployment {name} in {namespace}")
    elif verb == "logs":
        kind, _, name = args[0].partition("/")
        job = _resource(docs, "RayJob", name, namespace)
        if kind != "job" or job is None or job["spec"].get("submissionMode", "K8sJobMode") != "K8sJobMode":
            problems.append(f"{args[0]}: no RayJob {name} whose submitter Job KubeRay names so")
    elif verb == "get" and args[:1] == ["rayjob"]:
        if _resource(docs, "RayJob", args[1], namespace) is None:
            problems.append(f"no RayJob {args[1]} in {namespace}")
    elif verb == "get" and args[:1] in (["secret"], ["secrets"]):
        made = {d["spec"]["target"]["name"] for _, d in docs if d.get("kind") == "ExternalSecret"
                and d["metadata"].get("namespace") == namespace}
        if args[1:2] and args[1] not in made:
            problems.append(f"no ExternalSecret makes the Secret {args[1]} in {namespace}")
    elif verb in ("get", "wait") and args[:1] in (["pod"], ["pods"]):
        wanted = dict(item.split("=", 1) for item in options.get("-l", "").split(",") if "=" in item)
        if "ray.io/cluster" in wanted and _resource(docs, "RayCluster", wanted["ray.io/cluster"], namespace) is None:
            problems.append(f"no RayCluster {wanted['ray.io/cluster']} in {namespace}")
    elif verb == "port-forward":
        kind, _, name = args[0].partition("/")
        ports = _service_ports(docs, name, namespace) if kind in ("svc", "service") else None
        remote = int(args[1].split(":")[-1]) if len(args) > 1 else None
        if ports is None:
            problems.append(f"no Service {name} in {namespace}")
        elif remote not in ports:
            problems.append(f"{name} has no port {remote} (has {sorted(ports)})")
    elif verb == "cp":
        source, target = args[0], args[1]
        pod_path = target.split(":", 1)[1] if ":" in target else None
        dest = pod_path
        if pod_path and pod_path.endswith("/"):
            dest = pod_path + os.path.basename(source)
        if dest is None:
            problems.append(f"kubectl cp to {target}: not a pod path")
        elif os.path.basename(source) in weight_file_names() and not weights_reach(dest, weights):
            problems.append(f"copies the Inception weights to {dest}, but the pods read {sorted(weights)}")
    elif verb not in ("exec", "delete"):
        problems.append(f"kubectl {verb}: this check does not know it")
    return problems


def _untagged_digest(image: str) -> str:
    """``name:tag`` of an image reference, without its ``@digest``."""
    name, tag, _ = split_image(image)
    return f"{name}:{tag}" if tag else name


def store_secrets(docs, launchers: dict[str, dict]) -> dict[str, set[str]]:
    """Secret-manager names by provider (``aws``, ``gcp``) that a launcher's nodes read; an
    ExternalSecret's remote keys count for both (the ClusterSecretStore may be either)."""
    names: dict[str, set[str]] = {"aws": set(), "gcp": set()}
    for cfg in launchers.values():
        provider = cfg.get("provider", {}).get("type")
        if provider in SECRET_READS:
            for command in cfg.get("setup_commands") or []:
                names[provider] |= set(SECRET_READS[provider].findall(command))
    remote = {item["remoteRef"]["key"] for _, d in docs if d.get("kind") == "ExternalSecret"
              for item in d["spec"].get("data", [])}
    return {provider: found | remote for provider, found in names.items()}


def _secret_store_problems(words: list[str], secrets: dict[str, set[str]]) -> list[str]:
    """``aws secretsmanager create-secret --name N`` / ``get-secret-value --secret-id N`` and
    ``gcloud secrets create N`` / ``versions access V --secret=N``: N is a secret the nodes or an
    ExternalSecret read."""
    text = " ".join(words)
    provider = "aws" if words[0] == "aws" else "gcp"
    match = (re.search(r"--(?:name|secret-id)[ =](\S+)", text) if provider == "aws"
             else re.search(r"--secret[ =](\S+)", text) or re.search(r"^gcloud secrets create (\S+)", text))
    if not match:
        return ["names no secret"]
    if match.group(1) not in secrets[provider]:
        return [f"secret {match.group(1)}: neither the {provider} launcher's nodes nor an ExternalSecret read it "
                f"({sorted(secrets[provider])})"]
    return []


def _sed_problems(words: list[str]) -> list[str]:
    """``sed [-i] SCRIPT FILE...``: every FILE (glob) matches a file of the repository."""
    operands = [w for w in words[1:] if not w.startswith("-")][1:]
    if not operands:
        return ["sed without a file"]
    return [f"no file {w}" for w in operands if not list(ROOT.glob(w))]


def static_problems(commands: list[Command], docs=None, launchers: dict[str, dict] | None = None) -> list[str]:
    """The non-igan commands refer to what the repository holds: Dockerfile and build context,
    the one image tag of the manifests (pinned by digest after the push), manifests and their
    resources, launcher configs, scripts, Python snippets, secrets the nodes read, files to edit;
    copies of the Inception weights land where the pods and nodes read them."""
    docs = k8s_docs() if docs is None else docs
    launchers = launcher_configs() if launchers is None else launchers
    images = {_untagged_digest(c["image"]) for _, doc in docs for spec in pod_specs(doc) for c in spec["containers"]}
    bases = {_untagged_digest(b) for b in dockerfile_bases((CLUSTER / "Dockerfile").read_text())}
    secrets = store_secrets(docs, launchers)
    pod_weights = {v for _, doc in docs for spec in pod_specs(doc) for c in spec["containers"]
                   if (v := env_value(c, INCEPTION_ENV))}
    node_weights = {}
    for name, cfg in launchers.items():
        for c in cfg.get("head_start_ray_commands", []):
            if "ray start" in c and INCEPTION_ENV in start_exports(c):
                node_weights[name] = start_exports(c)[INCEPTION_ENV]
    built: set[str] = set()
    problems = []
    for cmd in commands:
        words = list(cmd.words)
        program = words[0]
        found: list[str] = []
        if program == "igan" or program in IGNORED_PROGRAMS:
            pass
        elif program == "kubectl":
            found = _kubectl_problems(cmd, docs, pod_weights)
        elif program == "docker" and words[1] == "build":
            dockerfile = words[words.index("-f") + 1] if "-f" in words else "Dockerfile"
            tag = words[words.index("-t") + 1] if "-t" in words else None
            built.add(tag)
            if not (ROOT / dockerfile).is_file():
                found.append(f"no {dockerfile}")
            elif not (ROOT / (dockerfile + ".dockerignore")).is_file():
                found.append(f"no {dockerfile}.dockerignore beside {dockerfile}")
            if words[-1] != ".":
                found.append("the build context is not the repository root (.)")
            if tag not in images:
                found.append(f"builds {tag}, the manifests run {sorted(images)}")
        elif program == "docker" and words[1] == "push":
            if words[2] not in built:
                found.append(f"pushes {words[2]}, which no docker build above makes")
        elif program == "docker" and words[1:4] == ["buildx", "imagetools", "inspect"]:
            target = next((w for w in words[4:] if not w.startswith("-") and "{{" not in w), None)
            if target not in built | bases:
                found.append(f"inspects {target}: neither an image built above nor the Dockerfile's base "
                             f"{sorted(bases)}")
        elif words[:2] in (["aws", "secretsmanager"], ["gcloud", "secrets"]):
            found += _secret_store_problems(words, secrets)
        elif program == "sed":
            found += _sed_problems(words)
        elif program == "ray":
            if words[1] in ("up", "down", "dashboard", "exec", "attach"):
                configs = [w for w in words[2:] if w.endswith(".yaml")]
                if not configs or configs[0] not in launchers:
                    found.append(f"ray {words[1]}: {configs} is not a launcher config {sorted(launchers)}")
            entry = submitted_argv(cmd)
            if entry and entry[0] == "python":
                found += _python_problems(entry)
        elif program == "python":
            found += _python_problems(words)
        elif program == "pytest":
            found += [f"no {w}" for w in words[1:] if not w.startswith("-") and not (ROOT / w.split("::")[0]).exists()]
        elif program.startswith("cluster/"):
            if not (ROOT / program).is_file() or not os.access(ROOT / program, os.X_OK):
                found.append(f"{program} is not an executable file")
        elif program == "aws" and words[1:3] == ["s3", "cp"]:
            source, target = words[3], words[4]
            dest = target.rstrip("/") + "/" + os.path.basename(source) if target.endswith("/") else target
            aws = {v for k, v in node_weights.items() if "aws" in k}
            if os.path.basename(source) in weight_file_names() and not weights_reach(dest, aws):
                found.append(f"copies the Inception weights to {dest}, but the AWS nodes read {sorted(aws)}")
        else:
            found.append("a program this check does not know")
        problems += [f"{cmd}: {p}" for p in found]
    return problems


def _python_problems(words: list[str]) -> list[str]:
    if len(words) > 2 and words[1] == "-c":
        try:
            compile(words[2], "<python -c>", "exec")
        except SyntaxError as exc:
            return [f"python -c does not compile: {exc.msg}"]
        return []
    script = next((w for w in words[1:] if not w.startswith("-")), None)
    return [] if script and (ROOT / script).is_file() else [f"no script {script}"]


# ---------------------------------------------------------------------------------------------
# cluster commands at fixture scale

@dataclass
class Fixture:
    """How a cluster command maps onto this machine: the local folder that stands for the buckets,
    the one for ``/mnt/shared``, the MLflow server, and ``--set`` items that shrink the job."""

    bucket: Path
    shared: Path
    tracking_uri: str
    sets: list[str]
    work: Path
    #: flag -> value for the flags that size a job to a GPU cluster. One trial per search: what is
    #: checked here is the commands; searching is tests/e2e/test_tune.py's subject.
    scale: dict = field(default_factory=lambda: {
        "--workers": "1", "--gpus-per-worker": "0", "--gpus-per-trial": "0", "--workers-per-trial": "1",
        "--cpus-per-trial": "1", "--max-concurrent": "1", "--num-samples": "1", "--samples-per-shard": "4"})


def fixture_argv(argv: list[str], fx: Fixture) -> list[str]:
    """``argv`` (igan's arguments) for this machine: ``s3://igan-data/...`` and ``gs://igan-data/...``
    become ``file://`` URIs under ``fx.bucket``, ``/mnt/shared/...`` paths move under ``fx.shared``,
    GPU and node counts become the tiny CPU values of ``fx.scale``, ``--tracking-uri`` is the test
    server, relative ``--out`` files land in ``fx.work``, and ``fx.sets`` are appended to
    ``train``/``tune`` (later ``--set`` items win)."""
    out = []
    values = iter(argv)
    for word in values:
        if word in fx.scale:
            next(values)
            out += [word, fx.scale[word]]
            continue
        if word == "--tracking-uri":
            next(values)
            out += [word, fx.tracking_uri]
            continue
        out.append(_local(word, fx))
    if argv and argv[0] == "sample" and "--out" in out:
        i = out.index("--out") + 1
        out[i] = str(fx.work / out[i]) if not os.path.isabs(out[i]) else out[i]
    if argv and argv[0] in ("train", "tune"):
        out += [a for item in fx.sets for a in ("--set", item)]
    return out


def _local(word: str, fx: Fixture) -> str:
    match = re.match(r"^(s3|gs)://igan-data/(.*)$", word)
    if match:
        return (fx.bucket / match.group(2)).as_uri()
    if word == "/mnt/shared" or word.startswith("/mnt/shared/"):
        return str(fx.shared / word[len("/mnt/shared/"):]) if word != "/mnt/shared" else str(fx.shared)
    return word
