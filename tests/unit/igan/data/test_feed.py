"""Per-rank batch feeds (igan.data.feed): the validation hold-out carved out first, disjoint
equal-length parts per rank, the same choice from memory and from streamed shards."""
from __future__ import annotations

import collections

import pytest
import torch

from igan.data.feed import MemoryFeed, StreamFeed, load_test_role, make_feed
from igan.data.holdout import HoldOutSpec, choose
from igan.data.memory import ArraySplit, load_embedded
from igan.presets import get_preset
from igan.config import apply_overrides


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    from pipelines.shard import shard_dataset

    root = tmp_path_factory.mktemp("digits")
    shard_dataset("digits", str(root), samples_per_shard=128, engine="local", log=lambda m: None)
    return str(root)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


def test_holdout_is_carved_out_before_batching():
    cfg = get_preset("digits")
    train = load_embedded(cfg, "train")
    ids = ArraySplit(torch.arange(len(train)).float()[:, None], train.y)  # x = example index
    feed = MemoryFeed(ids, cfg)
    held, labeled = choose(ids.keys, ids.y.numpy(), HoldOutSpec.of(cfg))
    val = set(feed.validation.x.flatten().long().tolist())
    assert val == set(held.tolist()) and len(val) == 10 * cfg.data.val_per_class
    assert collections.Counter(feed.validation.y.tolist()) == {k: cfg.data.val_per_class for k in range(10)}
    assert len(feed.train) + len(feed.validation) == len(train)
    seen = set()
    for epoch in (0, 1):
        for b in feed.epoch(epoch):
            seen |= set(torch.cat([b.x_unl, b.x_unl2, b.x_lab]).flatten().long().tolist())
    assert seen and not seen & val  # no validation example is ever trained on
    lab = feed.train.x[feed.labeled].flatten().long()
    assert set(lab.tolist()) == set(labeled.tolist()) and not set(lab.tolist()) & val
    assert collections.Counter(feed.train.y[feed.labeled].tolist()) == {k: 5 for k in range(10)}
    assert torch.equal(feed.init_batch()[:5],
                       feed.train.x[torch.randperm(len(feed.train), generator=torch.Generator().manual_seed(0))][:5])


def test_ranks_split_each_epoch_disjointly():
    cfg = get_preset("digits")
    train = load_embedded(cfg, "train")
    ids = ArraySplit(torch.arange(len(train)).float()[:, None], train.y)  # x = example index
    feeds = [MemoryFeed(ids, cfg, rank=r, world_size=2) for r in range(2)]
    assert len(feeds[0]) == len(feeds[1]) == (len(train) - 10 * cfg.data.val_per_class) // 200
    seen = [torch.cat([b.x_unl for b in f.epoch(1)]).flatten().long() for f in feeds]
    both = torch.cat(seen)
    assert len(both) == len(feeds[0]) * 200 and len(both.unique()) == len(both)  # at most once per epoch
    fm = torch.cat([b.x_unl2 for b in feeds[0].epoch(1)]).flatten().long()
    assert not torch.equal(fm, seen[0])  # feature-matching batches: an independent permutation
    labeled = set(torch.cat([b.x_lab for f in feeds for b in f.epoch(1)]).flatten().long().tolist())
    chosen = set(feeds[0].train.x[feeds[0].labeled].flatten().long().tolist())
    assert labeled <= chosen and len(chosen) == 50
    # epoch order depends only on (seed, epoch)
    assert torch.equal(torch.cat([b.x_unl for b in feeds[0].epoch(1)]).flatten().long(), seen[0])
    assert not torch.equal(torch.cat([b.x_unl for b in feeds[0].epoch(2)]).flatten().long(), seen[0])


