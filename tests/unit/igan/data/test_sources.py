"""Raw-format readers (igan.data.sources) on tiny fixtures in the real formats; a crafted CIFAR-10
batch does not run its payload (the NumPy-only unpickler)."""
import gzip
import os
import pickle

import numpy as np
import pytest

from helpers.fixtures_formats import WNIDS, WORDS, make_cifar10, make_imagenet, make_mnist, make_svhn
from helpers.payloads import Payload, one_line
from igan.data.sources import SOURCE_NAMES, SourceError, get_source


def _read_all(source, split):
    entries = source.entries(split)
    records = list(source.read(split, entries))
    assert [r.key for r in records] == [e.key for e in entries]
    assert len({e.key for e in entries}) == len(entries)
    return entries, records


@pytest.mark.parametrize("archive", [False, True])
def test_cifar10_folder_and_tar_gz(tmp_path, archive):
    exp = make_cifar10(str(tmp_path), archive=archive)
    for src in ([exp["path"], str(tmp_path)] if not archive else [exp["path"]]):
        source = get_source("cifar10", src)
        assert source.splits() == ["train", "test"]
        assert source.classes()[:2] == ["airplane", "automobile"] and len(source.classes()) == 10
        for split in ("train", "test"):
            entries, records = _read_all(source, split)
            images, labels = exp[split]
            assert len(entries) == len(labels)
            assert np.array_equal(np.stack([r.pixels for r in records]), images)  # R,G,B planes -> HWC
            assert [e.label for e in entries] == labels.tolist()


def test_cifar10_accepts_python3_pickles(tmp_path):
    exp = make_cifar10(str(tmp_path))
    path = os.path.join(exp["path"], "test_batch")
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    with open(path, "wb") as f:
        pickle.dump({k.decode(): v for k, v in d.items()}, f)
    _, records = _read_all(get_source("cifar10", exp["path"]), "test")
    assert np.array_equal(np.stack([r.pixels for r in records]), exp["test"][0])


def test_svhn_mat_maps_label_10_to_0(tmp_path):
    exp = make_svhn(str(tmp_path))
    source = get_source("svhn", str(tmp_path))
    assert source.splits() == ["train", "test"] and source.classes() == [str(k) for k in range(10)]
    entries, records = _read_all(source, "train")
    assert entries[0].label == 0
    assert [e.label for e in entries] == exp["train"][1].tolist()
    assert np.array_equal(np.stack([r.pixels for r in records]), exp["train"][0])


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path, gz):
    exp = make_mnist(str(tmp_path), gz=gz)
    source = get_source("mnist", str(tmp_path))
    for split in ("train", "test"):
        entries, records = _read_all(source, split)
        assert np.array_equal(np.stack([r.pixels for r in records]), exp[split][0])
        assert [e.label for e in entries] == exp[split][1].tolist()


def test_mnist_torchvision_layout(tmp_path):
    exp = make_mnist(str(tmp_path / "MNIST" / "raw"))
    _, records = _read_all(get_source("mnist", str(tmp_path)), "test")
    assert np.array_equal(np.stack([r.pixels for r in records]), exp["test"][0])


def test_digits_needs_no_src():
    source = get_source("digits")
    entries = source.entries("test")
    assert len(entries) > 300 and records_shape(source) == (8, 8)


def records_shape(source):
    return next(iter(source.read("test", source.entries("test")[:1]))).pixels.shape


@pytest.mark.parametrize("flat_val", [True, False])
def test_imagenet_tree(tmp_path, flat_val):
    exp = make_imagenet(str(tmp_path), flat_val=flat_val)
    source = get_source("imagenet", str(tmp_path))
    assert source.splits() == ["train", "val"]
    assert source.classes() == [WORDS[w] for w in WNIDS]
    for split in ("train", "val"):
        entries, records = _read_all(source, split)
        expected = dict(exp[split], **({exp["truncated"]: 0} if split == "train" else {}))
        assert {e.key: e.label for e in entries} == expected
        assert all(r.data and r.error is None for r in records)  # bytes only; decoding is the pipeline's job


def test_imagenet_flat_val_without_devkit_is_a_clear_error(tmp_path):
    make_imagenet(str(tmp_path))
    import shutil
    shutil.rmtree(tmp_path / "ILSVRC2012_devkit_t12")
    with pytest.raises(SourceError, match="ground_truth"):
        get_source("imagenet", str(tmp_path)).entries("val")


def test_imagenet_class_names_fall_back_to_wnids(tmp_path):
    make_imagenet(str(tmp_path))
    os.remove(tmp_path / "LOC_synset_mapping.txt")
    assert get_source("imagenet", str(tmp_path)).classes() == WNIDS


def test_bad_sources(tmp_path):
    assert set(SOURCE_NAMES) == {"digits", "mnist", "cifar10", "svhn", "imagenet"}
    with pytest.raises(SourceError, match="unknown data set 'lsun'"):
        get_source("lsun", str(tmp_path))
    with pytest.raises(SourceError, match="not found"):
        get_source("cifar10", str(tmp_path / "nope"))
    with pytest.raises(SourceError, match="needs --src"):
        get_source("mnist")
    make_mnist(str(tmp_path / "m"))
    with pytest.raises(SourceError, match="no CIFAR-10"):
        get_source("cifar10", str(tmp_path / "m"))  # wrong format
    with pytest.raises(SourceError, match="no SVHN"):
        get_source("svhn", str(tmp_path / "m"))
    with pytest.raises(SourceError, match="no train/ or val/"):
        get_source("imagenet", str(tmp_path / "m"))
    (tmp_path / "x").mkdir()
    with open(tmp_path / "x" / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(gzip.compress(b"\x00\x00\x08\x03garbage"))
    with open(tmp_path / "x" / "train-labels-idx1-ubyte", "wb") as f:
        f.write(b"\x12\x34")
    with pytest.raises(SourceError, match="idx"):
        get_source("mnist", str(tmp_path / "x")).entries("train")
    with pytest.raises(SourceError, match="no split 'validation'"):
        get_source("mnist", str(tmp_path / "m")).check_split("validation")


def test_crafted_cifar_batch_does_not_run_its_payload(tmp_path, capsys):
    from pipelines import cli

    exp = make_cifar10(str(tmp_path / "src"))
    marker = tmp_path / "payload-ran"
    batch = os.path.join(exp["path"], "data_batch_1")
    with open(batch, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d[b"labels"] = Payload(marker)
    with open(batch, "wb") as f:
        pickle.dump(d, f, protocol=2)
    # The batches are read to plan the shards, before Ray starts: the error comes first.
    code = cli.main(["shard", "cifar10", "--src", exp["path"], "--out", str(tmp_path / "out"), "--split", "train"])
    err = capsys.readouterr().err
    assert not marker.exists(), "the CIFAR batch's payload ran"
    assert code == 2 and one_line(err), err
    assert "data_batch_1" in err and "exec" in err, err
