"""Layers of the authors' ImageNet-128 pair (their TensorFlow ``imagenet/`` code) that the other
model families do not use: "cross" batch norm, minibatch features over the joint real+generated
batch, noise channels, and TensorFlow's ``SAME`` padding for strided (transposed) convolutions.

Shapes: dense inputs are ``[N, F]``; image inputs ``[N, C, H, W]``. A batch that mixes real and
generated rows holds the ``n_real`` real rows first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_M32 = 0xFFFFFFFF


def _real_split(n_real: int | None, n: int, training: bool) -> bool:
    """Whether a layer in ``training`` mode sees both parts of a joint batch of ``n`` rows."""
    return training and n_real is not None and 0 < n_real < n


class CrossBatchNorm(nn.Module):
    """The authors' "cross" batch norm: the first half of the channels is normalised, for every row,
    with the batch statistics of the *real* rows, the second half with those of the *generated*
    rows; each half has its own gain and bias. So every example carries features standardised
    against both distributions.

    ``forward(x [N, C] or [N, C, H, W], n_real)``: in training mode with ``0 < n_real < N`` the
    statistics (per channel over rows and spatial axes, biased variance, eps 1e-5) come from the
    batch, and running averages of them (momentum 0.1, unbiased variance, as ``nn.BatchNorm``) are
    kept. Otherwise -- eval mode, or a batch with no generated part (``n_real`` None: a classifier
    scoring real images) -- the running statistics are used, so each row is normalised on its own.
    Statistics are computed in at least float32. ``C`` must be even.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if num_features % 2:
            raise ValueError(f"cross batch norm splits channels in halves; got {num_features} channels")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        # the authors' initialisation: gain ~ N(1, 0.02), bias 0
        self.weight = nn.Parameter(1.0 + 0.02 * torch.randn(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        # channel c < C/2 holds real-row statistics, c >= C/2 generated-row statistics
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _batch_statistics(self, x: torch.Tensor, n_real: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(mean, biased variance)`` ``[C]``: real rows for the first half of the
        channels, generated rows for the second; folds them into the running statistics."""
        half = self.num_features // 2
        parts = (x[:n_real, :half], x[n_real:, half:])
        reduce = [0] + list(range(2, x.dim()))
        mean = torch.cat([p.mean(reduce) for p in parts])
        variances = [p.var(reduce, unbiased=False) for p in parts]
        with torch.no_grad():
            # the running variance is unbiased, each half by its own count of values per channel
            counts = [p.numel() // half for p in parts]
            unbiased = torch.cat([v * (c / max(c - 1, 1)) for v, c in zip(variances, counts)])
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        var = torch.cat(variances)
        return mean, var

    def forward(self, x: torch.Tensor, n_real: int | None = None) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        if _real_split(n_real, x.shape[0], self.training):
            mean, var = self._batch_statistics(xf, n_real)
        else:
            mean, var = self.running_mean.to(xf.dtype), self.running_var.to(xf.dtype)
        shape = [1, -1] + [1] * (x.dim() - 2)
        scale = self.weight.to(xf.dtype) * torch.rsqrt(var + self.eps)
        out = (xf - mean.view(shape)) * scale.view(shape) + self.bias.to(xf.dtype).view(shape)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class JointMinibatchDiscrimination(nn.Module):
    """Minibatch features over the joint real+generated batch, two per kernel (the authors' ImageNet
    discriminator): ``M = x @ T`` viewed as ``[N, B, C]``, ``c_b(i, j) = exp(-||M_ib - M_jb||_1)``,
    and for each row ``i`` and kernel ``b`` the mean of ``c_b(i, j)`` over the real rows ``j != i``
    and the mean over the generated rows ``j != i``. Returns ``[N, 2B]``: real closeness, then
    generated closeness.

    ``forward(x [N, in_features], n_real, block)``: in training mode with ``0 < n_real < N`` both
    means come from the batch, and a running average (momentum 0.1) of the generated closeness of
    the real rows is kept. Otherwise every row is real (a classifier scoring real images): the real
    closeness is the mean over the other rows of its group (consecutive groups of ``block`` rows;
    ``None``: the whole batch), and the generated closeness is that running average -- no generated
    samples exist then, and it is the value real images showed in training.
    """

    def __init__(self, in_features: int, num_kernels: int, kernel_dim: int, momentum: float = 0.1):
        super().__init__()
        self.in_features, self.num_kernels, self.kernel_dim = in_features, num_kernels, kernel_dim
        self.momentum = momentum
        # No bias: it would cancel in every difference M_i - M_j. Weights ~ N(0, 0.02) as the authors'.
        self.T = nn.Parameter(0.02 * torch.randn(in_features, num_kernels * kernel_dim))
        self.register_buffer("real_to_generated", torch.zeros(num_kernels))

    def _kernels(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` kernel projections, in at least float32 (exp of L1 distances)."""
        m = (x @ self.T).view(-1, self.num_kernels, self.kernel_dim).transpose(0, 1)
        return m.float() if m.dtype in (torch.float16, torch.bfloat16) else m

    def _joint(self, m: torch.Tensor, n_real: int) -> torch.Tensor:
        # m: [B, N, C] -> [N, 2B]. The self-closeness exp(0) = 1 is subtracted from its own part.
        n = m.shape[1]
        close = torch.exp(-torch.cdist(m, m, p=1.0))                    # [B, N, N]
        is_real = (torch.arange(n, device=m.device) < n_real).to(m.dtype)
        is_gen = 1.0 - is_real
        # a row alone in its part has no other row there: 0 / 1
        to_real = (close[:, :, :n_real].sum(2) - is_real) / (n_real - is_real).clamp(min=1)
        to_gen = (close[:, :, n_real:].sum(2) - is_gen) / (n - n_real - is_gen).clamp(min=1)
        with torch.no_grad():
            self.real_to_generated.lerp_(to_gen[:, :n_real].mean(1).to(self.real_to_generated.dtype), self.momentum)
        return torch.cat([to_real, to_gen], 0).transpose(0, 1)

    @staticmethod
    def _grouped(m: torch.Tensor, block: int | None) -> torch.Tensor:
        """``[B, N]`` mean closeness of each row to the other rows of its group of ``block``."""
        n = m.shape[1]
        if block is None:
            others = torch.exp(-torch.cdist(m, m, p=1.0)).sum(2) - 1.0
            return others / max(n - 1, 1)
        # Padded to whole groups, so the shapes are expressions of N and one torch.export graph
        # serves every batch size; one group more than needed keeps the group count >= 2 (export
        # specialises a dimension that is 1 in the example batch).
        groups = n // block + 2
        padded = F.pad(m, (0, 0, 0, groups * block - n)).unflatten(1, (groups, block))  # [B, G, b, C]
        kept = F.pad(torch.ones_like(m[0, :, 0]), (0, groups * block - n)).view(groups, block)
        close = (torch.exp(-torch.cdist(padded, padded, p=1.0)) * kept[:, None, :]).sum(3) - 1.0
        others = (kept.sum(1, keepdim=True) - 1.0).clamp(min=1.0)       # [G, 1] rows of the group but one
        return (close / others).flatten(1)[:, :n]

    def forward(self, x: torch.Tensor, n_real: int | None = None, block: int | None = None) -> torch.Tensor:
        m = self._kernels(x)
        if _real_split(n_real, x.shape[0], self.training):
            out = self._joint(m, n_real)
        else:
            to_real = self._grouped(m, block)                                        # [B, N]
            to_gen = self.real_to_generated.to(m.dtype)[:, None].expand_as(to_real)
            out = torch.cat([to_real, to_gen], 0).transpose(0, 1)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_kernels={self.num_kernels}, kernel_dim={self.kernel_dim}"


def _low32(h: torch.Tensor) -> torch.Tensor:
    return torch.bitwise_and(h, _M32)


def _xorshift(h: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.bitwise_xor(h, torch.bitwise_right_shift(h, bits))


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (xor-shift-multiply) on int64 values in [0, 2^32): every product
    stays below 2^63, so no step overflows. (Named torch functions, not ``&``/``^``/``>>``: those
    export as dunder operators, which the registry's safe loader refuses.)"""
    h = _low32(_xorshift(h, 16) * 0x7FEB352D)
    h = _low32(_xorshift(h, 15) * 0x2C1B3C6D)
    return _xorshift(h, 16)


def hashed_uniform(z: torch.Tensor, shape: tuple[int, ...], salt: int) -> torch.Tensor:
    """Pseudo-random ``U(-1, 1)`` noise ``[N, *shape]`` that is a fixed function of each row of
    ``z`` ``[N, D]`` (values in [0, 1)) and ``salt``: integer hashing only, so it is identical
    eagerly and in a ``torch.export`` program, and row ``i`` depends on ``z[i]`` alone."""
    bits = torch.bitwise_and((z.detach().float() * 2.0 ** 23).long(), 0x7FFFFF)    # [N, D] 23-bit ints
    weights = torch.bitwise_and(torch.arange(z.shape[1], device=z.device) * 0x9E3779B1 + 0x7F4A7C15, 0x7FFFFFFF)
    key = _mix32(torch.bitwise_xor(_low32(_low32(bits * weights).sum(1)), salt & _M32))  # [N] a key per row
    count = 1
    for s in shape:
        count *= s
    index = torch.arange(count, device=z.device) * 0x9E3779B9                         # [M]
    h = _mix32(_low32(key[:, None] + index[None, :]))                                # [N, M]
    u = torch.bitwise_right_shift(h, 8).to(torch.float32) * 2.0 ** -24               # [0, 1)
    return (2.0 * u - 1.0).view(-1, *shape)


class NoiseChannels(nn.Module):
    """Appends ``channels`` channels of ``U(-1, 1)`` noise to a ``[N, C, H, W]`` activation (the
    authors' generator does so after every layer): ``forward(h, z, n_fixed) -> [N, C + channels, H, W]``.

    The first ``n_fixed`` rows (the virtual-batch-norm reference batch) get noise that is a fixed
    function of their latent ``z`` rows (:func:`hashed_uniform`), as the authors' reference noise is
    drawn once. The other rows get fresh noise from torch's global generator in training mode (a
    seeded run is reproducible and resumable) and, in eval mode, hashed noise of their ``z``: a
    generator in eval mode -- sampling, an exported model -- is a deterministic function of ``z``.
    """

    def __init__(self, channels: int, salt: int):
        super().__init__()
        self.channels, self.salt = channels, salt

    def forward(self, h: torch.Tensor, z: torch.Tensor, n_fixed: int = 0) -> torch.Tensor:
        if not self.channels:
            return h
        shape = (self.channels, h.shape[2], h.shape[3])
        if self.training:
            fresh = torch.rand(h.shape[0] - n_fixed, *shape, device=h.device) * 2.0 - 1.0
            noise = torch.cat([hashed_uniform(z[:n_fixed], shape, self.salt), fresh]) if n_fixed else fresh
        else:
            noise = hashed_uniform(z, shape, self.salt)
        return torch.cat([h, noise.to(h.dtype)], 1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding ``(before, after)`` of one axis: output ``ceil(size / stride)``,
    the odd pixel of padding after (so a stride-2 3x3 conv on an even side pads only bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``SAME`` padding, weights ~ N(0, 0.02^2) truncated at 2
    standard deviations and zero bias (the authors' ``conv2d``): ``[N, Cin, H, W] -> [N, Cout,
    ceil(H/s), ceil(W/s)]``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1):
        super().__init__(c_in, c_out, kernel, stride, padding=0)
        nn.init.trunc_normal_(self.weight, std=0.02, a=-0.04, b=0.04)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = same_padding(x.shape[2], k, s)
        left, right = same_padding(x.shape[3], k, s)
        return super().forward(F.pad(x, (left, right, top, bottom)))


class SameDeconv2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with TensorFlow's ``SAME`` output size (``s`` times the input side):
    the adjoint of a ``SAME`` convolution, which crops ``before`` pixels of the full transposed
    output at the top/left. Weights ~ N(0, ``std``^2), bias ``bias`` (the authors' ``deconv2d``):
    ``[N, Cin, H, W] -> [N, Cout, sH, sW]``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5, stride: int = 2, std: float = 0.02,
                 bias: float = 0.0):
        super().__init__(c_in, c_out, kernel, stride, padding=0)
        nn.init.normal_(self.weight, std=std)
        nn.init.constant_(self.bias, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        h, w = x.shape[2] * s, x.shape[3] * s
        top, _ = same_padding(h, k, s)
        left, _ = same_padding(w, k, s)
        return super().forward(x)[:, :, top:top + h, left:left + w]
