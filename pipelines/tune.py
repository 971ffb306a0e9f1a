"""The search driver behind ``igan tune``: Ray Tune trials over a space in ``tune_spaces/``, each
trial an igan training job run the way Ray's "Hyperparameter Tuning with Ray Tune" guide (Train V2)
recommends: the Tune trial function is a thin driver that launches a ``TorchTrainer`` running the
same per-worker loop as ``igan train`` (:func:`pipelines.worker.train_loop_per_worker`).

Per trial:

* config = ``apply_overrides(preset + --set, [f"{key}={value}" for the sampled keys])``;
* an MLflow child run (tag ``mlflow.parentRunId`` = the search's parent run, tag
  ``igan.trial_id``) gets the flattened config as params and per-epoch losses/metrics/sample grids,
  from rank 0's events, exactly as ``igan train`` logs them;
* every evaluated epoch is reported to Tune (the metric, ``epoch``) with the Train checkpoint of
  that epoch (a trial checkpoints at each evaluation), so ASHA can stop it early, PBT can exploit
  it (the trial restarts its TorchTrainer from the cloned checkpoint with the perturbed config), and
  a restored search continues an unfinished trial from its last checkpoint.

A search lives in ``<storage>/<name>/`` (Tune's experiment folder) with ``igan_tune.json`` (name,
parent run id, space, options, base config; the tracking URI without its credentials). ``--resume``
restores it with ``Tuner.restore``: finished trials are not run again. At the end the best trial's
models are registered with the alias ``champion``, and the parent run gets the results table (CSV)
and a plot of the metric against each varied value (PNG).
"""
from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ray.train import UserCallback

from igan.config import Config, ConfigError, apply_overrides, bounds
from pipelines import defaults
from pipelines.errors import UserError, check_writable
from pipelines.resources import DEFAULT_WAIT_S

JOB_FILE = "igan_tune.json"
SCHEDULERS = ("asha", "pbt", "fifo")
TRIAL_BACKENDS = ("train", "local")
#: Test-only: "N" makes the driver stop the search (like Ctrl+C) once N trials have finished.
STOP_AFTER_ENV = "IGAN_TEST_TUNE_STOP_AFTER"
#: Seconds between Tune's experiment-state saves (unless the environment sets it): a search killed
#: without warning loses at most this much bookkeeping; a finished trial whose completion was not
#: saved yet re-reports its final checkpoint on resume instead of training again.
STATE_SAVE_S = "5"
#: CPUs the Tune trial function itself reserves (``--trial-backend train``): it only drives a
#: TorchTrainer, so it takes a sliver; Tune refuses a trial that reserves nothing. It comes out of
#: ``--cpus-per-trial``: the trial's workers share the rest, so what a trial reserves adds up to
#: ``--cpus-per-trial`` and concurrency counts it. (Counting 1 CPU per trial while each reserved
#: 1.01 admitted 2 trials on 2 CPUs whose second worker group never fitted: Ray Train retried its
#: start every 300 s, ``WorkerGroupStartupTimeoutError``, until the first trial ended.)
TRIAL_DRIVER_CPUS = 0.01
TRIAL_TAG = "igan.trial_id"
JOB_TAG = "igan.tune_job"


@dataclass
class TuneOptions:
    """Everything ``igan tune`` takes; None means the default."""
    space: str
    preset: str | None = None
    num_samples: int = 8
    scheduler: str = "asha"
    max_concurrent: int | None = None
    workers_per_trial: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    overrides: list[str] = field(default_factory=list)
    data: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    experiment: str = defaults.DEFAULT_EXPERIMENT
    name: str | None = None
    resume: bool = False
    seed: int = 0
    grace_epochs: int | None = None
    reduction_factor: float = 3.0
    max_failures: int = 1
    address: str | None = None
    register: bool = True
    verbose: int = 1
    trial_backend: str = "train"
    wait_for_resources: float = DEFAULT_WAIT_S


# -- the space and the trials' configs --------------------------------------------------------------
def _set_keys(overrides: list[str]) -> set[str]:
    return {item.split("=", 1)[0].strip() for item in overrides if "=" in item}


def override_text(key: str, value: Any) -> str:
    """``key=value`` as :func:`igan.config.apply_overrides` reads it (bools lower-case, lists as YAML)."""
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, (list, tuple)):
        return f"{key}=[{', '.join(str(int(v)) for v in value)}]"
    if hasattr(value, "item"):  # numpy scalars from Tune's samplers
        value = value.item()
    return f"{key}={value}"


def trial_config(base: Config, sampled: dict[str, Any], keys: list[str], tied: dict[str, str]) -> Config:
    """The trial's Config: ``base`` with the sampled ``keys`` and the ``tied`` copies applied."""
    items = [override_text(k, sampled[k]) for k in keys]
    items += [override_text(k, sampled[src]) for k, src in tied.items() if src in sampled]
    return apply_overrides(base, items)


@dataclass
class Search:
    """A resolved search: the space module's facts plus the base config."""
    space_name: str
    preset: str
    metric: str
    mode: str
    keys: list[str]            # the varied config keys (space minus --set keys)
    tied: dict[str, str]
    mutable: list[str]         # PBT-perturbable keys
    base: Config


