"""The streaming shard reader (igan.data.shards): exactly-once splitting, shuffling, URIs, labeled subsets."""
import collections
import json
import os

import numpy as np
import pytest
import torch

from igan.data.digits import load_digits_split
from igan.data.pixels import to_model_range
from igan.data.shards import ShardDataset, make_loader, read_labels, read_split, shuffle_buffer
from pipelines.shard import shard_dataset


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Digits sharded twice (no Ray): 100 per shard (train 15 shards, test 4) and 256 per shard."""
    base = tmp_path_factory.mktemp("shards")
    small, big = str(base / "small"), str(base / "big")
    shard_dataset("digits", small, samples_per_shard=100, engine="local", progress=False, log=lambda m: None)
    shard_dataset("digits", big, samples_per_shard=256, engine="local", progress=False, log=lambda m: None)
    return small, big


def _keys(root, split, world, workers, epoch=0, **kw):
    """Keys each rank's DataLoader yields in one epoch (loader workers append the key via with_keys)."""
    per_rank = []
    for rank in range(world):
        ds = ShardDataset(root, split, rank=rank, world_size=world, epoch=epoch, with_keys=True, **kw)
        loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=workers,
                                             collate_fn=lambda b: [k for k, _, _ in b])
        per_rank.append([k for batch in loader for k in batch])
        assert len(per_rank[-1]) == ds.num_samples(workers)
    return per_rank


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 2), (3, 1)])
def test_every_sample_exactly_once_per_epoch(roots, world, workers):
    small, _ = roots
    n = 1438
    for epoch in (0, 1):
        per_rank = _keys(small, "train", world, workers, epoch=epoch, shuffle_buffer=64)
        allk = [k for r in per_rank for k in r]
        assert len(allk) == n and sorted(allk) == [f"{i:06d}" for i in range(n)]


def test_fewer_shards_than_consumers_splits_by_sample(roots):
    small, _ = roots  # test split: 4 shards for 3 ranks x 2 loader workers = 6 consumers
    ds = ShardDataset(small, "test", world_size=3)
    assert len(ds.urls) == 4 and ds.mode(6) == "sample" and ds.mode(4) == "shard"
    per_rank = _keys(small, "test", 3, 2)
    allk = [k for r in per_rank for k in r]
    assert len(allk) == len(set(allk)) == 359
    assert max(map(len, per_rank)) - min(map(len, per_rank)) <= 2  # sample mode is balanced


def test_order_is_deterministic_per_seed_and_epoch(roots):
    small, _ = roots
    a = _keys(small, "train", 1, 2, epoch=3, seed=5)[0]
    b = _keys(small, "train", 1, 2, epoch=3, seed=5)[0]
    c = _keys(small, "train", 1, 2, epoch=4, seed=5)[0]
    unshuffled = _keys(small, "train", 1, 0, shuffle=False)[0]
    assert a == b and a != c and sorted(a) == sorted(c)
    assert unshuffled == sorted(unshuffled)  # no shuffling: shard order, file order
    assert a != unshuffled


def test_shuffle_buffer_keeps_every_item():
    rng = np.random.default_rng(0)
    out = list(shuffle_buffer(iter(range(1000)), 50, rng))
    assert sorted(out) == list(range(1000)) and out != list(range(1000))
    # a buffer of 50 moves an item at most ~50 places earlier than its input position
    assert all(pos >= item - 50 for pos, item in enumerate(out))


