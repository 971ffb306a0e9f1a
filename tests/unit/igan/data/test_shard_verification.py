"""Verified shards: a shard root that contradicts its manifest never trains. Each tampering is found
by the readers every feed uses (whole-split reads, the hold-out carve and the per-epoch stream) and
raised as one ShardDataError line naming the shard; DDP ranks stop on it together."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile

import pytest
import torch

from igan.config import apply_overrides
from igan.data.feed import make_feed
from igan.data.manifest import ManifestError, ShardDataError
from igan.data.shards import ShardDataset, iter_tar, read_labels, read_split
from igan.presets import get_preset
from pipelines.shard import shard_dataset


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Digits sharded without Ray, 100 samples per shard (train: 15 shards)."""
    root = str(tmp_path_factory.mktemp("verify") / "digits")
    shard_dataset("digits", root, samples_per_shard=100, engine="local", log=lambda m: None)
    return root


@pytest.fixture
def root(pristine, tmp_path):
    """A private copy of the pristine root to tamper with."""
    out = str(tmp_path / "digits")
    shutil.copytree(pristine, out)
    return out


def _shard(root, i=0, split="train"):
    return os.path.join(root, split, f"{split}-{i:06d}.tar")


def _manifest(root, split="train"):
    with open(os.path.join(root, split, "manifest.json")) as f:
        return json.load(f)


def _write_manifest(root, m, split="train"):
    with open(os.path.join(root, split, "manifest.json"), "w") as f:
        json.dump(m, f)


def _members(path):
    """``[(name, data)]`` of a tar, in order."""
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _rewrite(root, i, members, fix_manifest=True):
    """Write shard ``i`` of train as a ustar with ``members`` and (``fix_manifest``) give the
    manifest its new sha256 and sample count, so only the tampering itself is left to find."""
    path = _shard(root, i)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    if fix_manifest:
        m = _manifest(root)
        with open(path, "rb") as f:
            m["shards"][i]["sha256"] = hashlib.sha256(f.read()).hexdigest()
        old = m["shards"][i]["num_samples"]
        m["shards"][i]["num_samples"] = len({n.split(".")[0] for n, _ in members})
        m["num_samples"] += m["shards"][i]["num_samples"] - old
        _write_manifest(root, m)


def _cfg(*extra):
    return apply_overrides(get_preset("digits"), ["data.val_per_class=3", *extra])


def _read_every_way(root, cfg):
    """What training does with a shard root, each way: the in-memory feed, the streamed feed (the
    hold-out carve, the initialisation batch and one epoch) and the whole-split readers."""
    yield "memory feed", lambda: make_feed(cfg, root)
    yield "stream feed", lambda: list(make_feed(cfg, root, memory_limit=0).epoch(0))
    yield "read_split", lambda: read_split(root, "train", verify=cfg.data.verify_shards)
    yield "read_labels", lambda: read_labels(root, "train", verify=cfg.data.verify_shards)


def _assert_refused(root, match, cfg=None, shard=None):
    cfg = cfg or _cfg()
    for way, read in _read_every_way(root, cfg):
        with pytest.raises(ShardDataError, match=match) as err:
            read()
        msg = str(err.value)
        assert "\n" not in msg, (way, msg)
        if shard is not None:
            assert shard in msg, (way, msg)


# -- each tampering, one line ---------------------------------------------------------------------
def test_pristine_root_reads(pristine):
    for _, read in _read_every_way(pristine, _cfg()):
        read()


def test_swapped_shard(root):
    shutil.copyfile(_shard(root, 1), _shard(root, 0))  # a valid shard of the same size, other samples
    _assert_refused(root, "sha256 .* does not match the manifest", shard="train-000000.tar")
    # without the hash its samples are still found twice in the split (shard 1 holds them too)
    _assert_refused(root, "is in two shards", cfg=_cfg("data.verify_shards=false"))


def test_truncated_shard(root):
    path = _shard(root, 3)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    _assert_refused(root, "sha256", shard="train-000003.tar")
    _assert_refused(root, "truncated", cfg=_cfg("data.verify_shards=false"), shard="train-000003.tar")


def test_manifest_that_lies_about_counts(root):
    m = _manifest(root)  # the total still adds up: only the per-shard counts lie
    m["shards"][0]["num_samples"] += 1
    m["shards"][1]["num_samples"] -= 1
    _write_manifest(root, m)
    _assert_refused(root, "holds 100 samples, the manifest says 101", shard="train-000000.tar")
    _assert_refused(root, "holds 100 samples", cfg=_cfg("data.verify_shards=false"))


def test_label_out_of_range(root):
    members = _members(_shard(root, 2))
    members = [(n, b"10" if i == 5 else d) for i, (n, d) in enumerate(members)]  # member 5: a .cls
    assert members[5][0].endswith(".cls")
    _rewrite(root, 2, members)
    _assert_refused(root, r"label 10, outside 0\.\.9", shard="train-000002.tar")


def test_member_name_climbing_out(root):
    members = _members(_shard(root, 4))
    members[0] = ("../" + members[0][0], members[0][1])
    _rewrite(root, 4, members)
    _assert_refused(root, "member name '../.*' climbs out", shard="train-000004.tar")


def test_absolute_member_name(root):
    members = _members(_shard(root, 4))
    members = [("/tmp/" + n, d) for n, d in members]
    _rewrite(root, 4, members)
    _assert_refused(root, "is an absolute path", shard="train-000004.tar")


