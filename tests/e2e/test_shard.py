"""The sharding job (pipelines.shard / `igan shard`) on real Ray Data with tiny fixtures."""
import hashlib
import json
import os

import numpy as np
import pytest

from helpers.faults import CrashWhileSharding
from helpers.fixtures_formats import COLORS, WORDS, WNIDS, make_cifar10, make_imagenet, make_mnist, make_svhn
from igan.data.manifest import FIELDS, read_manifest
from igan.data.shards import iter_tar, read_split
from pipelines import cli
from pipelines.shard import shard_dataset


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _check_folder(split_dir, manifest):
    """Every shard of the manifest exists with its sha256 and count; nothing else is there."""
    names = sorted(f for f in os.listdir(split_dir) if not f.startswith("."))
    assert names == sorted([s["name"] for s in manifest["shards"]] + ["manifest.json"])
    keys = []
    for s in manifest["shards"]:
        path = os.path.join(split_dir, s["name"])
        assert _sha(path) == s["sha256"]
        shard_keys = [x["__key__"] for x in iter_tar(path)]
        assert len(shard_keys) == s["num_samples"]
        keys += shard_keys
    assert len(keys) == len(set(keys)) == manifest["num_samples"]
    return keys


def test_png_sets_round_trip_pixel_exact(ray_local, tmp_path):
    cifar = make_cifar10(str(tmp_path / "raw_cifar"), archive=True)
    svhn = make_svhn(str(tmp_path / "raw_svhn"))
    mnist = make_mnist(str(tmp_path / "raw_mnist"))
    cases = [("cifar10", cifar["path"], cifar, 3, 32), ("svhn", str(tmp_path / "raw_svhn"), svhn, 3, 32),
             ("mnist", str(tmp_path / "raw_mnist"), mnist, 1, 28)]
    for name, src, exp, channels, side in cases:
        out = str(tmp_path / name)
        manifests = shard_dataset(name, out, src=src, samples_per_shard=7, progress=False)
        assert [m["split"] for m in manifests] == ["train", "test"]
        for m in manifests:
            images, labels = exp[m["split"]]
            assert list(m) == list(FIELDS) and m == read_manifest(os.path.join(out, m["split"]))
            assert m["dataset"] == name and m["num_samples"] == len(labels) and m["skipped"] == []
            assert m["num_classes"] == 10 and m["channels"] == channels and m["image_size"] == [side, side]
            assert [s["num_samples"] for s in m["shards"]][:-1] == [7] * (len(m["shards"]) - 1)
            _check_folder(os.path.join(out, m["split"]), m)
            x, y = read_split(out, m["split"])
            assert x.shape == (len(labels), channels, side, side)
            ref = images[:, None] if channels == 1 else images.transpose(0, 3, 1, 2)
            assert np.array_equal(x.numpy(), ref)                # pixel-exact, in source order
            assert np.array_equal(y.numpy(), labels)             # labels aligned with their images


def test_imagenet_resize_skip_and_labels(ray_local, tmp_path):
    exp = make_imagenet(str(tmp_path / "raw"))
    out = str(tmp_path / "shards")
    train, val = shard_dataset("imagenet", out, src=str(tmp_path / "raw"), samples_per_shard=5, progress=False)
    assert train["image_size"] == [128, 128] and train["channels"] == 3
    assert train["classes"] == [WORDS[w] for w in WNIDS] and train["num_classes"] == 3
    assert train["num_samples"] == len(exp["train"]) and val["num_samples"] == len(exp["val"])
    assert len(train["skipped"]) == 1
    assert train["skipped"][0]["source"].endswith(f"{exp['truncated']}.JPEG")
    assert "truncated" in train["skipped"][0]["reason"]
    for m in (train, val):
        split_dir = os.path.join(out, m["split"])
        _check_folder(split_dir, m)
        assert all(n.endswith(".tar") for n in os.listdir(split_dir) if n != "manifest.json" and not n.startswith("."))
        samples = [s for sh in m["shards"] for s in iter_tar(os.path.join(split_dir, sh["name"]))]
        assert all(set(s) >= {"__key__", "jpg", "cls"} for s in samples)
    keys = sorted(exp["train"])
    x, y = read_split(out, "train")
    assert x.shape == (len(keys), 3, 128, 128)
    assert y.tolist() == [exp["train"][k] for k in keys]
    colours = np.array(COLORS)
    for k, img, label in zip(keys, x, y):
        mean = img.float().mean((1, 2)).numpy()
        if exp["special"].get(k) == "grey":
            assert np.ptp(mean) < 2  # greyscale source: R = G = B
            continue
        assert np.argmin(((colours - mean) ** 2).sum(1)) == label  # the image carries its class colour
    xv, yv = read_split(out, "val")
    assert yv.tolist() == [exp["val"][k] for k in sorted(exp["val"])]  # devkit IDs mapped through meta.mat
    for img, label in zip(xv, yv):
        assert np.argmin(((colours - img.float().mean((1, 2)).numpy()) ** 2).sum(1)) == label


