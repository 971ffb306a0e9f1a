"""The plain PyTorch training loop (no Ray): what a researcher calls to train an improved GAN on one
machine, and the reference the Ray Train worker is measured against."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from igan.checkpoint import read_state
from igan.config import Config
from igan.data.feed import MemoryFeed
from igan.data.memory import ArraySplit
from igan.trainer import Trainer

EpochCallback = Callable[[Trainer, int, dict], None]


def fit(cfg: Config, train: ArraySplit, *, trainer: Trainer | None = None, max_steps: int | None = None,
        on_epoch_end: EpochCallback | None = None, progress: bool = False) -> Trainer:
    """Train ``cfg`` on ``train`` from the trainer's current (epoch, step) to ``train.epochs``.

    The validation hold-out (``data.val_per_class`` per class) is carved out of ``train`` first and
    never trained on (:class:`~igan.data.feed.MemoryFeed`; ``MemoryFeed(train, cfg).validation`` is it).
    Resumes exactly when given a trainer restored with :meth:`Trainer.load_state_dict`: the batch
    order of an epoch depends only on ``(seed, epoch)``, so the loop skips to the saved step.
    ``max_steps`` stops after that many total steps (for tests and checkpoints mid-epoch).
    ``on_epoch_end(trainer, epoch, mean_losses)`` runs after each finished epoch.
    Returns the trainer.
    """
    batches = MemoryFeed(train, cfg)
    if trainer is None:
        trainer = Trainer(cfg, init_batch=batches.init_batch())
    per_epoch = len(batches)
    start_epoch, start_batch = divmod(trainer.step, per_epoch)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.train.epochs):
        trainer.set_epoch(epoch)
        sums: dict[str, float] = {}
        count = 0
        for batch in batches.epoch(epoch, start=start_batch if epoch == start_epoch else 0):
            if max_steps is not None and trainer.step >= max_steps:
                return trainer
            logs = trainer.train_step(*batch)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
        means = {k: v / max(count, 1) for k, v in sums.items()}
        if progress:
            loss_text = " ".join(f"{k}={v:.4f}" for k, v in sorted(means.items()))
            print(f"epoch {epoch + 1}/{cfg.train.epochs} step {trainer.step} {loss_text} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
        if on_epoch_end is not None:
            on_epoch_end(trainer, epoch, means)
    return trainer


def save_checkpoint(trainer: Trainer, path: str | Path) -> Path:
    """Write :meth:`Trainer.state_dict` to ``path`` atomically (temp file then rename); returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(trainer.state_dict(), tmp)
    tmp.replace(path)
    return path


def load_checkpoint(cfg: Config, path: str | Path, device: str | None = None) -> Trainer:
    """A fresh Trainer for ``cfg`` restored from a :func:`save_checkpoint` file. The file is read
    without running code (:func:`igan.checkpoint.read_state`); CheckpointError (one line) when it
    holds anything but tensors and plain values."""
    state = read_state(path)  # before the Trainer: a refused file builds nothing
    trainer = Trainer(cfg, device=device)
    trainer.load_state_dict(state)
    return trainer
