"""The real side of FID: feature statistics (mean ``[F]``, covariance ``[F, F]``) of a real image set
through a scorer's feature network, computed once per data set and network and cached on this
node (``<cache>/fid/<key>.npz``, read without pickle), so every evaluation of every run on the same
shards reuses them."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from igan.metrics.fid import feature_statistics, frechet_distance


def local_cache_root() -> Path:
    """``$IGAN_CACHE`` when it is a local folder, else ``~/.cache/igan``."""
    cache = os.environ.get("IGAN_CACHE")
    return Path(cache).expanduser() if cache and "://" not in cache else Path.home() / ".cache" / "igan"


def reference_key(**identity) -> str:
    """A cache key (hex) for the real set and network described by ``identity`` (JSON-able values)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def reference_statistics(features: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor],
                         key: str, cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(mu [F], sigma [F, F])`` (float64) of ``features(images)`` over the image ``batches``,
    from the cache when ``key`` is there; computed and written atomically otherwise."""
    folder = Path(cache_dir) if cache_dir else local_cache_root() / "fid"
    path = folder / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                return cached["mu"], cached["sigma"]
        except (OSError, ValueError, KeyError):
            pass  # damaged: computed again and replaced
    feats = torch.cat([torch.as_tensor(features(batch)).double().cpu() for batch in batches])
    mu, sigma = feature_statistics(feats.numpy())
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.npz"
    np.savez(tmp, mu=mu, sigma=sigma)
    tmp.replace(path)
    return mu, sigma


def fid_to_reference(features: torch.Tensor, reference: tuple[np.ndarray, np.ndarray]) -> float:
    """FID between generated ``features [N, F]`` (N >= 2) and the real statistics ``reference``."""
    mu, sigma = feature_statistics(torch.as_tensor(features).double().cpu().numpy())
    return frechet_distance(reference[0], reference[1], mu, sigma)
