"""MNIST in its original idx format, gzipped or not: ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (optionally
``.gz``), in ``--src`` or its ``raw/`` or ``MNIST/raw/`` subfolder (torchvision's layout)."""
from __future__ import annotations

import gzip
import os
from functools import lru_cache

import numpy as np

from igan.data.sources.base import DigitArraySource, SourceError

PREFIX = {"train": "train", "test": "t10k"}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes, where: str) -> np.ndarray:
    """The array stored in idx bytes (magic ``00 00 TYPE NDIM``, big-endian int32 dims, data)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or raw[3] == 0:
        raise SourceError(f"{where} is not an idx file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise SourceError(f"{where} is not an idx file (header cut short)")
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_DTYPES[raw[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    offset = 4 + 4 * ndim
    if len(raw) - offset != need:
        raise SourceError(f"{where}: idx header says {tuple(dims)} but holds {len(raw) - offset} data bytes")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(tuple(dims))


def _find(folder: str, stem: str) -> str | None:
    for sub in ("", "raw", os.path.join("MNIST", "raw")):
        for name in (stem, stem + ".gz"):
            path = os.path.join(folder, sub, name)
            if os.path.isfile(path):
                return path
    return None


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the name says
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise SourceError(f"{path} is a damaged gzip file ({exc})") from None
    return raw


@lru_cache(maxsize=2)
def load_idx_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 28, 28]`` and labels ``int64 [N]`` from an idx3/idx1 pair."""
    images = parse_idx(_read(images_path), images_path)
    labels = parse_idx(_read(labels_path), labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise SourceError(f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise SourceError(f"{labels_path}: {labels.shape} labels for {len(images)} images")
    return images, labels.astype(np.int64)


class MnistSource(DigitArraySource):
    """``mnist``: greyscale ``uint8 [28, 28]`` images, digits 0..9, splits train (60,000) and test."""

    name = "mnist"
    channels = 1
    native_size = 28

    def __init__(self, src: str | None = None):
        super().__init__(src)
        path = self.src_path(folder="the folder of the idx files")
        self.root = path
        self._files = {}
        for split, prefix in PREFIX.items():
            images = _find(path, f"{prefix}-images-idx3-ubyte")
            labels = _find(path, f"{prefix}-labels-idx1-ubyte")
            if images and labels:
                self._files[split] = (images, labels)
        if not self._files:
            raise SourceError(f"no MNIST idx files (train-images-idx3-ubyte[.gz], ...) in {src}")

    def splits(self) -> list[str]:
        return list(self._files)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return load_idx_pair(*self._files[split])

    def array_name(self, split: str) -> str:
        return os.path.basename(self._files[split][0])