def resolve_search(opts: TuneOptions, base_dict: dict | None = None) -> tuple[Search, dict]:
    """``(Search, param_space)`` for ``opts``: the space module, the preset (``--preset`` or the
    module's), ``--set`` applied (a ``--set`` key the space varies is fixed instead). UserError on
    an unknown space or a key that is not a config key."""
    import tune_spaces
    from igan.presets import get_preset

    try:
        module = tune_spaces.load_space(opts.space)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    preset = opts.preset or module.PRESET
    fixed = _set_keys(opts.overrides)
    space = {k: v for k, v in module.space().items() if k not in fixed}
    tied = {k: src for k, src in tune_spaces.tied(module).items() if k not in fixed and src in space}
    if base_dict is not None:
        base = Config.from_dict(base_dict)
    else:
        overrides = list(opts.overrides)
        if "train.checkpoint_every" not in fixed:  # a checkpoint with every reported evaluation
            every = apply_overrides(get_preset(preset), overrides).eval.every
            overrides.append(f"train.checkpoint_every={every}")
        base = apply_overrides(get_preset(preset), overrides)
    flat = base.flat()
    for key in list(space) + list(tied):
        if key not in flat or key == "preset":
            raise UserError(f"tune space '{opts.space}' varies '{key}', which is not a config key")
    if not space:
        raise UserError(f"tune space '{opts.space}': every key it varies is fixed by --set; nothing to search")
    search = Search(opts.space, preset, module.METRIC, module.MODE, list(space), tied,
                    [k for k in tune_spaces.pbt_mutable(module) if k in space], base)
    return search, space


# -- the trial (runs in a Tune trial actor) ---------------------------------------------------------
class _ReportToTrial(UserCallback):
    """Ray Train callback (on the Train controller): forward reports that carry the metric, with
    their persisted checkpoint, to the Tune trial function through a Ray queue."""

    def __init__(self, queue, metric: str):
        self.queue, self.metric = queue, metric

    def after_report(self, run_context, metrics, checkpoint):
        m = dict(metrics[0])
        if self.metric in m:
            self.queue.put({"metrics": m, "checkpoint": checkpoint})


def _find_child_run(client, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    runs = client.search_runs([experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                            f"tags.`{TRIAL_TAG}` = '{trial_id}'", max_results=1)
    return runs[0].info.run_id if runs else None


def _open_trial(config: dict, ctx: dict):
    """``(cfg, tracker, trial_id, resume_from)``: the trial's Config and its MLflow child run, new
    or reopened (a PBT exploit or a restored search continues the same child run)."""
    from ray import tune

    from pipelines.tracking import RunTracker, make_client

    cfg = trial_config(Config.from_dict(ctx["config"]), config, ctx["keys"], ctx["tied"])
    tctx = tune.get_context()
    trial_id, trial_name = tctx.get_trial_id(), tctx.get_trial_name()
    resume_from = tune.get_checkpoint()
    varied = {k: _plain(config[k]) for k in ctx["keys"]}
    client = make_client(ctx["tracking_uri"])
    existing = _find_child_run(client, ctx["experiment_id"], ctx["parent_run_id"], trial_id)
    tracker = RunTracker(ctx["tracking_uri"], ctx["experiment"], run_name=f"{ctx['name']}-{trial_id}",
                         parent_run_id=ctx["parent_run_id"], run_id=existing,
                         tags={TRIAL_TAG: trial_id, JOB_TAG: ctx["name"]})
    tracker.start()
    if existing is None:
        tracker.log_config(cfg)
        tracker.log_params({"tune.trial_id": trial_id, "tune.trial_name": trial_name, "tune.job": ctx["name"],
                            "tune.trial_backend": ctx.get("backend", "train")})
        tracker.set_tags({"igan.varied": json.dumps(varied)})
    else:  # PBT exploit or a restored search: record the config it continues with
        tracker.log_text(json.dumps(varied, indent=1), f"tune/config_{int(time.time())}.json")
    return cfg, tracker, trial_id, resume_from


def trial_driver(config: dict, ctx: dict) -> None:
    """The Tune trial function (``--trial-backend train``): build the trial's Config, open (or
    reopen) its MLflow child run, run a TorchTrainer of :func:`pipelines.worker.train_loop_per_worker`
    and forward its evaluations to Tune. ``ctx``: the search's static facts (see :func:`_context`)."""
    import ray
    import ray.train
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    from pipelines.worker import train_loop_per_worker

    cfg, tracker, trial_id, resume_from = _open_trial(config, ctx)
    events = Queue(actor_options={"num_cpus": 0})
    reports = Queue(actor_options={"num_cpus": 0})
    with _ends(tracker):
        name = trial_id if resume_from is None else f"{trial_id}-{uuid.uuid4().hex[:6]}"
        w = ctx["workers"]
        per_worker = trial_worker_resources(ctx["cpus"], ctx["gpus"], w)
        loop_config = {"config": cfg.to_dict(), "data_root": ctx["data_root"], "run_id": tracker.run_id,
                       "events": events, "threads": max(1, int(ctx["cpus"] / w)), "report_every_epoch": True}
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=w, use_gpu=ctx["gpus"] > 0, resources_per_worker=per_worker),
            run_config=ray.train.RunConfig(
                storage_path=ctx["train_storage"], name=name,
                failure_config=FailureConfig(max_failures=ctx["max_failures"]),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                callbacks=[_ReportToTrial(reports, ctx["metric"])]),
            resume_from_checkpoint=resume_from)
        box: dict[str, Any] = {}

        def fit():
            try:
                box["result"] = trainer.fit()
            except BaseException as exc:  # handed to the trial's thread
                box["error"] = exc

        thread = threading.Thread(target=fit, name="igan-trial-fit", daemon=True)
        thread.start()
        stopped, groups = None, []
        try:
            while True:
                alive = thread.is_alive()
                busy = False
                for ev in _drain(events, Empty):
                    busy = True
                    if ev["kind"] == "start" and ev.get("placement_group") is not None:
                        groups.append(ev["placement_group"])
                    elif ev["kind"] == "epoch":
                        tracker.log_metrics(ev["metrics"], step=ev["epoch"])
                        if ev.get("grid") is not None:
                            tracker.log_image(ev["grid"], f"samples/epoch_{ev['epoch']:04d}.png")
                    elif ev["kind"] == "nonfinite":
                        stopped = f"non-finite loss in epoch {ev['epoch']}: {ev['reason']}"
                    elif ev["kind"] == "data_error":  # the workers stopped without failing: end the trial here
                        stopped = f"data error: {ev['reason']}"
                for rep in _drain(reports, Empty):
                    busy = True
                    metrics = {k: v for k, v in rep["metrics"].items() if isinstance(v, (int, float))}
                    tune.report({**metrics, "mlflow_run_id": tracker.run_id}, checkpoint=rep["checkpoint"])
                if not alive and not busy:
                    break
                if not busy:
                    time.sleep(0.2)
        finally:
            if thread.is_alive():  # Tune stopped the trial (ASHA, max_t) while its TorchTrainer runs
                _release(groups)
        for q in (events, reports):
            try:
                ray.kill(q.actor)
            except Exception:
                pass
        if "error" in box:
            raise RuntimeError(f"trial {trial_id} failed: {_one_line(box['error'])}")
        if stopped:
            tracker.fail(stopped)
            raise RuntimeError(f"trial {trial_id}: {stopped}")


