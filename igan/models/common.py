"""Pieces shared by the model families: layer factories that honour ``techniques.weight_norm``, the
generator/discriminator interfaces, and the model registry."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from igan.config import Config, check_layer_index
from igan.layers import MinibatchDiscrimination, VirtualBatchNorm, WNConv2d, WNConvTranspose2d, WNLinear

MODEL_REGISTRY: dict[str, Callable[[Config], tuple["Generator", "Discriminator"]]] = {}


def register_model(name: str):
    """Decorator registering ``fn(cfg) -> (generator, discriminator)`` under ``model.name``."""
    def wrap(fn):
        MODEL_REGISTRY[name] = fn
        return fn
    return wrap


def dense(cfg: Config, n_in: int, n_out: int, last: bool = False, init_scale: float | None = 1.0) -> nn.Module:
    """Dense layer: weight-normalised (scale trainable only on the last layer; ``init_scale``: the
    pre-activation std its data-dependent init sets, None for none) or plain."""
    if cfg.techniques.weight_norm:
        return WNLinear(n_in, n_out, train_scale=last, init_scale=init_scale)
    return nn.Linear(n_in, n_out)


def conv(cfg: Config, c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0) -> nn.Module:
    """Convolution: weight-normalised or plain."""
    if cfg.techniques.weight_norm:
        return WNConv2d(c_in, c_out, k, stride, padding)
    return nn.Conv2d(c_in, c_out, k, stride, padding)


def deconv(cfg: Config, c_in: int, c_out: int, last: bool = False, init_scale: float = 1.0) -> nn.Module:
    """5x5 stride-2 transposed convolution doubling H and W: weight-normalised (``init_scale`` as in
    :func:`dense`) or plain."""
    if cfg.techniques.weight_norm:
        return WNConvTranspose2d(c_in, c_out, 5, 2, 2, 1, train_scale=last, init_scale=init_scale)
    return nn.ConvTranspose2d(c_in, c_out, 5, 2, 2, 1)


def normal_init_(module: nn.Module, std: float = 0.05) -> nn.Module:
    """``module`` with its weight drawn from ``N(0, std^2)`` and its bias (if any) zeroed: the
    authors' ``W=Normal(0.05)`` for the batch-normed layers of the CIFAR/SVHN generator."""
    with torch.no_grad():
        module.weight.normal_(0.0, std)
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()
    return module


def gen_norm(cfg: Config, features: int, dim: int) -> nn.Module:
    """The generator's normaliser: virtual batch norm when enabled, else batch norm with a fixed
    unit gain (the authors' "BN without gain") followed by a learned bias."""
    if cfg.techniques.virtual_batch_norm:
        return VirtualBatchNorm(features, cfg.techniques.vbn_reference_size)
    bn = nn.BatchNorm1d(features) if dim == 1 else nn.BatchNorm2d(features)
    bn.weight.requires_grad_(False)
    return bn


class Generator(nn.Module):
    """Base generator: ``forward(z [N, z_dim]) -> samples [N, ...]`` with z ~ U(0, 1).

    With virtual batch norm, a fixed reference noise batch (a buffer, saved in the state dict) is
    prepended so the reference and the requested samples go through one forward pass; the
    reference rows are dropped from the output.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.z_dim = cfg.model.z_dim
        ref = cfg.techniques.vbn_reference_size if cfg.techniques.virtual_batch_norm else 0
        g = torch.Generator().manual_seed(cfg.train.seed + 7919)
        self.register_buffer("reference_z", torch.rand(ref, self.z_dim, generator=g))

    def body(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n_ref = self.reference_z.shape[0]
        if n_ref:
            z = torch.cat([self.reference_z.to(z.dtype), z], 0)
        out = self.body(z)
        return out[n_ref:] if n_ref else out


class Discriminator(nn.Module):
    """Base discriminator: ``forward(x, group_sizes=None) -> (logits [N, K or 1], features [N, F])``.

    ``features`` is the hidden layer selected by ``techniques.fm_layer`` (for feature matching).
    ``group_sizes`` splits the batch into independent minibatches for minibatch discrimination
    (sizes, or an int for consecutive groups of that many rows: see
    :class:`~igan.layers.MinibatchDiscrimination`).
    """

    #: True for a D whose layers compare real with generated rows (the authors' ImageNet D: cross
    #: batch norm, joint minibatch features): the Trainer then gives it one batch of real rows
    #: followed by generated rows, in the D step and in the G step, with ``group_sizes`` listing
    #: the generated group last.
    joint_batch = False

    def __init__(self, cfg: Config):
        super().__init__()
        self.fm_layer = cfg.techniques.fm_layer
        self.mbd_layer = cfg.techniques.mbd_layer
        self.num_logits = cfg.data.num_classes if cfg.techniques.semi_supervised else 1

    def pick_feature(self, hidden: list[torch.Tensor]) -> torch.Tensor:
        """The hidden activation at ``fm_layer`` (Python indexing), flattened to ``[N, F]``."""
        check_layer_index("fm_layer", self.fm_layer, len(hidden), "feature")
        return hidden[self.fm_layer].flatten(1)

    def join_minibatch_statistics(self, h: torch.Tensor, layer_outputs: list[torch.Tensor],
                                  group_sizes: list[int] | int | None) -> torch.Tensor:
        """``h`` ``[N, F]`` with the minibatch-discrimination statistics of ``layer_outputs[mbd_layer]``
        appended (``[N, F + mbd_kernels]``); ``h`` itself when ``self.mbd`` (the subclass sets it from
        :func:`minibatch_head`) is None."""
        if self.mbd is None:
            return h
        return torch.cat([h, self.mbd.statistics(layer_outputs[self.mbd_layer], group_sizes)], 1)


def minibatch_head(cfg: Config, in_features: int,
                   hidden_widths: Sequence[int] | None = None) -> tuple[MinibatchDiscrimination | None, int]:
    """The minibatch-discrimination layer in front of a discriminator's output layer, and the width
    that output layer reads: ``(layer, in_features + mbd_kernels)``, or ``(None, in_features)`` when
    ``techniques.minibatch_discrimination`` is off.

    ``in_features`` is the width F of the features ``[N, F]`` the head extends; with the layer they
    become ``[N, F + mbd_kernels]`` (the features, then the statistics ``[N, mbd_kernels]``; see
    :meth:`Discriminator.join_minibatch_statistics`). ``hidden_widths`` is for discriminators that
    can feed the layer from any hidden layer (``igan.config.MLP_DISCRIMINATORS``): the widths of
    those layers, of which ``techniques.mbd_layer`` picks the one the layer is sized for. Without
    it the layer reads the F features themselves.
    """
    t = cfg.techniques
    if not t.minibatch_discrimination:
        return None, in_features
    source = in_features
    if hidden_widths is not None:
        check_layer_index("mbd_layer", t.mbd_layer, len(hidden_widths), "hidden")
        source = hidden_widths[t.mbd_layer]
    # weight-normed along with the rest of D: then it is the authors' MinibatchLayer, initialised from data
    layer = MinibatchDiscrimination(source, t.mbd_kernels, t.mbd_dim, weight_norm=t.weight_norm)
    return layer, in_features + t.mbd_kernels
