"""An epoch of one split's shards streamed to its consumers (:class:`ShardDataset`,
:func:`make_loader`).

Exactly once per epoch. The epoch's shard order is a permutation drawn from ``(seed, epoch)``. The
consumers are the ``world_size`` Ray Train workers times the ``num_workers`` DataLoader workers of
each; consumer ``c = rank * num_workers + worker_id`` of ``C`` reads shards ``order[c::C]``
(``split_by="shard"``), or, when there are fewer shards than consumers, every shard keeping the
samples whose position in the epoch's stream is ``c`` modulo ``C`` (``split_by="sample"``). Either
way every sample is yielded once per epoch by exactly one consumer. Each consumer then shuffles
through a buffer of ``shuffle_buffer`` samples seeded by ``(seed, epoch, c)``.

Batches. With ``batch_size`` set, each consumer yields whole batches ``(images [B, C, H, W],
labels [B])`` of its own stream (the last one short unless ``drop_last``; images in
``channels_last`` memory, see :mod:`igan.data.decoding`), decoded by
:class:`~igan.data.decoding.BatchDecoder` on ``decode_threads`` threads, ``prefetch`` batches
ahead of the one being consumed. Use them with ``DataLoader(batch_size=None)``, or with no
DataLoader at all: threads in the training process decode faster than worker processes on
small machines (no shared-memory hand-over per batch), and worker processes remain available
(``num_workers``) where the reading itself needs more cores.

Every shard is checked as it is read (:mod:`igan.data.shard_tar`). This module is plain PyTorch:
the caller passes its Ray Train rank and world size.
"""
from __future__ import annotations

from collections import deque
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from igan.data.carve import image_bytes
from igan.data.decoding import BatchDecoder, decode_image
from igan.data.manifest import split_manifest
from igan.data.pixels import to_model_range
from igan.data.shard_tar import iter_tar, shard_specs

SPLIT_MODES = ("auto", "shard", "sample")


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """Indices of the shards in the order read in ``epoch``: a permutation drawn from
    ``(seed, epoch)`` (identity when ``shuffle`` is false)."""
    if not shuffle:
        return list(range(num_shards))
    return [int(i) for i in np.random.default_rng([seed, epoch, 7]).permutation(num_shards)]


