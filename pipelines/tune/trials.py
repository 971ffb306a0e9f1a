"""The two trial functions of a search, each one igan training job tracked in its own MLflow child
run (tag ``mlflow.parentRunId`` = the search's parent run, tag ``igan.trial_id``):

* :func:`trial_driver` (``--trial-backend train``, the default): a thin driver that runs a
  ``TorchTrainer`` of the same per-worker loop as ``igan train``
  (:func:`pipelines.worker.train_loop_per_worker`) and forwards its evaluations to Tune, the way
  Ray's Train-V2 guide to tuning recommends;
* :func:`local_trial` (``--trial-backend local``): igan's training loop inside the trial's own
  process (no worker group: small machines, many short trials).

Every evaluated epoch is reported to Tune (the metric, ``epoch``) with the checkpoint of that epoch,
so ASHA can stop the trial early, PBT can exploit it (the trial restarts from the cloned checkpoint
with the perturbed config) and a restored search continues an unfinished trial.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
import tempfile
import time
import uuid

from ray.train import UserCallback

from igan.config import Config
from pipelines.run_logging import WorkerLog, log_epoch, log_step, scorer_network_params
from pipelines.tune.capacity import trial_worker_resources
from pipelines.tune.search import plain, trial_config

TRIAL_TAG = "igan.trial_id"
JOB_TAG = "igan.tune_job"


class _ReportToTrial(UserCallback):
    """Ray Train callback (on the Train controller): forward reports that carry the metric, with
    their persisted checkpoint, to the Tune trial function through a Ray queue."""

    def __init__(self, queue, metric: str):
        self.queue, self.metric = queue, metric

    def after_report(self, run_context, metrics, checkpoint):
        m = dict(metrics[0])
        if self.metric in m:
            self.queue.put({"metrics": m, "checkpoint": checkpoint})


def find_child_run(client, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    """The MLflow child run of trial ``trial_id`` in the search ``parent_run_id``, or None."""
    runs = client.search_runs([experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                            f"tags.`{TRIAL_TAG}` = '{trial_id}'", max_results=1)
    return runs[0].info.run_id if runs else None


def _open_trial(config: dict, ctx: dict):
    """``(cfg, tracker, trial_id, resume_from)``: the trial's Config and its MLflow child run, new
    or reopened (a PBT exploit or a restored search continues the same child run)."""
    from ray import tune

    from pipelines.tracking import RunTracker, make_client

    cfg = trial_config(Config.from_dict(ctx["config"]), config, ctx["keys"], ctx["tied"], ctx.get("overlays"))
    tctx = tune.get_context()
    trial_id, trial_name = tctx.get_trial_id(), tctx.get_trial_name()
    resume_from = tune.get_checkpoint()
    varied = {k: plain(config[k]) for k in ctx["keys"]}
    existing = find_child_run(make_client(ctx["tracking_uri"]), ctx["experiment_id"], ctx["parent_run_id"], trial_id)
    tracker = RunTracker(ctx["tracking_uri"], ctx["experiment"], run_name=f"{ctx['name']}-{trial_id}",
                         parent_run_id=ctx["parent_run_id"], run_id=existing,
                         tags={TRIAL_TAG: trial_id, JOB_TAG: ctx["name"]}, system_metrics=True)
    tracker.start()
    scorer_params, pinned = scorer_network_params(cfg)
    if existing is None:
        tracker.log_config(cfg)
        tracker.log_params({"tune.trial_id": trial_id, "tune.trial_name": trial_name, "tune.job": ctx["name"],
                            "tune.trial_backend": ctx.get("backend", "train"), **scorer_params})
        tracker.set_tags({"igan.varied": json.dumps(varied)})
    else:  # PBT exploit or a restored search: record the config it continues with
        tracker.log_text(json.dumps(varied, indent=1), f"tune/config_{int(time.time())}.json")
    return pinned, tracker, trial_id, resume_from  # auto resolved: the trial scores with the network logged


def trial_driver(config: dict, ctx: dict) -> None:
    """The Tune trial function of ``--trial-backend train``: build the trial's Config, open (or
    reopen) its MLflow child run, run a TorchTrainer of :func:`pipelines.worker.train_loop_per_worker`
    and forward its evaluations to Tune. ``ctx``: the search's static facts (see
    :func:`pipelines.tune.run.trial_context`)."""
    import ray.train
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from pipelines.event_pump import Pump
    from pipelines.ray_runtime import failure_reason
    from pipelines.worker import train_loop_per_worker

    cfg, tracker, trial_id, resume_from = _open_trial(config, ctx)
    events, reports = Queue(actor_options={"num_cpus": 0}), Queue(actor_options={"num_cpus": 0})
    with _ends(tracker):
        name = trial_id if resume_from is None else f"{trial_id}-{uuid.uuid4().hex[:6]}"
        w = ctx["workers"]
        loop_config = {"config": cfg.to_dict(), "data_root": ctx["data_root"], "run_id": tracker.run_id,
                       "events": events, "threads": max(1, int(ctx["cpus"] / w)), "report_every_epoch": True,
                       "hooks": ctx.get("hooks") or []}
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=w, use_gpu=ctx["gpus"] > 0,
                                         resources_per_worker=trial_worker_resources(ctx["cpus"], ctx["gpus"], w)),
            run_config=ray.train.RunConfig(
                storage_path=ctx["train_storage"], name=name,
                failure_config=FailureConfig(max_failures=ctx["max_failures"]),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                callbacks=[_ReportToTrial(reports, ctx["metric"])]),
            resume_from_checkpoint=resume_from)
        state = {"stopped": None, "groups": []}
        worker_log = WorkerLog(show=print)  # the trial's own log; the child run keeps it too

        def on_event(ev: dict) -> None:
            if ev["kind"] == "start" and ev.get("placement_group") is not None:
                state["groups"].append(ev["placement_group"])
            elif ev["kind"] == "step":
                log_step(tracker, ev)
            elif ev["kind"] == "epoch":
                log_epoch(tracker, ev)
            elif ev["kind"] == "log":
                worker_log.add(ev)
            elif ev["kind"] == "nonfinite":
                state["stopped"] = f"non-finite loss in epoch {ev['epoch']}: {ev['reason']}"
            elif ev["kind"] == "data_error":  # the workers stopped without failing: end the trial here
                state["stopped"] = f"data error: {ev['reason']}"

        def on_report(rep: dict) -> None:
            metrics = {k: v for k, v in rep["metrics"].items() if isinstance(v, (int, float))}
            tune.report({**metrics, "mlflow_run_id": tracker.run_id}, checkpoint=rep["checkpoint"])

        # Tune stopping the trial (ASHA, max_t) inside a report leaves the TorchTrainer running: remove
        # its worker groups' placement groups, which Ray Train (2.60) would leave reserved.
        pump = Pump(trainer.fit, [(events, on_event), (reports, on_report)], name="igan-trial-fit",
                    on_abandon=lambda: _release(state["groups"]))
        try:
            pump.run()
        except Exception as exc:
            raise RuntimeError(f"trial {trial_id} failed: {failure_reason(exc)}") from None
        finally:
            worker_log.save(tracker)
        if state["stopped"]:
            tracker.fail(state["stopped"])
            raise RuntimeError(f"trial {trial_id}: {state['stopped']}")


def _release(groups: list) -> None:
    """Remove the placement groups of a trial's worker groups (already removed ones are skipped)."""
    import ray.util

    for group in groups:
        try:
            ray.util.remove_placement_group(group)
        except Exception:  # noqa: BLE001 - already removed, or Ray is shutting down
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
    """The Tune trial function of ``--trial-backend local``: :func:`igan.loop.train_epochs` in the
    trial's own process with the same feed, Trainer, evaluation and checkpoint format as a Ray Train
    worker of world size 1. Every evaluated epoch is logged to the child run and reported to Tune
    with its checkpoint."""
    import torch
    from ray import tune

    from igan.checkpoint import restore, write_checkpoint
    from igan.data.feed import make_feed
    from igan.evaluator import Evaluator
    from igan.loop import EpochEnd, train_epochs
    from igan.trainer import Trainer

    cfg, tracker, trial_id, resume_from = _open_trial(config, ctx)
    finished = {"final": False}
    with _ends(tracker, finished):
        torch.set_num_threads(max(1, int(ctx["cpus"])))
        feed = make_feed(cfg, ctx["data_root"], 0, 1)
        evaluator = Evaluator(cfg, ctx["data_root"], 0, 1, feed.validation)  # before the Trainer, as in the worker
        trainer = Trainer(cfg, init_batch=feed.init_batch(), device="cuda" if ctx["gpus"] > 0 else "cpu")
        done, last = 0, None
        if resume_from is not None:
            with resume_from.as_directory() as d:
                last, _ = restore(trainer, d)
            done = int(last["epochs_done"])
        t0 = time.perf_counter()
        reported = []

        def report(end: EpochEnd) -> None:
            log_epoch(tracker, {"epoch": end.epoch, "metrics": end.metrics, "grid": end.grid})
            if ctx["metric"] not in end.metrics:
                return
            with tempfile.TemporaryDirectory() as tmp:
                write_checkpoint(tmp, trainer, epochs_done=end.epoch,
                                 meta={"run_id": tracker.run_id, "metrics": end.metrics})
                finished["final"] = end.last
                tune.report({**end.metrics, "epoch": end.epoch, "step": end.step, "mlflow_run_id": tracker.run_id,
                             "seconds": round(time.perf_counter() - t0, 2)},
                            checkpoint=tune.Checkpoint.from_directory(tmp))
            reported.append(end.epoch)

        result = train_epochs(trainer, feed, cfg, start_epoch=done, evaluate=evaluator, on_epoch_end=report,
                              hooks=ctx.get("hooks") or (), on_step=lambda stats: log_step(tracker, asdict(stats)))
        if result.status == "nonfinite":
            reason = f"non-finite loss in epoch {result.epochs_done + 1}: {result.reason}"
            tracker.fail(reason)
            raise RuntimeError(f"trial {trial_id}: {reason}")
        if not reported and last is not None:
            # Restored from its final checkpoint (the search stopped before Tune saved that the trial
            # had finished): report that result again instead of training again.
            finished["final"] = True
            tune.report({**last.get("metrics", {}), "epoch": int(last["epochs_done"]), "step": int(last["step"]),
                         "mlflow_run_id": tracker.run_id}, checkpoint=resume_from)
