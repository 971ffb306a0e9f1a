"""In-memory splits and the authors' epoch batching for the plain training loop.

Each epoch draws, from ``[seed, epoch]`` alone: a permutation of the unlabeled set, a second
independent permutation (the feature-matching batch), and the labeled subset tiled to the
unlabeled size and shuffled. So any (epoch, batch index) is reproducible without replaying.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
import torch

from igan.config import Config
from igan.data.labeled import select_labeled
from igan.data.pixels import to_model_range

EMBEDDED = ("digits", "ring8", "grid25")


@dataclass
class ArraySplit:
    """A split held in memory: ``x`` float in model range ``[N, C, H, W]`` (toy sets ``[N, 2]``),
    ``y`` int64 class (or mode) labels ``[N]``."""
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


class Batch(NamedTuple):
    x_unl: torch.Tensor
    x_unl2: torch.Tensor
    x_lab: torch.Tensor | None
    y_lab: torch.Tensor | None


def load_embedded(cfg: Config, split: str) -> ArraySplit:
    """``digits``, ``ring8`` or ``grid25`` split in model range, without shards."""
    name = cfg.data.dataset
    if name == "digits":
        from igan.data.digits import load_digits_split

        images, labels = load_digits_split(split)
        x = to_model_range(torch.from_numpy(images)[:, None], cfg.data.pixel_range)
        return ArraySplit(x, torch.from_numpy(labels))
    if name in ("ring8", "grid25"):
        from igan.data.toy import load_toy_split

        points, modes = load_toy_split(name, split)
        return ArraySplit(torch.from_numpy(points), torch.from_numpy(modes))
    raise ValueError(f"'{name}' is not embedded; shard it first (igan shard {name} ...) and pass its folder")


class EpochBatches:
    """Deterministic per-epoch batches over an :class:`ArraySplit` (drop-last)."""

    def __init__(self, train: ArraySplit, cfg: Config):
        self.train, self.batch_size, self.seed = train, cfg.data.batch_size, cfg.train.seed
        per_class = cfg.data.labels_per_class if cfg.techniques.semi_supervised else 0
        self.labeled = torch.from_numpy(select_labeled(train.y.numpy(), per_class, cfg.data.label_seed,
                                                       cfg.data.num_classes))
        if len(train) < self.batch_size:
            raise ValueError(f"the training split has {len(train)} examples, fewer than data.batch_size={self.batch_size}")
        cap = cfg.train.steps_per_epoch
        self.num_batches = len(train) // self.batch_size if cap == 0 else min(cap, len(train) // self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches ``start..len-1`` of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        n, b = len(self.train), self.batch_size
        perm, perm2 = torch.from_numpy(rng.permutation(n)), torch.from_numpy(rng.permutation(n))
        lab = None
        if len(self.labeled):
            reps = -(-n // len(self.labeled))
            tiled = self.labeled.repeat(reps)
            lab = tiled[torch.from_numpy(rng.permutation(len(tiled)))]
        for i in range(start, self.num_batches):
            sl = slice(i * b, (i + 1) * b)
            x_lab = y_lab = None
            if lab is not None:
                x_lab, y_lab = self.train.x[lab[sl]], self.train.y[lab[sl]]
            yield Batch(self.train.x[perm[sl]], self.train.x[perm2[sl]], x_lab, y_lab)
