"""Faults the tests inject through igan's hook seam (``hooks=[...]`` of the training loop, of
``run_training``/``run_search``/``igan.cli.main`` and of ``shard_dataset``): production code only
calls the hooks it is given. Pickled by value, so Ray workers on any node can run them without
importing the tests."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import ray.cloudpickle
import torch

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class FailOnce:
    """Raise once, on rank ``rank`` at the start of (1-based) epoch ``epoch``; ``marker`` (created
    first) records that it happened, so the restarted worker goes on."""

    def __init__(self, rank: int, epoch: int, marker: str | Path):
        self.rank, self.epoch, self.marker = rank, epoch, str(marker)

    def on_epoch_start(self, rank: int, epoch: int) -> None:
        if rank != self.rank or epoch + 1 != self.epoch or os.path.exists(self.marker):
            return
        Path(self.marker).parent.mkdir(parents=True, exist_ok=True)
        Path(self.marker).write_text(f"rank {rank} epoch {epoch + 1}\n")
        raise RuntimeError(f"injected failure on rank {rank} at the start of epoch {epoch + 1}")


class PoisonEpoch:
    """Rank 0's first batch of (1-based) epoch ``epoch`` gets NaN images."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_batches(self, rank: int, epoch: int, batches):
        if rank != 0 or epoch + 1 != self.epoch:
            return batches
        return self._poisoned(batches)

    @staticmethod
    def _poisoned(batches):
        for i, batch in enumerate(batches):
            yield batch._replace(x_unl=torch.full_like(batch.x_unl, float("nan"))) if i == 0 else batch


class HoldAt:
    """Every rank waits at the start of (1-based) epoch ``epoch`` until the file ``gate`` exists, so
    a test can act (e.g. take a node away) while the job is mid-run with a checkpoint behind it."""

    def __init__(self, epoch: int, gate: str | Path, poll_s: float = 0.2):
        self.epoch, self.gate, self.poll_s = epoch, str(gate), poll_s

    def on_epoch_start(self, rank: int, epoch: int) -> None:
        while epoch + 1 == self.epoch and not os.path.exists(self.gate):
            time.sleep(self.poll_s)


class StopSearchAfter:
    """Stop a search the way Ctrl+C does once ``n`` trials have completed (Tune saves its state and
    returns; the unfinished trials stay resumable)."""

    def __init__(self, n: int):
        self.n = n

    def on_trial_complete(self, count: int) -> None:
        if count == self.n and threading.current_thread() is threading.main_thread():
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's own interrupt handler


class CrashWhileSharding:
    """Raise halfway through writing every shard from index ``first`` on."""

    def __init__(self, first: int):
        self.first = first

    def on_sample(self, split: str, index: int, position: int, count: int) -> None:
        if index >= self.first and position >= count // 2:
            raise RuntimeError(f"simulated crash while writing shard {index} of {split}")
