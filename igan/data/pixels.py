"""Conversions between stored ``uint8`` pixels and the float ranges the models use."""
from __future__ import annotations

import torch


def to_model_range(images: torch.Tensor, pixel_range: str) -> torch.Tensor:
    """``uint8 [N, C, H, W]`` (0..255) to float32 in the model's range: ``unit`` [0, 1],
    ``symmetric`` [-1, 1], ``authors`` ``(x - 127.5) / 128`` (the CIFAR/SVHN code)."""
    x = images.float()
    if pixel_range == "unit":
        return x / 255.0
    if pixel_range == "symmetric":
        return x / 127.5 - 1.0
    if pixel_range == "authors":
        return (x - 127.5) / 128.0
    raise ValueError(f"pixel_range must be unit, symmetric or authors; got {pixel_range!r}")


def to_uint8(x: torch.Tensor, pixel_range: str) -> torch.Tensor:
    """Inverse of :func:`to_model_range`, clamped and rounded to ``uint8`` 0..255."""
    if pixel_range == "unit":
        y = x * 255.0
    elif pixel_range == "symmetric":
        y = (x + 1.0) * 127.5
    elif pixel_range == "authors":
        y = x * 128.0 + 127.5
    else:
        raise ValueError(f"pixel_range must be unit, symmetric or authors; got {pixel_range!r}")
    return y.round().clamp(0, 255).to(torch.uint8)
