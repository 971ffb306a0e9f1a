"""Mode coverage on 2-D Gaussian mixtures (VEEGAN's protocol): modes captured and high-quality fraction."""
from __future__ import annotations

import numpy as np

from igan.metrics.inception_score import _as_float64

#: A mode is captured with at least this many high-quality samples per REFERENCE_SAMPLES samples.
MIN_PER_MODE = 20
REFERENCE_SAMPLES = 2500
#: A sample is high quality within this many standard deviations of its nearest center.
NUM_STD = 3.0


def mode_coverage(samples, centers, std: float) -> tuple[int, float]:
    """``(modes_captured, high_quality_fraction)`` of generated points around known mixture centers.

    ``samples``: ``[N, D]`` points (numpy or torch); ``centers``: ``[M, D]`` mode centers; ``std``:
    the mixture components' standard deviation (same units as the points). A sample is high
    quality when its Euclidean distance to its nearest center is at most ``3 * std`` (boundary
    included). A mode is captured when at least ``20 * N / 2500`` high-quality samples have it as
    their nearest center (20 for the standard 2,500 samples, 40 for 5,000, ...).
    Returns the number of captured modes (``int`` in ``[0, M]``) and the fraction of high-quality
    samples (``float`` in ``[0, 1]``).
    """
    x, c = _as_float64(samples), _as_float64(centers)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ValueError(f"samples [N, D] and centers [M, D] must share D; got {x.shape} and {c.shape}")
    if len(x) == 0 or len(c) == 0:
        raise ValueError("mode_coverage needs at least one sample and one center")
    if not std > 0:
        raise ValueError(f"std must be positive; got {std!r}")
    d2 = np.stack([((x - center) ** 2).sum(1) for center in c], 1)  # [N, M] squared distances
    nearest = d2.argmin(1)
    high_quality = d2[np.arange(len(x)), nearest] <= (NUM_STD * std) ** 2
    counts = np.bincount(nearest[high_quality], minlength=len(c))
    threshold = MIN_PER_MODE * len(x) / REFERENCE_SAMPLES
    return int((counts >= threshold).sum()), float(high_quality.mean())