def test_images_labels_and_pixel_range(roots):
    small, _ = roots
    images, labels = load_digits_split("train")
    x, y = read_split(small, "train")
    assert x.dtype == torch.uint8 and x.shape == (1438, 1, 8, 8)
    assert np.array_equal(x[:, 0].numpy(), images) and np.array_equal(y.numpy(), labels)
    loader = make_loader(small, "train", batch_size=100, num_workers=2, pixel_range="symmetric", seed=1)
    seen = 0
    by_key = {f"{i:06d}": i for i in range(len(labels))}
    for xb, yb in loader:
        assert xb.dtype == torch.float32 and xb.shape[1:] == (1, 8, 8) and yb.dtype == torch.int64
        assert xb.min() >= -1 and xb.max() <= 1
        seen += len(yb)
    assert seen == 1438
    ds = ShardDataset(small, "train", with_keys=True, pixel_range="unit", shuffle_buffer=10)
    for key, img, label in ds:
        i = by_key[key]
        assert int(label) == labels[i]
        assert torch.equal(img, to_model_range(torch.from_numpy(images[i])[None], "unit"))


def test_reads_uris(roots, tmp_path):
    small, _ = roots
    import fsspec

    x0, y0 = read_split(small, "test")
    x1, y1 = read_split("file://" + small, "test")
    mem = fsspec.filesystem("memory")
    for name in os.listdir(os.path.join(small, "test")):
        if not name.startswith("."):
            with open(os.path.join(small, "test", name), "rb") as f:
                mem.pipe_file(f"/igan-test/test/{name}", f.read())
    x2, y2 = read_split("memory://igan-test", "test")
    keys = [k for k, _, _ in ShardDataset("memory://igan-test", "test", with_keys=True)]
    assert torch.equal(x0, x1) and torch.equal(x0, x2) and torch.equal(y0, y2) and len(keys) == 359


def test_carve_is_balanced_seeded_and_layout_independent(roots):
    from igan.data.carve import carve_shards
    from igan.data.holdout import HoldOutSpec, choose

    small, big = roots
    spec = HoldOutSpec(val_per_class=3, val_seed=0, labels_per_class=5, label_seed=1, num_classes=10)
    a = carve_shards(small, "train", spec)
    x, y = a.labeled.decode_all()
    assert x.shape == (50, 1, 8, 8) and collections.Counter(y.tolist()) == {k: 5 for k in range(10)}
    b = carve_shards(big, "train", spec)   # other shard layout, same choice
    assert a.validation.keys == b.validation.keys and a.labeled.keys == b.labeled.keys
    assert torch.equal(x, b.labeled.decode_all()[0])
    assert a.labeled.keys != carve_shards(small, "train", HoldOutSpec(3, 0, 5, 2, 10)).labeled.keys
    images, labels = load_digits_split("train")   # keys are source indices, so the choice is reproducible
    keys, lab = read_labels(small, "train")
    assert keys == sorted(keys) and np.array_equal(lab, labels)
    val_idx, lab_idx = choose(keys, lab, spec)
    assert a.validation.keys == [keys[i] for i in val_idx]
    assert np.array_equal(x[:, 0].numpy(), images[lab_idx]) and np.array_equal(y.numpy(), labels[lab_idx])
    assert sum(a.held_per_shard) == 30 and len(a.held_per_shard) == len(ShardDataset(small, "train").urls)


def test_excluded_keys_are_skipped_and_counted(roots):
    from igan.data.carve import carve_shards
    from igan.data.holdout import HoldOutSpec

    small, _ = roots
    carved = carve_shards(small, "train", HoldOutSpec(3, 0, 0, 0, 10))
    held = dict(exclude=carved.held_keys, excluded_per_shard=carved.held_per_shard)
    for world in (1, 3):
        keys = []
        for r in range(world):
            ds = ShardDataset(small, "train", rank=r, world_size=world, with_keys=True, split_by="sample", **held)
            mine = [k for k, _, _ in ds]
            assert len(mine) == ds.num_samples()
            keys += mine
        assert len(keys) == len(set(keys)) == 1438 - 30 and not set(keys) & carved.held_keys
    with pytest.raises(ValueError, match="excluded_per_shard"):
        ShardDataset(small, "train", exclude=carved.held_keys)


