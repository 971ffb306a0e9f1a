"""MLflow runs shaped like igan training runs, made without training, for ``igan report`` tests:
the config as params, per-epoch metrics (losses, ``val_*``, ``test_*`` at the last epoch), per-step
``step/`` metrics, two sample grids logged the MLflow 3 way (``log_image(key="samples", step=epoch)``)
and one the old way (``samples/epoch_0001.png``)."""
from __future__ import annotations

import math

import numpy as np

from helpers import tiny
from igan.config import apply_overrides
from pipelines.tracking import RunTracker

EPOCHS = 4
STEPS_PER_EPOCH = 5
#: Epochs whose grids are logged as step-indexed images; epoch 1's is the old-style artifact.
INDEXED_EPOCHS = (2, 4)
GRID_SHAPE = (18, 18, 3)


def sample_grid(seed: int) -> np.ndarray:
    """A small ``uint8 [18, 18, 3]`` image standing in for a sample grid."""
    return np.random.default_rng(seed).integers(0, 256, size=GRID_SHAPE, dtype=np.uint8)


def epoch_metrics(epoch: int, quality: float) -> dict[str, float]:
    """The per-epoch metrics a run logs at ``epoch``; ``quality`` (0..1) separates runs."""
    return {"loss_d": 1.2 / epoch + quality, "loss_g": 0.8 + 0.1 * epoch,
            "val_ssl_error": 0.5 * quality + 0.3 / epoch, "val_inception_score": 2 + epoch * quality,
            "val_fid": 80 / epoch + 10 * quality, "val_modes_captured": float(epoch)}


def log_report_run(tracking_uri: str, experiment: str, name: str, quality: float = 0.5,
                   overrides: list[str] | None = None, nan_epoch: int | None = None) -> str:
    """Log one finished run as described in the module docstring; returns its run id. ``overrides``
    change its config (``["optim.lr_g=0.001"]``); ``nan_epoch`` makes ``val_fid`` NaN there."""
    cfg = apply_overrides(tiny("digits"), list(overrides or []))
    with RunTracker(tracking_uri, experiment, run_name=name) as tracker:
        tracker.log_config(cfg)
        for epoch in range(1, EPOCHS + 1):
            metrics = epoch_metrics(epoch, quality)
            if epoch == nan_epoch:
                metrics["val_fid"] = math.nan
            if epoch == EPOCHS:
                metrics.update({"test_ssl_error": 0.4 * quality + 0.05, "test_inception_score": 3.0 + quality})
            tracker.log_metrics(metrics, step=epoch)
            for s in range(STEPS_PER_EPOCH):
                step = (epoch - 1) * STEPS_PER_EPOCH + s + 1
                tracker.log_metrics({"step/loss_d": 1.0 / step + quality, "step/loss_g": 0.9,
                                     "step/images_per_s": 1000.0 * (1 + quality) + step,
                                     "step/step_time_s": 0.05 + 0.001 * s,
                                     "step/data_wait_fraction": 0.1 * quality,
                                     "cuda_peak_mib_rank0": 512.0 + step,
                                     "cuda_peak_mib_rank1": 500.0 + step}, step=step)
            if epoch == 1:
                tracker.log_image(sample_grid(epoch), f"samples/epoch_{epoch:04d}.png")
            elif epoch in INDEXED_EPOCHS:
                tracker.client.log_image(tracker.run_id, sample_grid(epoch), key="samples", step=epoch)
        return tracker.run_id