def _release(groups: list) -> None:
    """Remove the worker groups' placement groups of a trial that Tune stopped mid-run: the trial's
    actor exits, but Ray Train (2.60) leaves its worker group's reservation behind, and on a
    2-CPU machine the next trial or job would wait for it forever."""
    import ray.util

    for group in groups:
        try:
            ray.util.remove_placement_group(group)
        except Exception:  # already removed, or Ray is shutting down
            pass


@contextlib.contextmanager
def _ends(tracker, finished: dict | None = None):
    """End an already started tracker the way its ``with`` block would (FINISHED, FAILED, KILLED).
    ``finished["final"]`` set by the trial once its last epoch is being reported: Tune may stop the
    trial inside that final ``tune.report`` (the scheduler's STOP at max_t), which is a finished
    trial, not a failed one."""
    try:
        yield tracker
    except BaseException as exc:
        # Tune ends a trial that the scheduler stopped (ASHA's early stop, or the final STOP at
        # max_t) by exiting its actor with status 0: the trial ended as asked, it did not fail.
        stopped = isinstance(exc, SystemExit) and exc.code in (0, None)
        if stopped or (finished and finished.get("final")):
            tracker.__exit__(None, None, None)
        else:
            tracker.__exit__(type(exc), exc, exc.__traceback__)
        raise
    tracker.__exit__(None, None, None)


def local_trial(config: dict, ctx: dict) -> None:
    """The Tune trial function of ``--trial-backend local``: igan's plain loop (the same feed,
    Trainer, evaluation and checkpoint format as a Ray Train worker of world size 1) inside the
    trial's own process, so a trial starts no worker group (small machines, many short trials).
    Every evaluated epoch is logged to the child run and reported to Tune with its checkpoint."""
    import tempfile

    import torch
    from ray import tune

    from igan.data.feed import make_feed
    from igan.trainer import Trainer
    from pipelines.worker import (CONFIG, META, RANK_RNG, STATE, Evaluator, _rng_state, _set_rng_state,
                                  epoch_metrics, read_checkpoint, read_rank_rng, run_epoch)
    from igan.config import dump_yaml

    cfg, tracker, trial_id, resume_from = _open_trial(config, ctx)
    finished = {"final": False}
    with _ends(tracker, finished):
        torch.set_num_threads(max(1, int(ctx["cpus"])))
        device = "cuda" if ctx["gpus"] > 0 else "cpu"
        data_root = ctx["data_root"]
        feed = make_feed(cfg, data_root, 0, 1)
        evaluator = Evaluator(cfg, data_root, 0, 1, feed.validation)  # before the Trainer, as in the worker
        trainer = Trainer(cfg, init_batch=feed.init_batch(), device=device)
        done, last = 0, None
        if resume_from is not None:
            with resume_from.as_directory() as d:
                state, meta = read_checkpoint(d)
                rng = read_rank_rng(d, 0)
            trainer.load_state_dict(state)
            if rng is not None:
                _set_rng_state(trainer, rng)
            done, last = int(meta["epochs_done"]), meta
        reported = False
        t0 = time.perf_counter()
        for epoch in range(done, cfg.train.epochs):
            trainer.set_epoch(epoch)
            losses, error = run_epoch(trainer, feed.epoch(epoch), 1)
            if error is not None:
                tracker.fail(f"non-finite loss in epoch {epoch + 1}: {error}")
                raise RuntimeError(f"trial {trial_id}: non-finite loss in epoch {epoch + 1}: {error}")
            final = epoch + 1 == cfg.train.epochs
            metrics, grid = epoch_metrics(evaluator, trainer, cfg, epoch, losses)
            tracker.log_metrics(metrics, step=epoch + 1)
            if grid is not None:
                tracker.log_image(grid, f"samples/epoch_{epoch + 1:04d}.png")
            if ctx["metric"] not in metrics:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                d = Path(tmp)
                torch.save(_rng_state(trainer), d / RANK_RNG.format(0))
                torch.save(trainer.state_dict(), d / STATE)
                (d / META).write_text(json.dumps({"epochs_done": epoch + 1, "step": trainer.step,
                                                  "run_id": tracker.run_id, "metrics": metrics,
                                                  "preset": cfg.preset}))
                (d / CONFIG).write_text(dump_yaml(cfg))
                finished["final"] = final
                tune.report({**metrics, "epoch": epoch + 1, "step": trainer.step, "mlflow_run_id": tracker.run_id,
                             "seconds": round(time.perf_counter() - t0, 2)},
                            checkpoint=tune.Checkpoint.from_directory(tmp))
            reported = True
        if not reported and last is not None:
            # Restored from its final checkpoint (the search stopped before Tune saved that the trial
            # had finished): report that result again instead of training again.
            finished["final"] = True
            tune.report({**last.get("metrics", {}), "epoch": int(last["epochs_done"]), "step": int(last["step"]),
                         "mlflow_run_id": tracker.run_id}, checkpoint=resume_from)


