"""Drawing samples from a generator the one way evaluation and the registry both do: ``z ~ U(0, 1)``
in batches from a seeded ``torch.Generator``, with the generator's batch-norm layers normalising by
the statistics of each sampling batch (the authors' sampling, ``eval.generator_batch_stats=true``)
or by their running averages (PyTorch's eval mode, ``false``).

The authors' Theano code samples with the training graph (``deterministic=False``), so batch norm
uses each batch's own mean and variance, in batches of the training batch size. igan does the same
by default: every sampling batch then holds exactly ``data.batch_size`` latent vectors (the last
one padded with extra draws whose samples are dropped), so no sample is normalised with the
statistics of a smaller batch. Virtual batch norm has no running averages: it is unaffected.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from igan.config import Config

#: Sampling batch size when batch norm uses running averages (samples do not depend on each other).
EVAL_SAMPLE_BATCH = 500


def uses_batch_statistics(cfg: Config) -> bool:
    """Whether samples of ``cfg``'s generator are drawn with batch norm on batch statistics: the
    switch is on and the generator normalises with batch norm (not virtual batch norm)."""
    return bool(cfg.eval.generator_batch_stats) and not cfg.techniques.virtual_batch_norm


def _batch_norms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


@contextlib.contextmanager
def batch_statistics(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every batch-norm layer of ``module`` normalises with the statistics of its
    input batch and leaves its running averages (and batch counter) untouched: train mode with
    ``track_running_stats`` off, both restored afterwards. Other layers keep their mode."""
    layers = _batch_norms(module)
    saved = [(m.training, m.track_running_stats) for m in layers]
    for m in layers:
        m.train()
        m.track_running_stats = False
    try:
        yield module
    finally:
        for m, (training, tracking) in zip(layers, saved):
            m.train(training)
            m.track_running_stats = tracking


def freeze_batch_statistics(module: nn.Module) -> nn.Module:
    """``module`` (changed in place: pass a copy) with its batch-norm layers made to use batch
    statistics in every mode: running averages dropped. For the registered generator, whose
    exported program then samples as evaluation did."""
    for m in _batch_norms(module):
        m.track_running_stats = False
        m.running_mean = m.running_var = m.num_batches_tracked = None
    return module


def draw_samples(forward: Callable[[torch.Tensor], torch.Tensor], cfg: Config, n: int, noise: torch.Generator,
                 device: torch.device | str = "cpu", batch_size: int | None = None) -> torch.Tensor:
    """``n`` samples ``[n, ...]`` (float32, CPU) of ``forward(z)``, ``z`` ``[b, z_dim]`` drawn from
    ``noise`` batch by batch. With batch statistics (:func:`uses_batch_statistics`) every batch has
    ``batch_size`` (default ``data.batch_size``) rows, the last padded; otherwise batches of
    ``batch_size`` (default 500), the last one shorter. The caller puts the generator in the mode
    it samples in (see :func:`batch_statistics`)."""
    padded = uses_batch_statistics(cfg)
    size = batch_size or (cfg.data.batch_size if padded else EVAL_SAMPLE_BATCH)
    out = []
    for start in range(0, n, size):
        rows = min(size, n - start)
        z = torch.rand(size if padded else rows, cfg.model.z_dim, generator=noise)
        out.append(forward(z.to(device))[:rows].float().cpu())
    return torch.cat(out) if out else torch.zeros(0)
