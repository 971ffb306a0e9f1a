"""CIFAR-10, python version: the extracted ``cifar-10-batches-py`` folder (or its parent) or the
original ``cifar-10-python.tar.gz``. Batches are pickles of ``{data: uint8 [10000, 3072] (R, G, B
planes of 32x32, row-major), labels: [10000]}``; ``batches.meta`` holds ``label_names``.

The pickles come from wherever ``--src`` points, so they are read with :class:`NumpyUnpickler`,
which builds plain containers and NumPy arrays only: a crafted batch cannot run code."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from functools import lru_cache
from typing import Iterator

import numpy as np

from igan.data.sources.base import Entry, Record, Source, SourceError, describe_error

FOLDER = "cifar-10-batches-py"
SPLIT_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
META = "batches.meta"


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle references a global outside :data:`NumpyUnpickler.ALLOWED`."""


class NumpyUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers (dict, list, tuple, bytes, str, int, float,
    bool, None) and NumPy arrays: every global other than what rebuilding an ``ndarray`` needs is
    refused with :class:`UnsafePickleError`, so a pickle cannot call anything (``os.system``,
    ``exec`` ...) while it loads. ``codecs.encode`` (``_codecs.encode`` in protocol-2 pickles written
    by Python 3) is admitted because such pickles store ``bytes``, e.g. an array's buffer, as
    latin-1 text that it re-encodes; a codec name only selects a module of the stdlib ``encodings``
    package."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("codecs", "encode"), ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise UnsafePickleError(f"refused global {module}.{name} (only NumPy arrays and plain values are read)")
        if module == "numpy.core.multiarray":  # NumPy 1's name, written by older pickles
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def load_numpy_pickle(raw: bytes):
    """The object pickled in ``raw`` (Python 2 pickles: ``str`` read as bytes), built by
    :class:`NumpyUnpickler`; UnsafePickleError when it references anything else."""
    return NumpyUnpickler(io.BytesIO(raw), encoding="bytes").load()


def _get(d: dict, name: str):
    """Value of ``name`` in a pickle dict written by Python 2 (bytes keys) or 3 (str keys)."""
    if name in d:
        return d[name]
    if name.encode() in d:
        return d[name.encode()]
    raise KeyError(name)


def parse_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 32, 32, 3]`` and labels ``int64 [N]`` of one pickled batch."""
    try:
        d = load_numpy_pickle(raw)
        data = np.asarray(_get(d, "data"), dtype=np.uint8)
        labels = np.asarray(_get(d, "labels"), dtype=np.int64)
    except Exception as exc:
        raise SourceError(f"{where} is not a CIFAR-10 python batch ({describe_error(exc)})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise SourceError(f"{where} is not a CIFAR-10 python batch (data {data.shape}, {len(labels)} labels)")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


@lru_cache(maxsize=2)
def _archive(path: str) -> dict[str, bytes]:
    """Member base name -> bytes of every batch file in a CIFAR tar.gz (read once per process)."""
    out = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                base = os.path.basename(m.name)
                if m.isfile() and (base == META or base.startswith(("data_batch_", "test_batch"))):
                    out[base] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"{path} is not a readable CIFAR-10 archive ({describe_error(exc)})") from None
    return out


@lru_cache(maxsize=6)
def _batch(root: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    if os.path.isfile(root):
        files = _archive(root)
        if name not in files:
            raise SourceError(f"{root} has no {name}; not the CIFAR-10 python archive")
        return parse_batch(files[name], f"{root}:{name}")
    path = os.path.join(root, name)
    with open(path, "rb") as f:
        return parse_batch(f.read(), path)


class Cifar10Source(Source):
    """``cifar10``: RGB ``uint8 [32, 32, 3]`` images, 10 classes, splits train (50,000) and test."""

    name = "cifar10"
    native_size = 32

    def __init__(self, src: str | None = None):
        super().__init__(src)
        path = self.src_path()
        if os.path.isdir(path) and os.path.isdir(os.path.join(path, FOLDER)):
            path = os.path.join(path, FOLDER)
        if os.path.isfile(path):
            if not tarfile.is_tarfile(path):
                raise SourceError(f"{src} is neither the cifar-10-batches-py folder nor cifar-10-python.tar.gz")
            names = set(_archive(path))
        else:
            names = set(os.listdir(path))
        self.root = path
        self._splits = [s for s, files in SPLIT_FILES.items() if all(f in names for f in files)]
        if not self._splits:
            raise SourceError(f"no CIFAR-10 python batches (data_batch_1..5, test_batch) in {src}")
        self._has_meta = META in names

    def splits(self) -> list[str]:
        return list(self._splits)

    def classes(self) -> list[str]:
        default = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        if not self._has_meta:
            return default
        raw = _archive(self.root)[META] if os.path.isfile(self.root) else open(os.path.join(self.root, META), "rb").read()
        try:
            names = _get(load_numpy_pickle(raw), "label_names")
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        except UnsafePickleError as exc:  # not merely unusable: someone crafted it
            where = f"{self.root}:{META}" if os.path.isfile(self.root) else os.path.join(self.root, META)
            raise SourceError(f"{where} is not CIFAR-10's {META} ({describe_error(exc)})") from None
        except Exception:
            return default

    def entries(self, split: str) -> list[Entry]:
        self.check_split(split)
        out, n = [], 0
        for name in SPLIT_FILES[split]:
            _, labels = _batch(self.root, name)
            for row, y in enumerate(labels):
                out.append(Entry(f"{n:06d}", int(y), (name, row)))
                n += 1
        return out

    def read(self, split: str, entries: list[Entry]) -> Iterator[Record]:
        for e in entries:
            name, row = e.loc
            images, _ = _batch(self.root, name)
            yield Record(e.key, e.label, f"{name}[{row}]", pixels=images[row])
