"""The Inception score of Salimans et al. (2016): ``exp(E_x KL(p(y|x) || p(y)))`` over contiguous splits."""
from __future__ import annotations

import numpy as np
from scipy.special import xlogy


def inception_score(probabilities, splits: int = 10) -> tuple[float, float]:
    """Inception score ``(mean, std)`` over ``splits`` contiguous splits, as the authors computed it.

    ``probabilities``: class probabilities ``[N, K]`` (rows of a softmax; numpy array or torch
    tensor, any float dtype), one row per generated sample. Split ``i`` is rows
    ``i*N//splits : (i+1)*N//splits`` (no shuffling). For each split with marginal
    ``p(y) = mean_x p(y|x)`` the score is ``exp(mean_x sum_y p(y|x) (log p(y|x) - log p(y)))``;
    ``0 log 0`` counts as 0. Returns the mean and the population standard deviation (``ddof=0``)
    of the per-split scores, as Python floats. The score lies in ``[1, K]``.

    Raises ValueError for a non-2-D input, ``splits < 1``, fewer rows than splits, negative
    entries, or rows that do not sum to 1 (within 1e-2; logits passed by mistake).
    """
    p = _as_float64(probabilities)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be [N, K]; got shape {tuple(p.shape)}")
    if int(splits) != splits or splits < 1:
        raise ValueError(f"splits must be a positive integer; got {splits!r}")
    splits = int(splits)
    n = p.shape[0]
    if n < splits:
        raise ValueError(f"need at least one sample per split: {n} samples for {splits} splits")
    if not np.all(np.isfinite(p)) or (p < 0).any():
        raise ValueError("probabilities must be finite and non-negative (pass softmax outputs, not logits)")
    if np.abs(p.sum(1) - 1.0).max() > 1e-2:
        raise ValueError("each row of probabilities must sum to 1 (pass softmax outputs, not logits)")
    scores = []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(0, keepdims=True)
        kl = (xlogy(part, part) - xlogy(part, marginal)).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def _as_float64(x) -> np.ndarray:
    """A numpy float64 copy of a numpy array, torch tensor (any device/dtype) or nested list."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)