def test_exactly_once_over_ray_train_workers(roots, tmp_path):
    """2 Ray Train workers x 2 DataLoader workers, two epochs: every key once per epoch."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    small, _ = roots
    out = str(tmp_path / "keys")
    os.makedirs(out)

    def loop(config):
        import ray.train

        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        ds = ShardDataset(config["root"], "train", rank=rank, world_size=world, with_keys=True, shuffle_buffer=32)
        loader = torch.utils.data.DataLoader(ds, batch_size=50, num_workers=2,
                                             collate_fn=lambda b: [k for k, _, _ in b])
        for epoch in range(2):
            ds.set_epoch(epoch)
            keys = [k for batch in loader for k in batch]
            with open(os.path.join(config["out"], f"rank{rank}-epoch{epoch}.json"), "w") as f:
                json.dump(keys, f)

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        TorchTrainer(loop, train_loop_config={"root": small, "out": out},
                     scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
                     run_config=RunConfig(storage_path=str(tmp_path / "ray"), name="reader")).fit()
    finally:
        if started:
            ray.shutdown()
    for epoch in range(2):
        per_rank = [json.load(open(os.path.join(out, f"rank{r}-epoch{epoch}.json"))) for r in range(2)]
        allk = per_rank[0] + per_rank[1]
        assert len(allk) == 1438 and sorted(allk) == [f"{i:06d}" for i in range(1438)]
        assert per_rank[0] and per_rank[1]


def test_foreign_tar_features_and_truncated_shards(tmp_path):
    """Tars from other writers (GNU long names, pax headers) go through WebDataset's tarfile path;
    a shard cut short raises instead of silently losing samples."""
    import io
    import tarfile

    from igan.data.shards import iter_tar

    long_key = "k" * 120
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        path = tmp_path / f"foreign-{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            for key, label in ((long_key, b"3"), ("short", b"4")):
                for ext, data in (("png", b"\x89PNG fake"), ("cls", label)):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        samples = list(iter_tar(str(path)))
        assert [(s["__key__"], s["cls"]) for s in samples] == [(long_key, b"3"), ("short", b"4")]
    good = tmp_path / "good.tar"
    with tarfile.open(good, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key in ("a", "b"):
            info = tarfile.TarInfo(f"{key}.cls")
            data = b"1" * 2000
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:3000])
    assert len(list(iter_tar(str(good)))) == 2
    with pytest.raises(ValueError, match="truncated"):
        list(iter_tar(str(cut)))


def test_write_and_rerun_on_an_object_store_filesystem():
    """The non-local code path (fsspec rename/list/remove) end to end, on fsspec's in-memory store."""
    import fsspec

    out = "memory://igan-write"
    (m,) = shard_dataset("digits", out, split="test", samples_per_shard=100, engine="local",
                         log=lambda msg: None)
    mem = fsspec.filesystem("memory")
    names = sorted(p.rsplit("/", 1)[-1] for p in mem.ls("/igan-write/test", detail=False))
    assert [n for n in names if not n.startswith(".")] == sorted([s["name"] for s in m["shards"]] + ["manifest.json"])
    assert not [n for n in names if ".tmp" in n]
    logs = []
    assert shard_dataset("digits", out, split="test", samples_per_shard=100, engine="local",
                         log=logs.append) == [m]
    assert "(4 already complete)" in logs[0]
    x, y = read_split(out, "test")
    images, labels = load_digits_split("test")
    assert np.array_equal(x[:, 0].numpy(), images) and np.array_equal(y.numpy(), labels)


