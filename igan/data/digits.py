"""sklearn's handwritten digits (1,797 real 8x8 images, 0..16 grey levels) with a fixed seeded split."""
from __future__ import annotations

import numpy as np

DIGITS_SPLITS = ("train", "test")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 8, 8]`` scaled from 0..16 to 0..255 (``round(v*255/16)``, injective) and
    labels ``int64 [N]`` of the fixed split: 20% test drawn with seed 0, stratified by class."""
    if split not in DIGITS_SPLITS:
        raise ValueError(f"digits has splits {', '.join(DIGITS_SPLITS)}; got '{split}'")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        test[rng.choice(idx, size=int(round(len(idx) * TEST_FRACTION)), replace=False)] = True
    mask = test if split == "test" else ~test
    return images[mask], labels[mask]
