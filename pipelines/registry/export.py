"""The modules igan registers and the check that they export: the classifier wrapper MLflow can
describe, CPU copies of a trainer's modules, example inputs, and the ``torch.export`` round trip a
module must pass before it is stored (igan stores only exported programs, never pickled modules)."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from igan.config import Config
from igan.sampling import freeze_batch_statistics, uses_batch_statistics
from pipelines.registry.names import KINDS


class ClassifierLogits(nn.Module):
    """Wraps igan's discriminator so ``forward(x)`` returns only the class logits ``[N, K]`` (D
    returns ``(logits, features)``), the form an MLflow model's signature can describe.

    ``batch_size`` (a discriminator with minibatch discrimination: its training batch size) makes
    D compare each image only with those of its group of ``batch_size`` consecutive images, as
    ``Trainer.classify``'s chunks do: the layer's statistics sum over the other images of a batch, so
    one call on 1,000 images would otherwise give each image ten times the statistic D learned from,
    and other logits."""

    def __init__(self, model: nn.Module, batch_size: int | None = None):
        super().__init__()
        self.model = model
        self.batch_size = batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, K]`` of images ``x`` in model range."""
        size = getattr(self, "batch_size", None)  # models registered before the attribute existed
        # An int group size makes D's minibatch discrimination compare rows in consecutive groups
        # of that size, the same as classifying chunk by chunk, but as shapes torch.export traces
        # for any N (a loop over x.split(size) exports only for the example's N).
        out = self.model(x, group_sizes=size) if size else self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def _modules_of(trainer_or_modules: Any, cfg: Config) -> dict[str, nn.Module]:
    """``{"generator": G, "classifier": C?}`` from a Trainer or such a dict; the classifier only for
    semi-supervised configs. Modules are CPU copies in eval mode (the trainer is left untouched)."""
    if isinstance(trainer_or_modules, dict):
        unknown = set(trainer_or_modules) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown module keys {sorted(unknown)}; allowed: {', '.join(KINDS)}")
        found = dict(trainer_or_modules)
    else:
        found = {"generator": trainer_or_modules.G}
        if cfg.techniques.semi_supervised:
            found["classifier"] = trainer_or_modules.classifier()
    if "generator" not in found:
        raise ValueError("register_models needs a generator")
    out = {}
    for kind, module in found.items():
        if module is None or (kind == "classifier" and not cfg.techniques.semi_supervised):
            continue
        module = getattr(module, "module", module) if isinstance(
            module, nn.parallel.DistributedDataParallel) else module
        was_training = module.training
        copied = copy.deepcopy(module).cpu().float().eval()
        module.train(was_training)
        if kind == "generator" and uses_batch_statistics(cfg):
            freeze_batch_statistics(copied)  # the program samples as evaluation did (igan.sampling)
        if kind == "classifier" and not isinstance(copied, ClassifierLogits):
            mbd_batch = cfg.data.batch_size if cfg.techniques.minibatch_discrimination else None
            copied = ClassifierLogits(copied, mbd_batch).eval()
        out[kind] = copied
    return out


def _example_input(kind: str, cfg: Config, n: int = 4) -> np.ndarray:
    """A fixed input of ``n`` rows for a ``kind`` model (seeded, so every check sees the same): for
    the generator latent ``z`` float32 ``[n, z_dim]`` in [0, 1); for the classifier images in the
    model's pixel range, float32 ``[n, C, H, W]`` (``[n, 2]`` points for the toy MLP)."""
    gen = torch.Generator().manual_seed(0)
    if kind == "generator":
        return torch.rand(n, cfg.model.z_dim, generator=gen).numpy()
    from igan.data.pixels import to_model_range

    if cfg.model.name == "toy_mlp":
        return torch.randn(n, 2, generator=gen).numpy()
    shape = (n, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    pixels = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    return to_model_range(pixels, cfg.data.pixel_range).numpy()


class NotExportable(ValueError):
    """A module does not export with ``torch.export`` for every batch size; one line saying why."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def check_sizes(module: nn.Module, n: int) -> list[int]:
    """Batch sizes an export of ``module`` (example of ``n`` rows) is checked on: ``n + 1`` and, for a
    classifier grouping its rows for minibatch discrimination, one row past a whole group."""
    sizes = [n + 1]
    group = getattr(module, "batch_size", None) if isinstance(module, ClassifierLogits) else None
    if group and group + 1 not in sizes:
        sizes.append(group + 1)
    return sizes


def check_exports(module: nn.Module, example: np.ndarray, batches: list[np.ndarray]) -> None:
    """Export ``module`` with ``torch.export`` on ``example`` with a dynamic batch dimension, as
    MLflow's ``pt2`` format does, and check that the program gives the module's own outputs on each
    of ``batches`` (other batch sizes). NotExportable (one line) otherwise: igan then does not
    register the module rather than store it pickled."""
    name = type(module).__name__
    try:
        program = torch.export.export(module, (torch.from_numpy(example),),
                                      dynamic_shapes=({0: torch.export.Dim.AUTO},))
    except Exception as exc:  # noqa: BLE001 - any export failure has the same consequence
        raise NotExportable(f"{name} does not export with torch.export ({_first_line(exc)})") from None
    exported = program.module()
    for batch in batches:
        x = torch.from_numpy(batch)
        with torch.no_grad():
            try:
                got = exported(x)
            except Exception as exc:  # noqa: BLE001
                raise NotExportable(f"{name}'s exported program does not run on {len(x)} rows "
                                    f"({_first_line(exc)})") from None
            want = module(x)
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise NotExportable(f"{name}'s exported program computes other outputs than the module on {len(x)} rows")
