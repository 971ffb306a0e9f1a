"""igan's one training loop, used everywhere a model trains: :func:`fit` (one machine, no Ray), the
Ray Train worker and the local Tune trial are thin adapters over :func:`train_epochs`.

The loop trains epoch after epoch and calls what its caller passes in: ``evaluate`` (metrics after
an epoch), ``on_epoch_end`` (report, log, checkpoint; returning True stops the loop) and ``hooks``,
objects whose optional ``on_epoch_start(rank, epoch)`` and ``on_batches(rank, epoch, batches)``
methods run at the start of each epoch: the seam through which tests inject faults (a crash, a
wait, a poisoned batch) without switches in production code. ``on_step`` receives this rank's
losses and throughput every ``train.log_every`` steps (:class:`StepStats`).

With several ranks (``world`` > 1) every step ends with one collective that settles the ranks'
stops together (:mod:`igan.distributed`), so a non-finite loss or a data error on one rank stops
every rank at the same step instead of leaving the others waiting in DDP.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from igan.config import Config
from igan.data.feed import MemoryFeed
from igan.data.manifest import ShardDataError
from igan.data.memory import ArraySplit
from igan.distributed import END, AgreedDataError, data_error_reason, mean_over_ranks, settle
from igan.trainer import NonFiniteLossError, Trainer


@dataclass
class EpochEnd:
    """What one finished epoch produced. ``epoch`` counts epochs done (1-based)."""
    epoch: int
    step: int
    metrics: dict[str, float]
    grid: Any = None
    elapsed: float = 0.0
    last: bool = False


@dataclass
class LoopResult:
    """How :func:`train_epochs` ended: ``status`` is ``finished`` (every epoch), ``nonfinite`` (a
    loss became NaN/inf on some rank: ``reason``), ``max_steps`` or ``stopped`` (``on_epoch_end``
    asked)."""
    status: str
    step: int
    epochs_done: int
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""


@dataclass
class StepStats:
    """This rank's last ``train.log_every`` steps: ``step`` (steps done, global), ``epoch`` (0-based,
    in progress), ``batch`` (steps done in it) of ``batches``; ``losses`` averaged over the window;
    ``images_per_s`` (real images of the unlabeled batch per second of wall time), ``step_time_s``
    (seconds per step, waiting for data included) and ``data_wait_fraction`` (the share of that time
    spent waiting for the next batch)."""
    step: int
    epoch: int
    batch: int
    batches: int
    losses: dict[str, float]
    images_per_s: float
    step_time_s: float
    data_wait_fraction: float


class StepMeter:
    """Accumulates steps between two :class:`StepStats` reports (wall times from ``perf_counter``)."""

    def __init__(self, every: int, on_step: Callable[[StepStats], None], epoch: int, batch: int, batches: int):
        self.every, self.on_step, self.epoch, self.batch, self.batches = max(1, every), on_step, epoch, batch, batches
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = self.images = 0
        self.wait_s = self.total_s = 0.0

    def record(self, step: int, logs: dict[str, float], images: int, wait_s: float, total_s: float) -> None:
        """Add one step (``step``: steps done after it); reports when ``step`` is a multiple of ``every``."""
        self.batch += 1
        self.count += 1
        self.images += images
        self.wait_s += wait_s
        self.total_s += total_s
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        if step % self.every:
            return
        total = max(self.total_s, 1e-9)
        self.on_step(StepStats(step, self.epoch, self.batch, self.batches,
                               {k: v / self.count for k, v in sorted(self.sums.items())},
                               self.images / total, total / self.count, self.wait_s / total))
        self._reset()


Evaluate = Callable[[Trainer, int, dict], "tuple[dict[str, float], Any]"]


def run_epoch(trainer: Trainer, batches: Iterable, world: int = 1, rank: int = 0,
              max_steps: int | None = None, meter: StepMeter | None = None
              ) -> tuple[dict[str, float], tuple[str, str] | None]:
    """Train on ``batches`` (this rank's). Returns ``(losses averaged over steps and ranks, None)``
    at the end of the batches, ``({}, ("nonfinite", reason))`` when a loss became non-finite on any
    rank, or ``(partial means, ("max_steps", ""))`` once the trainer reached ``max_steps``. Raises
    AgreedDataError on every rank when reading a batch failed on any rank, or when the ranks'
    batches ran out at different steps. ``meter`` (optional) records each step's time."""
    sums: dict[str, float] = {}
    count = 0
    stream = iter(batches)
    clock = time.perf_counter
    t0 = clock()
    batch, stop = _fetch(stream, rank)
    waited = clock() - t0
    while True:
        if stop is None and max_steps is not None and trainer.step >= max_steps:
            stop = ("max_steps", "")
        stop = settle(stop, trainer.device, world, count)
        if stop is not None:
            break
        try:
            logs = trainer.train_step(*batch)
        except NonFiniteLossError as exc:
            stop = ("nonfinite", f"rank {rank}: {exc}")
            continue
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        if meter is not None:
            meter.record(trainer.step, logs, len(batch[0]), waited, clock() - t0)
        t0 = clock()
        batch, stop = _fetch(stream, rank)
        waited = clock() - t0
    if stop[0] == "data":
        raise AgreedDataError(stop[1])
    if stop[0] == "nonfinite":
        return {}, stop
    means = mean_over_ranks({k: v / max(count, 1) for k, v in sorted(sums.items())}, trainer.device, world)
    return means, (None if stop == END else stop)


def _fetch(stream, rank: int) -> tuple[Any, tuple[str, str] | None]:
    """``(next batch, None)``, ``(None, END)`` at the end, or ``(None, ("data", reason))`` when
    reading it raised a ShardDataError."""
    try:
        return next(stream), None
    except StopIteration:
        return None, END
    except ShardDataError as exc:
        return None, ("data", f"rank {rank}: {data_error_reason(exc)}")


def train_epochs(trainer: Trainer, feed, cfg: Config, *, start_epoch: int = 0, start_batch: int = 0,
                 evaluate: Evaluate | None = None, on_epoch_end: Callable[[EpochEnd], bool | None] | None = None,
                 hooks: Sequence[object] = (), world: int = 1, rank: int = 0,
                 max_steps: int | None = None, on_step: Callable[[StepStats], None] | None = None) -> LoopResult:
    """Epochs ``start_epoch .. train.epochs - 1`` of ``feed`` (``feed.epoch(e, start=...)`` yields
    this rank's batches; ``start_batch`` skips into the first epoch, for a resume mid-epoch).

    After each epoch: ``evaluate(trainer, epoch, mean losses) -> (metrics, grid)`` (default: the
    losses, no grid; a collective when ``world`` > 1), then ``on_epoch_end(EpochEnd)``; a True
    return stops the loop. ``on_step(StepStats)`` every ``train.log_every`` steps. Returns a
    :class:`LoopResult`; AgreedDataError propagates."""
    t0, metrics = time.perf_counter(), {}
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.train.epochs):
        for hook in hooks:
            if hasattr(hook, "on_epoch_start"):
                hook.on_epoch_start(rank, epoch)
        trainer.set_epoch(epoch)
        skip = start_batch if epoch == start_epoch else 0
        batches = feed.epoch(epoch, start=skip) if skip else feed.epoch(epoch)
        for hook in hooks:
            if hasattr(hook, "on_batches"):
                batches = hook.on_batches(rank, epoch, batches)
        meter = None if on_step is None else StepMeter(cfg.train.log_every, on_step, epoch, skip, len(feed))
        losses, stop = run_epoch(trainer, batches, world, rank, max_steps, meter)
        if stop is not None and stop[0] == "nonfinite":
            return LoopResult("nonfinite", trainer.step, epoch, metrics, reason=stop[1])
        if stop is not None:  # max_steps, mid-epoch: no evaluation of a partial epoch
            return LoopResult("max_steps", trainer.step, epoch, metrics)
        metrics, grid = evaluate(trainer, epoch, losses) if evaluate is not None else (dict(losses), None)
        end = EpochEnd(epoch + 1, trainer.step, metrics, grid, time.perf_counter() - t0,
                       last=epoch + 1 == cfg.train.epochs)
        if on_epoch_end is not None and on_epoch_end(end):
            return LoopResult("stopped", trainer.step, epoch + 1, metrics)
    return LoopResult("finished", trainer.step, cfg.train.epochs, metrics)


