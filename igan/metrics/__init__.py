"""Metrics: Inception score, FID, semi-supervised test error, mode coverage, and the scorers
(networks giving class probabilities and features) they run on.

Scorers are registered by name; ``get_scorer(name, **kwargs)`` builds one. Every scorer has
``.probabilities(images) -> [N, K]`` and ``.features(images) -> [N, F]``. Registered:

* ``inception``: :class:`InceptionScorer` (kwargs ``weights``, ``kind`` = ``torchvision`` |
  ``tf2015``, ``device``, ``batch_size``);
* ``inception_tf2015``: the same with ``kind="tf2015"`` (scores comparable with the paper);
* ``domain``: :func:`load_or_train_domain_classifier` (kwargs ``key``, ``images``, ``labels``,
  ``num_classes``, ``cache_dir``, ...), for digits, MNIST and SVHN.

Heavy modules (torchvision) are imported only when a scorer is built.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from igan.metrics.fid import feature_statistics, fid_from_features, frechet_distance
from igan.metrics.inception_score import inception_score
from igan.metrics.mode_coverage import mode_coverage
from igan.metrics.ssl_error import ssl_test_error

__all__ = [
    "inception_score", "mode_coverage", "frechet_distance", "fid_from_features", "feature_statistics",
    "ssl_test_error", "Scorer", "register_scorer", "get_scorer", "scorer_names",
    "InceptionScorer", "InceptionWeightsNotFound", "InceptionWeightsInvalid", "DomainClassifier",
    "train_domain_classifier", "load_or_train_domain_classifier",
]


@runtime_checkable
class Scorer(Protocol):
    """What a scorer offers: softmax probabilities ``[N, K]`` and features ``[N, F]`` of images."""

    def probabilities(self, images) -> Any:
        """Softmax class probabilities ``[N, K]`` of ``images [N, C, H, W]``."""

    def features(self, images) -> Any:
        """Feature vectors ``[N, F]`` of ``images [N, C, H, W]`` (for FID)."""


Factory = Callable[..., Scorer]
_SCORERS: dict[str, Factory] = {}


def register_scorer(name: str, *, replace: bool = False) -> Callable[[Factory], Factory]:
    """Decorator registering a scorer factory (a callable returning a :class:`Scorer`) as ``name``.

    Registering a taken name raises ValueError unless ``replace=True``. Returns the factory unchanged.
    """
    def decorate(factory: Factory) -> Factory:
        if name in _SCORERS and not replace:
            raise ValueError(f"a scorer named '{name}' is already registered")
        _SCORERS[name] = factory
        return factory
    return decorate


def get_scorer(name: str, **kwargs) -> Scorer:
    """Build the scorer registered as ``name`` with ``kwargs``; ValueError naming the registered
    names for an unknown one."""
    if name not in _SCORERS:
        raise ValueError(f"unknown scorer '{name}'; registered: {', '.join(sorted(_SCORERS))}")
    return _SCORERS[name](**kwargs)


def scorer_names() -> list[str]:
    """Registered scorer names, sorted."""
    return sorted(_SCORERS)


@register_scorer("inception")
def _inception(weights=None, kind: str = "torchvision", device=None, batch_size: int = 50) -> Scorer:
    from igan.metrics.inception_net import InceptionScorer
    return InceptionScorer(weights=weights, kind=kind, device=device, batch_size=batch_size)


@register_scorer("inception_tf2015")
def _inception_tf2015(weights=None, device=None, batch_size: int = 50) -> Scorer:
    return _inception(weights=weights, kind="tf2015", device=device, batch_size=batch_size)


@register_scorer("domain")
def _domain(key: str, images, labels, num_classes: int, cache_dir=None, device="cpu", **train_kwargs) -> Scorer:
    from igan.metrics.domain_classifier import load_or_train_domain_classifier
    return load_or_train_domain_classifier(key, images, labels, num_classes, cache_dir=cache_dir,
                                           device=device, **train_kwargs)


_LAZY = {
    "InceptionScorer": "inception_net", "InceptionWeightsNotFound": "inception_net",
    "InceptionWeightsInvalid": "inception_net",
    "DomainClassifier": "domain_classifier", "train_domain_classifier": "domain_classifier",
    "load_or_train_domain_classifier": "domain_classifier",
}


def __getattr__(name: str):
    """Import the torchvision-backed names on first use."""
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"igan.metrics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'igan.metrics' has no attribute '{name}'")
