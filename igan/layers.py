"""Layers of the paper: minibatch discrimination, virtual batch norm, weight-normalised dense and
convolution layers with data-dependent initialisation, Gaussian noise.

Shapes: dense inputs are ``[N, F]``; image inputs ``[N, C, H, W]``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class GaussianNoise(nn.Module):
    """Adds ``std * N(0, 1)`` noise in training mode; the identity in eval mode."""

    def __init__(self, std: float):
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0.0:
            return x
        return x + self.std * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"std={self.std}"


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, sec. 3.2).

    ``M = x @ W`` viewed as ``[N, B, C]``; ``c_b(i, j) = exp(-||M_ib - M_jb||_1)``;
    ``o(x_i)_b = sum_{j != i} c_b(i, j) + bias_b``. Output ``[x, o(x)]`` of width
    ``in_features + num_kernels``; :meth:`statistics` gives ``o(x)`` alone. ``group_sizes`` splits
    the batch into independent minibatches (real and generated samples are compared only within
    their own group): a list gives the groups' sizes; an int ``b`` makes consecutive groups of
    ``b`` rows, the last one shorter (a classifier scoring any number of images in groups of its
    training batch size; computed without a Python loop over the groups, so ``torch.export``
    traces it for every batch size).

    Two parametrisations of ``W`` (``[in_features, B*C]``, column ``b*C + c`` for kernel ``b``,
    dimension ``c``), both starting from ``T ~ N(0, 0.05^2)`` and ``bias = -1``:

    * ``weight_norm=False``: ``W = T``.
    * ``weight_norm=True`` (the authors' ``MinibatchLayer``): every column of ``T`` normalised to
      unit L2 norm and scaled by ``exp(log_scale[b, c])`` (``log_scale`` ``[B, C]``, learned, 0 at
      construction). Its data-dependent initialisation (:func:`data_dependent_init`) rescales each
      kernel so that on the init batch (one group) the mean L1 distance of a row to its nearest
      other row is 2, then sets ``bias = -mean_i o(x_i)`` (statistics centred on that batch).
      A state dict saved before ``log_scale`` existed (``T`` was ``W`` itself) loads into this form
      with ``log_scale = log ||T_col||``, which gives the same ``W``.
    """

    _init_mode: bool = False

    def __init__(self, in_features: int, num_kernels: int, kernel_dim: int, bias: bool = True,
                 weight_norm: bool = False):
        super().__init__()
        self.in_features, self.num_kernels, self.kernel_dim = in_features, num_kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, num_kernels * kernel_dim) * 0.05)
        if weight_norm:
            self.log_scale = nn.Parameter(torch.zeros(num_kernels, kernel_dim))
        else:
            self.register_parameter("log_scale", None)
        self.bias = nn.Parameter(torch.full((num_kernels,), -1.0)) if bias else None

    @property
    def initialises_from_data(self) -> bool:
        """Whether :func:`data_dependent_init` sets this layer's scale and bias (weight-normed form)."""
        return self.log_scale is not None

    def weight(self) -> torch.Tensor:
        """The effective ``W`` ``[in_features, B*C]`` (see the class docstring)."""
        if self.log_scale is None:
            return self.T
        norm = torch.linalg.vector_norm(self.T, dim=0, keepdim=True)     # [1, B*C]
        return self.T * (torch.exp(self.log_scale).view(1, -1) / norm)

    def _closeness(self, m: torch.Tensor) -> torch.Tensor:
        # m: [n, B, C] -> o: [n, B]. cdist over [B, n, C] never materialises the [n, n, B, C]
        # differences (245 MB for ImageNet's B=300, C=50 at n=64). The diagonal is exp(0) = 1
        # exactly, so subtracting it excludes self-distance without a mask.
        mb = m.transpose(0, 1)
        mb = mb.float() if mb.dtype in (torch.float16, torch.bfloat16) else mb
        dist = torch.cdist(mb, mb, p=1.0)               # [B, n, n]
        return (torch.exp(-dist).sum(2) - 1.0).transpose(0, 1).to(m.dtype)

    def _blocked_closeness(self, m: torch.Tensor, block: int) -> torch.Tensor:
        # m: [n, B, C] -> o: [n, B], rows compared within consecutive blocks of `block` rows. The
        # rows are padded to whole blocks and the padding masked out of the sums, so the shapes
        # are expressions of n (no data-dependent loop) and one torch.export graph serves every n.
        # One block more than needed keeps the number of blocks >= 2: torch.export specialises a
        # dimension that is 1 in the (small) example batch, which would bind the graph to n <= block.
        n, kernels, dim = m.shape
        blocks = (n + block - 1) // block + 1
        mb = m.transpose(0, 1)
        mb = mb.float() if mb.dtype in (torch.float16, torch.bfloat16) else mb
        padded = F.pad(mb, (0, 0, 0, blocks * block - n))              # [B, G*b, C]
        grouped = padded.view(kernels, blocks, block, dim)              # [B, G, b, C]
        dist = torch.cdist(grouped, grouped, p=1.0)                     # [B, G, b, b]
        # 1 for real rows, 0 for padding: made from mb, so an exported graph holds no device constant
        real = F.pad(torch.ones_like(mb[0, :, 0]), (0, blocks * block - n)).view(1, blocks, 1, block)
        o = (torch.exp(-dist) * real).sum(3) - 1.0                      # [B, G, b]
        return o.view(kernels, blocks * block)[:, :n].transpose(0, 1).to(m.dtype)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight()).view(-1, self.num_kernels, self.kernel_dim)   # [N, B, C]

    def statistics(self, x: torch.Tensor, group_sizes: list[int] | int | None = None) -> torch.Tensor:
        """``o(x)``: ``[N, num_kernels]`` for ``x`` of ``[N, in_features]``, in ``x``'s dtype;
        ``group_sizes`` as in the class docstring (ignored in init mode: the init batch is one group)."""
        if self._init_mode:
            return self._init_statistics(x).to(x.dtype)
        m = self._project(x)
        if isinstance(group_sizes, int):
            o = self._blocked_closeness(m, group_sizes)
        else:
            chunks = m.split(group_sizes) if group_sizes else (m,)
            o = torch.cat([self._closeness(c) for c in chunks], 0)
        if self.bias is not None:
            o = o + self.bias
        return o.to(x.dtype)

    @torch.no_grad()
    def _init_statistics(self, x: torch.Tensor) -> torch.Tensor:
        """The authors' data-dependent init on the batch ``x`` ``[n, in_features]`` (n >= 2): scale
        each kernel so the mean nearest-neighbour L1 distance is 2, centre the statistics with the
        bias; returns the statistics ``[n, B]`` with the new parameters."""
        if len(x) < 2:
            raise ValueError(f"minibatch discrimination's data-dependent init needs >= 2 examples; got {len(x)}")
        mb = self._project(x).transpose(0, 1)                           # [B, n, C]
        dist = torch.cdist(mb, mb, p=1.0)                               # [B, n, n]
        dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))               # a row is not its own neighbour
        half = 0.5 * dist.min(2).values.mean(1)                         # [B]: half the mean distance
        # dividing W's columns of kernel b by half_b divides its L1 distances by it: mean becomes 2
        self.log_scale.sub_(torch.log(half.clamp_min(1e-12)).view(-1, 1))
        o = self._closeness(self._project(x))                           # [n, B]
        if self.bias is None:
            return o
        self.bias.copy_(-o.mean(0))
        return o + self.bias

    def forward(self, x: torch.Tensor, group_sizes: list[int] | int | None = None) -> torch.Tensor:
        return torch.cat([x, self.statistics(x, group_sizes)], 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a state dict from before the weight-normed form holds W itself as T: derive the scale that
        # reproduces it, so old checkpoints' discriminators load unchanged
        scale_key, t_key = prefix + "log_scale", prefix + "T"
        if self.log_scale is not None and scale_key not in state_dict and t_key in state_dict:
            norm = torch.linalg.vector_norm(state_dict[t_key].detach().float(), dim=0)
            state_dict[scale_key] = torch.log(norm).view(self.num_kernels, self.kernel_dim)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_kernels={self.num_kernels}, kernel_dim={self.kernel_dim}, "
                f"weight_norm={self.log_scale is not None}")