def test_shard_name_outside_the_split_folder(root):
    m = _manifest(root)
    shutil.copyfile(_shard(root, 0), os.path.join(root, "outside.tar"))
    m["shards"][0]["name"] = "../outside.tar"
    _write_manifest(root, m)
    with pytest.raises(ManifestError, match="shard name '../outside.tar' has a path separator") as err:
        ShardDataset(root, "train")
    assert isinstance(err.value, ShardDataError) and "\n" not in str(err.value)
    _assert_refused(root, "outside.tar")


def test_duplicate_key_in_a_shard(root):
    members = _members(_shard(root, 5))
    _rewrite(root, 5, members + members[:2])  # the first sample again, after the others
    key = members[0][0].split(".")[0]
    _assert_refused(root, f"key '{key}' appears twice", shard="train-000005.tar")


def test_duplicate_key_across_shards(root):
    first = _members(_shard(root, 0))[0][0].split(".")[0]
    members = _members(_shard(root, 6))
    own = members[0][0].split(".")[0]
    members = [(n.replace(own, first, 1) if n.startswith(own + ".") else n, d) for n, d in members]
    _rewrite(root, 6, members)
    _assert_refused(root, f"key '{first}' is in two shards: .*train-000000.tar and .*train-000006.tar")


def test_missing_shard(root):
    os.remove(_shard(root, 7))
    _assert_refused(root, "shard listed in the manifest does not exist", shard="train-000007.tar")


def test_streamed_epochs_check_every_shard_as_read(root):
    """A shard swapped after the feed was built (its carve saw the good one) is refused by the
    epoch's stream, with DataLoader worker processes too (their error comes back as the same class)."""
    cfg = _cfg("data.loader_workers=2")
    feed = make_feed(cfg, root, memory_limit=0)
    shutil.copyfile(_shard(root, 1), _shard(root, 0))
    with pytest.raises(ShardDataError, match="train-000000.tar: sha256"):
        list(feed.epoch(0))


def test_reader_checks_each_shard_before_its_first_sample(root):
    shutil.copyfile(_shard(root, 1), _shard(root, 0))
    ds = ShardDataset(root, "train", shuffle=False)
    got = []
    with pytest.raises(ShardDataError):
        for sample in ds.samples():
            got.append(sample)
    assert got == []  # nothing of the bad shard (read first) was handed out
    assert len(list(iter_tar(_shard(root, 0)))) == 100  # without a spec it is just a tar


# -- DDP: the ranks stop together -----------------------------------------------------------------
class _StepTrainer:
    """run_epoch's view of a Trainer: each step is a collective, as a DDP step's gradient sync."""
    device = torch.device("cpu")

    def train_step(self, *batch):
        import torch.distributed as dist

        t = torch.ones(1)
        dist.all_reduce(t)
        return {"loss": float(t)}


def _batches(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise ShardDataError("train-000009.tar: sha256 ... does not match the manifest's ...")
        yield (torch.zeros(1),)


def _ddp_epoch(rank, world, port, out, plan):
    import datetime

    import torch.distributed as dist

    from igan.distributed import AgreedDataError
    from igan.loop import run_epoch

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))  # a hang fails the test instead
    n, fail_at = plan[rank]
    try:
        losses, error = run_epoch(_StepTrainer(), _batches(n, fail_at), world, rank)
        result = {"losses": losses, "error": error}
    except AgreedDataError as exc:
        result = {"data_error": str(exc)}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


def _run_ddp(tmp_path, plan):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_epoch, args=(2, port, str(tmp_path), plan), nprocs=2, join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("plan,needle", [
    ({0: (5, None), 1: (5, 2)}, "rank 1: train-000009.tar: sha256"),   # rank 1's third batch is bad
    ({0: (5, None), 1: (3, None)}, "rank 1's batches ran out after 3 steps"),  # unequal counts
], ids=["bad-shard-on-one-rank", "unequal-counts"])
def test_ddp_ranks_stop_together_on_a_data_error(tmp_path, plan, needle):
    results = _run_ddp(tmp_path, plan)
    assert [r.get("data_error", "") for r in results] == [results[0].get("data_error")] * 2
    assert needle in results[0]["data_error"], results


def test_ddp_epoch_without_errors(tmp_path):
    results = _run_ddp(tmp_path, {0: (4, None), 1: (4, None)})
    assert results == [{"losses": {"loss": 2.0}, "error": None}] * 2


def test_local_shards_are_rehashed_once_changed(root):
    """A local shard verified once is not hashed again while unchanged, but any change (even one
    that restores size and mtime) makes the next read hash it again."""
    import time

    from igan.data import shards as shards_mod

    old = time.time() - 10  # older than the one-second window of a coarse clock tick
    for name in os.listdir(os.path.join(root, "train")):
        os.utime(os.path.join(root, "train", name), (old, old))
    time.sleep(1.1)
    shards_mod.forget_verified()
    spec = ShardDataset(root, "train").specs[0]
    assert len(list(iter_tar(spec.url, expect=spec))) == 100
    assert len(shards_mod._VERIFIED) == 1
    path = _shard(root, 0)
    st = os.stat(path)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as f:  # in place: same inode and size
        f.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back; the ctime cannot be
    with pytest.raises(ShardDataError, match="sha256"):
        list(iter_tar(spec.url, expect=spec))
