"""The MNIST MLP pair of the authors' feature-matching code (also serves ``digits`` at 8x8).

D: Gaussian noise 0.3 -> dense 1000, 500, 250, 250, 250 (ReLU, each followed by noise 0.5) -> dense K.
G: z ~ U(0,1)^100 -> dense 500 + BN + softplus -> dense 500 + BN + softplus -> dense C*H*W + sigmoid.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from igan.config import Config
from igan.layers import GaussianNoise
from igan.models.common import Discriminator, Generator, dense, gen_norm, minibatch_head, register_model


class MLPGenerator(Generator):
    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.out_shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
        layers, n_in = [], cfg.model.z_dim
        for width in cfg.model.g_widths:
            # BN follows, so the bias would be redundant. Glorot-uniform weights: Lasagne's default,
            # which the authors' MNIST generator keeps.
            linear = nn.Linear(n_in, width, bias=False)
            nn.init.xavier_uniform_(linear.weight)
            layers += [linear, gen_norm(cfg, width, 1), nn.Softplus()]
            n_in = width
        self.hidden = nn.Sequential(*layers)
        # weight-normed with scale 1 and bias 0 and no data-dependent init, as the authors' l2normalize
        self.out = dense(cfg, n_in, math.prod(self.out_shape), last=True, init_scale=None)

    def body(self, z: torch.Tensor) -> torch.Tensor:
        # z: [N, z_dim] -> [N, C, H, W] in [0, 1]
        return torch.sigmoid(self.out(self.hidden(z))).view(-1, *self.out_shape)


class MLPDiscriminator(Discriminator):
    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.input_noise = GaussianNoise(cfg.model.d_input_noise)
        n_in = cfg.data.channels * cfg.data.image_size ** 2
        self.layers = nn.ModuleList()
        for width in cfg.model.d_widths:
            self.layers.append(dense(cfg, n_in, width))
            n_in = width
        self.hidden_noise = GaussianNoise(cfg.model.d_hidden_noise)
        self.mbd, head_width = minibatch_head(cfg, n_in, cfg.model.d_widths)
        self.out = dense(cfg, head_width, self.num_logits, last=True)

    def forward(self, x: torch.Tensor, group_sizes: list[int] | int | None = None):
        h = self.input_noise(x.flatten(1))
        hidden, noisy = [], []
        for layer in self.layers:
            h = F.relu(layer(h))
            hidden.append(h)  # features are taken before the noise, as in the authors' code
            h = self.hidden_noise(h)
            noisy.append(h)
        return self.out(self.join_minibatch_statistics(h, noisy, group_sizes)), self.pick_feature(hidden)


@register_model("mnist_mlp")
def build_mnist_mlp(cfg: Config):
    return MLPGenerator(cfg), MLPDiscriminator(cfg)
