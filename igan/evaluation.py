"""Evaluation of a Trainer: semi-supervised error (EMA weights), a sample-quality score
(Inception-v3 or a domain classifier), mode coverage on toy mixtures, and sample grids.

Metrics are named by the role of what they were measured on: ``val_*`` on the validation hold-out
(periodic evaluation, model choice), ``test_*`` on the test split (reported once, never used to
choose). Generated samples for each role come from their own fixed seed, so a model chosen on its
``val_`` samples is scored on fresh ones. Distributed callers generate samples on every rank,
gather them, and pass them as ``samples``.
"""
from __future__ import annotations

import numpy as np
import torch

from igan.config import Config
from igan.data.memory import ArraySplit
from igan.data.pixels import to_uint8
from igan.metrics import get_scorer, inception_score, mode_coverage, ssl_test_error

TOY_SETS = ("ring8", "grid25")
INCEPTION_SETS = ("cifar10", "imagenet")
ROLES = ("val", "test")
SAMPLE_SEED_OFFSET = {"val": 104729, "test": 130363}  # samples of a role use train.seed + this: fixed noise


def role_metrics(role: str, metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` with every name prefixed by the role (``val_`` or ``test_``)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    return {f"{role}_{k}": v for k, v in metrics.items()}


def scorer_kind(cfg: Config) -> str:
    """Which scorer ``eval.scorer=auto`` means for this data set: ``inception``, ``domain`` or ``none``."""
    if cfg.eval.scorer != "auto":
        return cfg.eval.scorer
    if cfg.data.dataset in TOY_SETS:
        return "none"
    return "inception" if cfg.data.dataset in INCEPTION_SETS else "domain"


def make_scorer(cfg: Config, train: ArraySplit | None = None, cache_dir: str | None = None):
    """The scorer for ``cfg`` or None. Domain classifiers are trained on ``train`` (real labeled
    images in model range) once and cached; Inception weights come from a file (path or URI, see
    :mod:`igan.metrics.inception_net`), and a missing or wrong one raises
    ``InceptionWeightsNotFound`` / ``InceptionWeightsInvalid`` (one line): a run whose score needs
    them must not go on without it."""
    kind = scorer_kind(cfg)
    if kind == "none":
        return None
    if kind == "domain":
        if train is None:
            return None
        return get_scorer("domain", key=cfg.data.dataset, images=train.x, labels=train.y,
                          num_classes=cfg.data.num_classes, cache_dir=cache_dir)
    return get_scorer("inception")


def require_scorer(cfg: Config) -> str | None:
    """The local Inception weight file the scorer of ``cfg`` will load, after loading it once, or
    None when that scorer needs no weights (``domain``, ``none``). Raises ``InceptionWeightsNotFound``
    or ``InceptionWeightsInvalid`` (one line saying where the file goes): drivers call this before
    starting any work, so a job never trains for days without its metric."""
    if scorer_kind(cfg) != "inception":
        return None
    from igan.metrics.inception_net import check_weights

    return str(check_weights())


def scorer_input(images: torch.Tensor, cfg: Config) -> torch.Tensor:
    """``images`` (model range) as the scorer of ``cfg`` takes them: uint8 pixels for Inception,
    model range for a domain classifier."""
    return images if scorer_kind(cfg) == "domain" else to_uint8(images, cfg.data.pixel_range)


def score_samples(samples: torch.Tensor, cfg: Config, scorer=None, reference=None) -> dict[str, float]:
    """Sample-quality metrics of generated ``samples`` (model range): ``inception_score`` and
    ``inception_score_std`` with a scorer, plus ``fid`` against ``reference`` (the real set's
    feature statistics, :func:`igan.metrics.fid_reference.reference_statistics`) when given;
    ``modes_captured`` and ``high_quality_fraction`` on toy sets."""
    out: dict[str, float] = {}
    if cfg.data.dataset in TOY_SETS:
        from igan.data.toy import TOY_STD, toy_centers

        modes, hq = mode_coverage(samples.numpy(), toy_centers(cfg.data.dataset), TOY_STD[cfg.data.dataset])
        out.update(modes_captured=float(modes), high_quality_fraction=float(hq))
    if scorer is not None:
        images = scorer_input(samples, cfg)
        feats = None
        if reference is not None and hasattr(scorer, "probabilities_and_features"):
            probs, feats = scorer.probabilities_and_features(images)  # one pass through the network
        else:
            probs = scorer.probabilities(images)
            feats = scorer.features(images) if reference is not None else None
        probs = torch.as_tensor(probs)
        splits = min(cfg.eval.splits, len(probs))
        mean, std = inception_score(probs, splits=splits)
        out.update(inception_score=float(mean), inception_score_std=float(std))
        if feats is not None and len(feats) >= 2:
            from igan.metrics.fid_reference import fid_to_reference

            out["fid"] = fid_to_reference(feats, reference)
    return out


def evaluate(trainer, cfg: Config, data: ArraySplit | None = None, scorer=None,
             samples: torch.Tensor | None = None, role: str = "test") -> dict[str, float]:
    """All metrics of the current trainer state, named by ``role``: ``<role>_ssl_error`` (fraction,
    EMA classifier) for semi-supervised runs given that role's ``data``, plus :func:`score_samples`
    on ``samples`` (default: ``eval.num_samples`` fresh samples from the role's fixed seed)."""
    out: dict[str, float] = {}
    if cfg.techniques.semi_supervised and data is not None and len(data):
        out["ssl_error"] = ssl_test_error(trainer.classify, data.x, data.y)
    if cfg.data.dataset in TOY_SETS or scorer is not None:
        if samples is None:
            samples = trainer.generate(cfg.eval.num_samples, seed=cfg.train.seed + SAMPLE_SEED_OFFSET[role])
        out.update(score_samples(samples, cfg, scorer))
    return role_metrics(role, out)


def sample_grid(samples: torch.Tensor, cfg: Config, nrow: int | None = None) -> np.ndarray:
    """A PNG-ready ``uint8 [H, W, 3]`` picture of ``samples``: an image grid of ``nrow`` columns,
    or, for 2-D toy samples, a 256x256 scatter of the points over ``[-5, 5]^2`` (mode centres red)."""
    if samples.dim() == 2:
        return _scatter(samples, cfg)
    from torchvision.utils import make_grid

    nrow = nrow or cfg.eval.grid_size
    images = to_uint8(samples[: nrow * nrow], cfg.data.pixel_range)
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    grid = make_grid(images, nrow=nrow, padding=1, pad_value=0)
    return grid.permute(1, 2, 0).contiguous().numpy()


def _scatter(points: torch.Tensor, cfg: Config, size: int = 256, extent: float = 5.0) -> np.ndarray:
    from igan.data.toy import toy_centers

    img = np.full((size, size, 3), 255, dtype=np.uint8)

    def pix(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ij = np.clip(((xy + extent) / (2 * extent) * (size - 1)).round().astype(int), 0, size - 1)
        return size - 1 - ij[:, 1], ij[:, 0]

    r, c = pix(points.numpy())
    img[r, c] = (30, 60, 200)
    if cfg.data.dataset in TOY_SETS:
        r, c = pix(toy_centers(cfg.data.dataset))
        img[r, c] = (220, 20, 20)
    return img
