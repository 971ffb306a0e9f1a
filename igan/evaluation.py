"""Evaluation of a Trainer: semi-supervised error (EMA weights), a sample-quality score
(Inception-v3 or a domain classifier), mode coverage on toy mixtures, and sample grids.

Metrics are named by the role of what they were measured on: ``val_*`` on the validation hold-out
(periodic evaluation, model choice), ``test_*`` on the test split (reported once, never used to
choose). Generated samples for each role come from their own fixed seed, so a model chosen on its
``val_`` samples is scored on fresh ones. Distributed callers generate samples on every rank,
gather them, and pass them as ``samples``.
"""
from __future__ import annotations

from typing import Iterable

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


#: ``eval.scorer`` values naming an Inception-v3 network, and its kind (:mod:`igan.metrics.inception_net`).
INCEPTION_NETWORKS = {"inception_tf2015": "tf2015", "inception": "torchvision"}
#: What each resolved scorer is, for people (``igan score`` prints it).
NETWORK_NAMES = {"inception_tf2015": "Inception-v3, the 2015-12-05 TensorFlow graph the paper scored with",
                 "inception": "Inception-v3, torchvision's (scores lower than the paper's network)",
                 "domain": "a classifier trained on the data set's train split", "none": "no scorer"}


def scorer_kind(cfg: Config) -> str:
    """The family of ``cfg``'s scorer: ``inception`` (either Inception network), ``domain`` or
    ``none``; ``eval.scorer=auto`` means Inception for CIFAR-10/ImageNet, none for toy sets, a domain
    classifier otherwise. Reads no file (which Inception network: :func:`scorer_network`)."""
    choice = cfg.eval.scorer
    if choice == "auto":
        if cfg.data.dataset in TOY_SETS:
            return "none"
        return "inception" if cfg.data.dataset in INCEPTION_SETS else "domain"
    return "inception" if choice in INCEPTION_NETWORKS else choice


def scorer_network(cfg: Config) -> str:
    """The network that scores ``cfg``'s samples, as an ``eval.scorer`` value other than auto:
    ``inception_tf2015``, ``inception`` (torchvision), ``domain`` or ``none``. ``auto`` on CIFAR-10
    and ImageNet is the port of the 2015 graph when its weight file is found the usual way (path,
    ``$IGAN_INCEPTION_WEIGHTS``, the cache; :func:`igan.metrics.inception_weights.has_weights`), else
    torchvision's. Drivers log it with every run (MLflow param ``eval.scorer_network``)."""
    if cfg.eval.scorer != "auto":
        return cfg.eval.scorer
    kind = scorer_kind(cfg)
    if kind != "inception":
        return kind
    from igan.metrics.inception_weights import has_weights

    return "inception_tf2015" if has_weights("tf2015") else "inception"


def with_scorer_network(cfg: Config, network: str | None = None) -> Config:
    """``cfg`` with ``eval.scorer=auto`` replaced by the network it resolves to here (``network``, or
    :func:`scorer_network`), so workers on other nodes score with the network the driver logged;
    ``cfg`` itself when its scorer is named."""
    if cfg.eval.scorer != "auto":
        return cfg
    from igan.config import with_values

    return with_values(cfg, {"eval.scorer": network or scorer_network(cfg)})


def make_scorer(cfg: Config, train: ArraySplit | None = None, cache_dir: str | None = None,
                network: str | None = None):
    """The scorer for ``cfg`` (``network``: its :func:`scorer_network`, resolved when not given) or
    None. Domain classifiers are trained on ``train`` (real labeled images in model range) once and
    cached; Inception weights come from a file (path or URI, see :mod:`igan.metrics.inception_net`),
    and a missing or wrong one raises ``InceptionWeightsNotFound`` / ``InceptionWeightsInvalid``
    (one line): a run whose score needs them must not go on without it."""
    network = network or scorer_network(cfg)
    if network == "none":
        return None
    if network == "domain":
        if train is None:
            return None
        return get_scorer("domain", key=cfg.data.dataset, images=train.x, labels=train.y,
                          num_classes=cfg.data.num_classes, cache_dir=cache_dir)
    return get_scorer("inception", kind=INCEPTION_NETWORKS[network])


def require_scorer(cfg: Config) -> str | None:
    """The local Inception weight file the scorer of ``cfg`` will load, after loading it once, or
    None when that scorer needs no weights (``domain``, ``none``). Raises ``InceptionWeightsNotFound``
    or ``InceptionWeightsInvalid`` (one line saying where the file goes): drivers call this before
    starting any work, so a job never trains for days without its metric."""
    network = scorer_network(cfg)
    if network not in INCEPTION_NETWORKS:
        return None
    from igan.metrics.inception_net import WEIGHT_FILES, InceptionWeightsNotFound, check_weights

    try:
        return str(check_weights(kind=INCEPTION_NETWORKS[network]))
    except InceptionWeightsNotFound as exc:
        if cfg.eval.scorer != "auto":
            raise
        port = WEIGHT_FILES["tf2015"]
        raise InceptionWeightsNotFound(f"{exc}; eval.scorer=auto scores with the paper's network when '{port}' "
                                       "is found the same way, else with this one") from None


def scorer_input(images: torch.Tensor, cfg: Config) -> torch.Tensor:
    """``images`` (model range) as the scorer of ``cfg`` takes them: uint8 pixels for Inception,
    model range for a domain classifier."""
    return images if scorer_kind(cfg) == "domain" else to_uint8(images, cfg.data.pixel_range)


