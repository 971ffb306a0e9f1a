"""The search driver behind ``igan tune``: resolve the search, start (or reopen) its MLflow parent
run, run the Ray Tune trials (:mod:`pipelines.tune.trials`) and crown the best one.

A search lives in ``<storage>/<name>/`` (Tune's experiment folder) with ``igan_tune.json`` (name,
parent run id, space, options, base config; the tracking URI without its credentials). ``--resume``
restores it with ``Tuner.restore``: finished trials are not run again.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from igan.config import ConfigError, with_values
from pipelines import defaults
from pipelines.errors import UserError, check_writable
from pipelines.jobs import SEARCH_JOB, find_record, job_exists, new_job_name, resolve_storage, write_record
from pipelines.ray_private import replace_restored_callbacks
from pipelines.ray_runtime import failure_reason, quiet_libraries
from pipelines.tune.capacity import concurrency
from pipelines.tune.champion import crown
from pipelines.tune.options import PER_RUN, TRIAL_DRIVER_CPUS, TuneOptions, validate
from pipelines.tune.progress import TrialsTable, trials_table_callback
from pipelines.tune.results import trial_rows
from pipelines.tune.search import Search, describe_domain, make_scheduler, resolve_search
from pipelines.tune.trials import JOB_TAG, local_trial, trial_driver

#: Seconds between Tune's experiment-state saves (unless the environment sets it): a search killed
#: without warning loses at most this much bookkeeping; a finished trial whose completion was not
#: saved yet re-reports its final checkpoint on resume instead of training again.
STATE_SAVE_S = "5"


class SearchInterrupted(Exception):
    """The search stopped (Ctrl+C, SIGTERM) before every trial finished; the message says how to resume."""


def run_search(opts: TuneOptions, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) a search; returns the summary (best trial, metric, config, model URIs, the
    results table). UserError on bad input; :class:`SearchInterrupted` when it stopped before all
    trials finished (resume it with ``--resume``)."""
    from pipelines.job_inputs import ensure_data, ensure_scorer
    from pipelines.ray_runtime import init_ray

    t0 = time.perf_counter()
    validate(opts)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet_libraries(opts.verbose > 1)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", STATE_SAVE_S)
    # Read by a local Ray's workers (they inherit this environment): a trial's Train worker group
    # may start slowly on a busy machine; Ray's default gives up after 60 s.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
    storage = resolve_storage(opts.storage, uri_ok=False)
    opts, name, record = _job(opts, storage)
    check_writable(storage, "--storage")
    tracking_uri = defaults.resolve_tracking_uri(opts.tracking_uri)
    try:
        search, space = resolve_search(opts, record.get("config"))
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    name = name or new_job_name(f"tune-{search.space_name}")
    ensure_scorer(search.base)  # every trial evaluates with the base config's scorer
    data_root = ensure_data(search.base, opts.data or record.get("data_root"), log=log)
    if data_root is not None and not record:
        search.base = with_values(search.base, {"data.path": data_root})
    from pipelines.registry import check_tracking_uri
    from pipelines.resources import RayCluster
    from pipelines.tracking import RunTracker

    check_tracking_uri(tracking_uri, must_exist=False)
    ray = init_ray(opts.address, verbose=opts.verbose > 1)
    concurrent = concurrency(opts, RayCluster(ray), log)
    parent = RunTracker(tracking_uri, opts.experiment, run_name=name, run_id=record.get("parent_run_id"),
                        tags={JOB_TAG: name, "igan.kind": "tune"})
    parent.start()
    try:
        if not record:
            _start_record(parent, search, space, opts, concurrent, storage, name, data_root, tracking_uri)
        ctx = trial_context(search, opts, name, storage, data_root, tracking_uri, parent)
        log(f"igan tune: {'resuming' if opts.resume else 'starting'} search '{name}': space {search.space_name} "
            f"(preset {search.preset}), {opts.num_samples} trials, {opts.scheduler}, up to {concurrent} at once; "
            f"{search.metric} ({search.mode}) over {', '.join(search.keys)}")
        path = str(Path(storage) / name)
        grid = _fit(opts, search, space, ctx, path, concurrent, log)
        rows, unfinished = trial_rows(grid, search, path)
        unfinished += [None] * max(0, opts.num_samples - len(rows))  # trials not created yet
        if unfinished:
            parent.set_tags({"igan.tune.state": "interrupted"})
            parent.kill()
            _end_children(parent.client, ctx, rows, interrupted=True)
            raise SearchInterrupted(f"search '{name}' stopped with {len(unfinished)} of {opts.num_samples} trials "
                                    f"unfinished; continue it with `igan tune {search.space_name} --resume "
                                    f"--name {name} --storage {storage}`")
        _end_children(parent.client, ctx, rows, interrupted=False)
        summary = crown(parent, search, rows, opts, tracking_uri, name, path, log)
    except SearchInterrupted:
        raise
    except BaseException as exc:
        if not parent.ended:
            if isinstance(exc, KeyboardInterrupt):
                parent.kill()
            else:
                parent.fail(f"{type(exc).__name__}: {failure_reason(exc)}")
        raise
    parent.finish()
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def _job(opts: TuneOptions, storage: str) -> tuple[TuneOptions, str, dict]:
    """``(options, name, record)``: new, or the stored search that ``--resume`` continues (its
    space, preset, settings and base config; --set is not allowed to change a resumed search)."""
    if not opts.resume:
        if opts.name and job_exists(storage, opts.name):
            raise UserError(f"a search named '{opts.name}' already exists in {storage}; pass --resume to "
                            "continue it or choose another --name")
        return opts, opts.name or "", {}
    record = find_record(storage, opts.name, SEARCH_JOB)
    # the record keeps no credentials: they come back from --tracking-uri or the environment
    tracking_uri = defaults.resume_tracking_uri(opts.tracking_uri, record["options"].get("tracking_uri"))
    try:
        stored = TuneOptions(**{**record["options"], "tracking_uri": tracking_uri})
    except TypeError as exc:  # options this igan does not know (or lacks): a damaged record
        raise UserError(f"{Path(storage) / record['name'] / SEARCH_JOB.file} is corrupt: its options do not fit "
                        f"({exc})") from None
    stored = replace(stored, resume=True, name=record["name"], storage=storage, verbose=opts.verbose,
                     address=opts.address, wait_for_resources=opts.wait_for_resources, hooks=opts.hooks,
                     space_module=opts.space_module)
    return stored, record["name"], record


