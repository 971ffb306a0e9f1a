"""Balanced, seeded selection of the labeled subset for semi-supervised training."""
from __future__ import annotations

import numpy as np


def select_labeled(labels: np.ndarray, per_class: int, seed: int, num_classes: int | None = None) -> np.ndarray:
    """Indices (sorted, ``int64``) of ``per_class`` examples of every class, drawn with ``seed``.

    ``per_class == -1`` selects everything, ``0`` nothing. The draw for a class depends only on the
    seed and that class's examples, so a larger ``per_class`` keeps the smaller draw as a prefix.
    Raises ValueError when a class has fewer examples than asked.
    """
    labels = np.asarray(labels)
    if per_class == -1:
        return np.arange(len(labels), dtype=np.int64)
    if per_class == 0:
        return np.zeros(0, dtype=np.int64)
    classes = range(num_classes) if num_classes is not None else np.unique(labels)
    chosen = []
    for k in classes:
        idx = np.flatnonzero(labels == k)
        if len(idx) < per_class:
            raise ValueError(f"class {k} has {len(idx)} examples, fewer than the {per_class} labels per class asked")
        perm = np.random.default_rng([seed, int(k)]).permutation(len(idx))
        chosen.append(idx[perm[:per_class]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)