#: Samples generated, gathered and scored per round: the paper's 50,000-sample final score never
#: holds more than this many images at once (5,000 ImageNet samples: ~1 GB as floats).
SCORE_ROUND = 5000
#: Seed step between rounds (round 0 draws what a single draw of the same seed draws).
ROUND_SEED_STEP = 1_000_003


def sample_rounds(n: int, size: int | None = None) -> list[tuple[int, int]]:
    """``[(round index, samples in it), ...]`` covering ``n`` samples in rounds of ``size`` (default
    :data:`SCORE_ROUND`, read when called); round ``k`` draws from its seed plus ``k * ROUND_SEED_STEP``."""
    size = size or SCORE_ROUND
    return [(k, min(size, n - start)) for k, start in enumerate(range(0, n, size))]


def final_num_samples(cfg: Config) -> int:
    """Samples of the test-role score at the end: ``eval.final_num_samples`` (the paper's 50,000 for
    the CIFAR-10 and ImageNet presets), or ``eval.num_samples`` when that is 0."""
    return cfg.eval.final_num_samples or cfg.eval.num_samples


def scorer_outputs(samples: torch.Tensor, cfg: Config, scorer, features: bool = False):
    """``(probabilities [N, K], features [N, F] or None)`` of generated ``samples`` (model range)
    through ``scorer``, in one pass through the network when both are wanted."""
    images = scorer_input(samples, cfg)
    if features and hasattr(scorer, "probabilities_and_features"):
        probs, feats = scorer.probabilities_and_features(images)
    else:
        probs = scorer.probabilities(images)
        feats = scorer.features(images) if features else None
    return torch.as_tensor(probs), feats


def metrics_of(cfg: Config, probs: torch.Tensor | None = None, feats=None, points: torch.Tensor | None = None,
               reference=None) -> dict[str, float]:
    """Sample-quality metrics from the scorer's outputs over all samples: ``inception_score`` and
    ``inception_score_std`` (mean and std over ``eval.splits`` contiguous splits) of ``probs``, plus
    ``fid`` of ``feats`` against ``reference`` when both are given; on toy sets ``modes_captured``
    and ``high_quality_fraction`` of the 2-D ``points``."""
    out: dict[str, float] = {}
    if cfg.data.dataset in TOY_SETS and points is not None:
        from igan.data.toy import TOY_STD, toy_centers

        modes, hq = mode_coverage(points.numpy(), toy_centers(cfg.data.dataset), TOY_STD[cfg.data.dataset])
        out.update(modes_captured=float(modes), high_quality_fraction=float(hq))
    if probs is not None:
        mean, std = inception_score(probs, splits=min(cfg.eval.splits, len(probs)))
        out.update(inception_score=float(mean), inception_score_std=float(std))
        if feats is not None and reference is not None and len(feats) >= 2:
            from igan.metrics.fid_reference import fid_to_reference

            out["fid"] = fid_to_reference(feats, reference)
    return out


def score_samples(samples: torch.Tensor, cfg: Config, scorer=None, reference=None) -> dict[str, float]:
    """Sample-quality metrics of generated ``samples`` (model range): ``inception_score`` and
    ``inception_score_std`` with a scorer, plus ``fid`` against ``reference`` (the real set's
    feature statistics, :func:`igan.metrics.fid_reference.reference_statistics`) when given;
    ``modes_captured`` and ``high_quality_fraction`` on toy sets (:func:`metrics_of`)."""
    probs = feats = None
    if scorer is not None:
        probs, feats = scorer_outputs(samples, cfg, scorer, features=reference is not None)
    return metrics_of(cfg, probs, feats, samples, reference)


def score_images(batches: Iterable[torch.Tensor], cfg: Config, scorer, limit: int | None = None
                 ) -> tuple[dict[str, float], int]:
    """``(metrics, count)``: the Inception score (:func:`metrics_of`) of images, the first ``limit``
    (default: all) of ``batches`` (``[B, C, H, W]`` in model range: a split's real images, or rounds
    of generated ones), scored batch by batch so no more than one batch of images is held.
    ValueError when there are none."""
    probs, seen = [], 0
    for images in batches:
        images = images if limit is None else images[: limit - seen]
        if len(images):
            probs.append(scorer_outputs(images, cfg, scorer)[0])
            seen += len(images)
        if limit is not None and seen >= limit:
            break
    if not probs:
        raise ValueError("no images to score")
    return metrics_of(cfg, torch.cat(probs)), seen


def evaluate(trainer, cfg: Config, data: ArraySplit | None = None, scorer=None,
             samples: torch.Tensor | None = None, role: str = "test") -> dict[str, float]:
    """All metrics of the current trainer state, named by ``role``: ``<role>_ssl_error`` (fraction,
    EMA classifier) for semi-supervised runs given that role's ``data``, plus :func:`score_samples`
    on ``samples`` (default: fresh samples from the role's fixed seed, ``eval.num_samples`` of them
    for ``val``, :func:`final_num_samples` for ``test``)."""
    out: dict[str, float] = {}
    if cfg.techniques.semi_supervised and data is not None and len(data):
        out["ssl_error"] = ssl_test_error(trainer.classify, data.x, data.y)
    if cfg.data.dataset in TOY_SETS or scorer is not None:
        if samples is None:
            n = final_num_samples(cfg) if role == "test" else cfg.eval.num_samples
            samples = trainer.generate(n, seed=cfg.train.seed + SAMPLE_SEED_OFFSET[role])
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
