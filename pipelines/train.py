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

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from igan.config import Config, ConfigError, apply_overrides
from igan.presets import build_config
from pipelines import defaults
from pipelines.errors import UserError, check_writable
from pipelines.jobs import TRAIN_JOB, find_record, new_job_name, read_record, resolve_storage, write_record
from pipelines.event_pump import Pump, driver_queue
from pipelines.progress import TrainProgress, clock
from pipelines.job_inputs import ensure_data, ensure_scorer
from pipelines.ray_runtime import failure_reason, init_ray, quiet_libraries
from pipelines.run_logging import scorer_network_params
from pipelines.resources import DEFAULT_WAIT_S, RayCluster
from pipelines.scaling import scaling, worker_bundle


class TrainError(Exception):
    """The job ran but did not finish (non-finite loss, a data error, workers failed beyond
    max_failures); the message is one line; exit status 1."""


@dataclass
class TrainOptions:
    """Everything ``igan train`` takes (its flags, see ``igan train --help``); None means the default."""
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
    verbose: bool = False
    #: Objects handed to every worker's training loop (:func:`igan.loop.train_epochs`): the seam
    #: through which tests inject faults. Not a CLI option.
    hooks: list = field(default_factory=list)


# -- the run ----------------------------------------------------------------------------------------
def run_training(opts: TrainOptions, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) one training job; returns the summary (run id, metrics, model URIs, paths).
    UserError for bad input, TrainError when the job stops without finishing (the MLflow run is
    marked FAILED with the reason; the last good checkpoint stays)."""
    t_start = time.perf_counter()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep the output to our lines
    quiet_libraries(opts.verbose)
    storage = resolve_storage(opts.storage)
    cfg, name, record = _job(opts, storage)
    ensure_scorer(cfg, hint="or train without the score: --set eval.scorer=none")  # before anything is written
    check_writable(storage, "--storage")
    # a resumed job continues in the store its record names; the record keeps no credentials
    tracking_uri = defaults.resume_tracking_uri(opts.tracking_uri, record.get("tracking_uri"))
    data_root = ensure_data(cfg, opts.data or record.get("data_root"), log=log)
    if data_root is not None:
        cfg = apply_overrides(cfg, [f"data.path={data_root}"])
    scorer_params, pinned = scorer_network_params(cfg)
    from pipelines.registry import check_tracking_uri

    check_tracking_uri(tracking_uri, must_exist=False)
    from pipelines.tracking import RunTracker

    ray = init_ray(opts.address, verbose=opts.verbose)
    workers, cpw, threads = scaling(opts, RayCluster(ray), log)
    tracker = RunTracker(tracking_uri, record.get("experiment", opts.experiment), run_name=name,
                         run_id=record.get("run_id"), system_metrics=True)
    with tracker:
        if not record.get("run_id"):
            tracker.log_config(cfg)
            tracker.log_params({"job.workers": workers, "job.name": name, **scorer_params})
        cfg = pinned  # auto resolved: the workers score with the network logged
        record.update(name=name, run_id=tracker.run_id, experiment=tracker.experiment,
                      tracking_uri=defaults.strip_credentials(tracking_uri),  # never a password on disk
                      config=cfg.to_dict(), data_root=data_root, created=record.get("created", time.time()))
        write_record(storage, name, record, TRAIN_JOB)
        progress = TrainProgress(log=log, tracker=tracker, epochs=cfg.train.epochs)
        result = _launch(ray, cfg, opts, storage, name, data_root, tracker.run_id, workers, cpw, threads,
                         progress)
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
        cfg = build_config(opts.preset, config_file=opts.config_file, overrides=opts.overrides,
                           default_preset=defaults.DEFAULT_PRESET)
        name = opts.name or new_job_name(cfg.preset)
        if opts.name and read_record(storage, name, TRAIN_JOB) is not None:
            raise UserError(f"a job named '{name}' already exists in {storage}; pass --resume to continue it "
                            "or choose another --name")
        return cfg, name, {}
    if opts.preset or opts.config_file:
        raise UserError("--resume continues a job with its stored config; drop --preset/--config "
                        "(--set still overrides keys, e.g. train.epochs)")
    record = find_record(storage, opts.name, TRAIN_JOB)
    try:
        base = Config.from_dict(record["config"])
    except ConfigError as exc:
        raise UserError(f"the config in {TRAIN_JOB.file} of job '{record['name']}' in {storage} is bad: "
                        f"{exc}") from None
    return build_config(base=base, overrides=opts.overrides), record["name"], record


def _launch(ray, cfg: Config, opts: TrainOptions, storage: str, name: str, data_root: str | None, run_id: str,
            workers: int, cpw: float, threads: int, progress: TrainProgress):
    """Run the TorchTrainer, handling rank 0's events as they come; returns Ray Train's Result.
    TrainError (one line; the MLflow run FAILED) when Ray Train gave up."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.worker import train_loop_per_worker

    queue = driver_queue(ray)
    gpus = opts.gpus_per_worker
    loop_config = {"config": cfg.to_dict(), "data_root": data_root, "run_id": run_id, "events": queue,
                   "threads": threads, "report_every_epoch": opts.report_every_epoch, "hooks": list(opts.hooks)}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                     resources_per_worker=worker_bundle(cpw, gpus)),
        run_config=RunConfig(storage_path=storage, name=name,
                             failure_config=FailureConfig(max_failures=opts.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    try:
        result = Pump(trainer.fit, [(queue, progress.handle)]).run()
    except Exception as exc:
        reason = failure_reason(exc)
        progress.worker_log.save(progress.tracker)
        progress.tracker.fail(f"training failed: {reason}")
        raise TrainError(f"training failed after {opts.max_failures} restart(s): {reason}; "
                         f"checkpoints in {storage}/{name}") from None
    progress.worker_log.save(progress.tracker)
    return result


def _checkpoint_path(result) -> str | None:
    ckpt = getattr(result, "checkpoint", None)
    return ckpt.path if ckpt is not None else None


def _finish(tracker, cfg: Config, result, opts: TrainOptions, tracking_uri: str, progress: TrainProgress) -> dict:
    """Log the final checkpoint as an artifact and register the models; returns their URIs."""
    if result.checkpoint is None:
        return {}
    from igan.checkpoint import read_checkpoint
    from igan.trainer import Trainer

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
    log(f"igan train: finished {summary['preset']} in {clock(summary['seconds'])}: {summary['epochs']} epochs, "
        f"{summary['step']} steps{', ' + shown if shown else ''}")
    log(f"  MLflow run:   {summary['run_id']} ('{summary['run_name']}') in experiment '{summary['experiment']}'")
    log(f"  tracking URI: {summary['tracking_uri']}" + (f"  ->  {summary['run_url']}" if summary["run_url"] else ""))
    for kind, uri in summary["model_uris"].items():
        log(f"  {kind + ':':13} {uri}")
    log(f"  checkpoints:  {summary['job_path']}")
    log(f"  open the UI:  {summary['ui']}")


__all__ = ["TrainOptions", "TrainError", "run_training", "print_summary"]
