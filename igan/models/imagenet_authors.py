"""The ImageNet-128 pair of the authors' TensorFlow code (``imagenet/``), the ``imagenet128`` preset's
``model.name=imagenet_authors``. (``imagenet_dcgan``, igan's earlier stand-in, stays available.)

D (leaky ReLU 0.2 after every layer): Gaussian noise 0.1 -> seven 3x3 convs d0..d6 with strides
2, 2, 2, 1, 1, 2, 2 (128 -> 4), each with cross batch norm -> dense d7 with cross batch norm ->
[minibatch features over the joint batch, 2 per kernel] -> dense K+1, returned as K logits minus the
learned generated logit (igan's K+1 convention: the generated logit is then 0).
G: z ~ U(-1, 1) -> dense 4*4*g0 -> VBN + ReLU + noise n0 -> deconv5x5/2 g1 -> VBN + ReLU + noise n1
-> ... -> g_last at 128x128 + noise -> deconv5x5/1 3 + tanh. "noise n" appends n channels of
U(-1, 1) noise; preset widths d = 64, 128, 256, 256, 256, 512, 512, 2560; g = 512, 256, 128, 64,
64, 64; noise = 64, 64, 32, 16, 8, 8 (the authors' df_dim = gf_dim = 64).

D must see the real and the generated rows of a step in one batch (``joint_batch``); the Trainer
passes them so, real rows first. Convolutions use TensorFlow's ``SAME`` padding as the authors'.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from igan.config import Config
from igan.layers import GaussianNoise, VirtualBatchNorm
from igan.models.common import Discriminator, Generator, gen_norm, register_model
from igan.models.imagenet_layers import (CrossBatchNorm, JointMinibatchDiscrimination, NoiseChannels, SameConv2d,
                                         SameDeconv2d)

#: Strides of D's seven convolutions (the authors' h0..h6).
D_STRIDES = (2, 2, 2, 1, 1, 2, 2)


def _dense(n_in: int, n_out: int) -> nn.Linear:
    """The authors' ``linear``: weights ~ N(0, 0.02^2), zero bias."""
    layer = nn.Linear(n_in, n_out)
    nn.init.normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


def _real_rows(group_sizes: list[int] | int | None) -> int | None:
    """Rows of real data at the front of D's batch: all groups but the last (the generated one)
    when ``group_sizes`` lists two or more; None (every row real, no generated part) otherwise."""
    if isinstance(group_sizes, (list, tuple)) and len(group_sizes) >= 2:
        return sum(group_sizes[:-1])
    return None


def _check_not_weight_normed(cfg: Config) -> None:
    if cfg.techniques.weight_norm:
        raise ValueError("config key 'techniques.weight_norm' must be false for model.name=imagenet_authors "
                         "(the authors' ImageNet pair normalises with batch norm)")


