"""The CIFAR-10/SVHN conv pair of the authors' code, in its feature-matching and
minibatch-discrimination variants.

D (leaky ReLU 0.2, weight-normed): dropout 0.2 (or Gaussian noise for the MBD variant) -> conv3x3
w1, w1, w1/stride 2 -> dropout 0.5 -> conv3x3 w2, w2, w2/stride 2 -> dropout 0.5 -> conv3x3 w2 valid
-> NIN w2 -> NIN w2 -> global mean pool -> [MBD] -> dense K.  (CIFAR w = 96/192, SVHN 64/128.)
G: z -> dense 4*4*g0 + BN + ReLU -> deconv5x5/2 g1 + BN + ReLU -> ... -> deconv C (weight-normed) + tanh.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from igan.config import Config
from igan.layers import GaussianNoise
from igan.models.common import (Discriminator, Generator, conv, deconv, dense, gen_norm, minibatch_head, normal_init_,
                                register_model)

#: Pre-activation std the data-dependent init gives D's and G's output layers (the authors' ``init_stdv=0.1``).
OUTPUT_INIT_SCALE = 0.1


class DeconvGenerator(Generator):
    """z -> 4x4 x g_widths[0] -> a 5x5 stride-2 deconv per doubling -> [N, C, S, S] with tanh.

    Needs ``image_size = 4 * 2**k``; the channel widths for the k-1 inner deconvs come from
    ``g_widths[1:]``.
    """

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        size, widths = cfg.data.image_size, list(cfg.model.g_widths)
        ups = int(round(math.log2(size / 4)))
        if 4 * 2 ** ups != size or ups < 1:
            raise ValueError(f"data.image_size={size}: the deconv generator needs 4*2^k (8, 16, 32, 64, 128)")
        if len(widths) < ups:
            raise ValueError(f"model.g_widths needs {ups} entries for image_size {size}; got {widths}")
        self.base = widths[0]
        # the authors' init: N(0, 0.05^2) weights for the batch-normed layers, output std 0.1
        self.fc = normal_init_(nn.Linear(cfg.model.z_dim, 4 * 4 * widths[0], bias=False))
        self.fc_norm = gen_norm(cfg, 4 * 4 * widths[0], 1)
        blocks = []
        for c_in, c_out in zip(widths[: ups - 1], widths[1:ups]):
            blocks += [normal_init_(nn.ConvTranspose2d(c_in, c_out, 5, 2, 2, 1, bias=False)), gen_norm(cfg, c_out, 2),
                       nn.ReLU()]
        self.blocks = nn.Sequential(*blocks)
        self.out = deconv(cfg, widths[ups - 1], cfg.data.channels, last=True, init_scale=OUTPUT_INIT_SCALE)

    def body(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc_norm(self.fc(z))).view(-1, self.base, 4, 4)  # [N, g0, 4, 4]
        return torch.tanh(self.out(self.blocks(h)))                     # [N, C, S, S]


class ConvDiscriminator(Discriminator):
    def __init__(self, cfg: Config):
        super().__init__(cfg)
        m = cfg.model
        if len(m.d_widths) != 2:
            raise ValueError(f"cifar_conv needs model.d_widths = [w1, w2]; got {m.d_widths}")
        w1, w2 = m.d_widths
        self.input_noise = GaussianNoise(m.d_input_noise)
        self.input_dropout = nn.Dropout(m.d_input_dropout)
        c = cfg.data.channels
        self.stage1 = nn.ModuleList([conv(cfg, c, w1, 3, 1, 1), conv(cfg, w1, w1, 3, 1, 1), conv(cfg, w1, w1, 3, 2, 1)])
        self.stage2 = nn.ModuleList([conv(cfg, w1, w2, 3, 1, 1), conv(cfg, w2, w2, 3, 1, 1), conv(cfg, w2, w2, 3, 2, 1)])
        self.stage3 = nn.ModuleList([conv(cfg, w2, w2, 3, 1, 0), conv(cfg, w2, w2, 1), conv(cfg, w2, w2, 1)])
        self.dropout = nn.Dropout(m.d_dropout)
        self.mbd, head_width = minibatch_head(cfg, w2)  # reads the pooled [N, w2] features
        self.out = dense(cfg, head_width, self.num_logits, last=True, init_scale=OUTPUT_INIT_SCALE)

    @staticmethod
    def _run(layers: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            h = F.leaky_relu(layer(h), 0.2)
        return h

    def forward(self, x: torch.Tensor, group_sizes: list[int] | int | None = None):
        h = self.input_dropout(self.input_noise(x))
        h1 = self._run(self.stage1, h)                    # [N, w1, S/2, S/2]
        h2 = self._run(self.stage2, self.dropout(h1))     # [N, w2, S/4, S/4]
        h3 = self._run(self.stage3, self.dropout(h2))     # [N, w2, S/4-2, S/4-2]
        pooled = h3.mean((2, 3))                          # [N, w2]
        h = self.mbd(pooled, group_sizes) if self.mbd is not None else pooled  # [N, head_width]
        # Candidate feature-matching layers: stage means and the global pool (the authors' choice, -1).
        return self.out(h), self.pick_feature([h1.mean((2, 3)), h2.mean((2, 3)), pooled])


@register_model("cifar_conv")
def build_cifar_conv(cfg: Config):
    return DeconvGenerator(cfg), ConvDiscriminator(cfg)