def _wait_quiet(folder, settle=1.5, limit=20.0):
    """Return once the folder's files (names, sizes, mtimes, .progress included) stop changing."""
    import time

    def snapshot():
        out = {}
        for base, _, names in os.walk(folder):
            for n in names:
                try:
                    st = os.stat(os.path.join(base, n))
                    out[os.path.join(base, n)] = (st.st_size, st.st_mtime_ns)
                except FileNotFoundError:
                    pass
        return out

    deadline, last, since = time.time() + limit, snapshot(), time.time()
    while time.time() < deadline and time.time() - since < settle:
        time.sleep(0.25)
        now = snapshot()
        if now != last:
            last, since = now, time.time()


def test_crash_and_rerun_finishes_without_duplicates(ray_local, tmp_path):
    out = str(tmp_path / "digits")
    with pytest.raises(Exception, match="simulated crash"):
        shard_dataset("digits", out, split="train", samples_per_shard=200, progress=False,
                      hooks=[CrashWhileSharding(4)])
    split_dir = os.path.join(out, "train")
    _wait_quiet(split_dir)  # tasks Ray Data was cancelling may still finish a shard after the error
    assert not os.path.exists(os.path.join(split_dir, "manifest.json"))
    recorded = {n[: -len(".json")] for n in os.listdir(os.path.join(split_dir, ".progress"))
                if n.endswith(".json")} if os.path.isdir(os.path.join(split_dir, ".progress")) else set()
    finished = {n: os.stat(os.path.join(split_dir, n)).st_mtime_ns for n in recorded}
    assert all(int(n[6:12]) < 4 for n in finished)  # only shards before the crash point completed
    # what a hard kill can leave too: a stray temp file, a half shard under its final name, a stale shard
    for name, data in (("train-000006.tar.tmp-123-dead", b"x" * 100), ("train-000007.tar", b"half" * 300),
                       ("train-000099.tar", b"stale")):
        with open(os.path.join(split_dir, name), "wb") as f:
            f.write(data)
    (manifest,) = shard_dataset("digits", out, split="train", samples_per_shard=200, progress=False)
    names = os.listdir(split_dir)
    assert not [n for n in names if ".tmp" in n]
    keys = _check_folder(split_dir, manifest)
    assert manifest["num_samples"] == 1438 and len(manifest["shards"]) == 8
    assert sorted(keys) == [f"{i:06d}" for i in range(1438)]
    for n, mtime in finished.items():  # shards completed before the crash were kept, not rewritten
        assert os.stat(os.path.join(split_dir, n)).st_mtime_ns == mtime
    # a third run finds everything done and changes nothing
    before = {n: os.stat(os.path.join(split_dir, n)).st_mtime_ns for n in names}
    assert shard_dataset("digits", out, split="train", samples_per_shard=200, progress=False) == [manifest]
    assert {n: os.stat(os.path.join(split_dir, n)).st_mtime_ns for n in os.listdir(split_dir)} == before


