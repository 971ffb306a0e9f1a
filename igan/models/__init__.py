"""Generator/discriminator pairs reproducing the authors' architectures, built by name."""
from __future__ import annotations

from igan.config import Config, ConfigError
from igan.models import conv, imagenet, imagenet_authors, mlp, toy  # noqa: F401  (registers the families)
from igan.models.common import MODEL_REGISTRY, Discriminator, Generator


def build_models(cfg: Config) -> tuple[Generator, Discriminator]:
    """Fresh ``(generator, discriminator)`` for ``cfg.model.name``, initialised from ``cfg.train.seed``."""
    if cfg.model.name not in MODEL_REGISTRY:
        raise ConfigError(f"config key 'model.name' = {cfg.model.name!r} is not allowed; "
                          f"allowed: {', '.join(MODEL_REGISTRY)}")
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        try:
            return MODEL_REGISTRY[cfg.model.name](cfg)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


__all__ = ["build_models", "Generator", "Discriminator", "MODEL_REGISTRY"]