def fit(cfg: Config, train: ArraySplit, *, trainer: Trainer | None = None, max_steps: int | None = None,
        on_epoch_end: Callable[[Trainer, int, dict], None] | None = None, progress: bool = False,
        hooks: Sequence[object] = ()) -> Trainer:
    """Train ``cfg`` on ``train`` (in memory, one process) from the trainer's current step to
    ``train.epochs``; returns the trainer.

    The validation hold-out (``data.val_per_class`` per class) is carved out of ``train`` first and
    never trained on (:class:`~igan.data.feed.MemoryFeed`; ``MemoryFeed(train, cfg).validation`` is it).
    Resumes exactly when given a trainer restored from a checkpoint (:mod:`igan.checkpoint`): the
    batch order of an epoch depends only on ``(seed, epoch)``, so the loop skips to the saved step.
    ``max_steps`` stops after that many total steps. ``on_epoch_end(trainer, epoch, mean_losses)``
    runs after each finished epoch (``epoch`` 0-based).
    """
    feed = MemoryFeed(train, cfg)
    if trainer is None:
        trainer = Trainer(cfg, init_batch=feed.init_batch())
    start_epoch, start_batch = divmod(trainer.step, len(feed))

    def epoch_done(end: EpochEnd) -> None:
        if progress:
            loss_text = " ".join(f"{k}={v:.4f}" for k, v in sorted(end.metrics.items()))
            print(f"epoch {end.epoch}/{cfg.train.epochs} step {end.step} {loss_text} ({end.elapsed:.0f}s)", flush=True)
        if on_epoch_end is not None:
            on_epoch_end(trainer, end.epoch - 1, end.metrics)

    train_epochs(trainer, feed, cfg, start_epoch=start_epoch, start_batch=start_batch, on_epoch_end=epoch_done,
                 hooks=hooks, max_steps=max_steps)
    return trainer