def _drain(queue, empty_exc) -> list:
    out = []
    while True:
        try:
            out.append(queue.get(block=False))
        except empty_exc:
            return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.split(":", 1)[0].endswith(("Error", "Exception")) and "TrainingFailedError" not in ln:
            return ln
    return lines[0] if lines else type(exc).__name__


# -- jobs -----------------------------------------------------------------------------------------
#: The keys ``--resume`` needs from a search record.
RECORD_KEYS = {"name": str, "parent_run_id": str, "options": dict, "config": dict}


def read_record(storage: str, name: str) -> dict | None:
    """The search record of ``<storage>/<name>``, or None; UserError naming the file when it is
    not one (corrupt JSON, a key missing)."""
    from pipelines.train import parse_record

    path = Path(storage) / name / JOB_FILE
    return parse_record(path.read_bytes(), str(path), RECORD_KEYS) if path.is_file() else None


def write_record(storage: str, name: str, record: dict) -> None:
    folder = Path(storage) / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (JOB_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    tmp.replace(folder / JOB_FILE)


def latest_record(storage: str) -> dict | None:
    root = Path(storage)
    if not root.is_dir():
        return None
    records = [r for d in root.iterdir() if d.is_dir() and (r := read_record(storage, d.name))]
    return max(records, key=lambda r: r.get("created", 0), default=None)


def _new_name(search: Search) -> str:
    return f"tune-{search.space_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"


def _job(opts: TuneOptions, storage: str) -> tuple[TuneOptions, str, dict]:
    """``(options, name, record)``: new, or the stored search that ``--resume`` continues (its
    space, preset, settings and base config; --set is not allowed to change a resumed search)."""
    if not opts.resume:
        name = opts.name
        if name and (Path(storage) / name).exists():
            raise UserError(f"a search named '{name}' already exists in {storage}; pass --resume to "
                            "continue it or choose another --name")
        return opts, name or "", {}
    record = read_record(storage, opts.name) if opts.name else latest_record(storage)
    if record is None:
        where = f"search '{opts.name}' in {storage}" if opts.name else f"any search in {storage}"
        raise UserError(f"--resume: found no {where} (see --storage and --name)")
    # the record keeps no credentials: they come back from --tracking-uri or the environment
    tracking_uri = defaults.resume_tracking_uri(opts.tracking_uri, record["options"].get("tracking_uri"))
    try:
        stored = TuneOptions(**{**record["options"], "resume": True, "name": record["name"],
                                "storage": storage, "verbose": opts.verbose, "address": opts.address,
                                "wait_for_resources": opts.wait_for_resources, "tracking_uri": tracking_uri})
    except TypeError as exc:  # options this igan does not know (or lacks): a damaged record
        raise UserError(f"{Path(storage) / record['name'] / JOB_FILE} is corrupt: its options do not fit "
                        f"({exc})") from None
    return stored, record["name"], record


def resolve_storage(storage: str | None) -> str:
    storage = storage or defaults.default_storage()
    if "://" in storage:
        raise UserError("igan tune keeps its searches on a local or shared file system path; "
                        f"got the URI {storage}")
    return os.path.abspath(os.path.expanduser(storage))


# -- the search -------------------------------------------------------------------------------------
def _validate(opts: TuneOptions) -> None:
    if opts.scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got '{opts.scheduler}'")
    for flag, value, low in (("--num-samples", opts.num_samples, 1), ("--workers-per-trial", opts.workers_per_trial, 1),
                             ("--max-concurrent", opts.max_concurrent, 1), ("--max-failures", opts.max_failures, 0)):
        if value is not None and value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    if opts.trial_backend not in TRIAL_BACKENDS:
        raise UserError(f"--trial-backend must be one of {', '.join(TRIAL_BACKENDS)}, got '{opts.trial_backend}'")
    if opts.trial_backend == "local" and opts.workers_per_trial != 1:
        raise UserError("--trial-backend local runs one process per trial; drop --workers-per-trial "
                        "or use --trial-backend train")
    if opts.cpus_per_trial <= 0 or opts.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if opts.trial_backend == "train" and opts.cpus_per_trial <= TRIAL_DRIVER_CPUS:
        raise UserError(f"--cpus-per-trial covers the trial's driver ({TRIAL_DRIVER_CPUS:g} CPU) and its workers; "
                        f"give more than {TRIAL_DRIVER_CPUS:g}, got {opts.cpus_per_trial:g}")
    if opts.wait_for_resources < 0:
        raise UserError(f"--wait-for-resources must be >= 0 seconds, got {opts.wait_for_resources:g}")


def trial_worker_resources(cpus: float, gpus: float, workers: int) -> dict[str, float]:
    """What one Ray Train worker of a trial reserves: an equal share of the trial's CPUs left after
    its driver's (:data:`TRIAL_DRIVER_CPUS`) and of its GPUs."""
    return {"CPU": (cpus - TRIAL_DRIVER_CPUS) / workers, **({"GPU": gpus / workers} if gpus else {})}


def trial_bundles(opts: TuneOptions) -> list[dict[str, float]]:
    """Everything one trial reserves, one bundle per Ray actor: the local backend's trial process;
    or the train backend's driver and its workers. Either way they add up to ``--cpus-per-trial``
    and ``--gpus-per-trial``."""
    if opts.trial_backend == "local":
        return [{"CPU": opts.cpus_per_trial, **({"GPU": opts.gpus_per_trial} if opts.gpus_per_trial else {})}]
    w = opts.workers_per_trial
    return [{"CPU": TRIAL_DRIVER_CPUS}] + [trial_worker_resources(opts.cpus_per_trial, opts.gpus_per_trial, w)] * w


def describe_trial(opts: TuneOptions) -> str:
    """A trial's reservation in words, e.g. ``1 CPU (driver 0.01 CPU + 1 worker x (0.99 CPU))``."""
    from pipelines.resources import describe, total

    bundles = trial_bundles(opts)
    if opts.trial_backend == "local":
        return describe(bundles[0])
    w = opts.workers_per_trial
    return (f"{describe(total(bundles))} (driver {TRIAL_DRIVER_CPUS:g} CPU + {w} worker{'s' if w > 1 else ''} "
            f"x ({describe(bundles[1])}))")


def concurrency(opts: TuneOptions, cluster, log: Callable[[str], None] = print, **wait) -> int:
    """Trials at once: as many as the cluster can hold of what one trial reserves (its driver and
    workers, :func:`trial_bundles`), at most ``--max-concurrent`` and ``--num-samples``. A
    ``--max-concurrent`` the cluster can never hold is cut, saying why; on a cluster that may grow
    without a published limit it is kept. When not even one trial fits yet, asks the autoscaler and
    waits like ``igan train`` (``wait``: see :func:`pipelines.resources.ensure_resources`).
    UserError when no trial can ever fit, ResourceWaitTimeout when none fitted in time."""
    from pipelines.resources import copies_that_fit, ensure_resources

    one = trial_bundles(opts)
    limit = min(opts.max_concurrent or opts.num_samples, opts.num_samples)
    most = most_trials(cluster, one, limit)
    if most is not None:
        n = most
    elif opts.max_concurrent:  # a cluster that may grow: as many as asked
        n = limit
    else:  # as many as it holds once one fits (decided below)
        n = None
    ensure_resources(cluster, one, f"a trial: {describe_trial(opts)}", opts.wait_for_resources, "igan tune", log,
                     request=one * max(1, n or 1), **wait)
    if most is not None and opts.max_concurrent and most < limit:
        log(f"igan tune: --max-concurrent {opts.max_concurrent}, but the cluster can hold {most} trial"
            f"{'s' if most > 1 else ''} at once (each reserves {describe_trial(opts)}; the cluster has "
            f"{_capacity(cluster, one)}): running {most} at once")
    now = copies_that_fit(one, cluster.nodes(), limit)
    n = now if n is None else n
    if n > now:
        log(f"igan tune: {n} trials at once; the cluster holds {now} now, the others' workers wait for nodes "
            "to join (Ray Train asks the autoscaler for them)")
    return max(1, n)


def most_trials(cluster, one: list[dict], limit: int) -> int | None:
    """The most trials (``one`` trial's bundles each) the cluster can ever hold at once, at most
    ``limit``: what its nodes hold for a Ray started here, what its autoscaler's node types add up
    to where it publishes them; None when unknown (nodes may join)."""
    from pipelines.resources import copies_that_fit, copies_within

    if cluster.fixed():
        return copies_that_fit(one, cluster.nodes(), limit)
    ceiling = cluster.ceiling()
    return min(limit, copies_within(one, ceiling)) if ceiling is not None else None


def _capacity(cluster, bundles: list[dict]) -> str:
    """What the cluster has (a Ray started here) or can have (the autoscaler's ceiling) of the
    resources ``bundles`` use, e.g. ``2 CPU`` or ``at most 16 GPU + 384 CPU``."""
    from pipelines.resources import describe, total

    keys = [k for k in ("GPU", "CPU") if total(bundles).get(k)]
    if cluster.fixed():
        return describe(total(cluster.nodes()), keys)
    return "at most " + describe(cluster.ceiling() or {}, keys)


def pbt_mutations(space: dict, keys: list[str]) -> dict:
    """PBT's ``hyperparam_mutations`` for ``keys``: a ``tune.choice`` becomes its list of values, so
    PBT explores by moving to a neighbouring value (it would multiply a Categorical's value by 0.8 or
    1.2, e.g. a smoothing target of 0.9 into 1.08); other domains are kept."""
    from ray.tune.search.sample import Categorical

    return {k: list(space[k].categories) if isinstance(space[k], Categorical) else space[k] for k in keys}


def clamp_to_bounds(config: dict, keys: tuple[str, ...]) -> dict:
    """``config`` with each numeric value of ``keys`` clipped to its config key's allowed range (PBT's
    x0.8 / x1.2 steps on a continuous key may leave it); returns the same dict."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high = bounds(key)
        if low is not None:
            value = max(value, low)
        if high is not None:
            value = min(value, high)
        config[key] = type(config[key])(value)
    return config


def _scheduler(opts: TuneOptions, search: Search, space: dict):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    epochs, every = search.base.train.epochs, search.base.eval.every
    interval = opts.grace_epochs or max(every, epochs // 4)
    interval = max(every, int(math.ceil(interval / every)) * every)
    if opts.scheduler == "asha":
        return ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=min(interval, epochs),
                             reduction_factor=opts.reduction_factor)
    if opts.scheduler == "pbt":
        if not search.mutable:
            raise UserError(f"--scheduler pbt: space '{search.space_name}' has no key PBT may perturb "
                            "(PBT_MUTABLE) left after --set")
        import random

        random.seed(opts.seed)  # PBT draws its explore steps from Python's global generator
        return PopulationBasedTraining(time_attr="epoch", perturbation_interval=interval,
                                       hyperparam_mutations=pbt_mutations(space, search.mutable),
                                       custom_explore_fn=functools.partial(clamp_to_bounds,
                                                                           keys=tuple(search.mutable)),
                                       quantile_fraction=0.25)
    return FIFOScheduler()


def _context(search: Search, opts: TuneOptions, name: str, storage: str, data_root: str | None,
             tracking_uri: str, parent, experiment_id: str) -> dict:
    return {"config": search.base.to_dict(), "keys": search.keys, "tied": search.tied, "metric": search.metric,
            "name": name, "data_root": data_root, "tracking_uri": tracking_uri, "experiment": opts.experiment,
            "experiment_id": experiment_id, "parent_run_id": parent.run_id,
            "train_storage": str(Path(storage) / name / "train_runs"), "workers": opts.workers_per_trial,
            "cpus": opts.cpus_per_trial, "gpus": opts.gpus_per_trial, "max_failures": opts.max_failures,
            "backend": opts.trial_backend}


def run_search(opts: TuneOptions, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) a search; returns the summary (best trial, metric, config, model URIs, the
    results table). UserError on bad input; :class:`SearchInterrupted` when it stopped before all
    trials finished (resume it with ``--resume``)."""
    from pipelines.train import ensure_data, ensure_scorer, init_ray

    t0 = time.perf_counter()
    _validate(opts)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", STATE_SAVE_S)
    # Read by a local Ray's workers (they inherit this environment): a trial's Train worker group
    # may start slowly on a busy machine; Ray's default gives up after 60 s.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
    storage = resolve_storage(opts.storage)
    opts, name, record = _job(opts, storage)
    check_writable(storage, "--storage")
    tracking_uri = defaults.resolve_tracking_uri(opts.tracking_uri)
    try:
        search, space = resolve_search(opts, record.get("config"))
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    name = name or _new_name(search)
    ensure_scorer(search.base)  # every trial evaluates with the base config's scorer
    data_root = ensure_data(search.base, opts.data or record.get("data_root"), log=log)
    if data_root is not None and not record:
        search.base = apply_overrides(search.base, [f"data.path={data_root}"])
    from pipelines.registry import check_tracking_uri

    check_tracking_uri(tracking_uri, must_exist=False)
    from pipelines.tracking import RunTracker

    ray = init_ray(opts.address)
    from pipelines.resources import RayCluster

    concurrent = concurrency(opts, RayCluster(ray), log)
    parent = RunTracker(tracking_uri, opts.experiment, run_name=name, run_id=record.get("parent_run_id"),
                        tags={JOB_TAG: name, "igan.kind": "tune"})
    parent.start()
    try:
        if not record:
            parent.log_config(search.base)
            parent.log_params({"tune.space": search.space_name, "tune.scheduler": opts.scheduler,
                               "tune.num_samples": opts.num_samples, "tune.metric": search.metric,
                               "tune.mode": search.mode, "tune.max_concurrent": concurrent,
                               "tune.workers_per_trial": opts.workers_per_trial,
                               "tune.cpus_per_trial": opts.cpus_per_trial, "tune.seed": opts.seed,
                               **{f"tune.space.{k}": _describe(v) for k, v in space.items()}})
            stored_uri = defaults.strip_credentials(tracking_uri)  # never a password on disk
            record = {"name": name, "parent_run_id": parent.run_id, "experiment": opts.experiment,
                      "tracking_uri": stored_uri, "space": search.space_name, "preset": search.preset,
                      "config": search.base.to_dict(), "data_root": data_root, "created": time.time(),
                      "options": {**{k: v for k, v in asdict(opts).items()
                                     if k not in ("resume", "name", "storage", "verbose", "address",
                                                  "wait_for_resources")}, "tracking_uri": stored_uri}}
            write_record(storage, name, record)
        ctx = _context(search, opts, name, storage, data_root, tracking_uri, parent, parent.experiment_id)
        log(f"igan tune: {'resuming' if opts.resume else 'starting'} search '{name}': space {search.space_name} "
            f"(preset {search.preset}), {opts.num_samples} trials, {opts.scheduler}, up to {concurrent} at once; "
            f"{search.metric} ({search.mode}) over {', '.join(search.keys)}")
        grid = _fit(opts, search, space, ctx, storage, name, concurrent)
        rows, unfinished = _rows(grid, search)
        unfinished += [None] * max(0, opts.num_samples - len(rows))  # trials not created yet
        if unfinished:
            parent.set_tags({"igan.tune.state": "interrupted"})
            parent.client.set_terminated(parent.run_id, status="KILLED")
            _end_children(parent.client, ctx, rows, interrupted=True)
            raise SearchInterrupted(f"search '{name}' stopped with {len(unfinished)} of {opts.num_samples} trials "
                                    f"unfinished; continue it with `igan tune {search.space_name} --resume "
                                    f"--name {name} --storage {storage}`")
        _end_children(parent.client, ctx, rows, interrupted=False)
        summary = _finish(parent, search, grid, rows, ctx, opts, tracking_uri, storage, name, log)
    except SearchInterrupted:
        raise
    except BaseException as exc:
        if not parent._ended:
            if isinstance(exc, KeyboardInterrupt):
                parent.client.set_terminated(parent.run_id, status="KILLED")
            else:
                parent.fail(f"{type(exc).__name__}: {_one_line(exc)}")
        raise
    parent.finish()
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


class SearchInterrupted(Exception):
    """The search stopped (Ctrl+C, SIGTERM) before every trial finished; the message says how to resume."""


def _describe(domain) -> str:
    cats = getattr(domain, "categories", None)
    if cats is not None:
        return f"choice{[_plain(c) for c in cats]}"
    lower, upper = getattr(domain, "lower", None), getattr(domain, "upper", None)
    sampler = type(getattr(domain, "sampler", None)).__name__.lstrip("_").lower()
    if lower is not None:
        return f"{type(domain).__name__.lower()}[{lower}, {upper}] {sampler}".strip()
    return type(domain).__name__


def _fit(opts: TuneOptions, search: Search, space: dict, ctx: dict, storage: str, name: str, concurrent: int):
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if opts.trial_backend == "local":
        resources = {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial}
        trainable = tune.with_resources(tune.with_parameters(local_trial, ctx=ctx), resources)
    else:
        trainable = tune.with_resources(tune.with_parameters(trial_driver, ctx=ctx), {"cpu": TRIAL_DRIVER_CPUS})
    callbacks = []
    if os.environ.get(STOP_AFTER_ENV):
        callbacks.append(_StopAfter(int(os.environ[STOP_AFTER_ENV])))
    path = str(Path(storage) / name)
    if opts.resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        local = getattr(tuner, "_local_tuner", None)
        if local is not None and hasattr(local, "_run_config"):  # this run's callbacks, not the stored ones
            local._run_config.callbacks = callbacks
    else:
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(metric=search.metric, mode=search.mode, num_samples=opts.num_samples,
                                        scheduler=_scheduler(opts, search, space),
                                        search_alg=BasicVariantGenerator(random_state=opts.seed,
                                                                         max_concurrent=concurrent)),
            run_config=tune.RunConfig(storage_path=storage, name=name, verbose=opts.verbose, callbacks=callbacks,
                                      # PBT may clone any recent checkpoint of another trial: keep them all
                                      checkpoint_config=tune.CheckpointConfig(
                                          num_to_keep=None if opts.scheduler == "pbt" else 2),
                                      failure_config=tune.FailureConfig(max_failures=opts.max_failures)))
    return tuner.fit()