class AuthorsGenerator(Generator):
    """``z [N, z_dim]`` (U(0, 1), mapped to the authors' U(-1, 1)) -> images ``[N, C, S, S]`` in
    (-1, 1). Needs ``S = 4 * 2**k`` and ``k + 1`` entries in ``model.g_widths`` (one per resolution
    4, 8, ..., S) and in ``model.g_noise_channels`` (or none: no noise channels)."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        _check_not_weight_normed(cfg)
        size, widths = cfg.data.image_size, list(cfg.model.g_widths)
        ups = int(round(math.log2(size / 4)))
        if ups < 1 or 4 * 2 ** ups != size:
            raise ValueError(f"data.image_size={size}: imagenet_authors needs 4*2^k (8, 16, ..., 128)")
        if len(widths) != ups + 1:
            raise ValueError(f"model.g_widths needs {ups + 1} entries (4x4 to {size}x{size}) for imagenet_authors; "
                             f"got {widths}")
        noise = list(cfg.model.g_noise_channels) or [0] * len(widths)
        if len(noise) != len(widths):
            raise ValueError(f"model.g_noise_channels needs one entry per model.g_widths entry ({len(widths)}) or "
                             f"none; got {noise}")
        self.base = widths[0]
        self.fc = _dense(cfg.model.z_dim, 4 * 4 * widths[0])
        self.norms = nn.ModuleList(gen_norm(cfg, w, 2) for w in widths)
        for norm in self.norms:
            if isinstance(norm, VirtualBatchNorm):
                nn.init.normal_(norm.weight, 1.0, 0.02)  # the authors' VBN gain
        self.noise = nn.ModuleList(NoiseChannels(c, salt=i + 1) for i, c in enumerate(noise))
        self.deconvs = nn.ModuleList(SameDeconv2d(w + c, w_next) for w, c, w_next in zip(widths, noise, widths[1:]))
        # the authors' output layer: stride 1, weights N(0, 0.075^2), bias -0.45
        self.out = SameDeconv2d(widths[-1] + noise[-1], cfg.data.channels, 5, 1, std=0.075, bias=-0.45)

    def body(self, z: torch.Tensor) -> torch.Tensor:
        n_ref = self.reference_z.shape[0]                                   # VBN reference rows first
        h = self.fc(2.0 * z - 1.0).view(-1, self.base, 4, 4)                # [N, g0, 4, 4]
        for i, (norm, noise) in enumerate(zip(self.norms, self.noise)):
            if i:
                h = self.deconvs[i - 1](h)                                  # [N, g_i, 4*2^i, 4*2^i]
            h = noise(F.relu(norm(h)), z, n_ref)                            # [N, g_i + n_i, ...]
        return torch.tanh(self.out(h))                                      # [N, C, S, S]


class AuthorsDiscriminator(Discriminator):
    """``forward(x [N, C, S, S], group_sizes) -> (logits [N, K] (or [N, 1] unsupervised), features)``.

    ``group_sizes`` as the Trainer passes it: a list whose last entry is the number of generated
    rows at the end of the batch, the rows before it real. An int (a classifier's group size) or
    None means every row is real: cross batch norm then uses its running statistics and the
    minibatch features compare rows within groups of that many (see
    :class:`~igan.models.imagenet_layers.JointMinibatchDiscrimination`). Features for feature
    matching: the spatial means of the seven conv layers and the dense layer (``fm_layer``
    indexes these eight).
    """

    joint_batch = True

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        _check_not_weight_normed(cfg)
        widths, t = list(cfg.model.d_widths), cfg.techniques
        if len(widths) != len(D_STRIDES) + 1:
            raise ValueError(f"model.d_widths needs {len(D_STRIDES) + 1} entries (seven convs and the dense layer) "
                             f"for imagenet_authors; got {widths}")
        self.input_noise = GaussianNoise(cfg.model.d_input_noise)
        convs, c_in, side = [], cfg.data.channels, cfg.data.image_size
        for width, stride in zip(widths, D_STRIDES):
            convs.append(SameConv2d(c_in, width, 3, stride))
            c_in, side = width, -(-side // stride)
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(CrossBatchNorm(w) for w in widths[:-1])
        self.fc = _dense(c_in * side * side, widths[-1])
        self.fc_norm = CrossBatchNorm(widths[-1])
        self.mbd = (JointMinibatchDiscrimination(widths[-1], t.mbd_kernels, t.mbd_dim)
                    if t.minibatch_discrimination else None)
        head = widths[-1] + (2 * t.mbd_kernels if self.mbd is not None else 0)
        # semi-supervised: K class logits and the generated logit, as the authors learn it
        self.out = _dense(head, self.num_logits + 1 if t.semi_supervised else 1)
        self.semi_supervised = t.semi_supervised

    def forward(self, x: torch.Tensor, group_sizes: list[int] | int | None = None):
        n_real = _real_rows(group_sizes)
        h, hidden = self.input_noise(x), []
        for conv, norm in zip(self.convs, self.norms):
            h = F.leaky_relu(norm(conv(h), n_real), 0.2)
            hidden.append(h.mean((2, 3)))                                   # [N, d_i]
        h = F.leaky_relu(self.fc_norm(self.fc(h.flatten(1)), n_real), 0.2)  # [N, d7]
        hidden.append(h)
        if self.mbd is not None:
            block = group_sizes if isinstance(group_sizes, int) else None
            h = torch.cat([h, self.mbd(h, n_real, block)], 1)               # [N, d7 + 2B]
        logits = self.out(h)
        if self.semi_supervised:
            # K+1 logits -> K logits relative to the generated one: the same softmax over K+1
            # classes, and the same D(x) = Z / (Z + 1), with the generated logit fixed at 0
            logits = logits[:, :-1] - logits[:, -1:]
        return logits, self.pick_feature(hidden)


@register_model("imagenet_authors")
def build_imagenet_authors(cfg: Config):
    return AuthorsGenerator(cfg), AuthorsDiscriminator(cfg)
