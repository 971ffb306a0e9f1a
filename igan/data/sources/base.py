"""What every raw-format reader provides: splits, class names, a cheap per-sample index, and lazy
records. Readers are small picklable objects (a path and options), so a Ray Data task can rebuild
the records of any slice of the index on any node that sees the same files."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, NamedTuple

import numpy as np


class SourceError(ValueError):
    """The raw data set is missing, empty or not in the expected format; the message says which."""


class Entry(NamedTuple):
    """One sample of a split's index: its shard key, its class index and where to find it
    (a file path relative to the source root, or ``(file, row)`` into an array file)."""
    key: str
    label: int
    loc: Any


@dataclass
class Record:
    """One read sample. Exactly one of ``pixels`` (``uint8 [H, W]`` or ``[H, W, 3]``) and ``data``
    (the encoded file's bytes) is set, unless ``error`` says why the sample could not be read.
    ``source`` names where it came from (path, or ``file[row]``) for the manifest's ``skipped``."""
    key: str
    label: int
    source: str
    pixels: np.ndarray | None = None
    data: bytes | None = None
    error: str | None = None


class Source:
    """A raw data set on disk. Subclasses set the class attributes that differ from these defaults
    (RGB, PNG, 5000 samples per shard) and implement the methods."""

    name: ClassVar[str] = ""
    channels: ClassVar[int] = 3          # channels of the stored images (1: greyscale, 3: RGB)
    fmt: ClassVar[str] = "png"           # shard image encoding: png (lossless) or jpg
    native_size: ClassVar[int | None] = None  # side of the raw images when fixed, None when mixed
    default_image_size: ClassVar[int | None] = None  # size sharded to by default (None: native)
    samples_per_shard: ClassVar[int] = 5000
    needs_src: ClassVar[bool] = True

    def __init__(self, src: str | None = None):
        self.src = src

    def splits(self) -> list[str]:
        """Names of the splits present in the source, in canonical order."""
        raise NotImplementedError

    def classes(self) -> list[str]:
        """Class names in index order (label ``k`` is ``classes()[k]``)."""
        raise NotImplementedError

    def entries(self, split: str) -> list[Entry]:
        """The split's index in a fixed order (the shard order): one Entry per sample."""
        raise NotImplementedError

    def read(self, split: str, entries: list[Entry]) -> Iterator[Record]:
        """Records of ``entries`` in the same order; never raises for one bad sample (its Record
        carries ``error``)."""
        raise NotImplementedError

    def src_path(self, folder: str | None = None) -> str:
        """The absolute path of ``src``. SourceError when it does not exist, or, with ``folder`` (what
        it must be instead, e.g. ``"the folder of the idx files"``), when it is not a folder."""
        path = os.path.abspath(str(self.src))
        if not os.path.exists(path):
            raise SourceError(f"{self.name} source {'folder ' if folder else ''}not found: {self.src}")
        if folder and not os.path.isdir(path):
            raise SourceError(f"{self.name} --src must be {folder}, got a file: {self.src}")
        return path

    def check_split(self, split: str) -> None:
        """SourceError naming the available splits when ``split`` is not one of them."""
        have = self.splits()
        if split not in have:
            raise SourceError(f"{self.name} source {self.src or ''} has no split '{split}' "
                              f"(has: {', '.join(have) or 'none'})".replace("  ", " "))


class DigitArraySource(Source):
    """A source of the ten digits 0..9 whose split is one array of images and one of labels
    (:meth:`arrays`): its index is the rows in order, keyed by row number."""

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images ``uint8 [N, H, W]`` or ``[N, H, W, 3]`` and labels ``int64 [N]`` of ``split``."""
        raise NotImplementedError

    def array_name(self, split: str) -> str:
        """Where ``split``'s arrays come from, as a Record's ``source`` names it (``NAME[row]``)."""
        raise NotImplementedError

    def classes(self) -> list[str]:
        return [str(k) for k in range(10)]

    def entries(self, split: str) -> list[Entry]:
        self.check_split(split)
        _, labels = self.arrays(split)
        return [Entry(f"{i:06d}", int(y), i) for i, y in enumerate(labels)]

    def read(self, split: str, entries: list[Entry]) -> Iterator[Record]:
        images, _ = self.arrays(split)
        name = self.array_name(split)
        for e in entries:
            yield Record(e.key, e.label, f"{name}[{e.loc}]", pixels=images[e.loc])


def describe_error(exc: BaseException) -> str:
    """One-line ``Type: message`` text of an exception, at most 200 characters."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