def _stop_after_class():
    from ray.tune import Callback

    class StopAfter(Callback):
        """Test-only (``IGAN_TEST_TUNE_STOP_AFTER``): once ``n`` trials have finished, stop the search
        the way Ctrl+C does (Tune saves its state and returns; the unfinished trials stay resumable)."""

        def __init__(self, n: int):
            self.n, self.done = n, 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            import signal

            self.done += 1
            if self.done == self.n and os.environ.get(STOP_AFTER_ENV):
                if threading.current_thread() is threading.main_thread():
                    os.kill(os.getpid(), signal.SIGUSR1)  # Tune's own interrupt handler
    return StopAfter


def _StopAfter(n: int):
    return _stop_after_class()(n)


def _rows(grid, search: Search) -> tuple[list[dict], list[str]]:
    """One row per trial (id, child run, varied values, last metric, epochs, status) and the ids
    of trials that did not end (TERMINATED or ERROR)."""
    rows, unfinished = [], []
    trials = {t.trial_id: t for t in grid._experiment_analysis.trials}
    for result in grid:
        m = result.metrics or {}
        tid = m.get("trial_id") or _trial_id_from_path(result.path)
        trial = trials.get(tid)
        status = trial.status if trial is not None else ("ERROR" if result.error else "TERMINATED")
        if status not in ("TERMINATED", "ERROR"):
            unfinished.append(tid)
        value, reported = m.get(search.metric), m.get(reported_metric(search.metric))
        rows.append({"trial": tid, **{k: _plain(result.config.get(k)) for k in search.keys},
                     search.metric: float(value) if value is not None else float("nan"),
                     reported_metric(search.metric): float(reported) if reported is not None else float("nan"),
                     "epoch": m.get("epoch"), "status": status, "run_id": m.get("mlflow_run_id"),
                     "_result": result})
    return rows, unfinished


