"""SVHN cropped digits: ``train_32x32.mat``, ``test_32x32.mat`` and optionally ``extra_32x32.mat``
(MATLAB v5 files with ``X: uint8 [32, 32, 3, N]`` and ``y: [N, 1]``, where label 10 means digit 0)."""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Iterator

import numpy as np

from igan.data.sources.base import Entry, Record, Source, SourceError, describe_error

SPLIT_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}


@lru_cache(maxsize=1)
def load_mat(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 32, 32, 3]`` and labels ``int64 [N]`` in 0..9 (10 mapped to 0) of one file."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except NotImplementedError:
        raise SourceError(f"{path} is a MATLAB v7.3 (HDF5) file; SVHN's .mat files are v5") from None
    except Exception as exc:
        raise SourceError(f"{path} is not a readable .mat file ({describe_error(exc)})") from None
    if "X" not in mat or "y" not in mat:
        raise SourceError(f"{path} has no X and y arrays; not an SVHN cropped-digits file")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise SourceError(f"{path}: X has shape {x.shape}, expected [H, W, 3, {len(y)}]")
    labels = y.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise SourceError(f"{path}: labels outside 0..10")
    labels[labels == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2).astype(np.uint8)), labels


class SvhnSource(Source):
    """``svhn``: RGB ``uint8 [32, 32, 3]`` images, digits 0..9; splits train, test (and extra)."""

    name = "svhn"
    channels = 3
    fmt = "png"
    native_size = 32
    samples_per_shard = 5000

    def __init__(self, src: str | None = None):
        super().__init__(src)
        path = os.path.abspath(str(src))
        if not os.path.isdir(path):
            raise SourceError(f"svhn source folder not found: {src}" if not os.path.exists(path)
                              else f"svhn --src must be the folder holding train_32x32.mat etc., got a file: {src}")
        self.root = path
        self._splits = [s for s, f in SPLIT_FILES.items() if os.path.isfile(os.path.join(path, f))]
        if not self._splits:
            raise SourceError(f"no SVHN files ({', '.join(SPLIT_FILES.values())}) in {src}")

    def splits(self) -> list[str]:
        return list(self._splits)

    def classes(self) -> list[str]:
        return [str(k) for k in range(10)]

    def entries(self, split: str) -> list[Entry]:
        self.check_split(split)
        _, labels = load_mat(os.path.join(self.root, SPLIT_FILES[split]))
        return [Entry(f"{i:06d}", int(y), i) for i, y in enumerate(labels)]

    def read(self, split: str, entries: list[Entry]) -> Iterator[Record]:
        images, _ = load_mat(os.path.join(self.root, SPLIT_FILES[split]))
        for e in entries:
            yield Record(e.key, e.label, f"{SPLIT_FILES[split]}[{e.loc}]", pixels=images[e.loc])
