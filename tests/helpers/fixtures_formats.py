"""Tiny raw data sets written in the real on-disk formats, for the source and shard tests.

Each builder writes files the way the original distributions lay them out and returns what a
correct reader must produce (images in ``[N, H, W(, 3)]`` uint8 and int64 labels per split).
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
from PIL import Image

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# -- CIFAR-10 python pickles ---------------------------------------------------------------------
def make_cifar10(root: str, per_batch: int = 4, n_test: int = 6, archive: bool = False, seed: int = 0) -> dict:
    """``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` (Python-2 style
    pickles: bytes keys, ``data`` uint8 [N, 3072] as R, G, B planes), or with ``archive`` the
    ``root/cifar-10-python.tar.gz`` holding that folder. Returns ``{"path", split: (images
    uint8 [N, 32, 32, 3], labels int64 [N])}``."""
    rng = np.random.default_rng(seed)
    files, expected = {}, {}
    for split, names, n in (("train", [f"data_batch_{i}" for i in range(1, 6)], per_batch),
                            ("test", ["test_batch"], n_test)):
        imgs, labs = [], []
        for name in names:
            x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
            y = rng.integers(0, 10, size=n)
            d = {b"batch_label": name.encode(), b"labels": [int(v) for v in y],
                 b"data": x.transpose(0, 3, 1, 2).reshape(n, 3072).copy(),
                 b"filenames": [f"img_{name}_{i}.png".encode() for i in range(n)]}
            files[name] = pickle.dumps(d, protocol=2)
            imgs.append(x)
            labs.append(y)
        expected[split] = (np.concatenate(imgs), np.concatenate(labs).astype(np.int64))
    files["batches.meta"] = pickle.dumps({b"label_names": [n.encode() for n in CIFAR_NAMES],
                                          b"num_cases_per_batch": per_batch, b"num_vis": 3072}, protocol=2)
    os.makedirs(root, exist_ok=True)
    if archive:
        path = os.path.join(root, "cifar-10-python.tar.gz")
        with tarfile.open(path, "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        path = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(path, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(path, name), "wb") as f:
                f.write(data)
    expected["path"] = path
    return expected


# -- SVHN .mat ------------------------------------------------------------------------------------
def make_svhn(root: str, n_train: int = 12, n_test: int = 5, seed: int = 1) -> dict:
    """``root/{train,test}_32x32.mat`` (MATLAB v5: ``X`` uint8 [32, 32, 3, N], ``y`` uint8
    [N, 1] in 1..10 where 10 means digit 0). Returns ``{split: (images [N,32,32,3], labels 0..9)}``."""
    import scipy.io

    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    expected = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(1, 11, size=n)
        y[0] = 10  # make sure the "10 means 0" rule is exercised
        scipy.io.savemat(os.path.join(root, f"{split}_32x32.mat"),
                         {"X": x.transpose(1, 2, 3, 0).copy(), "y": y.astype(np.uint8).reshape(-1, 1)})
        expected[split] = (x, np.where(y == 10, 0, y).astype(np.int64))
    return expected


# -- MNIST idx ------------------------------------------------------------------------------------
def idx_bytes(arr: np.ndarray) -> bytes:
    """idx encoding of a uint8 array: magic ``00 00 08 NDIM``, big-endian int32 dims, data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()


def make_mnist(root: str, n_train: int = 10, n_test: int = 4, gz: bool = True, seed: int = 2) -> dict:
    """``root/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``. Returns ``{split: (images
    uint8 [N, 28, 28], labels int64 [N])}``."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    expected = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            data = idx_bytes(arr)
            name = stem + (".gz" if gz else "")
            with open(os.path.join(root, name), "wb") as f:
                f.write(gzip.compress(data) if gz else data)
        expected[split] = (x, y.astype(np.int64))
    return expected


# -- ImageNet tree --------------------------------------------------------------------------------
WNIDS = ["n01440764", "n01443537", "n01484850"]          # sorted: class index 0, 1, 2
WORDS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
         "n01484850": "great white shark, white shark"}
COLORS = [(220, 30, 30), (30, 200, 40), (40, 60, 220)]  # one dominant colour per class
DEVKIT_IDS = {"n01484850": 1, "n01440764": 2, "n01443537": 3}  # ILSVRC2012_ID order is not wnid order


def class_image(k: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """RGB ``uint8 [h, w, 3]``: class ``k``'s colour with mild noise, so the label is visible."""
    base = np.array(COLORS[k], dtype=np.float64)
    noise = rng.normal(0, 8, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def make_imagenet(root: str, per_class: int = 3, n_val: int = 6, flat_val: bool = True, seed: int = 3) -> dict:
    """An ILSVRC-2012-like tree under ``root``: ``train/<wnid>/<wnid>_<i>.JPEG`` for 3 classes with
    mixed sizes around 400x350, plus the awkward files of real ImageNet in class 0: a PNG named
    ``.JPEG``, a CMYK JPEG, a greyscale JPEG and a truncated JPEG (unreadable). ``val/`` is flat
    (``ILSVRC2012_val_NNNNNNNN.JPEG`` labelled by the devkit's ground-truth file and ``meta.mat``)
    or in wnid folders. ``LOC_synset_mapping.txt`` gives the class words. Returns ``{"train":
    {key: label}, "val": {key: label}, "truncated": key, "special": {key: kind}}``."""
    import scipy.io

    rng = np.random.default_rng(seed)
    sizes = [(400, 350), (350, 400), (500, 333), (420, 380), (333, 500)]
    out = {"train": {}, "val": {}, "special": {}}
    for k, wnid in enumerate(WNIDS):
        d = os.path.join(root, "train", wnid)
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[(k + i) % len(sizes)]
            key = f"{wnid}_{i}"
            with open(os.path.join(d, key + ".JPEG"), "wb") as f:
                f.write(_jpeg(Image.fromarray(class_image(k, w, h, rng))))
            out["train"][key] = k
    d0 = os.path.join(root, "train", WNIDS[0])
    png = Image.fromarray(class_image(0, 300, 260, rng))
    buf = io.BytesIO()
    png.save(buf, format="PNG")
    specials = {
        f"{WNIDS[0]}_png": buf.getvalue(),
        f"{WNIDS[0]}_cmyk": _jpeg(Image.fromarray(class_image(0, 380, 300, rng)).convert("CMYK")),
        f"{WNIDS[0]}_grey": _jpeg(Image.fromarray(class_image(0, 360, 420, rng)).convert("L")),
    }
    kinds = {f"{WNIDS[0]}_png": "png", f"{WNIDS[0]}_cmyk": "cmyk", f"{WNIDS[0]}_grey": "grey"}
    for key, data in specials.items():
        with open(os.path.join(d0, key + ".JPEG"), "wb") as f:
            f.write(data)
        out["train"][key] = 0
        out["special"][key] = kinds[key]
    whole = _jpeg(Image.fromarray(class_image(0, 400, 350, rng)))
    trunc_key = f"{WNIDS[0]}_truncated"
    with open(os.path.join(d0, trunc_key + ".JPEG"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    out["truncated"] = trunc_key

    val = os.path.join(root, "val")
    os.makedirs(val, exist_ok=True)
    truth = []
    for i in range(1, n_val + 1):
        k = int(rng.integers(0, len(WNIDS)))
        key = f"ILSVRC2012_val_{i:08d}"
        w, h = sizes[i % len(sizes)]
        folder = val if flat_val else os.path.join(val, WNIDS[k])
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, key + ".JPEG"), "wb") as f:
            f.write(_jpeg(Image.fromarray(class_image(k, w, h, rng))))
        truth.append(DEVKIT_IDS[WNIDS[k]])
        out["val"][key] = k
    if flat_val:
        data = os.path.join(root, "ILSVRC2012_devkit_t12", "data")
        os.makedirs(data, exist_ok=True)
        with open(os.path.join(data, "ILSVRC2012_validation_ground_truth.txt"), "w") as f:
            f.write("".join(f"{t}\n" for t in truth))
        synsets = np.zeros((len(WNIDS) + 1, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"),
                                                       ("num_children", "O")])
        for wnid, sid in DEVKIT_IDS.items():
            synsets[sid - 1, 0] = (np.array([[sid]], dtype=np.uint16), wnid, WORDS[wnid], np.array([[0]]))
        synsets[len(WNIDS), 0] = (np.array([[1001]], dtype=np.uint16), "n00000001", "fish", np.array([[3]]))
        scipy.io.savemat(os.path.join(data, "meta.mat"), {"synsets": synsets})
    with open(os.path.join(root, "LOC_synset_mapping.txt"), "w") as f:
        f.write("".join(f"{w} {WORDS[w]}\n" for w in WNIDS))
    return out