def test_file_uri_output(ray_local, tmp_path):
    out = "file://" + str(tmp_path / "uri")
    (m,) = shard_dataset("digits", out, split="test", samples_per_shard=100, progress=False)
    assert m["num_samples"] == 359 and len(m["shards"]) == 4
    _check_folder(str(tmp_path / "uri" / "test"), m)
    x, y = read_split(out, "test")
    assert x.shape == (359, 1, 8, 8) and y.shape == (359,)


def _cli(argv, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", {"shard": cli.COMMANDS["shard"]})  # other commands are not needed here
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse's own usage errors exit from inside parse_args
        rc = exc.code
    return rc, capsys.readouterr()


def test_cli_json_line(ray_local, tmp_path, monkeypatch, capsys):
    rc, cap = _cli(["shard", "digits", "--out", str(tmp_path / "d"), "--split", "test", "--no-progress",
                    "--json"], monkeypatch, capsys)
    assert rc == 0
    result = json.loads(cap.out.strip().splitlines()[-1])
    assert result["splits"]["test"]["num_samples"] == 359 and result["splits"]["test"]["channels"] == 1


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, monkeypatch, capsys):
    make_mnist(str(tmp_path / "mnist"))
    empty = tmp_path / "empty_imagenet" / "train" / WNIDS[0]
    empty.mkdir(parents=True)
    cases = {
        "unknown data set": ["shard", "lsun", "--out", str(tmp_path / "o")],
        "not found": ["shard", "cifar10", "--src", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        "no CIFAR-10": ["shard", "cifar10", "--src", str(tmp_path / "mnist"), "--out", str(tmp_path / "o")],
        "no images": ["shard", "imagenet", "--src", str(tmp_path / "empty_imagenet"), "--out", str(tmp_path / "o")],
        "no split 'extra'": ["shard", "mnist", "--src", str(tmp_path / "mnist"), "--split", "extra",
                             "--out", str(tmp_path / "o")],
        "needs --src": ["shard", "svhn", "--out", str(tmp_path / "o")],
        "--image-size": ["shard", "digits", "--image-size", "0", "--out", str(tmp_path / "o")],
        "required": ["shard", "digits"],
        "cannot reach the Ray cluster": ["shard", "digits", "--address", "127.0.0.1:1", "--out", str(tmp_path / "o")],
    }
    for needle, argv in cases.items():
        rc, cap = _cli(argv, monkeypatch, capsys)
        lines = cap.err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and needle in lines[0], (argv, cap.err)
        assert "Traceback" not in cap.err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.tar"))


# -- igan shard deletes only what it wrote; one run per --out ---------------------------------------
FOREIGN = {"n01440764.tar": b"ILSVRC class archive", "notes.txt": b"mine", "data.tmp-1": b"not a temp of igan",
           "train-extra.tar": b"x", "other-000001.tar": b"y", "train-00001.tar": b"five digits"}


def _quiet(msg):
    pass


def _plant(folder):
    os.makedirs(folder, exist_ok=True)
    for name, data in FOREIGN.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def _foreign_intact(folder):
    for name, data in FOREIGN.items():
        with open(os.path.join(folder, name), "rb") as f:
            assert f.read() == data, name


def test_foreign_files_are_refused_then_kept(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "out")
    split_dir = os.path.join(out, "test")
    _plant(split_dir)
    rc, cap = _cli(["shard", "digits", "--out", out, "--split", "test", "--samples-per-shard", "100"],
                   monkeypatch, capsys)
    lines = cap.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "did not write" in lines[0] and "--overwrite" in lines[0], cap.err
    assert sorted(os.listdir(split_dir)) == sorted(FOREIGN)  # refused before touching anything
    (m,) = shard_dataset("digits", out, split="test", samples_per_shard=100, engine="local", overwrite=True,
                         log=_quiet)
    _foreign_intact(split_dir)
    assert m["num_samples"] == 359 and read_manifest(split_dir) == m
    # started by igan shard now (progress records): a rerun needs no --overwrite and still keeps them
    assert shard_dataset("digits", out, split="test", samples_per_shard=100, engine="local", log=_quiet) == [m]
    with open(os.path.join(split_dir, "test-000099.tar"), "wb") as f:  # a stale shard of its own pattern
        f.write(b"stale")
    assert shard_dataset("digits", out, split="test", samples_per_shard=100, engine="local", log=_quiet) == [m]
    _foreign_intact(split_dir)
    assert not os.path.exists(os.path.join(split_dir, "test-000099.tar"))
    x, y = read_split(out, "test")
    assert x.shape == (359, 1, 8, 8)


def test_own_leftover_temp_files_do_not_make_a_folder_foreign(tmp_path):
    out = str(tmp_path / "out")
    os.makedirs(os.path.join(out, "test"))
    for name in ("test-000000.tar.tmp-77-0a1b2c3d", "manifest.json.tmp-77-0a1b2c3d"):  # a crash before any shard
        with open(os.path.join(out, "test", name), "wb") as f:
            f.write(b"half")
    (m,) = shard_dataset("digits", out, split="test", samples_per_shard=100, engine="local", log=_quiet)
    assert sorted(os.listdir(os.path.join(out, "test"))) == sorted(
        [".progress", "manifest.json"] + [s["name"] for s in m["shards"]])


def test_finished_shard_is_reused_only_when_its_hash_matches(tmp_path):
    out = str(tmp_path / "out")
    (m,) = shard_dataset("digits", out, split="test", samples_per_shard=100, engine="local", log=_quiet)
    path = os.path.join(out, "test", "test-000002.tar")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    with open(path, "wb") as f:
        f.write(bytes(data))
    logs = []
    assert shard_dataset("digits", out, split="test", samples_per_shard=100, engine="local",
                         log=logs.append) == [m]
    assert "(3 already complete)" in logs[0]
    assert _sha(path) == m["shards"][2]["sha256"]


@pytest.mark.parametrize("where", ["local", "object store"])
def test_a_second_concurrent_run_is_refused(tmp_path, monkeypatch, capsys, where):
    import uuid

    out = str(tmp_path / "out") if where == "local" else f"memory://igan-lock-{uuid.uuid4().hex[:8]}"
    seen = []

    def second_run(msg):  # called by the first run while it holds the lock
        if seen:
            return
        seen.append(_cli(["shard", "digits", "--out", out, "--split", "test", "--no-progress"], monkeypatch, capsys))

    (m,) = shard_dataset("digits", out, split="test", samples_per_shard=100, engine="local", log=second_run)
    rc, cap = seen[0]
    lines = cap.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "is writing to" in lines[0] and f"pid {os.getpid()}" in lines[0], cap.err
    assert m["num_samples"] == 359
    # the lock goes with the run, also when it fails
    with pytest.raises(RuntimeError, match="simulated crash"):
        shard_dataset("digits", out, split="test", samples_per_shard=50, engine="local", log=_quiet,
                      hooks=[CrashWhileSharding(1)])
    assert shard_dataset("digits", out, split="test", samples_per_shard=100, engine="local", log=_quiet) == [m]


def test_object_store_lock_object_freshness(tmp_path):
    import time
    import uuid

    import fsspec

    from pipelines.errors import UserError
    from pipelines.shard_lock import LOCK_NAME, STALE_AFTER_S

    out = f"memory://igan-lock-{uuid.uuid4().hex[:8]}"
    mem = fsspec.filesystem("memory")
    holder = {"host": "elsewhere", "pid": 4242, "token": "t", "time": time.time()}
    mem.pipe_file(f"/{out.split('://')[1]}/{LOCK_NAME}", json.dumps(holder).encode())
    with pytest.raises(UserError, match="pid 4242 on elsewhere"):
        shard_dataset("digits", out, split="test", engine="local", log=_quiet)
    holder["time"] -= STALE_AFTER_S + 1  # its run died: the lock object went stale
    mem.pipe_file(f"/{out.split('://')[1]}/{LOCK_NAME}", json.dumps(holder).encode())
    (m,) = shard_dataset("digits", out, split="test", engine="local", log=_quiet)
    assert m["num_samples"] == 359 and not mem.exists(f"/{out.split('://')[1]}/{LOCK_NAME}")
