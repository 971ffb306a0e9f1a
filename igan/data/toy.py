"""2-D Gaussian mixtures for mode-collapse checks: ``ring8`` and ``grid25``."""
from __future__ import annotations

import math

import numpy as np

TOY_STD = {"ring8": 0.02, "grid25": 0.05}
TOY_SIZE = {"train": 50000, "test": 2500}


def toy_centers(name: str) -> np.ndarray:
    """Mode centers ``float32 [M, 2]``: 8 on a circle of radius 2, or the 5x5 grid {-4,-2,0,2,4}^2."""
    if name == "ring8":
        angles = np.arange(8) * (2 * math.pi / 8)
        return np.stack([2 * np.cos(angles), 2 * np.sin(angles)], 1).astype(np.float32)
    if name == "grid25":
        axis = np.array([-4, -2, 0, 2, 4], dtype=np.float32)
        return np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    raise ValueError(f"toy data set must be ring8 or grid25; got '{name}'")


def sample_toy(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points ``float32 [n, 2]`` and their mode index ``int64 [n]``, drawn with ``seed``."""
    centers = toy_centers(name)
    rng = np.random.default_rng(seed)
    modes = rng.integers(0, len(centers), size=n)
    points = centers[modes] + TOY_STD[name] * rng.standard_normal((n, 2)).astype(np.float32)
    return points.astype(np.float32), modes.astype(np.int64)


def load_toy_split(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed ``train`` (50,000 points, seed 0) or ``test`` (2,500 points, seed 1) split."""
    if split not in TOY_SIZE:
        raise ValueError(f"{name} has splits {', '.join(TOY_SIZE)}; got '{split}'")
    return sample_toy(name, TOY_SIZE[split], seed=0 if split == "train" else 1)
