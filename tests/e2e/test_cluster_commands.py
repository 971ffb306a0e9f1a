"""Every command of cluster/README.md and of the RayJob entrypoints (extracted by cluster_commands.py):

* statically: ``igan`` and ``ray`` commands parse with the real command lines; on the GPU paths
  ``igan train`` / ``igan tune`` read the shards ``igan shard`` writes and ask for GPUs, workers and
  storage the cluster has; ``kubectl``, ``docker``, ``aws s3`` and script commands name files,
  resources, ports and images that exist. Broken copies of the README and the manifests fail each check.
* at fixture scale (slow): the GPU paths' ``igan shard`` -> ``train`` -> ``tune`` -> ``models`` /
  ``sample`` commands run on this machine, as written except for what fixture_argv substitutes
  (buckets and /mnt/shared become local folders, GPU and node counts tiny CPU values, tiny
  widths and epochs through ``--set``), on an ILSVRC-shaped ImageNet tree from fixtures_formats.py,
  with Inception weights where the pods' IGAN_INCEPTION_WEIGHTS points; and the same commands
  with the preset and data set replaced by ``digits``.

The multi-node section's commands are run by tests/e2e/test_multinode.py; this module checks that
its command line covers theirs.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shlex

import pytest
from helpers.cluster_checks import INCEPTION_ENV, env_value, inception_weight_file, k8s_docs, ray_cluster_specs, ray_pods
from helpers.cluster_commands import (README, Command, Fixture, all_commands, fixture_argv, igan_argv, parse_igan,
                              parse_problems, placement_problems, rayjob_commands, readme_commands, split_simple,
                              static_problems)
from helpers.fixtures_formats import make_imagenet

STAGES = ("shard", "train", "tune", "models", "sample")
#: Flags whose values differ between the paths for where things live or how long GPU nodes take.
PER_CLUSTER = ("--tracking-uri", "--storage", "--wait-for-resources")


@pytest.fixture(scope="module")
def commands():
    return all_commands()


@pytest.fixture(scope="module")
def readme():
    return README.read_text()


def _gpu_igan(commands) -> list[Command]:
    return [c for c in commands if c.path and igan_argv(c) is not None]


# ---------------------------------------------------------------------------------------------
# extraction

def test_split_simple_handles_the_shell_forms_the_readme_uses():
    assert split_simple("setsid ray start --head > /tmp/h.log 2>&1 &  HEAD=$!") == [["ray", "start", "--head"]]
    assert split_simple("HEAD=$(kubectl -n igan get pod -o name)") == [
        ["kubectl", "-n", "igan", "get", "pod", "-o", "name"]]
    assert split_simple("ray dashboard cluster/aws.yaml &  # forwards") == [["ray", "dashboard", "cluster/aws.yaml"]]
    assert split_simple("a x; b y && c | d") == [["a", "x"], ["b", "y"], ["c"], ["d"]]
    assert split_simple("RAY_ADDRESS=x igan models") == [["igan", "models"]]


def test_extracts_every_step_of_both_gpu_paths(commands):
    steps = {(c.path, igan_argv(c)[0]) for c in _gpu_igan(commands)}
    assert steps >= {("A", s) for s in STAGES} | {("B", s) for s in STAGES if s != "sample"}
    # continuation lines are joined: the path-B shard command carries the flags of its second line
    shard_b = next(c for c in commands if c.path == "B" and igan_argv(c) and igan_argv(c)[0] == "shard")
    assert "--samples-per-shard" in shard_b.words and shard_b.words[:4] == ("ray", "job", "submit", "--")
    assert {c.source.split(":")[0] for c in rayjob_commands()} == {
        "cluster/kuberay/rayjob-shard-imagenet.yaml", "cluster/kuberay/rayjob-train-imagenet128.yaml",
        "cluster/kuberay/rayjob-tune.yaml"}
    # inline spans with flags count; names in a sentence and placeholders do not
    inline = {c.words for c in commands if c.inline}
    assert ("kubectl", "-n", "igan", "port-forward", "svc/igan-head-svc", "8265") in inline
    assert not any(w[:2] in (("igan", "tune"), ("ray", "dashboard")) and len(w) == 2 for w in inline)


# ---------------------------------------------------------------------------------------------
# the real files pass

def test_every_igan_and_ray_command_parses(commands):
    assert parse_problems(commands) == []


def test_gpu_commands_fit_their_clusters_and_read_what_shard_writes(commands):
    assert placement_problems(commands) == []


def test_other_commands_name_what_exists(commands):
    assert static_problems(commands) == []


def test_the_tune_rayjob_has_data_gpus_and_workers_per_trial():
    """The bug this module was written for: the tune RayJob passed no --data and no GPUs per trial."""
    (tune,) = [c for c in rayjob_commands() if igan_argv(c)[0] == "tune"]
    args, error = parse_igan(igan_argv(tune))
    assert error is None
    assert args.data == "s3://igan-data/imagenet128" and args.gpus_per_trial == 8 and args.workers_per_trial == 8


def test_multinode_section_is_what_test_multinode_runs(commands):
    """The README's one-machine cluster commands are run by tests/e2e/test_multinode.py: its igan train
    command line uses every flag of theirs (plus --address in its node-loss test)."""
    from helpers.train_jobs import multinode_train_args

    theirs = set(multinode_train_args("/d", "/s", "n", "http://t")) | {"--address"}
    trains = [c for c in commands if c.section == "Multi-node on one machine" and (igan_argv(c) or [""])[0] == "train"]
    assert len(trains) == 2
    for cmd in trains:
        flags = {w for w in igan_argv(cmd) if w.startswith("--")}
        assert flags <= theirs, f"{cmd}: {flags - theirs} not exercised by tests/e2e/test_multinode.py"


# ---------------------------------------------------------------------------------------------
# the checks catch broken copies

def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def _tune_job(docs):
    (doc,) = [d for _, d in docs if d.get("kind") == "RayJob" and d["metadata"]["name"] == "igan-tune-imagenet128"]
    return doc


def test_parse_check_catches_unknown_flags_and_missing_arguments(readme):
    bad = _replace(readme, "--gpus-per-trial 8", "--gpus-per-trail 8")
    assert any("--gpus-per-trail" in p for p in parse_problems(readme_commands(bad)))
    bad = _replace(readme, "ray up -y cluster/aws.yaml", "ray up --yes-please cluster/aws.yaml")
    assert any("--yes-please" in p for p in parse_problems(readme_commands(bad)))
    bad = _replace(readme, "ray job submit -- igan models igan-imagenet128-generator --json",
                   "ray job submit -- igan models --limit 3")
    assert parse_problems(readme_commands(bad))


def test_placement_check_catches_the_old_tune_job_and_misfits():
    docs = k8s_docs()
    old = copy.deepcopy(docs)  # the tune RayJob as it was: no --data, no GPUs per trial
    _tune_job(old)["spec"]["entrypoint"] = ("igan tune imagenet128 --preset imagenet128 --num-samples 16 "
                                           "--scheduler asha --tracking-uri http://mlflow.igan.svc:5000 --json")
    problems = placement_problems(rayjob_commands(old), old)
    assert any("no --data" in p for p in problems) and any("without --gpus-per-trial" in p for p in problems)
    assert any("--storage None" in p for p in problems) and any("no --max-concurrent" in p for p in problems)

    for old_text, new_text, expected in (
            ("--workers-per-trial 8", "--workers-per-trial 3", "not whole GPUs per worker"),
            ("--max-concurrent 4", "--max-concurrent 5", "exceeds the cluster's 32"),
            ("--gpus-per-trial 8 --cpus-per-trial 160", "--gpus-per-trial 16 --cpus-per-trial 160", "one node's 8"),
            ("--cpus-per-trial 160", "--cpus-per-trial 190", "exceeds the node's"),
            ("--storage /mnt/shared/igan-tune", "--storage /tmp/igan-tune", "every node mounts"),
            ("--data s3://igan-data/imagenet128", "--data s3://igan-data/imagenet", "is not what igan shard writes"),
            ("--wait-for-resources 1800", "", "wait at least")):
        bad = copy.deepcopy(docs)
        job = _tune_job(bad)["spec"]
        job["entrypoint"] = _replace(job["entrypoint"], old_text, new_text)
        assert any(expected in p for p in placement_problems(rayjob_commands(bad), bad)), (new_text, expected)


def test_placement_check_catches_readme_misfits(readme, commands):
    docs = k8s_docs()
    for old_text, new_text, expected in (
            ("--workers 16 --gpus-per-worker 1", "--workers 40 --gpus-per-worker 1", "the cluster has 32"),
            ("--gpus-per-worker 1 --wait-for-resources 1800", "--wait-for-resources 1800", "without --gpus-per-worker"),
            ("--gpus-per-worker 1 --wait-for-resources 1800", "--gpus-per-worker 1 --wait-for-resources 60",
             "wait at least"),
            ("--src /mnt/shared/raw/imagenet --out s3", "--src /home/ubuntu/imagenet --out s3", "every node mounts"),
            ("-- igan models igan-imagenet128-generator", "-- igan models igan-cifar10-generator", "this path trains"),
            ("sample models:/igan-imagenet128-generator@", "sample models:/igan-imagenet128-genny@",
             "not an igan model name")):
        bad = readme_commands(_replace(readme, old_text, new_text)) + rayjob_commands(docs)
        assert any(expected in p for p in placement_problems(bad, docs)), (new_text, expected)
    # the champion alias needs a tune on the same path
    no_tune = [c for c in commands if not (c.path == "A" and igan_argv(c) and igan_argv(c)[0] == "tune")]
    assert any("champion alias" in p for p in placement_problems(no_tune, docs))


def test_static_check_catches_wrong_names_files_ports_and_copies(readme):
    for old_text, new_text, expected in (
            ("logs -f job/igan-shard-imagenet", "logs -f job/igan-shard", "no RayJob igan-shard"),
            ("kubectl apply -f cluster/kuberay/rayjob-tune.yaml", "kubectl apply -f cluster/kuberay/rayjob-tun.yaml",
             "does not exist"),
            ("port-forward svc/mlflow 5000:5000", "port-forward svc/mlflow 5000:5001", "no port 5001"),
            ("port-forward svc/igan-head-svc 8265", "port-forward svc/igan-svc 8265", "no Service igan-svc"),
            ("rollout status deploy/mlflow", "rollout status deploy/mlflow-server", "no Deployment"),
            ("cluster=igan,ray.io/node-type=head --timeout", "cluster=ray,ray.io/node-type=head --timeout",
             "no RayCluster ray"),
            ("get rayjob igan-train-imagenet128", "get rayjob igan-train", "no RayJob igan-train"),
            ("-t registry.example.com/igan/igan:0.1.0 .", "-t registry.example.com/igan/igan:0.2.0 .",
             "the manifests run"),
            ("docker push registry.example.com/igan/igan:0.1.0", "docker push registry.example.com/igan/igan:latest",
             "no docker build above"),
            ("$HEAD:/mnt/shared/inception/", "$HEAD:/mnt/shared/weights/", "the pods read"),
            ("s3://igan-data/inception/   #", "s3://igan-data/weights/   #", "the AWS nodes read"),
            ("ray up -y cluster/aws.yaml", "ray up -y cluster/azure.yaml", "not a launcher config"),
            ("kubectl -n igan rollout", "kubeclt -n igan rollout", "does not know"),
            ("python benchmarks/gpu_check.py", "python benchmarks/gpu_chek.py", "no script"),
            # the lock-down: secrets the nodes read, the token Secret, the image digest and the files it goes into
            ("--secret-id igan/ray-token", "--secret-id igan/ray-tokn", "neither the aws launcher's nodes"),
            ("--name igan/ray-token", "--name igan/raytoken", "neither the aws launcher's nodes"),
            ("gcloud secrets create igan-ray-token", "gcloud secrets create igan-ray-tokn",
             "neither the gcp launcher's"),
            ("get secret igan-ray-token", "get secret ray-token", "no ExternalSecret makes the Secret ray-token"),
            ("imagetools inspect registry.example.com/igan/igan:0.1.0",
             "imagetools inspect registry.example.com/igan/x:0.1.0", "neither an image built above"),
            ("imagetools inspect python:3.11-slim-bookworm", "imagetools inspect python:3.12-slim",
             "nor the Dockerfile's base"),
            ('/@$DIGEST/" cluster/kuberay/*.yaml', '/@$DIGEST/" cluster/kuberay/*.yml',
             "no file cluster/kuberay/*.yml")):
        problems = static_problems(readme_commands(_replace(readme, old_text, new_text)))
        assert any(expected in p for p in problems), (new_text, expected, problems)


def test_static_check_compiles_python_snippets():
    good = Command(("ray", "job", "submit", "--", "python", "-c", "import ray; ray.init()"), "x:1")
    bad = Command(("ray", "job", "submit", "--", "python", "-c", "import ray; ray.init("), "x:2")
    assert static_problems([good]) == []
    assert any("does not compile" in p for p in static_problems([bad]))


def test_fixture_argv_substitutes_buckets_shared_paths_and_counts(tmp_path):
    fx = Fixture(bucket=tmp_path / "b", shared=tmp_path / "s", tracking_uri="http://127.0.0.1:1",
                 sets=["train.epochs=1"], work=tmp_path / "w")
    argv = shlex.split("train --preset imagenet128 --data s3://igan-data/imagenet128 --workers 16 --gpus-per-worker 1 "
                       "--storage /mnt/shared/ckpt --tracking-uri http://mlflow.igan.svc:5000 --json")
    assert fixture_argv(argv, fx) == [
        "train", "--preset", "imagenet128", "--data", (tmp_path / "b" / "imagenet128").as_uri(), "--workers", "1",
        "--gpus-per-worker", "0", "--storage", str(tmp_path / "s" / "ckpt"), "--tracking-uri", "http://127.0.0.1:1",
        "--json", "--set", "train.epochs=1"]
    assert fixture_argv(["sample", "m", "--out", "c.png"], fx)[-1] == str(tmp_path / "w" / "c.png")


# ---------------------------------------------------------------------------------------------
# the chain at fixture scale

TINY_IMAGENET = ["data.num_classes=3", "data.val_per_class=1", "data.batch_size=4",
                 "model.d_widths=[4,4,4,4,4,4,4,8]", "model.g_widths=[8,4,4,4,4,4]",
                 "model.g_noise_channels=[2,2,1,1,1,1]", "techniques.mbd_kernels=5", "techniques.mbd_dim=3",
                 "techniques.vbn_reference_size=3", "train.epochs=2", "train.steps_per_epoch=2", "eval.every=1",
                 "eval.num_samples=10", "eval.final_num_samples=0", "eval.splits=2", "eval.grid_size=2"]
TINY_DIGITS = ["eval.scorer=none", "train.epochs=2", "train.steps_per_epoch=3", "eval.every=1", "eval.grid_size=4",
               "model.d_widths=[32,16]", "model.g_widths=[32]", "techniques.wn_init_examples=100"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, mlflow_server):
    """This machine as a cluster: a folder for the buckets, one for /mnt/shared holding the raw
    ImageNet tree, the MLflow server, and the environment every Ray node gets on a cluster
    (MLFLOW_TRACKING_URI, IGAN_INCEPTION_WEIGHTS at the manifests' folder moved under the shared
    folder). Set here, before local_ray starts a Ray, so its workers inherit it."""
    base = tmp_path_factory.mktemp("cluster_site")
    fx = Fixture(bucket=base / "bucket", shared=base / "shared", tracking_uri=mlflow_server, sets=[],
                 work=base / "work")
    fx.work.mkdir()
    expected = make_imagenet(str(fx.shared / "raw" / "imagenet"), per_class=3, n_val=6)
    _, spec = ray_cluster_specs(k8s_docs())[0]
    weights = env_value(ray_pods(spec)[0][1]["containers"][0], INCEPTION_ENV)
    weights_local = fixture_argv([weights], fx)[0]
    env = {"IGAN_HOME": str(base / "home"), "MLFLOW_TRACKING_URI": mlflow_server, INCEPTION_ENV: weights_local,
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "IGAN_CACHE": str(base / "cache")}
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    mp.delenv("RAY_ADDRESS", raising=False)
    try:
        yield {"fx": fx, "expected": expected, "weights": weights_local}
    finally:
        mp.undo()


@contextlib.contextmanager
def local_ray():
    """A local 2-CPU Ray for one chain, shut down after it: whatever one chain leaves in Ray (a
    placement group a tune trial did not release once starved the next chain's train) cannot
    reach the next."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _distinct_stage_commands(commands) -> dict[str, list[Command]]:
    """The GPU paths' igan commands by stage, one per distinct command line once the flags in
    PER_CLUSTER are set aside (where path A and path B keep things and how long they wait for GPU
    nodes; the fixture puts both on this machine, which has no nodes to wait for)."""
    by_stage: dict[str, list[Command]] = {s: [] for s in STAGES}
    seen = set()
    for cmd in _gpu_igan(commands):
        words = igan_argv(cmd)
        key = []
        it = iter(words)
        for w in it:
            if w in PER_CLUSTER:
                next(it)
            else:
                key.append(w)
        if tuple(key) not in seen:
            seen.add(tuple(key))
            by_stage[words[0]].append(cmd)
    return by_stage


def test_paths_a_and_b_run_the_same_recipe(commands):
    """Running one command per stage covers both paths: they differ only in the flags of PER_CLUSTER."""
    by_stage = _distinct_stage_commands(commands)
    assert {s: len(v) for s, v in by_stage.items()} == {s: 1 for s in STAGES}


def _to_digits(argv: list[str]) -> list[str]:
    """The same command for the digits preset and data set (the embedded set: no --src, native size)."""
    out, it = [], iter(argv)
    for w in it:
        if w in ("--src", "--image-size"):
            next(it)
            continue
        out.append("digits" if w == "imagenet" else w.replace("imagenet128", "digits"))
    return out


def _last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in:\n{text[-3000:]}")


def _run(cmd: Command, argv: list[str], capsys) -> str:
    """Run ``igan ARGV`` in this process; its stdout. Fails with the cluster command and its stderr."""
    from pipelines.cli import main

    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 0, f"{cmd}\nran as: igan {shlex.join(argv)}\nexit {rc}:\n{out.err[-4000:]}"
    return out.out


def _chain(commands, fx: Fixture, capsys, stages, transform=lambda a: a) -> dict:
    """Run each stage's commands (fixture_argv, then ``transform``); the last JSON line of each stage."""
    results = {}
    for stage in stages:
        for cmd in _distinct_stage_commands(commands)[stage]:
            argv = transform(fixture_argv(igan_argv(cmd), fx))
            if stage == "sample":
                argv.append("--json")
            results[stage] = _last_json(_run(cmd, argv, capsys))
    return results


def _check_lookups(results: dict, preset: str, client) -> None:
    tune = results["tune"]
    champion = client.get_model_version_by_alias(f"igan-{preset}-generator", "champion")
    assert champion.run_id == tune["best_run_id"]
    listed = {m["name"]: m for m in results["models"]["models"]}
    versions = listed[f"igan-{preset}-generator"]["versions"]
    assert any("champion" in v["aliases"] and v["version"] == champion.version for v in versions)
    sample = results["sample"]
    assert sample["name"] == f"igan-{preset}-generator" and sample["version"] == champion.version
    assert os.path.getsize(sample["out"]) > 0 and sample["n"] == 64


@pytest.fixture(scope="module")
def imagenet_shards(site, commands):
    """The shard command of the GPU paths, run on the ILSVRC-shaped tree: its JSON summary."""
    from pipelines.cli import main

    (cmd,) = _distinct_stage_commands(commands)["shard"]
    argv = fixture_argv(igan_argv(cmd), site["fx"]) + ["--no-progress"]
    out = io.StringIO()  # capsys is per test; this fixture serves the module
    with local_ray(), contextlib.redirect_stdout(out):
        rc = main(argv)
    assert rc == 0, f"{cmd}\nran as: igan {shlex.join(argv)}\n{out.getvalue()[-3000:]}"
    return _last_json(out.getvalue())


@pytest.mark.slow
def test_shard_command_on_an_ilsvrc_tree(site, imagenet_shards):
    expected, fx = site["expected"], site["fx"]
    splits = imagenet_shards["splits"]
    assert set(splits) == {"train", "val"}
    assert splits["train"]["num_samples"] == len(expected["train"]) and splits["train"]["num_skipped"] == 1
    assert splits["val"]["num_samples"] == len(expected["val"]) and splits["train"]["image_size"] == [128, 128]
    for split in ("train", "val"):
        manifest = json.loads((fx.bucket / "imagenet128" / split / "manifest.json").read_text())
        sizes = [shard["num_samples"] for shard in manifest["shards"]]
        assert manifest["num_classes"] == 3 and sum(sizes) == manifest["num_samples"] and max(sizes) <= 4


@pytest.mark.slow
def test_imagenet128_train_tune_lookup_chain(site, imagenet_shards, commands, capsys, mlflow_server,
                                             inception_weights_file):
    """The GPU paths' train, tune and look-up commands for imagenet128 on the ILSVRC-shaped shards."""
    from mlflow import MlflowClient

    # Untrained weights in torchvision's file layout, in the folder the pods' IGAN_INCEPTION_WEIGHTS
    # names (moved under the shared folder): the Inception score runs, its value is meaningless.
    folder = site["weights"]
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, inception_weight_file())
    if not os.path.exists(target):
        os.symlink(inception_weights_file, target)
    fx = copy.copy(site["fx"])
    fx.sets = TINY_IMAGENET
    with local_ray():
        results = _chain(commands, fx, capsys, ("train", "tune", "models", "sample"))
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(results["train"]["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["data.dataset"] == "imagenet"
    # the workers found the weights through IGAN_INCEPTION_WEIGHTS: the score was computed
    assert "val_inception_score" in run.data.metrics and results["tune"]["metric"] == "val_inception_score"
    _check_lookups(results, "imagenet128", client)


@pytest.mark.slow
def test_digits_shard_train_tune_lookup_chain(site, commands, capsys, mlflow_server):
    """The same commands with ``imagenet128``/``imagenet`` replaced by ``digits`` (the preset and data
    set matter to none of the CLI, placement or tracking code this exercises)."""
    from mlflow import MlflowClient

    fx = copy.copy(site["fx"])
    fx.sets = TINY_DIGITS
    fx.scale = dict(fx.scale, **{"--samples-per-shard": "512"})
    with local_ray():
        results = _chain(commands, fx, capsys, STAGES, transform=_to_digits)
    assert set(results["shard"]["splits"]) >= {"train", "test"}
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(results["train"]["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["data.path"] == (fx.bucket / "digits").as_uri()
    # --experiment imagenet128 became digits with the rest; train and tune log to the same experiment
    assert run.info.experiment_id == client.get_experiment_by_name("digits").experiment_id
    assert results["tune"]["trials"] and results["tune"]["experiment"] == "digits"
    assert re.match(r"^file://", results["shard"]["out"])
    _check_lookups(results, "digits", client)
