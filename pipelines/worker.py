"""The function every Ray Train worker runs: igan's one training loop (:func:`igan.loop.train_epochs`)
with G and D under DDP, fed this rank's batches, evaluated by :class:`igan.evaluator.Evaluator` and
checkpointed through Ray Train every ``train.checkpoint_every`` epochs and at the end, in igan's
checkpoint format (:mod:`igan.checkpoint`: every rank's RNG state included, Ray Train merges the
ranks' folders).

Rank 0 sends one event per epoch (losses, metrics, a sample grid) to the driver through a Ray queue
(``events``); the driver prints progress and logs to MLflow, so workers need no MLflow access.
Events: ``start`` (also each restart of the worker group: ``epochs_done``, ``nodes`` = every rank's
Ray node id, ``placement_group``), ``step`` (every ``train.log_every`` steps: losses and throughput,
:class:`igan.loop.StepStats`), ``epoch`` (metrics, grid, every rank's CUDA peak memory), ``nonfinite``
(the run stopped on a NaN/inf loss), ``data_error`` (the run stopped on a
:class:`~igan.data.manifest.ShardDataError`), ``done``; and from any rank ``log`` (igan's own
warnings and the worker's error, with the rank), since Ray does not forward worker output.

Data errors are permanent (a shard that contradicts its manifest does not heal on a retry), so
they do not go to Ray Train as a worker failure, which it would retry ``max_failures`` times: the
ranks agree on the error at points they all reach (after opening the data, before each step, after
reading an evaluation split), then every worker returns normally after rank 0 sent ``data_error``.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from typing import Any

import torch

from igan.checkpoint import restore, write_checkpoint
from igan.config import Config
from igan.data.feed import make_feed
from igan.data.manifest import ShardDataError
from igan.distributed import AgreedDataError, all_gather, data_error_reason, raise_agreed
from igan.evaluator import Evaluator
from igan.loop import EpochEnd, StepStats, train_epochs
from igan.trainer import Trainer


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The function Ray Train runs on every worker. ``loop_config``: ``config`` (Config dict),
    ``data_root`` (shard root or None for the embedded toy sets), ``run_id``, ``events`` (a
    ``ray.util.queue.Queue`` or None: print instead), ``threads`` (torch threads, 0: leave),
    ``report_every_epoch`` (report metrics to Ray Train after every epoch, e.g. for Tune) and
    ``hooks`` (objects passed to :func:`igan.loop.train_epochs`: tests inject faults with them)."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if loop_config.get("threads"):
        torch.set_num_threads(int(loop_config["threads"]))
    cfg = Config.from_dict(loop_config["config"])
    events = Events(loop_config.get("events"), rank)
    forward_warnings(events)
    try:
        feed, evaluator, init_batch = open_data(cfg, loop_config.get("data_root"), rank, world)
        trainer, done = build(cfg, init_batch, rank, world)
        events.send("start", epochs_done=done, step=trainer.step, steps_per_epoch=len(feed), world_size=world,
                    epochs=cfg.train.epochs, nodes=all_gather(_node_id(), world), placement_group=_placement_group())
        report = Reporter(trainer, cfg, rank, world, events, loop_config)
        result = train_epochs(trainer, feed, cfg, start_epoch=done, evaluate=evaluator, on_epoch_end=report,
                              hooks=loop_config.get("hooks") or (), world=world, rank=rank,
                              on_step=step_reporter(events, world) if rank == 0 else None)
        if result.status == "nonfinite":
            events.send("nonfinite", reason=result.reason, epoch=result.epochs_done + 1, step=result.step)
        else:
            events.send("done", step=trainer.step, epochs_done=cfg.train.epochs, metrics=result.metrics)
    except AgreedDataError as exc:  # every rank is here: end without an exception, so it is not retried
        events.send("data_error", reason=str(exc))
    except Exception as exc:  # the driver hears it from this rank; Ray Train retries or gives up
        events.log("ERROR", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "))
        raise


def step_reporter(events: "Events", world: int):
    """Rank 0's ``on_step``: a ``step`` event, images/s summed over the ``world`` ranks (they step
    in lockstep with equal batches)."""
    def report(stats: StepStats) -> None:
        fields = dataclasses.asdict(stats)
        fields["images_per_s"] = stats.images_per_s * world
        events.send("step", **fields)
    return report


def forward_warnings(events: "Events") -> None:
    """Send igan's own warnings (raised from ``igan/`` or ``pipelines/``) to the driver as ``log``
    events; other libraries' warnings stay in the worker's log."""
    import igan
    import pipelines

    ours = tuple(os.path.dirname(m.__file__) + os.sep for m in (igan, pipelines))
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(ours):
            events.log("WARNING", f"{category.__name__}: {message}")
        else:
            shown(message, category, filename, lineno, file, line)
    warnings.showwarning = show


def open_data(cfg: Config, data_root: str | None, rank: int, world: int):
    """``(feed, evaluator, init batch)`` of this rank: every read of the data before training (the
    feed's pass over the split, the scorer's training data, the initialisation batch).
    AgreedDataError on every rank when it failed on any with a ShardDataError; a collective
    when ``world`` > 1, before any other."""
    import ray.train.torch

    feed = evaluator = init_batch = None
    failure = None
    try:
        feed = make_feed(cfg, data_root, rank, world)
        # The evaluator before the Trainer: training a domain classifier draws from torch's global
        # RNG, which the Trainer seeds when it is built, so the run does not depend on whether the
        # scorer was cached.
        evaluator = Evaluator(cfg, data_root, rank, world, feed.validation)
        init_batch = feed.init_batch()
    except ShardDataError as exc:
        failure = data_error_reason(exc)
    raise_agreed(failure, ray.train.torch.get_device(), world)
    return feed, evaluator, init_batch


def build(cfg: Config, init_batch: torch.Tensor | None, rank: int, world: int) -> tuple[Trainer, int]:
    """This rank's Trainer (under DDP when ``world`` > 1), initialised from ``init_batch`` (the
    feed's) and restored from Ray Train's latest checkpoint when there is one. Returns
    ``(trainer, epochs_done)``."""
    import ray.train
    import ray.train.torch

    trainer = Trainer(cfg, init_batch=init_batch, device=ray.train.torch.get_device(), wrap=_wrapper(world))
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        seed_rank(trainer, cfg, rank)
        return trainer, 0
    with ckpt.as_directory() as d:
        meta, rng_restored = restore(trainer, d, rank)
    done = int(meta["epochs_done"])
    if not rng_restored:  # the world size changed: a fresh, distinct stream per rank
        seed_rank(trainer, cfg, rank, salt=done + 1)
    return trainer, done


def seed_rank(trainer: Trainer, cfg: Config, rank: int, salt: int = 0) -> None:
    """Give rank ``rank`` > 0 its own noise streams (latent z, dropout and Gaussian noise); rank 0
    keeps the Trainer's, so one worker reproduces the plain loop."""
    if rank == 0 and salt == 0:
        return
    base = cfg.train.seed * 1_000_003 + 7919 * rank + 104_729 * salt
    trainer.noise.manual_seed(base + 1)
    torch.manual_seed(base + 2)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def _placement_group():
    """The placement group this worker group runs in (None outside one): a Tune trial that is stopped
    while its TorchTrainer still runs removes it, or its resources would stay reserved."""
    import ray.util

    return ray.util.get_current_placement_group() if ray.is_initialized() else None


