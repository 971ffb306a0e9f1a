"""Per-rank, per-epoch batch feeds for data-parallel training (one feed per Ray Train worker), and
the evaluation splits of each role.

Roles: the train split minus a validation hold-out trains; the hold-out (``data.val_per_class``
per class, :mod:`igan.data.holdout`) is what periodic evaluation, Tune and model choice use; the
``data.test_split`` split is scored once at the end. A feed exposes its hold-out as ``validation``.

A feed yields :class:`igan.data.memory.Batch` ``(x_unl, x_unl2, x_lab, y_lab)`` for one rank of
``world_size``; every rank gets the same number of steps per epoch (``feed.steps_per_epoch``), so
DDP's collectives stay in lock-step. Two kinds:

:class:`MemoryFeed` (small splits, e.g. digits, MNIST, CIFAR: the decoded split fits in
``memory_limit`` bytes). The epoch's order is the authors' batching, drawn from ``[seed, epoch]``
alone: a permutation of the unlabeled set, a second independent permutation for the
feature-matching batch, and the labeled subset tiled to the unlabeled size and shuffled. Global
batch ``j`` is the slice ``[j*B, (j+1)*B)`` of these; rank ``r`` takes global batches ``r, r + W,
r + 2W, ...``. So the ranks together see every unlabeled example at most once per epoch (the last
``N mod (B*W)`` are dropped), and with one worker the feed is the plain loop's.

:class:`StreamFeed` (large splits): the unlabeled stream is the rank's part of
:class:`~igan.data.shards.ShardDataset` (shard order and shuffle buffer from ``(seed, epoch)``),
minus the hold-out, batched with the last partial batch dropped and cut to the smallest rank's batch
count. The feature-matching batch ``x_unl2`` is the previous step's unlabeled batch (the first step
of an epoch uses its own batch): an independently shuffled set of real examples at no extra read or
decode cost. Fully labeled presets (``labels_per_class=-1``) take the labels that stream with the
images; a labeled subset is held in memory (it is small) and drawn per epoch, tiled and shuffled,
from ``[seed, epoch, rank]``. Hold-out and subset come from one pass over the split
(:func:`igan.data.carve.carve_shards`), so per-worker memory does not grow with the split.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from igan.config import Config
from igan.data.holdout import HoldOutSpec, choose
from igan.data.memory import ArraySplit, Batch

DEFAULT_MEMORY_LIMIT = 200 * 1024 * 1024  # decoded float32 bytes under which a split is read whole
EVAL_BATCH = 500


def _cap(steps: int, cfg: Config) -> int:
    cap = cfg.train.steps_per_epoch
    return steps if cap == 0 else min(cap, steps)


def _needs_init_batch(cfg: Config) -> bool:
    # without weight norm the Trainer ignores the batch: decoding it would only cost memory
    return cfg.techniques.weight_norm and cfg.techniques.wn_init_examples > 0


class MemoryFeed:
    """The authors' epoch batching over an in-memory split, minus its hold-out, for one rank (module doc)."""

    def __init__(self, train: ArraySplit, cfg: Config, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}; got {rank}")
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.batch_size, self.seed = cfg.data.batch_size, cfg.train.seed
        held, labeled = choose(train.keys, train.y.numpy(), HoldOutSpec.of(cfg))
        keep = np.setdiff1d(np.arange(len(train)), held)
        self.validation = train.subset(torch.from_numpy(held))
        self.train = train.subset(torch.from_numpy(keep))
        self.labeled = torch.from_numpy(np.searchsorted(keep, labeled))  # positions in self.train
        global_batch = self.batch_size * world_size
        if len(self.train) < global_batch:
            raise ValueError(f"the training split has {len(self.train)} examples (after the validation hold-out), "
                             f"fewer than data.batch_size={self.batch_size} x {world_size} workers")
        self.steps_per_epoch = _cap(len(self.train) // global_batch, cfg)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def init_batch(self) -> torch.Tensor | None:
        """Real examples for the data-dependent initialisation (the plain loop's draw); None when
        the config does no such initialisation."""
        if not _needs_init_batch(self.cfg):
            return None
        perm = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(self.seed))
        return self.train.x[perm[: max(1, self.cfg.techniques.wn_init_examples)]]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """This rank's batches ``start..steps_per_epoch-1`` of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        n, b, w = len(self.train), self.batch_size, self.world_size
        perm, perm2 = torch.from_numpy(rng.permutation(n)), torch.from_numpy(rng.permutation(n))
        lab = None
        if len(self.labeled):
            tiled = self.labeled.repeat(-(-n // len(self.labeled)))
            lab = tiled[torch.from_numpy(rng.permutation(len(tiled)))]
        x, y = self.train.x, self.train.y
        for i in range(start, self.steps_per_epoch):
            j = i * w + self.rank
            sl = slice(j * b, (j + 1) * b)
            x_lab = y_lab = None
            if lab is not None:
                x_lab, y_lab = x[lab[sl]], y[lab[sl]]
            yield Batch(x[perm[sl]], x[perm2[sl]], x_lab, y_lab)


def _consumer_batches(ds, consumer: int, consumers: int, batch_size: int) -> int:
    shards, mod, rem = ds.plan(consumer, consumers)
    if mod == 1:
        n = sum(ds.counts[i] for i in shards)
    else:
        n = len(range(rem, sum(ds.counts), mod))
    return n // batch_size


class StreamFeed:
    """The rank's part of a sharded split, minus its hold-out, streamed (module doc)."""

    def __init__(self, root: str, cfg: Config, rank: int = 0, world_size: int = 1, split: str = "train"):
        from igan.data.carve import carve_shards
        from igan.data.shards import ShardDataset

        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.batch_size, self.seed = cfg.data.batch_size, cfg.train.seed
        self.root, self.split = root, split
        carved = carve_shards(root, split, HoldOutSpec.of(cfg), cfg.data.pixel_range, cfg.data.verify_shards)
        self.validation = carved.validation
        self.held = dict(exclude=carved.held_keys, excluded_per_shard=carved.held_per_shard)
        self.dataset = ShardDataset(root, split, rank=rank, world_size=world_size, shuffle=True,
                                    shuffle_buffer=cfg.data.shuffle_buffer, seed=self.seed,
                                    pixel_range=cfg.data.pixel_range, batch_size=self.batch_size,
                                    drop_last=True, decode_threads=cfg.data.decode_threads,
                                    verify=cfg.data.verify_shards, **self.held)
        self.loader_workers = cfg.data.loader_workers
        self.steps_per_epoch = _cap(self._min_batches(0), cfg)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{root}/{split}: fewer examples per worker than data.batch_size={self.batch_size}")
        self.labels_stream = cfg.techniques.semi_supervised and cfg.data.labels_per_class == -1
        self.x_lab = self.y_lab = None
        if len(carved.labeled):
            self.x_lab, self.y_lab = carved.labeled.decode_all()

    def _min_batches(self, epoch: int) -> int:
        """Batches per epoch of the slowest rank (all loader workers together)."""
        self.dataset.set_epoch(epoch)
        w = max(1, self.loader_workers)
        return min(sum(_consumer_batches(self.dataset, r * w + i, self.world_size * w, self.batch_size)
                       for i in range(w)) for r in range(self.world_size))

    def __len__(self) -> int:
        return self.steps_per_epoch

    def init_batch(self) -> torch.Tensor | None:
        """The first ``wn_init_examples`` examples of epoch 0's stream as rank 0 of 1 sees it (the
        same on every rank); None when the config does no data-dependent initialisation."""
        from igan.data.shards import ShardDataset

        if not _needs_init_batch(self.cfg):
            return None
        ds = ShardDataset(self.root, self.split, shuffle=True, shuffle_buffer=self.cfg.data.shuffle_buffer,
                          seed=self.seed, pixel_range=self.cfg.data.pixel_range, verify=self.cfg.data.verify_shards,
                          **self.held)
        want, out = max(1, self.cfg.techniques.wn_init_examples), []
        for image, _ in ds:
            out.append(image)
            if len(out) >= want:
                break
        return torch.stack(out)

    def _labeled_order(self, epoch: int) -> torch.Tensor | None:
        if self.y_lab is None:
            return None
        need = self.steps_per_epoch * self.batch_size
        tiled = torch.arange(len(self.y_lab)).repeat(-(-need // len(self.y_lab)))
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        return tiled[torch.from_numpy(rng.permutation(len(tiled)))]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """This rank's batches ``start..steps_per_epoch-1`` of ``epoch`` (``start`` > 0 reads and
        skips the earlier ones). ShardDataError when the stream ends before ``steps_per_epoch``
        batches: the other ranks would wait for this one's next step forever."""
        from torch.utils.data import DataLoader

        self.dataset.set_epoch(epoch)
        loader = self.dataset if self.loader_workers == 0 else DataLoader(
            self.dataset, batch_size=None, num_workers=self.loader_workers, persistent_workers=False)
        lab = self._labeled_order(epoch)
        b, prev = self.batch_size, None
        for i, (x, y) in enumerate(_short_stream_guard(loader, self, epoch)):
            if i >= self.steps_per_epoch:
                break
            x2 = prev if prev is not None else x
            prev = x
            if i < start:
                continue
            x_lab = y_lab = None
            if self.labels_stream:
                x_lab, y_lab = x, y
            elif lab is not None:
                idx = lab[i * b:(i + 1) * b]
                x_lab, y_lab = self.x_lab[idx], self.y_lab[idx]
            yield Batch(x, x2, x_lab, y_lab)


def _short_stream_guard(loader, feed: "StreamFeed", epoch: int) -> Iterator:
    """``loader``'s batches; ShardDataError if it ends before ``feed.steps_per_epoch`` of them
    (the shards held fewer samples than the counts every rank's step count was computed from)."""
    from igan.data.manifest import ShardDataError

    n = 0
    for item in loader:
        n += 1
        yield item
    if n < feed.steps_per_epoch:
        raise ShardDataError(f"{feed.root}/{feed.split}: rank {feed.rank}'s stream of epoch {epoch} ended after {n} "
                             f"of {feed.steps_per_epoch} batches (the shards hold fewer samples than their manifest "
                             "says)")


def _decoded_sizes(root: str, split: str) -> tuple[int, int]:
    """``(num_samples, bytes of one sample decoded to float32)`` of a sharded split."""
    from igan.data.manifest import split_manifest

    _, m = split_manifest(root, split)
    h, w = m["image_size"]
    return int(m["num_samples"]), int(m["channels"]) * int(h) * int(w) * 4


def decoded_bytes(root: str, split: str = "train") -> int:
    """Bytes a split takes decoded to float32 (``num_samples * C * H * W * 4``)."""
    n, per_sample = _decoded_sizes(root, split)
    return n * per_sample


def load_split(cfg: Config, root: str | None, split: str) -> ArraySplit:
    """A whole split in memory, in model range, with its keys: the embedded toy sets (``root``
    None) or a shard root. For small splits only (see :func:`fits_in_memory`)."""
    if root is None:
        from igan.data.memory import load_embedded

        return load_embedded(cfg, split)
    from igan.data.shards import read_encoded

    encoded = read_encoded(root, split, cfg.data.pixel_range, verify=cfg.data.verify_shards)
    x, y = encoded.decode_all()
    return ArraySplit(x, y, encoded.keys)


def fits_in_memory(root: str | None, split: str, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> bool:
    """Whether ``split`` is embedded (``root`` None) or decodes to at most ``memory_limit`` bytes."""
    return root is None or decoded_bytes(root, split) <= memory_limit


class StreamedSplit:
    """A sharded split too large for memory, read in key-independent shard order for evaluation:
    rank ``rank``'s part of ``world`` (the parts of all ranks cover the split once)."""

    def __init__(self, root: str, split: str, cfg: Config, rank: int = 0, world: int = 1):
        self.root, self.split, self.cfg, self.rank, self.world = root, split, cfg, rank, world

    def batches(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images [B, C, H, W] in model range, labels int64 [B])``."""
        from igan.data.shards import ShardDataset

        yield from ShardDataset(self.root, self.split, rank=self.rank, world_size=self.world, shuffle=False,
                                pixel_range=self.cfg.data.pixel_range, batch_size=size,
                                decode_threads=self.cfg.data.decode_threads, verify=self.cfg.data.verify_shards)


def load_test_role(cfg: Config, root: str | None, rank: int = 0, world: int = 1,
               memory_limit: int = DEFAULT_MEMORY_LIMIT) -> ArraySplit | StreamedSplit:
    """Rank ``rank``'s part of the test role (``data.test_split``): in memory when small, else streamed.
    Either has ``batches(size)``."""
    name = cfg.data.test_split if root is not None else "test"
    if fits_in_memory(root, name, memory_limit):
        return load_split(cfg, root, name).part(rank, world)
    return StreamedSplit(root, name, cfg, rank, world)


def domain_training_data(cfg: Config, root: str | None, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> ArraySplit:
    """Real labeled train images (model range) for a domain classifier: the whole train split when
    it fits in ``memory_limit``, else a seeded class-balanced subset that does (one streaming pass)."""
    if fits_in_memory(root, "train", memory_limit):
        return load_split(cfg, root, "train")
    from igan.data.carve import carve_shards

    per_class = max(1, memory_limit // (_decoded_sizes(root, "train")[1] * cfg.data.num_classes))
    spec = HoldOutSpec(0, 0, per_class, cfg.data.label_seed, cfg.data.num_classes, at_most=True)
    subset = carve_shards(root, "train", spec, cfg.data.pixel_range, cfg.data.verify_shards).labeled
    x, y = subset.decode_all()
    return ArraySplit(x, y, subset.keys)


def make_feed(cfg: Config, root: str | None, rank: int = 0, world_size: int = 1,
              memory_limit: int = DEFAULT_MEMORY_LIMIT) -> MemoryFeed | StreamFeed:
    """The feed for this rank: :class:`MemoryFeed` for the embedded toy sets (``root`` None) and for
    shard roots whose train split decodes to at most ``memory_limit`` bytes, else :class:`StreamFeed`."""
    if fits_in_memory(root, "train", memory_limit):
        return MemoryFeed(load_split(cfg, root, "train"), cfg, rank, world_size)
    return StreamFeed(root, cfg, rank, world_size)


__all__ = ["MemoryFeed", "StreamFeed", "StreamedSplit", "make_feed", "load_split", "load_test_role",
           "fits_in_memory", "domain_training_data", "decoded_bytes", "DEFAULT_MEMORY_LIMIT"]
