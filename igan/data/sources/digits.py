"""sklearn's 8x8 handwritten digits (embedded in sklearn, no files needed)."""
from __future__ import annotations

from functools import lru_cache
from typing import Iterator

import numpy as np

from igan.data.digits import DIGITS_SPLITS, load_digits_split
from igan.data.sources.base import Entry, Record, Source


@lru_cache(maxsize=2)
def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    return load_digits_split(split)


class DigitsSource(Source):
    """``digits``: images ``uint8 [8, 8]`` greyscale, labels 0..9, the fixed seeded train/test split."""

    name = "digits"
    channels = 1
    fmt = "png"
    native_size = 8
    samples_per_shard = 256
    needs_src = False

    def splits(self) -> list[str]:
        return list(DIGITS_SPLITS)

    def classes(self) -> list[str]:
        return [str(k) for k in range(10)]

    def entries(self, split: str) -> list[Entry]:
        self.check_split(split)
        _, labels = _split(split)
        return [Entry(f"{i:06d}", int(y), i) for i, y in enumerate(labels)]

    def read(self, split: str, entries: list[Entry]) -> Iterator[Record]:
        images, _ = _split(split)
        for e in entries:
            yield Record(e.key, e.label, f"digits/{split}[{e.loc}]", pixels=images[e.loc])
