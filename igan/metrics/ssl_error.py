"""Semi-supervised test error: the fraction of a labeled test set a classifier gets wrong."""
from __future__ import annotations

from typing import Callable

import torch


def ssl_test_error(classify: Callable[[torch.Tensor], torch.Tensor], images, labels,
                   batch_size: int = 500) -> float:
    """Fraction (``float`` in ``[0, 1]``) of ``images`` whose arg-max class differs from ``labels``.

    ``classify(x)``: maps a batch ``x`` (a slice of ``images``, ``[B, ...]``) to class logits
    ``[B, K]`` (the K real classes; put the model in eval mode and on the right device first —
    batches are moved to the device of the model's first parameter when ``classify`` is an
    ``nn.Module``). ``images``: ``[N, ...]`` tensor or array in the model's input range;
    ``labels``: ``[N]`` integer class indices. Runs under ``torch.no_grad`` in batches of
    ``batch_size``. Multiply by N for an error count (the paper's MNIST table).
    """
    x = torch.as_tensor(images)
    y = torch.as_tensor(labels).reshape(-1).long()
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"need as many labels as images (and at least one); got {len(x)} and {len(y)}")
    device = None
    if isinstance(classify, torch.nn.Module):
        device = next(iter(classify.parameters()), torch.empty(0)).device
    wrong = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            logits = classify(batch if device is None else batch.to(device))
            if logits.ndim != 2 or logits.shape[0] != len(batch):
                raise ValueError(f"classify must return logits [B, K]; got shape {tuple(logits.shape)}")
            pred = logits.argmax(1).cpu()
            wrong += int((pred != y[start:start + batch_size]).sum())
    return wrong / len(y)