def reported_metric(metric: str) -> str:
    """The test-split counterpart of a validation metric (``val_ssl_error`` -> ``test_ssl_error``):
    shown beside it in the results, never used to rank."""
    return "test_" + metric.removeprefix("val_")


def _trial_id_from_path(path: str | None) -> str | None:
    if not path:
        return None
    parts = Path(path).name.split("_")
    return parts[2] if len(parts) > 2 else Path(path).name


def _end_children(client, ctx: dict, rows: list[dict], interrupted: bool) -> None:
    """Child runs a trial left RUNNING: a trial Tune finished (ASHA stops a trial's actor
    mid-training) -> FINISHED with ``igan.tune.early_stopped`` when it stopped before the last
    epoch; an unfinished trial of an interrupted search -> KILLED (``--resume`` reopens it)."""
    status = {r["run_id"]: r["status"] for r in rows if r.get("run_id")}
    runs = client.search_runs([ctx["experiment_id"]],
                              filter_string=f"tags.mlflow.parentRunId = '{ctx['parent_run_id']}'",
                              max_results=10000)
    for run in runs:
        if run.info.status != "RUNNING":
            continue
        if interrupted and status.get(run.info.run_id) not in ("TERMINATED", "ERROR"):
            client.set_terminated(run.info.run_id, status="KILLED")
        else:
            client.set_tag(run.info.run_id, "igan.tune.early_stopped", "true")
            client.set_terminated(run.info.run_id, status="FINISHED")