class VirtualBatchNorm(nn.Module):
    """Virtual batch norm for ``[N, F]`` or ``[N, C, H, W]`` inputs.

    The first ``reference_size`` rows are the reference batch, normalised with its own statistics.
    Every other row is normalised with per-channel mean and mean-of-squares mixing the reference
    statistics with its own at weight ``1/(reference_size+1)``; no example depends on another
    non-reference example. Then the affine ``gamma, beta``. Returns a tensor of the input's shape.
    """

    def __init__(self, num_features: int, reference_size: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.num_features, self.reference_size, self.eps = num_features, reference_size, eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < self.reference_size:
            raise ValueError(f"VirtualBatchNorm needs the {self.reference_size} reference rows first; "
                             f"got a batch of {x.shape[0]}")
        reduce = [0] + list(range(2, x.dim()))
        stat_shape = [1, -1] + [1] * (x.dim() - 2)
        # Statistics in at least float32: bf16 mean-of-squares minus squared mean cancels badly.
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        ref, rest = xf[: self.reference_size], xf[self.reference_size:]
        ref_mean = ref.mean(reduce, keepdim=True)
        ref_sq = (ref * ref).mean(reduce, keepdim=True)
        own_axes = list(range(2, x.dim()))
        own_mean = rest.mean(own_axes, keepdim=True) if own_axes else rest
        own_sq = (rest * rest).mean(own_axes, keepdim=True) if own_axes else rest * rest
        new_coeff = 1.0 / (self.reference_size + 1.0)
        mean = new_coeff * own_mean + (1.0 - new_coeff) * ref_mean
        sq = new_coeff * own_sq + (1.0 - new_coeff) * ref_sq
        ref_out = (ref - ref_mean) / torch.sqrt(self.eps + ref_sq - ref_mean ** 2)
        rest_out = (rest - mean) / torch.sqrt(self.eps + sq - mean ** 2)
        out = torch.cat([ref_out, rest_out], 0)
        if self.weight is not None:
            out = out * self.weight.view(stat_shape) + self.bias.view(stat_shape)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, reference_size={self.reference_size}, eps={self.eps}"


class _WeightNormed(nn.Module):
    """Shared weight-norm machinery: ``W = g * V / ||V||`` (norm over all axes but the output one).

    In data-dependent init mode (see :func:`data_dependent_init`) the forward pass sets ``g`` and
    ``bias`` so that this layer's pre-activations on the given batch have per-unit mean 0 and std
    ``init_scale`` (the population std, as the authors' ``WeightNormLayer`` computes it), and returns
    those normalised pre-activations. ``init_scale=None`` opts out: ``g = 1`` and ``bias = 0`` stay
    (the authors' MNIST generator output, ``l2normalize`` without an init pass).
    """

    _init_mode: bool = False

    def _setup(self, v_shape: tuple[int, ...], out_features: int, train_scale: bool, init_scale: float | None):
        self.v = nn.Parameter(torch.randn(v_shape) * 0.05)
        self.g = nn.Parameter(torch.ones(out_features), requires_grad=train_scale)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.init_scale = init_scale

    def weight(self) -> torch.Tensor:
        """The effective weight ``g * V / ||V||``, shaped like ``V``."""
        dims = list(range(1, self.v.dim()))
        norm = torch.linalg.vector_norm(self.v, dim=dims, keepdim=True)
        return self.v * (self.g.view([-1] + [1] * len(dims)) / norm)

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._init_mode:
            return self._init_forward(x)
        return self._linear(x, self.weight(), self.bias)

    @torch.no_grad()
    def _init_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.init_scale is None:
            return self._linear(x, self.weight(), self.bias)
        self.g.fill_(1.0)
        t = self._linear(x, self.weight(), None)
        reduce = [0] + list(range(2, t.dim()))
        mean, std = t.mean(reduce), t.std(reduce, correction=0)
        scale = self.init_scale / (std + 1e-8)
        self.g.copy_(scale)
        self.bias.copy_(-mean * scale)
        shape = [1, -1] + [1] * (t.dim() - 2)
        return (t - mean.view(shape)) * scale.view(shape)


class WNLinear(_WeightNormed):
    """Weight-normalised dense layer ``[N, in] -> [N, out]``."""

    def __init__(self, in_features: int, out_features: int, train_scale: bool = False, init_scale: float | None = 1.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._setup((out_features, in_features), out_features, train_scale, init_scale)

    def _linear(self, x, weight, bias):
        return F.linear(x, weight, bias)


class WNConv2d(_WeightNormed):
    """Weight-normalised convolution ``[N, Cin, H, W] -> [N, Cout, H', W']``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, train_scale: bool = False, init_scale: float | None = 1.0):
        super().__init__()
        self.stride, self.padding = stride, padding
        self._setup((out_channels, in_channels, kernel_size, kernel_size), out_channels, train_scale, init_scale)

    def _linear(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding)


class WNConvTranspose2d(_WeightNormed):
    """Weight-normalised transposed convolution ``[N, Cin, H, W] -> [N, Cout, sH, sW]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 2,
                 padding: int = 2, output_padding: int = 1, train_scale: bool = False, init_scale: float | None = 1.0):
        super().__init__()
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        # Transposed-conv weights are [Cin, Cout, k, k]; normalise per output channel.
        self._setup((out_channels, in_channels, kernel_size, kernel_size), out_channels, train_scale, init_scale)

    def _linear(self, x, weight, bias):
        return F.conv_transpose2d(x, weight.transpose(0, 1), bias, self.stride, self.padding, self.output_padding)


def weight_normed_layers(module: nn.Module) -> Iterator[_WeightNormed]:
    """Every weight-normalised layer inside ``module``, in registration order."""
    return (m for m in module.modules() if isinstance(m, _WeightNormed))


def data_initialised_layers(module: nn.Module) -> Iterator[nn.Module]:
    """Every layer inside ``module`` that :func:`data_dependent_init` initialises: the
    weight-normalised layers and weight-normed minibatch discrimination, in registration order."""
    return (m for m in module.modules()
            if isinstance(m, _WeightNormed) or getattr(m, "initialises_from_data", False))


@contextlib.contextmanager
def _init_mode(module: nn.Module):
    layers = list(data_initialised_layers(module))
    for layer in layers:
        layer._init_mode = True
    try:
        yield
    finally:
        for layer in layers:
            layer._init_mode = False


@torch.no_grad()
def data_dependent_init(module: nn.Module, *inputs, **kwargs) -> None:
    """Run ``module(*inputs)`` once in init mode: each weight-normalised layer, in forward order,
    sets its scale and bias so its pre-activations have mean 0 and std ``init_scale`` on this batch,
    and weight-normed minibatch discrimination sets its kernels' scales and bias (see
    :class:`MinibatchDiscrimination`). Call before training (and before wrapping in DDP)."""
    with _init_mode(module):
        module(*inputs, **kwargs)
