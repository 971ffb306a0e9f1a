"""A small MLP pair for the 2-D Gaussian mixtures (ring8, grid25): samples are ``[N, 2]`` points."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from igan.config import Config
from igan.models.common import Discriminator, Generator, gen_norm, minibatch_head, register_model


class ToyGenerator(Generator):
    """ReLU MLP with the generators' normaliser after each hidden layer (batch norm with a fixed
    unit gain, or virtual batch norm): without it G spreads its mass between the mixture's modes
    for tens of thousands of steps."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        layers, n_in = [], cfg.model.z_dim
        for width in cfg.model.g_widths:
            layers += [nn.Linear(n_in, width, bias=False), gen_norm(cfg, width, 1), nn.ReLU()]
            n_in = width
        layers.append(nn.Linear(n_in, cfg.data.channels))
        self.net = nn.Sequential(*layers)

    def body(self, z: torch.Tensor) -> torch.Tensor:
        # z: [N, z_dim] in [0, 1]; centred so the first layer starts symmetric.
        return self.net(2.0 * z - 1.0)


class ToyDiscriminator(Discriminator):
    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.layers = nn.ModuleList()
        n_in = cfg.data.channels
        for width in cfg.model.d_widths:
            self.layers.append(nn.Linear(n_in, width))
            n_in = width
        self.mbd, head_width = minibatch_head(cfg, n_in, cfg.model.d_widths)
        self.out = nn.Linear(head_width, self.num_logits)

    def forward(self, x: torch.Tensor, group_sizes: list[int] | int | None = None):
        h, hidden = x, []
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2)
            hidden.append(h)
        return self.out(self.join_minibatch_statistics(h, hidden, group_sizes)), self.pick_feature(hidden)


@register_model("toy_mlp")
def build_toy_mlp(cfg: Config):
    return ToyGenerator(cfg), ToyDiscriminator(cfg)