def _finish(parent, search: Search, grid, rows: list[dict], ctx: dict, opts: TuneOptions, tracking_uri: str,
            storage: str, name: str, log) -> dict:
    """Best trial -> checkpoint logged and models registered (alias ``champion``); the results
    table printed and logged (CSV), the plot logged (PNG); returns the summary."""
    sign = 1 if search.mode == "min" else -1
    ok = [r for r in rows if math.isfinite(r[search.metric])]
    if not ok:
        raise UserError(f"search '{name}': no trial reported {search.metric}; see the trial errors in "
                        f"{storage}/{name}")
    best = min(ok, key=lambda r: sign * r[search.metric])
    rows.sort(key=lambda r: (not math.isfinite(r[search.metric]), sign * r[search.metric]
                             if math.isfinite(r[search.metric]) else 0))
    table = format_table(rows, search)
    for line in table.splitlines():
        log(line)
    csv_text = results_csv(rows, search)
    parent.log_text(csv_text, "tune_results.csv")
    png = plot_results(rows, search, best)
    if png is not None:
        parent.log_artifact(png, "plots")
    best_cfg = trial_config(search.base, best["_result"].config, search.keys, search.tied)
    model_uris: dict[str, str] = {}
    ckpt = best["_result"].checkpoint
    if ckpt is not None and best["run_id"]:
        from igan.trainer import Trainer
        from pipelines.tracking import RunTracker
        from pipelines.worker import read_checkpoint

        with ckpt.as_directory() as d:
            state, _ = read_checkpoint(d)
            child = RunTracker(tracking_uri, opts.experiment, run_id=best["run_id"])
            child.client.log_artifacts(best["run_id"], d, "checkpoint")
        if opts.register:
            from pipelines.registry import register_models

            trainer = Trainer(best_cfg, device="cpu")
            trainer.load_state_dict(state)
            model_uris = register_models(best["run_id"], trainer, best_cfg, tracking_uri, alias="champion")
            parent.client.set_tag(best["run_id"], "igan.tune.champion", "true")
    varied = {k: best[k] for k in search.keys}
    parent.log_metrics({f"best_{search.metric}": best[search.metric], "trials": len(rows)}, step=0)
    parent.set_tags({"igan.tune.state": "finished", "igan.tune.best_trial": best["trial"],
                     "igan.tune.best_run_id": best["run_id"] or "", "igan.tune.best_config": json.dumps(varied),
                     "igan.registered_models": " ".join(model_uris.values())})
    log(f"igan tune: best trial {best['trial']} (chosen on {search.metric}): {search.metric} "
        f"{best[search.metric]:.4g}, {reported_metric(search.metric)} {best[reported_metric(search.metric)]:.4g}, with "
        + ", ".join(f"{k}={_fmt(v)}" for k, v in varied.items()))
    for kind, uri in model_uris.items():
        log(f"  {kind + ':':13} {uri} (alias champion)")
    log(f"  MLflow parent run: {parent.run_id} ('{name}') in experiment '{opts.experiment}' at "
        f"{defaults.redact_uri(tracking_uri)}")
    log(f"  search folder: {storage}/{name}")
    return {
        "name": name, "space": search.space_name, "preset": search.preset, "scheduler": opts.scheduler,
        "metric": search.metric, "mode": search.mode, "best_value": best[search.metric],
        "best_test_value": best[reported_metric(search.metric)],
        "best_trial": best["trial"], "best_run_id": best["run_id"], "best_config": varied,
        "best_full_config": best_cfg.flat(), "model_uris": model_uris, "parent_run_id": parent.run_id,
        "experiment": opts.experiment, "tracking_uri": defaults.redact_uri(tracking_uri),
        "path": f"{storage}/{name}",
        "trials": [{k: v for k, v in r.items() if k != "_result"} for r in rows],
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short(key: str) -> str:
    return key.split(".", 1)[-1]


def format_table(rows: list[dict], search: Search) -> str:
    """The results as an aligned text table, best first."""
    reported = reported_metric(search.metric)
    header = ["trial"] + [_short(k) for k in search.keys] + [search.metric, reported, "epochs", "status"]
    body = [[r["trial"]] + [_fmt(r[k]) for k in search.keys]
            + [_fmt(r[search.metric]), _fmt(r.get(reported, float("nan"))),
               str(r["epoch"] if r["epoch"] is not None else "-"), r["status"]]
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def results_csv(rows: list[dict], search: Search) -> str:
    """The results as CSV text (full config keys as column names)."""
    buf = io.StringIO()
    cols = ["trial"] + search.keys + [search.metric, reported_metric(search.metric), "epoch", "status", "run_id"]
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r.get(c) for c in cols})
    return buf.getvalue()