def test_shards_read_whole_equal_embedded(digits_root):
    cfg = get_preset("digits")
    feed = make_feed(cfg, digits_root)
    assert isinstance(feed, MemoryFeed)
    ref = MemoryFeed(load_embedded(cfg, "train"), cfg)  # the same keys, so the same hold-out
    assert feed.validation.keys == ref.validation.keys and torch.equal(feed.validation.x, ref.validation.x)
    for a, b in zip(feed.epoch(0), ref.epoch(0), strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_stream_feed_ranks_equal_length_disjoint(digits_root):
    cfg = apply_overrides(get_preset("digits"), ["data.batch_size=50", "data.shuffle_buffer=64"])
    feeds = [make_feed(cfg, digits_root, rank=r, world_size=2, memory_limit=0) for r in range(2)]
    assert all(isinstance(f, StreamFeed) for f in feeds)
    assert len(feeds[0]) == len(feeds[1]) > 0
    parts = []
    for f in feeds:
        batches = list(f.epoch(0))
        assert len(batches) == len(f)
        for prev, cur in zip(batches, batches[1:]):
            assert torch.equal(cur.x_unl2, prev.x_unl)  # FM batch = the previous step's batch
        assert torch.equal(batches[0].x_unl2, batches[0].x_unl)
        assert all(b.x_lab.shape == (50, 1, 8, 8) and b.y_lab.shape == (50,) for b in batches)
        assert len(f.y_lab) == 10 * cfg.data.labels_per_class
        parts.append(torch.cat([b.x_unl for b in batches]))
    memory = MemoryFeed(load_embedded(cfg, "train"), cfg)
    assert feeds[0].validation.keys == memory.validation.keys  # one pass over shards = the in-memory choice
    assert torch.equal(feeds[0].validation.decode_all()[0], memory.validation.x)
    assert _rows(feeds[0].x_lab) == _rows(memory.train.x[memory.labeled])
    assert len(parts[0]) + len(parts[1]) <= len(memory.train)
    assert not _rows(torch.cat(parts)) & _rows(memory.validation.x)  # the hold-out is not streamed
    # same epoch -> same batches; resuming mid-epoch skips exactly
    again = list(feeds[0].epoch(0, start=2))
    assert torch.equal(torch.cat([b.x_unl for b in again]), parts[0][2 * 50:])
    assert feeds[0].init_batch().shape[1:] == (1, 8, 8)


def test_fully_labeled_stream_takes_the_labels_streamed_with_the_images(digits_root):
    cfg = apply_overrides(get_preset("digits"), ["data.labels_per_class=-1", "data.batch_size=50"])
    feed = make_feed(cfg, digits_root, memory_limit=0)
    assert isinstance(feed, StreamFeed) and feed.x_lab is None  # no labeled copy of the split in memory
    memory = MemoryFeed(load_embedded(cfg, "train"), cfg)
    label_of = {r.numpy().tobytes(): int(y) for r, y in zip(memory.train.x.reshape(len(memory.train), -1),
                                                           memory.train.y)}
    for b in list(feed.epoch(0))[:3]:
        assert b.x_lab is b.x_unl
        assert [label_of[r.numpy().tobytes()] for r in b.x_unl.reshape(len(b.x_unl), -1)] == b.y_lab.tolist()


def test_test_role_reads_the_configured_split(digits_root):
    cfg = get_preset("digits")
    parts = [load_test_role(cfg, digits_root, rank=r, world=2) for r in range(2)]
    assert len(parts[0]) + len(parts[1]) == len(load_embedded(cfg, "test"))
    cfg = apply_overrides(cfg, ["data.test_split=nope"])
    with pytest.raises(ValueError, match="no split 'nope'"):
        load_test_role(cfg, digits_root)


def test_toy_feed_from_memory():
    cfg = apply_overrides(get_preset("ring8"), ["train.steps_per_epoch=3"])
    feed = make_feed(cfg, None, rank=1, world_size=2)
    batches = list(feed.epoch(0))
    assert len(batches) == 3 and batches[0].x_unl.shape == (cfg.data.batch_size, 2) and batches[0].x_lab is None