def _start_record(parent, search: Search, space: dict, opts: TuneOptions, concurrent: int, storage: str,
                  name: str, data_root: str | None, tracking_uri: str) -> None:
    """Log a new search's config and settings on its parent run and write its job record."""
    parent.log_config(search.base)
    parent.log_params({"tune.space": search.space_name, "tune.scheduler": opts.scheduler,
                       "tune.num_samples": opts.num_samples, "tune.metric": search.metric,
                       "tune.mode": search.mode, "tune.max_concurrent": concurrent,
                       "tune.workers_per_trial": opts.workers_per_trial,
                       "tune.cpus_per_trial": opts.cpus_per_trial, "tune.seed": opts.seed,
                       **{f"tune.space.{k}": describe_domain(v) for k, v in space.items()}})
    stored_uri = defaults.strip_credentials(tracking_uri)  # never a password on disk
    options = {k: v for k, v in asdict(replace(opts, space_module=None)).items() if k not in PER_RUN}
    write_record(storage, name, {
        "name": name, "parent_run_id": parent.run_id, "experiment": opts.experiment, "tracking_uri": stored_uri,
        "space": search.space_name, "preset": search.preset, "config": search.base.to_dict(),
        "data_root": data_root, "created": time.time(), "options": {**options, "tracking_uri": stored_uri}},
        SEARCH_JOB)


def trial_context(search: Search, opts: TuneOptions, name: str, storage: str, data_root: str | None,
                  tracking_uri: str, parent) -> dict:
    """The search's static facts every trial function receives (``ctx``)."""
    return {"config": search.base.to_dict(), "keys": search.keys, "tied": search.tied, "overlays": search.overlays,
            "metric": search.metric,
            "name": name, "data_root": data_root, "tracking_uri": tracking_uri, "experiment": opts.experiment,
            "experiment_id": parent.experiment_id, "parent_run_id": parent.run_id,
            "train_storage": str(Path(storage) / name / "train_runs"), "workers": opts.workers_per_trial,
            "cpus": opts.cpus_per_trial, "gpus": opts.gpus_per_trial, "max_failures": opts.max_failures,
            "backend": opts.trial_backend, "hooks": list(opts.hooks)}


def _fit(opts: TuneOptions, search: Search, space: dict, ctx: dict, path: str, concurrent: int,
         log: Callable[[str], None]):
    """Run (or restore and continue) the Tune experiment at ``path``; returns its ResultGrid. With
    ``opts.verbose`` 1 the trials table is igan's (:mod:`pipelines.tune.progress`); with 2, Tune's own."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if opts.trial_backend == "local":
        resources = {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial}
        trainable = tune.with_resources(tune.with_parameters(local_trial, ctx=ctx), resources)
    else:
        trainable = tune.with_resources(tune.with_parameters(trial_driver, ctx=ctx), {"cpu": TRIAL_DRIVER_CPUS})
    callbacks = [trials_table_callback(TrialsTable(search.metric, log))] if opts.verbose == 1 else []
    if opts.hooks:
        callbacks.append(_hook_callback(opts.hooks))
    if opts.resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        replace_restored_callbacks(tuner, callbacks)  # else the first run's, stateless: they do nothing
        return tuner.fit()
    storage, name = os.path.split(path)
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(metric=search.metric, mode=search.mode, num_samples=opts.num_samples,
                                    scheduler=make_scheduler(opts, search, space),
                                    search_alg=BasicVariantGenerator(random_state=opts.seed,
                                                                     max_concurrent=concurrent)),
        run_config=tune.RunConfig(storage_path=storage, name=name, verbose=2 if opts.verbose > 1 else 0,
                                  callbacks=callbacks,
                                  # PBT may clone any recent checkpoint of another trial: keep them all
                                  checkpoint_config=tune.CheckpointConfig(
                                      num_to_keep=None if opts.scheduler == "pbt" else 2),
                                  failure_config=tune.FailureConfig(max_failures=opts.max_failures)))
    return tuner.fit()


def _hook_callback(hooks: list):
    """A Tune callback calling each hook's ``on_trial_complete(count)`` (count: trials completed so
    far in this run). Its hooks are not pickled with the search's state."""
    from ray.tune import Callback

    class HookCallback(Callback):
        def __init__(self, hooks: list):
            self.hooks, self.done = list(hooks), 0

        def __getstate__(self):
            return {"hooks": [], "done": 0}

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            for hook in self.hooks:
                if hasattr(hook, "on_trial_complete"):
                    hook.on_trial_complete(self.done)

    return HookCallback(hooks)


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