def plot_results(rows: list[dict], search: Search, best: dict) -> Path | None:
    """A PNG with one panel per varied key: the metric against the key's values (categories as
    positions, learning rates on a log axis), the best trial marked. Returns its path (temporary)."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if math.isfinite(r[search.metric])]
    if not ok:
        return None
    n = len(search.keys)
    cols = min(3, n)
    fig_rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(fig_rows, cols, figsize=(4.2 * cols, 3.2 * fig_rows), squeeze=False)
    for ax, key in zip(axes.flat, search.keys):
        values = [r[key] for r in ok]
        ys = [r[search.metric] for r in ok]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            xs = values
            if key.startswith("optim.lr"):
                ax.set_xscale("log")
        else:
            cats = sorted({str(v) for v in values})
            xs = [cats.index(str(v)) for v in values]
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats)
        ax.scatter(xs, ys, s=30, alpha=0.8)
        bx = best[key] if numeric else sorted({str(v) for v in values}).index(str(best[key]))
        ax.scatter([bx], [best[search.metric]], s=120, facecolors="none", edgecolors="red", linewidths=2)
        ax.set_xlabel(key)
        ax.set_ylabel(search.metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{search.space_name}: {search.metric} ({search.mode}) per trial; best circled")
    fig.tight_layout()
    path = Path(tempfile.mkdtemp()) / f"{search.metric}_vs_params.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["TuneOptions", "run_search", "SearchInterrupted", "resolve_search", "trial_config", "trial_driver",
           "format_table", "results_csv", "plot_results", "JOB_FILE", "SCHEDULERS"]
