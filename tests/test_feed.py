"""Per-rank batch feeds (igan.data.feed): same batches as the plain loop with one rank, disjoint
equal-length parts with several, from memory and from streamed shards."""
from __future__ import annotations

import pytest
import torch

from igan.data.feed import MemoryFeed, StreamFeed, make_feed
from igan.data.memory import ArraySplit, EpochBatches, load_embedded
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


def test_one_rank_equals_plain_loop_batches():
    cfg = get_preset("digits")
    train = load_embedded(cfg, "train")
    feed, ref = MemoryFeed(train, cfg), EpochBatches(train, cfg)
    assert len(feed) == len(ref)
    for epoch in (0, 3):
        for a, b in zip(feed.epoch(epoch), ref.epoch(epoch), strict=True):
            for u, v in zip(a, b):
                assert torch.equal(u, v)
    assert torch.equal(feed.init_batch()[:5],
                       train.x[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))][:5])


def test_ranks_split_each_epoch_disjointly():
    cfg = get_preset("digits")
    train = load_embedded(cfg, "train")
    ids = ArraySplit(torch.arange(len(train)).float()[:, None], train.y)  # x = example index
    feeds = [MemoryFeed(ids, cfg, rank=r, world_size=2) for r in range(2)]
    assert len(feeds[0]) == len(feeds[1]) == len(train) // 200
    seen = [torch.cat([b.x_unl for b in f.epoch(1)]).flatten().long() for f in feeds]
    both = torch.cat(seen)
    assert len(both) == len(feeds[0]) * 200 and len(both.unique()) == len(both)  # at most once per epoch
    fm = torch.cat([b.x_unl2 for b in feeds[0].epoch(1)]).flatten().long()
    assert not torch.equal(fm, seen[0])  # feature-matching batches: an independent permutation
    labeled = set(torch.cat([b.x_lab for f in feeds for b in f.epoch(1)]).flatten().long().tolist())
    assert labeled <= set(feeds[0].labeled.tolist()) and len(feeds[0].labeled) == 50
    # epoch order depends only on (seed, epoch)
    assert torch.equal(torch.cat([b.x_unl for b in feeds[0].epoch(1)]).flatten().long(), seen[0])
    assert not torch.equal(torch.cat([b.x_unl for b in feeds[0].epoch(2)]).flatten().long(), seen[0])


def test_shards_read_whole_equal_embedded(digits_root):
    cfg = get_preset("digits")
    feed = make_feed(cfg, digits_root)
    assert isinstance(feed, MemoryFeed)
    ref = EpochBatches(load_embedded(cfg, "train"), cfg)
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
    total = len(load_embedded(cfg, "train"))
    assert len(parts[0]) + len(parts[1]) <= total
    # same epoch -> same batches; resuming mid-epoch skips exactly
    again = list(feeds[0].epoch(0, start=2))
    assert torch.equal(torch.cat([b.x_unl for b in again]), parts[0][2 * 50:])
    assert feeds[0].init_batch().shape[1:] == (1, 8, 8)


def test_toy_feed_from_memory():
    cfg = apply_overrides(get_preset("ring8"), ["train.steps_per_epoch=3"])
    feed = make_feed(cfg, None, rank=1, world_size=2)
    batches = list(feed.epoch(0))
    assert len(batches) == 3 and batches[0].x_unl.shape == (cfg.data.batch_size, 2) and batches[0].x_lab is None
