"""In-memory splits (:class:`ArraySplit`) and the embedded data sets that need no shards."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from igan.config import Config
from igan.data.pixels import to_model_range

EMBEDDED = ("digits", "ring8", "grid25")


@dataclass
class ArraySplit:
    """A split held in memory: ``x`` float in model range ``[N, C, H, W]`` (toy sets ``[N, 2]``),
    ``y`` int64 class (or mode) labels ``[N]``, ``keys`` the samples' shard keys (default: the
    index as ``%06d``, which is how ``igan shard`` keys the embedded sets)."""
    x: torch.Tensor
    y: torch.Tensor
    keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = [f"{i:06d}" for i in range(len(self.y))]
        if len(self.keys) != len(self.y) or len(self.x) != len(self.y):
            raise ValueError(f"ArraySplit: {len(self.x)} images, {len(self.y)} labels, {len(self.keys)} keys")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "ArraySplit":
        """The examples at ``index`` (``int64 [M]``), keys kept."""
        return ArraySplit(self.x[index], self.y[index], [self.keys[i] for i in index.tolist()])

    def part(self, rank: int, world: int) -> "ArraySplit":
        """Rank ``rank``'s share ``[rank::world]`` (the shares of all ranks cover the split once)."""
        return self.subset(torch.arange(rank, len(self), world))

    def batches(self, size: int):
        """``(x, y)`` chunks of at most ``size`` examples, in order."""
        for s in range(0, len(self), size):
            yield self.x[s:s + size], self.y[s:s + size]


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
