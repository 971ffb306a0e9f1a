"""The validation hold-out and labeled subset of a *sharded* train split, found in one streaming pass.

:func:`carve_shards` reads every shard of the split once and hands each sample to a
:class:`~igan.data.holdout.HoldOutPicker`, which keeps only the candidates it can still choose: the
validation and labeled samples come back as encoded image bytes (:class:`EncodedSplit`), never as
the whole split, so memory depends on ``classes x per-class counts``, not on the split's size.
The same pass counts how many validation samples each shard holds, so the training stream, which
skips them, still knows every rank's step count in advance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from igan.data.decoding import BatchDecoder
from igan.data.holdout import HoldOutPicker, HoldOutSpec, Picked
from igan.data.manifest import split_manifest
from igan.data.pixels import to_model_range

DECODE_THREADS = 2


def image_bytes(sample: dict) -> bytes:
    """The encoded image of a WebDataset sample dict (``png``, ``jpg`` or ``jpeg``)."""
    for ext in ("png", "jpg", "jpeg"):
        if ext in sample:
            return sample[ext]
    raise ValueError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no png/jpg image")


@dataclass
class EncodedSplit:
    """Labeled samples kept as encoded bytes, decoded batch by batch: ``items`` sorted by key, each
    a :class:`Picked` whose payload is the image bytes."""
    items: list[Picked]
    channels: int
    height: int
    width: int
    pixel_range: str | None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.items]

    def part(self, rank: int, world: int) -> "EncodedSplit":
        """Rank ``rank``'s share ``items[rank::world]`` (the shares of all ranks cover it once)."""
        return EncodedSplit(self.items[rank::world], self.channels, self.height, self.width, self.pixel_range)

    def batches(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images [B, C, H, W] in model range (uint8 when pixel_range is None), labels int64 [B])``."""
        decoder = BatchDecoder(self.channels, self.height, self.width, threads=DECODE_THREADS)
        try:
            for s in range(0, len(self.items), size):
                chunk = self.items[s:s + size]
                images = decoder.decode([p.payload for p in chunk], [p.key for p in chunk]).contiguous()
                if self.pixel_range is not None:
                    images = to_model_range(images, self.pixel_range)
                yield images, torch.tensor([p.label for p in chunk], dtype=torch.int64)
        finally:
            decoder.close()

    def decode_all(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item at once: ``(images [N, C, H, W], labels int64 [N])``; for small subsets."""
        parts = list(self.batches(max(1, len(self.items))))
        if not parts:
            shape = (0, self.channels, self.height, self.width)
            dtype = torch.uint8 if self.pixel_range is None else torch.float32
            return torch.zeros(shape, dtype=dtype), torch.zeros(0, dtype=torch.int64)
        return parts[0]


@dataclass
class Carved:
    """What one pass over a sharded train split found: ``validation`` and ``labeled`` samples and,
    per shard in manifest order, how many validation samples it holds (``held_per_shard``)."""
    validation: EncodedSplit
    labeled: EncodedSplit
    held_per_shard: list[int]

    @property
    def held_keys(self) -> frozenset[str]:
        return frozenset(self.validation.keys)


def carve_shards(root: str, split: str, spec: HoldOutSpec, pixel_range: str | None = None,
                 verify: bool = True) -> Carved:
    """Read ``root/split`` once and choose its validation hold-out and labeled subset by ``spec``
    (the same choice as :func:`igan.data.holdout.choose` over the split's keys). The pass checks
    every shard against the manifest (:func:`igan.data.shards.iter_split`; ``verify``: sha256 too),
    so the per-shard counts a stream's step count comes from are the shards' real counts."""
    from igan.data.shards import iter_split

    folder, manifest = split_manifest(root, split)
    picker = HoldOutPicker(spec)
    for index, sample in iter_split(folder, manifest, verify):
        picker.offer(sample["__key__"], int(sample["cls"]), (image_bytes(sample), index))
    val, lab = picker.result()
    held = [0] * len(manifest["shards"])
    for p in val:
        held[p.payload[1]] += 1
    h, w = manifest["image_size"]
    channels = int(manifest["channels"])

    def encoded(picked: list[Picked]) -> EncodedSplit:
        return EncodedSplit([Picked(p.key, p.label, p.payload[0]) for p in picked], channels, h, w, pixel_range)

    return Carved(encoded(val), encoded(lab), held)


__all__ = ["Carved", "EncodedSplit", "carve_shards", "image_bytes"]
