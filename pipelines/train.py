"""The training driver: config -> data ensured -> MLflow run -> Ray Train ``TorchTrainer`` -> result.

:func:`run_training` is what ``igan train`` (and anything else that launches a training job) calls.
The driver owns the MLflow run: it creates it before training (so a resumed job reuses it), logs
what rank 0 sends per epoch (losses, metrics, sample grids) and prints one progress line per epoch,
then logs the final checkpoint and registers the models.

A job lives in ``<storage>/<name>/`` (Ray Train's run folder: checkpoints) with ``igan_job.json``
(name, MLflow run id, experiment, tracking URI without its credentials, config, data root). Running
again with the same ``storage`` and ``name`` makes Ray Train continue from the latest checkpoint,
which is how ``--resume`` works after the driver died (in the store the record names, with the
credentials from ``--tracking-uri`` or the environment); a worker crash restarts the workers from
the latest checkpoint on its own (``FailureConfig(max_failures)``), except after a data error (a
shard that contradicts its manifest): that is permanent, so the workers report it and stop
together, and the job fails at once without a restart.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from igan.config import Config, ConfigError, apply_overrides, load_yaml
from pipelines import defaults
from pipelines.errors import UserError, check_writable
from pipelines.resources import DEFAULT_WAIT_S

JOB_FILE = "igan_job.json"
SHARDED = ("digits", "mnist", "cifar10", "svhn", "imagenet")
TOY = ("ring8", "grid25")
NONFINITE_ENV = "IGAN_TEST_NONFINITE"  # "EPOCH" (1-based): test-only, rank 0 feeds NaN in that epoch


class TrainError(Exception):
    """The job ran but did not finish (non-finite loss, a data error, workers failed beyond
    max_failures); the message is one line; exit status 1."""


@dataclass
class TrainOptions:
    """Everything ``igan train`` takes (see DESIGN.md); None means the default."""
    preset: str | None = None
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    data: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None
    threads: int | None = None
    tracking_uri: str | None = None
    experiment: str = defaults.DEFAULT_EXPERIMENT
    storage: str | None = None
    name: str | None = None
    resume: bool = False
    address: str | None = None
    max_failures: int = defaults.DEFAULT_MAX_FAILURES
    register: bool = True
    report_every_epoch: bool = False
    wait_for_resources: float = DEFAULT_WAIT_S


# -- configuration and data ----------------------------------------------------------------------
def build_config(preset: str | None = None, config_file: str | None = None,
                 overrides: list[str] | None = None, base: Config | None = None) -> Config:
    """The job's Config: ``base``, else the YAML file (which may name its own preset), else the
    preset (default ``digits``); then the ``--set`` overrides. ConfigError on bad keys/values."""
    from igan.presets import get_preset

    if base is not None:
        cfg = base
    elif config_file:
        cfg = load_yaml(config_file, base=get_preset(preset) if preset else None)
    else:
        cfg = get_preset(preset or defaults.DEFAULT_PRESET)
    return apply_overrides(cfg, list(overrides or []))


def ensure_data(cfg: Config, data: str | None = None, log: Callable[[str], None] = print) -> str | None:
    """The shard root to train from (None for the in-memory toy sets). ``data`` (``--data``) or
    ``cfg.data.path``; without either, ``digits`` is sharded on first use into the cache folder
    (:func:`pipelines.defaults.digits_cache`) by the same code as ``igan shard``. UserError when
    the shards are missing or do not match the config."""
    from igan.data.manifest import ManifestError, split_manifest

    name = cfg.data.dataset
    root = data or cfg.data.path or None
    if name in TOY:
        if root:
            raise UserError(f"{name} is generated in memory; --data / data.path is not used with it")
        return None
    if root is None:
        if name != "digits":
            raise UserError(f"{name} needs shards: run `igan shard {name} --src RAW --out DIR`, then "
                            f"`igan train --preset {cfg.preset} --data DIR`")
        root = str(defaults.digits_cache())
        if not _has_split(root, "train") or not _has_split(root, "test"):
            from pipelines.shard import shard_dataset

            log(f"igan train: first use of digits: sharding it into {root}")
            shard_dataset("digits", root, engine="local", log=log)
    try:
        _, manifest = split_manifest(root, "train")
        if cfg.techniques.semi_supervised:  # the test role: reported at the end
            split_manifest(root, cfg.data.test_split)
    except (ManifestError, ValueError, OSError) as exc:
        raise UserError(f"no usable shards at {root}: {str(exc).splitlines()[0]}") from None
    _check_manifest(cfg, manifest, root)
    return root


def ensure_scorer(cfg: Config, hint: str = "") -> str | None:
    """The Inception weight file the job's score will load (None when its scorer needs none),
    checked on the driver before any Ray work: a missing or wrong file is a UserError (one line:
    where the file goes, then ``hint``), not a job that trains for days without its metric."""
    from igan.evaluation import require_scorer
    from igan.metrics import InceptionWeightsInvalid, InceptionWeightsNotFound

    try:
        return require_scorer(cfg)
    except (InceptionWeightsNotFound, InceptionWeightsInvalid) as exc:
        raise UserError(f"{exc}; {hint}" if hint else str(exc)) from None


def _has_split(root: str, split: str) -> bool:
    from igan.data.storage import Folder

    return Folder(root).sub(split).exists("manifest.json")


def _check_manifest(cfg: Config, m: dict, root: str) -> None:
    d = cfg.data
    problems = []
    if m.get("dataset") not in (d.dataset, None):
        problems.append(f"data set {m['dataset']!r}, config wants {d.dataset!r}")
    if list(m["image_size"]) != [d.image_size, d.image_size]:
        problems.append(f"image size {m['image_size']}, config wants {d.image_size} (data.image_size)")
    if int(m["channels"]) != d.channels:
        problems.append(f"{m['channels']} channels, config wants {d.channels} (data.channels)")
    if int(m["num_classes"]) != d.num_classes:
        problems.append(f"{m['num_classes']} classes, config wants {d.num_classes} (data.num_classes)")
    if problems:
        raise UserError(f"shards at {root} do not match the config: " + "; ".join(problems))


# -- jobs: names, records, resume ------------------------------------------------------------------
def resolve_storage(storage: str | None) -> str:
    """``--storage`` as Ray Train wants it: a URI unchanged, a local path made absolute; default
    :func:`pipelines.defaults.default_storage`."""
    from igan.data.storage import is_uri

    storage = storage or defaults.default_storage()
    return storage.rstrip("/") if is_uri(storage) else os.path.abspath(os.path.expanduser(storage))


def read_job(storage: str, name: str) -> dict | None:
    """The job record of ``<storage>/<name>``, or None; UserError naming the file when it is not a
    job record (corrupt JSON, a key missing)."""
    from igan.data.storage import Folder

    folder = Folder(storage).sub(name)
    if not folder.exists(JOB_FILE):
        return None
    return parse_record(folder.read_bytes(JOB_FILE), folder.url_of(JOB_FILE), JOB_KEYS)


#: The keys ``--resume`` needs from a job record.
JOB_KEYS = {"name": str, "config": dict}


def parse_record(data: bytes, where: str, keys: dict[str, type]) -> dict:
    """The JSON object in ``data`` (the file ``where``) holding ``keys`` (name -> type); UserError
    naming the file, and the key, when it does not."""
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{where} is corrupt (not JSON: {exc}); repair or delete it") from None
    if not isinstance(record, dict):
        raise UserError(f"{where} is corrupt (a JSON {type(record).__name__}, not an object); repair or delete it")
    for key, kind in keys.items():
        if not isinstance(record.get(key), kind):
            raise UserError(f"{where} is corrupt: key '{key}' is missing or not a {kind.__name__}; "
                            "repair or delete it")
    return record


def write_job(storage: str, name: str, record: dict) -> None:
    """Write the job record (atomically where the storage allows)."""
    from igan.data.storage import Folder

    folder = Folder(storage).sub(name)
    folder.makedirs()
    folder.write_bytes_atomic(JOB_FILE, json.dumps(record, indent=1).encode())


def latest_job(storage: str) -> dict | None:
    """The most recently created job record in ``storage``, or None."""
    from igan.data.storage import Folder

    records = [r for n in Folder(storage).list() if (r := read_job(storage, n)) is not None]
    return max(records, key=lambda r: r.get("created", 0), default=None)


def new_job_name(cfg: Config) -> str:
    """``<preset>-<YYYYmmdd-HHMMSS>-<4 hex>``: unique, sortable, readable."""
    return f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"


# -- Ray ------------------------------------------------------------------------------------------
def init_ray(address: str | None = None):
    """Connect to the cluster at ``address`` / ``$RAY_ADDRESS`` (``ray://`` ships this checkout's
    code), else start a local Ray. Returns the ``ray`` module."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": False}
    if address and address.startswith("ray://"):
        import igan
        import pipelines

        kwargs["runtime_env"] = {"py_modules": [os.path.dirname(igan.__file__), os.path.dirname(pipelines.__file__)]}
    if address:
        from pipelines.shard import _check_reachable

        _check_reachable(address)  # Ray itself would retry for minutes without a word
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(include_dashboard=False, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot start or reach Ray at {address or 'local'}: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return ray


def default_workers(cpus: float, gpus: float, gpus_per_worker: float) -> int:
    """Workers when ``--workers`` is not given: as many as the GPUs hold with ``--gpus-per-worker``
    (one while the cluster has none yet), else one using every core of a node. On CPUs one worker
    keeps the preset's batch size (each worker adds ``data.batch_size`` to the global batch) and
    reproduces the plain loop exactly."""
    if gpus_per_worker > 0 and gpus >= gpus_per_worker:
        return max(1, int(gpus // gpus_per_worker))
    return 1


def cpus_beside_gpus(nodes: list[dict], gpus_per_worker: float) -> float:
    """CPUs a GPU worker gets by default: the CPUs of a GPU node shared by the workers its GPUs
    hold, on the node with the fewest (at least 1; 1 while no node has GPUs). Counting the whole
    cluster's CPUs instead asks for CPUs that sit on other nodes (a CPU-only head), which no GPU
    node can give."""
    shares = [n.get("CPU", 0.0) // int(n["GPU"] // gpus_per_worker)
              for n in nodes if n.get("GPU", 0.0) >= gpus_per_worker]
    return max(1.0, min(shares)) if shares else 1.0


def worker_shape(opts: TrainOptions, nodes: list[dict]) -> tuple[int, float]:
    """``(workers, cpus per worker)`` from the options and the nodes there are now."""
    cpus = sum(n.get("CPU", 0.0) for n in nodes) or 1.0
    gpus = sum(n.get("GPU", 0.0) for n in nodes)
    workers = opts.workers or default_workers(cpus, gpus, opts.gpus_per_worker)
    if opts.cpus_per_worker:
        return workers, opts.cpus_per_worker
    if opts.gpus_per_worker > 0:
        return workers, cpus_beside_gpus(nodes, opts.gpus_per_worker)
    node_cpus = max([n.get("CPU", 0.0) for n in nodes] or [cpus])
    return workers, max(1.0, min(float(int(cpus // workers)), node_cpus))


def worker_bundle(cpus: float, gpus: float) -> dict[str, float]:
    """The resources one Ray Train worker reserves."""
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def scaling(opts: TrainOptions, cluster, log: Callable[[str], None] = print, **wait) -> tuple[int, float, int]:
    """``(workers, cpus_per_worker, torch threads)`` for the cluster seen through ``cluster`` (a
    :class:`pipelines.resources.ClusterView`). When the workers do not fit yet, asks the autoscaler
    and waits up to ``opts.wait_for_resources`` (``wait``: the ``sleep``/``clock`` of
    :func:`pipelines.resources.ensure_resources`). UserError when they can never fit,
    ResourceWaitTimeout when they did not come in time."""
    from pipelines.resources import describe, ensure_resources, pack

    workers, cpw = worker_shape(opts, cluster.nodes())
    bundle = worker_bundle(cpw, opts.gpus_per_worker)
    what = f"{workers} worker{'s' if workers > 1 else ''} x ({describe(bundle)})"
    waited = ensure_resources(cluster, [bundle] * workers, what, opts.wait_for_resources, "igan train", log, **wait)
    if waited and not opts.cpus_per_worker:  # the CPUs per worker of the nodes that came, if they fit
        _, grown = worker_shape(opts, cluster.nodes())
        if pack([worker_bundle(grown, opts.gpus_per_worker)] * workers, cluster.nodes()):
            cpw = grown
    threads = opts.threads or max(1, int(cpw))
    return workers, cpw, threads


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class _Progress:
    """What the driver learned from rank 0's events."""
    log: Callable[[str], None]
    tracker: Any
    epochs: int
    metrics: dict = field(default_factory=dict)
    step: int = 0
    epochs_done: int = 0
    nonfinite: str | None = None
    data_error: str | None = None
    finished: bool = False
    attempts: list = field(default_factory=list)  # each start of the worker group: epochs_done, nodes

    def handle(self, ev: dict) -> None:
        kind = ev["kind"]
        if kind == "start":
            nodes = ev.get("nodes") or []
            self.attempts.append({"epochs_done": ev["epochs_done"], "nodes": nodes})
            what = "starting" if ev["epochs_done"] == 0 else f"continuing after epoch {ev['epochs_done']}"
            where = f" on {len(set(nodes))} nodes" if len(set(nodes)) > 1 else ""
            self.log(f"igan train: {what}: {ev['epochs']} epochs x {ev['steps_per_epoch']} steps on "
                     f"{ev['world_size']} worker{'s' if ev['world_size'] > 1 else ''}{where}")
        elif kind == "epoch":
            self.step, self.epochs_done = ev["step"], ev["epoch"]
            self.metrics.update(ev["metrics"])
            self.tracker.log_metrics(ev["metrics"], step=ev["epoch"])
            if ev.get("grid") is not None:
                self.tracker.log_image(ev["grid"], f"samples/epoch_{ev['epoch']:04d}.png")
            shown = " ".join(f"{k}={v:.4g}" for k, v in ev["metrics"].items() if not k.endswith("_std"))
            self.log(f"epoch {ev['epoch']}/{self.epochs} step {ev['step']} {shown} [{_clock(ev['elapsed'])}]")
        elif kind == "nonfinite":
            self.nonfinite = f"stopped in epoch {ev['epoch']}: {ev['reason']}"
        elif kind == "data_error":
            self.data_error = ev["reason"]
        elif kind == "done":
            self.finished, self.step = True, ev["step"]
            self.metrics.update(ev.get("metrics") or {})


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _fit_streaming(trainer, queue, progress: _Progress):
    """Run ``trainer.fit()`` in a thread while handling rank 0's events here (MLflow calls stay in
    this thread). Returns the Result; re-raises fit's exception."""
    from ray.util.queue import Empty

    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = trainer.fit()
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="igan-fit", daemon=True)
    thread.start()
    while True:
        alive = thread.is_alive()
        try:
            progress.handle(queue.get(timeout=0.5))
            continue
        except Empty:
            if not alive:
                break
    if "error" in box:
        raise box["error"]
    return box["result"]


def _failure_reason(exc: BaseException) -> str:
    """One line saying why Ray Train gave up (the worker's own exception when it is in the text)."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.split(":", 1)[0].endswith(("Error", "Exception")) and "TrainingFailedError" not in ln:
            return ln
    return lines[0] if lines else type(exc).__name__


def run_training(opts: TrainOptions, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) one training job; returns the summary (run id, metrics, model URIs, paths).
    UserError for bad input, TrainError when the job stops without finishing (the MLflow run is
    marked FAILED with the reason; the last good checkpoint stays)."""
    t_start = time.perf_counter()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep the output to our lines
    storage = resolve_storage(opts.storage)
    cfg, name, record = _job(opts, storage)
    ensure_scorer(cfg, hint="or train without the score: --set eval.scorer=none")  # before anything is written
    check_writable(storage, "--storage")
    # a resumed job continues in the store its record names; the record keeps no credentials
    tracking_uri = defaults.resume_tracking_uri(opts.tracking_uri, record.get("tracking_uri"))
    data_root = ensure_data(cfg, opts.data or record.get("data_root"), log=log)
    if data_root is not None:
        cfg = apply_overrides(cfg, [f"data.path={data_root}"])
    from pipelines.registry import check_tracking_uri

    check_tracking_uri(tracking_uri, must_exist=False)
    from pipelines.tracking import RunTracker

    ray = init_ray(opts.address)
    from pipelines.resources import RayCluster

    workers, cpw, threads = scaling(opts, RayCluster(ray), log)
    tracker = RunTracker(tracking_uri, record.get("experiment", opts.experiment), run_name=name,
                         run_id=record.get("run_id"))
    with tracker:
        if not record.get("run_id"):
            tracker.log_config(cfg)
            tracker.log_params({"job.workers": workers, "job.name": name})
        record.update(name=name, run_id=tracker.run_id, experiment=tracker.experiment,
                      tracking_uri=defaults.strip_credentials(tracking_uri),  # never a password on disk
                      config=cfg.to_dict(), data_root=data_root, created=record.get("created", time.time()))
        write_job(storage, name, record)
        progress = _Progress(log=log, tracker=tracker, epochs=cfg.train.epochs)
        result = _launch(ray, cfg, opts, storage, name, data_root, tracker.run_id, workers, cpw, threads,
                         progress, log)
        checkpoint_dir = _checkpoint_path(result)
        if progress.nonfinite:
            reason = f"non-finite loss: {progress.nonfinite}"
            tracker.fail(reason)
            raise TrainError(f"{reason}; the last good checkpoint stays in {checkpoint_dir or storage + '/' + name}")
        if progress.data_error:  # permanent: the workers stopped together instead of failing into retries
            reason = f"data error: {progress.data_error}"
            tracker.fail(reason)
            raise TrainError(f"{reason} (not retried: fix or reshard the data)")
        model_uris = _finish(tracker, cfg, result, opts, tracking_uri, progress)
    summary = {
        "run_id": tracker.run_id, "run_name": name, "experiment": tracker.experiment,
        "experiment_id": tracker.experiment_id, "tracking_uri": defaults.redact_uri(tracking_uri),
        "run_url": run_url(tracking_uri, tracker.experiment_id, tracker.run_id),
        "metrics": progress.metrics, "step": progress.step, "epochs": cfg.train.epochs,
        "model_uris": model_uris, "storage": storage, "job_path": f"{storage}/{name}",
        "checkpoint": checkpoint_dir, "workers": workers, "preset": cfg.preset, "attempts": progress.attempts,
        "seconds": round(time.perf_counter() - t_start, 1), "ui": defaults.ui_command(tracking_uri),
    }
    return summary


def _job(opts: TrainOptions, storage: str) -> tuple[Config, str, dict]:
    """``(config, job name, job record)`` for a new job or the one ``--resume`` continues."""
    if not opts.resume:
        cfg = build_config(opts.preset, opts.config_file, opts.overrides)
        name = opts.name or new_job_name(cfg)
        if opts.name and read_job(storage, name) is not None:
            raise UserError(f"a job named '{name}' already exists in {storage}; pass --resume to continue it "
                            "or choose another --name")
        return cfg, name, {}
    if opts.preset or opts.config_file:
        raise UserError("--resume continues a job with its stored config; drop --preset/--config "
                        "(--set still overrides keys, e.g. train.epochs)")
    record = read_job(storage, opts.name) if opts.name else latest_job(storage)
    if record is None:
        where = f"job '{opts.name}' in {storage}" if opts.name else f"any job in {storage}"
        raise UserError(f"--resume: found no {where} (see --storage and --name)")
    try:
        base = Config.from_dict(record["config"])
    except ConfigError as exc:
        raise UserError(f"the config in {JOB_FILE} of job '{record['name']}' in {storage} is bad: {exc}") from None
    cfg = build_config(base=base, overrides=opts.overrides)
    return cfg, record["name"], record


def _launch(ray, cfg: Config, opts: TrainOptions, storage: str, name: str, data_root: str | None, run_id: str,
            workers: int, cpw: float, threads: int, progress: _Progress, log):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pipelines.worker import FAIL_ONCE_ENV, HOLD_ENV, train_loop_per_worker

    # The event queue lives on the driver's node: losing a worker node must not lose the driver's events.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    gpus = opts.gpus_per_worker
    resources = {"CPU": cpw, **({"GPU": gpus} if gpus else {})}
    marker = None
    if os.environ.get(FAIL_ONCE_ENV):
        marker = os.path.join(storage if "://" not in storage else "/tmp", name, ".igan_fail_once_done")
    loop_config = {
        "config": cfg.to_dict(), "data_root": data_root, "run_id": run_id, "events": queue,
        "threads": threads, "fail_once": os.environ.get(FAIL_ONCE_ENV), "fail_marker": marker,
        "nonfinite_epoch": os.environ.get(NONFINITE_ENV), "report_every_epoch": opts.report_every_epoch,
        "hold": os.environ.get(HOLD_ENV),
    }
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
        run_config=RunConfig(storage_path=storage, name=name,
                             failure_config=FailureConfig(max_failures=opts.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    try:
        return _fit_streaming(trainer, queue, progress)
    except Exception as exc:
        reason = _failure_reason(exc)
        progress.tracker.fail(f"training failed: {reason}")
        raise TrainError(f"training failed after {opts.max_failures} restart(s): {reason}; "
                         f"checkpoints in {storage}/{name}") from None
    finally:
        try:
            ray.kill(queue.actor)
        except Exception:
            pass


def _checkpoint_path(result) -> str | None:
    ckpt = getattr(result, "checkpoint", None)
    return ckpt.path if ckpt is not None else None


def _finish(tracker, cfg: Config, result, opts: TrainOptions, tracking_uri: str, progress: _Progress) -> dict:
    """Log the final checkpoint as an artifact and register the models; returns their URIs."""
    if result.checkpoint is None:
        return {}
    from igan.trainer import Trainer
    from pipelines.worker import read_checkpoint

    with result.checkpoint.as_directory() as d:
        tracker.log_artifact(d, "checkpoint")
        state, meta = read_checkpoint(d)
    if not progress.metrics:  # resumed an already finished job: no epoch ran
        progress.metrics.update(meta.get("metrics") or {})
    progress.step = max(progress.step, int(meta["step"]))
    if not opts.register:
        return {}
    from pipelines.registry import register_models

    trainer = Trainer(cfg, device="cpu")
    trainer.load_state_dict(state)
    return register_models(tracker.run_id, trainer, cfg, tracking_uri)


def run_url(tracking_uri: str, experiment_id: str | None, run_id: str | None) -> str | None:
    """The run's page on a tracking server (credentials redacted), else None."""
    if not tracking_uri.startswith(("http://", "https://")) or not run_id:
        return None
    return f"{defaults.redact_uri(tracking_uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def print_summary(summary: dict, log: Callable[[str], None] = print) -> None:
    """The closing lines: where the results are and how to open the MLflow UI."""
    m = summary["metrics"]
    from pipelines.registry import SUMMARY_METRICS

    keys = [k for k in SUMMARY_METRICS if k in m]
    shown = ", ".join(f"{k} {m[k]:.4g}" for k in keys)
    log(f"igan train: finished {summary['preset']} in {_clock(summary['seconds'])}: {summary['epochs']} epochs, "
        f"{summary['step']} steps{', ' + shown if shown else ''}")
    log(f"  MLflow run:   {summary['run_id']} ('{summary['run_name']}') in experiment '{summary['experiment']}'")
    log(f"  tracking URI: {summary['tracking_uri']}" + (f"  ->  {summary['run_url']}" if summary["run_url"] else ""))
    for kind, uri in summary["model_uris"].items():
        log(f"  {kind + ':':13} {uri}")
    log(f"  checkpoints:  {summary['job_path']}")
    log(f"  open the UI:  {summary['ui']}")


__all__ = ["TrainOptions", "TrainError", "run_training", "build_config", "ensure_data", "print_summary",
           "resolve_storage", "read_job", "latest_job", "init_ray", "JOB_FILE", "ensure_scorer"]