class ShardDataset(IterableDataset):
    """An epoch of one split's samples for this consumer (see the module doc for the split rules).

    Args: ``root`` shard root (path or URI); ``split``; ``rank``/``world_size`` of the Ray Train
    worker; ``shuffle`` (shard order and buffer); ``shuffle_buffer`` samples (0: none); ``seed``;
    ``epoch`` (or call :meth:`set_epoch` before each epoch; with ``persistent_workers`` the loader
    keeps the epoch of its first iteration); ``pixel_range`` None for ``uint8`` images, else
    ``unit``/``symmetric``/``authors`` floats; ``split_by`` ``auto``/``shard``/``sample``;
    ``with_keys`` yields ``(key, image, label)`` (samples only). ``batch_size`` yields batches
    ``(images [B, C, H, W], labels int64 [B])`` instead of samples, ``drop_last`` drops a short
    last one, ``decode_threads`` and ``prefetch`` (batches decoding ahead) as in the module doc.
    ``exclude``: keys never yielded (the validation hold-out of a train split), with
    ``excluded_per_shard`` how many of them each shard holds, so counts stay exact; positions for
    ``split_by="sample"`` count only the samples that remain. ``verify``: check each shard's sha256
    against the manifest as it is read (the counts, labels and names are checked either way).
    """

    def __init__(self, root: str, split: str = "train", *, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, shuffle_buffer: int = 2000, seed: int = 0, epoch: int = 0,
                 pixel_range: str | None = None, split_by: str = "auto", with_keys: bool = False,
                 batch_size: int | None = None, drop_last: bool = False, decode_threads: int = 1,
                 prefetch: int = 2, exclude: frozenset[str] = frozenset(),
                 excluded_per_shard: list[int] | None = None, verify: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}; got {rank}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if decode_threads < 1 or prefetch < 0:
            raise ValueError(f"decode_threads must be >= 1 and prefetch >= 0; got {decode_threads}, {prefetch}")
        if split_by not in SPLIT_MODES:
            raise ValueError(f"split_by must be one of {', '.join(SPLIT_MODES)}; got {split_by!r}")
        folder, self.manifest = split_manifest(root, split)
        self.specs = shard_specs(folder, self.manifest, verify)
        self.urls = [spec.url for spec in self.specs]
        # every rank's step count comes from these before a byte is read: iter_tar holds each shard to them
        self.counts = [spec.num_samples for spec in self.specs]
        if excluded_per_shard is not None:
            if len(excluded_per_shard) != len(self.counts) or sum(excluded_per_shard) != len(exclude):
                raise ValueError("excluded_per_shard must give, per shard, how many keys of exclude it holds")
            self.counts = [c - e for c, e in zip(self.counts, excluded_per_shard)]
        elif exclude:
            raise ValueError("exclude needs excluded_per_shard (the per-shard counts of excluded keys)")
        self.exclude = exclude
        self.root, self.split, self.rank, self.world_size = root, split, rank, world_size
        self.shuffle, self.shuffle_buffer, self.seed, self.epoch = shuffle, shuffle_buffer, seed, epoch
        self.pixel_range, self.split_by, self.with_keys = pixel_range, split_by, with_keys
        self.channels = int(self.manifest["channels"])
        self.batch_size, self.drop_last = batch_size, drop_last
        self.decode_threads, self.prefetch = decode_threads, prefetch

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s shard order and shuffle seed from the next iteration on."""
        self.epoch = int(epoch)

    def mode(self, num_consumers: int) -> str:
        """``shard`` or ``sample``: how the epoch is split over ``num_consumers``."""
        if self.split_by != "auto":
            return self.split_by
        return "shard" if len(self.urls) >= num_consumers else "sample"

    def plan(self, consumer: int, num_consumers: int) -> tuple[list[int], int, int]:
        """``(shard indices read, keep-modulus, keep-remainder)`` of ``consumer`` this epoch."""
        order = shard_order(len(self.urls), self.seed, self.epoch, self.shuffle)
        if self.mode(num_consumers) == "shard":
            return order[consumer::num_consumers], 1, 0
        return order, num_consumers, consumer

    def num_samples(self, num_workers: int = 0) -> int:
        """Samples this rank (all its DataLoader workers together) yields in the current epoch."""
        workers = max(1, num_workers)
        total = 0
        for w in range(workers):
            c, n = self.rank * workers + w, self.world_size * workers
            shards, mod, rem = self.plan(c, n)
            if mod == 1:
                total += sum(self.counts[i] for i in shards)
            else:
                total += len(range(rem, sum(self.counts), mod))
        return total

    def _consumer(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + wid, self.world_size * workers

    def samples(self) -> Iterator[dict]:
        """This consumer's raw WebDataset samples of the epoch, before shuffling and decoding."""
        c, n = self._consumer()
        shards, mod, rem = self.plan(c, n)
        position = 0
        for i in shards:
            for sample in iter_tar(self.urls[i], expect=self.specs[i]):
                if sample["__key__"] in self.exclude:
                    continue
                if mod == 1 or position % mod == rem:
                    yield sample
                position += 1

    def __iter__(self):
        c, _ = self._consumer()
        rng = np.random.default_rng([self.seed, self.epoch, c, 11])
        stream = self.samples()
        if self.shuffle and self.shuffle_buffer > 1:
            stream = shuffle_buffer(stream, self.shuffle_buffer, rng)
        if self.batch_size is not None:
            yield from self._batches(stream)
            return
        for sample in stream:
            image = decode_image(image_bytes(sample), self.channels)
            if self.pixel_range is not None:
                image = to_model_range(image, self.pixel_range)
            label = torch.tensor(int(sample["cls"]), dtype=torch.int64)
            yield (sample["__key__"], image, label) if self.with_keys else (image, label)

    def _batches(self, stream: Iterator[dict]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        h, w = self.manifest["image_size"]
        decoder = BatchDecoder(self.channels, h, w, self.decode_threads)
        pending: deque = deque()
        try:
            for chunk in _chunks(stream, self.batch_size):
                if self.drop_last and len(chunk) < self.batch_size:
                    break
                handle = decoder.submit([image_bytes(s) for s in chunk], [s["__key__"] for s in chunk])
                pending.append((handle, torch.tensor([int(s["cls"]) for s in chunk], dtype=torch.int64)))
                if len(pending) > self.prefetch:
                    yield self._finish(*pending.popleft())
            while pending:
                yield self._finish(*pending.popleft())
        finally:
            decoder.close()

    def _finish(self, handle, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = BatchDecoder.result(handle)
        if self.pixel_range is not None:
            images = to_model_range(images, self.pixel_range)
        return images, labels


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def shuffle_buffer(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """``items`` in a random order: each output is drawn uniformly from a buffer of ``size`` items,
    refilled from the input; the remainder is flushed in random order. Every item comes out once."""
    buf: list = []
    draws, d = np.empty(0, dtype=np.int64), 0
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        if d == len(draws):  # slots drawn in blocks: one numpy call per 1024 items, not per item
            draws, d = rng.integers(size, size=1024), 0
        j = int(draws[d])
        d += 1
        buf[j], item = item, buf[j]
        yield item
    for j in rng.permutation(len(buf)):
        yield buf[j]


def make_loader(root: str, split: str = "train", *, batch_size: int, rank: int = 0, world_size: int = 1,
                num_workers: int = 0, decode_threads: int = 2, shuffle: bool = True, shuffle_buffer: int = 2000,
                seed: int = 0, epoch: int = 0, pixel_range: str | None = None, split_by: str = "auto",
                drop_last: bool = False, pin_memory: bool = False, verify: bool = True) -> DataLoader:
    """A DataLoader of batches ``(images [B, C, H, W], labels int64 [B])`` over this rank's part of
    the split (a :class:`ShardDataset`, reachable as ``loader.dataset`` for ``set_epoch``).
    Batches are formed and decoded (``decode_threads`` threads each) inside each of
    ``num_workers`` worker processes, or in this process when ``num_workers=0``; the last batch of
    a worker may be short (``drop_last`` drops it). Call ``loader.dataset.set_epoch(e)`` before
    each epoch; ranks may differ by up to one shard in ``split_by="shard"`` mode
    (``loader.dataset.num_samples(num_workers)`` tells each rank its count, e.g. to agree on a
    common number of steps). ``verify``: check each shard's sha256 as it is read (module doc)."""
    ds = ShardDataset(root, split, rank=rank, world_size=world_size, shuffle=shuffle,
                      shuffle_buffer=shuffle_buffer, seed=seed, epoch=epoch, pixel_range=pixel_range,
                      split_by=split_by, batch_size=batch_size, drop_last=drop_last, decode_threads=decode_threads,
                      verify=verify)
    return DataLoader(ds, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False)
