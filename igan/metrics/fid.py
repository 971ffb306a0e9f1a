"""Fréchet distance between Gaussians fitted to feature sets (FID on Inception pool features)."""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from igan.metrics.inception_score import _as_float64


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and unbiased covariance ``[F, F]`` (float64) of ``features [N, F]``, ``N >= 2``."""
    f = _as_float64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [N, F] with N >= 2; got shape {f.shape}")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``, the squared Fréchet
    (2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``mu*``: means ``[F]``; ``sigma*``: covariances ``[F, F]`` (units of the features, squared).
    The matrix square root is ``scipy.linalg.sqrtm``; when the product is singular (scipy warns)
    or the root is not finite, ``eps * I`` is added to both covariances and the root recomputed.
    Imaginary parts from round-off are dropped (a warning names a large one). Returns a
    non-negative Python float.
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    s1, s2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes do not match: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    singular = any(issubclass(w.category, scipy.linalg.LinAlgWarning) for w in caught)
    if singular or not np.isfinite(covmean).all():
        offset = eps * np.eye(s1.shape[0])
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3 * max(1.0, np.abs(np.diagonal(covmean).real).max()):
            warnings.warn(f"frechet_distance: sqrtm has an imaginary part up to {imag:.3g}; dropped",
                          RuntimeWarning, stacklevel=2)
        covmean = covmean.real
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def fid_from_features(real, fake) -> float:
    """FID between feature sets ``real [N, F]`` and ``fake [M, F]`` (e.g. 2048-d Inception pool
    features; N, M >= 2): :func:`frechet_distance` of their means and covariances."""
    mu1, s1 = feature_statistics(real)
    mu2, s2 = feature_statistics(fake)
    return frechet_distance(mu1, s1, mu2, s2)