@pytest.mark.parametrize("workers,threads", [(0, 1), (0, 2), (2, 2)])
def test_batches_equal_the_sample_stream(roots, workers, threads):
    """Batch mode decodes (on threads) the same images in the same order as the sample stream,
    and with loader workers still covers every sample once."""
    small, _ = roots
    kw = dict(seed=3, epoch=1, shuffle_buffer=64, pixel_range="symmetric")
    if workers == 0:
        samples = list(ShardDataset(small, "train", **kw))
        batches = list(ShardDataset(small, "train", batch_size=100, decode_threads=threads, **kw))
        assert [len(b[1]) for b in batches] == [100] * 14 + [38]
        assert torch.equal(torch.cat([b[0] for b in batches]), torch.stack([s[0] for s in samples]))
        assert torch.equal(torch.cat([b[1] for b in batches]), torch.stack([s[1] for s in samples]))
        dropped = list(ShardDataset(small, "train", batch_size=100, drop_last=True, decode_threads=threads, **kw))
        assert len(dropped) == 14 and all(len(y) == 100 for _, y in dropped)
    else:
        loader = make_loader(small, "train", batch_size=50, num_workers=workers, decode_threads=threads)
        images, labels = read_split(small, "train")
        seen = collections.Counter()
        for xb, yb in loader:
            assert xb.dtype == torch.uint8 and xb.shape[1:] == (1, 8, 8) and len(xb) <= 50
            seen.update((bytes(x.numpy()), int(y)) for x, y in zip(xb, yb))
        assert seen == collections.Counter((bytes(x.numpy()), int(y)) for x, y in zip(images, labels))


def test_batch_decoder_matches_single_decodes_and_names_a_misfit():
    from igan.data.decoding import BatchDecoder, decode_image
    from igan.data.imaging import encode

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(7)]
    jpegs = [encode(a, "jpg") for a in arrays]
    pngs = [encode(a, "png") for a in arrays]
    for threads in (1, 3):
        dec = BatchDecoder(3, 12, 10, threads=threads)
        got = dec.decode(pngs)
        assert got.shape == (7, 3, 12, 10) and np.array_equal(got.permute(0, 2, 3, 1).numpy(), np.stack(arrays))
        assert got.is_contiguous(memory_format=torch.channels_last)  # decoders' own order: no transpose
        assert torch.equal(dec.decode(jpegs), torch.stack([decode_image(j, 3) for j in jpegs]))
        assert torch.equal(dec.decode(jpegs[:3] + pngs[3:]), torch.stack(
            [decode_image(j, 3) for j in jpegs[:3]] + [decode_image(p, 3) for p in pngs[3:]]))
        assert dec.decode([]).shape == (0, 3, 12, 10)
        grey = BatchDecoder(1, 12, 10, threads=threads).decode(pngs[:2])
        assert grey.shape == (2, 1, 12, 10)
        big = encode(np.zeros((12, 11, 3), dtype=np.uint8), "png")
        with pytest.raises(ValueError, match=r"image k5 decodes to \[3, 12, 11\]"):
            dec.decode(pngs[:5] + [big], keys=[f"k{i}" for i in range(6)])
        dec.close()
    with pytest.raises(ValueError, match="threads"):
        BatchDecoder(3, 4, 4, threads=0)


def test_tar_members_group_by_key_like_webdataset(tmp_path):
    """igan's direct ustar reader groups members as WebDataset does (key: up to the first dot of
    the file name; upper-case extensions lowered; members without extension skipped)."""
    import io as _io
    import tarfile

    from webdataset.tariterators import group_by_keys, tar_file_expander

    from igan.data.shards import iter_tar

    path = tmp_path / "s.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [("a/000001.png", b"p1"), ("a/000001.cls", b"3"), ("a/000002.JPG", b"j2"),
                           ("a/000002.cls", b"4"), ("README", b"x"), ("a/000003.seg.png", b"s")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, _io.BytesIO(data))
    ours = [{k: v for k, v in s.items() if k != "__url__"} for s in iter_tar(str(path))]
    with open(path, "rb") as f:
        theirs = [{k: v for k, v in s.items() if k != "__url__"}
                  for s in group_by_keys(tar_file_expander([{"url": str(path), "stream": f}]))]
    assert ours == theirs == [{"__key__": "a/000001", "png": b"p1", "cls": b"3"},
                              {"__key__": "a/000002", "jpg": b"j2", "cls": b"4"},
                              {"__key__": "a/000003", "seg.png": b"s"}]
