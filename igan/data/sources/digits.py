"""sklearn's 8x8 handwritten digits (embedded in sklearn, no files needed)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from igan.data.digits import DIGITS_SPLITS, load_digits_split
from igan.data.sources.base import DigitArraySource


@lru_cache(maxsize=2)
def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    return load_digits_split(split)


class DigitsSource(DigitArraySource):
    """``digits``: images ``uint8 [8, 8]`` greyscale, labels 0..9, the fixed seeded train/test split."""

    name = "digits"
    channels = 1
    fmt = "png"
    native_size = 8
    samples_per_shard = 256
    needs_src = False

    def splits(self) -> list[str]:
        return list(DIGITS_SPLITS)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return _split(split)

    def array_name(self, split: str) -> str:
        return f"digits/{split}"
