"""``model.name=imagenet_dcgan``: igan's DCGAN-style ImageNet-128 pair, the ``imagenet128`` preset's model
before the authors' pair (:mod:`igan.models.imagenet_authors`) replaced it; kept as an option, and
for runs and checkpoints that name it. A DCGAN-style generator with virtual batch norm in every layer and a
strided-conv discriminator with Gaussian input noise and minibatch discrimination before the
1000 class logits (the generated logit is the fixed 0 of the K+1 loss).

D: noise 0.1 -> conv4x4/2 d0 .. d4 (leaky ReLU 0.2; 128 -> 4) -> global mean pool -> MBD(300, 50) -> dense K.
G: z -> dense 4*4*g0 + VBN + ReLU -> deconv5x5/2 g1..g4 + VBN + ReLU -> deconv 3 + tanh (128x128).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from igan.config import Config
from igan.layers import GaussianNoise
from igan.models.common import Discriminator, conv, dense, minibatch_head, register_model
from igan.models.conv import DeconvGenerator


class StridedDiscriminator(Discriminator):
    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.input_noise = GaussianNoise(cfg.model.d_input_noise)
        layers, c_in = [], cfg.data.channels
        for width in cfg.model.d_widths:
            layers.append(conv(cfg, c_in, width, 4, 2, 1))
            c_in = width
        self.layers = nn.ModuleList(layers)
        self.mbd, head_width = minibatch_head(cfg, c_in)  # reads the pooled [N, d_widths[-1]] features
        self.out = dense(cfg, head_width, self.num_logits, last=True)

    def forward(self, x: torch.Tensor, group_sizes: list[int] | int | None = None):
        h, hidden = self.input_noise(x), []
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2)
            hidden.append(h.mean((2, 3)))                 # [N, width]
        pooled = hidden[-1]
        h = self.mbd(pooled, group_sizes) if self.mbd is not None else pooled  # [N, head_width]
        return self.out(h), self.pick_feature(hidden)


@register_model("imagenet_dcgan")
def build_imagenet_dcgan(cfg: Config):
    return DeconvGenerator(cfg), StridedDiscriminator(cfg)