def _wrapper(world: int):
    """``prepare_model`` (DDP when ``world`` > 1). Buffers are not broadcast on every forward: the
    only ones are running statistics used only in eval mode (G's batch norm; the ImageNet D's cross
    batch norm and real-to-generated closeness, from each rank's own batches as the authors' batch
    statistics are per GPU) and VBN's fixed reference noise (identical on all ranks from the start)."""
    import ray.train.torch

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"broadcast_buffers": False})
    return wrap


class Reporter:
    """The loop's ``on_epoch_end`` on a Ray Train worker: the epoch event to the driver, then a
    checkpoint reported to Ray Train when one is due (a collective: every rank calls it), or the
    metrics alone when ``report_every_epoch``."""

    def __init__(self, trainer: Trainer, cfg: Config, rank: int, world: int, events: "Events", loop_config: dict):
        self.trainer, self.cfg, self.rank, self.world, self.events = trainer, cfg, rank, world, events
        self.run_id, self.every_epoch = loop_config.get("run_id"), loop_config.get("report_every_epoch")

    def __call__(self, end: EpochEnd) -> None:
        import ray.train

        self.events.send("epoch", epoch=end.epoch, step=end.step, metrics=end.metrics, grid=end.grid,
                         elapsed=end.elapsed, cuda_peak_mib=self.cuda_peak_mib())
        report = {"epoch": end.epoch, "step": end.step, **end.metrics}
        if end.epoch % self.cfg.train.checkpoint_every == 0 or end.last:
            with tempfile.TemporaryDirectory() as tmp:
                write_checkpoint(tmp, self.trainer, rank=self.rank, epochs_done=end.epoch,
                                 meta={"run_id": self.run_id, "metrics": end.metrics})
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        elif self.every_epoch:
            ray.train.report(report)


    def cuda_peak_mib(self) -> list[float] | None:
        """Every rank's peak CUDA memory allocated so far (MiB), in rank order; None off CUDA. A
        collective when the world size is above 1."""
        if self.trainer.device.type != "cuda":
            return None
        import torch

        mine = torch.cuda.max_memory_allocated(self.trainer.device) / 2**20
        return [round(float(v), 1) for v in all_gather(mine, self.world)]


class Events:
    """A worker's messages to the driver, put on a Ray queue (printed when there is none): the run's
    events from rank 0 (:meth:`send`; other ranks send none) and ``log`` lines from any rank."""

    def __init__(self, queue, rank: int):
        self.queue, self.rank = queue, rank

    def _put(self, event: dict) -> None:
        if self.queue is not None:
            self.queue.put(event)
        else:
            shown = {k: v for k, v in event.items() if k != "grid"}
            print(f"igan worker: {shown}", flush=True)

    def send(self, kind: str, **fields) -> None:
        """Rank 0's event ``kind``; a no-op on the other ranks."""
        if self.rank == 0:
            self._put({"kind": kind, **fields})

    def log(self, level: str, message: str) -> None:
        """A ``log`` event from this rank (``level``: WARNING or ERROR)."""
        self._put({"kind": "log", "rank": self.rank, "level": level, "message": message})
