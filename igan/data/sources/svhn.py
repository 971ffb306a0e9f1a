"""SVHN cropped digits: ``train_32x32.mat``, ``test_32x32.mat`` and optionally ``extra_32x32.mat``
(MATLAB v5 files with ``X: uint8 [32, 32, 3, N]`` and ``y: [N, 1]``, where label 10 means digit 0)."""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from igan.data.sources.base import DigitArraySource, SourceError, describe_error

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


class SvhnSource(DigitArraySource):
    """``svhn``: RGB ``uint8 [32, 32, 3]`` images, digits 0..9; splits train, test (and extra)."""

    name = "svhn"
    native_size = 32

    def __init__(self, src: str | None = None):
        super().__init__(src)
        path = self.src_path(folder="the folder holding train_32x32.mat etc.")
        self.root = path
        self._splits = [s for s, f in SPLIT_FILES.items() if os.path.isfile(os.path.join(path, f))]
        if not self._splits:
            raise SourceError(f"no SVHN files ({', '.join(SPLIT_FILES.values())}) in {src}")

    def splits(self) -> list[str]:
        return list(self._splits)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return load_mat(os.path.join(self.root, SPLIT_FILES[split]))

    def array_name(self, split: str) -> str:
        return SPLIT_FILES[split]
