"""A small CNN classifier trained on a real labeled set, scoring domains without an Inception net.

Used for the "MNIST score" (the Inception-score formula with a domain classifier) and FID on its
pool features, for digits (8x8), MNIST (28x28) and SVHN (32x32x3). Trained weights are cached under
``cache_dir``, else ``$IGAN_CACHE``, else ``~/.cache/igan``, keyed by a name and a hash of the data.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Bumped whenever the architecture or training recipe changes, so stale caches are not reused.
CACHE_VERSION = 1


def default_epochs(num_images: int) -> int:
    """Passes over the data when none are given: about 100,000 examples seen, 1 to 30 epochs
    (30 for digits' 1,437 images, 2 for MNIST's 60,000 or SVHN's 73,257)."""
    return max(1, min(30, -(-100_000 // max(num_images, 1))))


class DomainClassifier(nn.Module):
    """CNN: stages of 3x3 convs (ReLU) and a 2x2 max-pool until the side is at most 4 pixels; one
    conv per stage while the side exceeds 8 pixels (cheap on large images), two from 8 down; widths
    ``width``, 2x, 4x (capped at 4x); global average pool (the features); dropout; linear layer.

    Inputs are standardised with the training set's mean and std (buffers), so images must be in
    the same float range as the set it was trained on (e.g. the model's pixel range).
    """

    def __init__(self, in_channels: int, image_size: tuple[int, int] | int, num_classes: int,
                 width: int = 32):
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.config = {"in_channels": int(in_channels), "image_size": [int(h), int(w)],
                       "num_classes": int(num_classes), "width": int(width)}
        layers, c_in, side, i = [], in_channels, min(h, w), 0
        while True:
            out = width * 2 ** min(i, 2)
            layers += [nn.Conv2d(c_in, out, 3, padding=1), nn.ReLU()]
            if side <= 8:
                layers += [nn.Conv2d(out, out, 3, padding=1), nn.ReLU()]
            c_in, i = out, i + 1
            if side <= 4:
                break
            layers.append(nn.MaxPool2d(2))
            side //= 2
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(c_in, num_classes)
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("std", torch.ones(in_channels))

    @property
    def feature_dim(self) -> int:
        """Width of :meth:`features` (the last conv width)."""
        return self.head.in_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pool features ``[B, feature_dim]`` of a float batch ``[B, C, H, W]`` (with gradients)."""
        x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        return self.body(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, num_classes]`` of a float batch ``[B, C, H, W]``."""
        return self.head(self.dropout(self.embed(x)))

    def _run(self, images, fn, batch_size: int) -> torch.Tensor:
        x = torch.as_tensor(images)
        if x.ndim == 3:
            x = x[:, None]
        device = self.mean.device
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = [fn(x[s:s + batch_size].to(device, torch.float32)).cpu()
                       for s in range(0, len(x), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out)

    def probabilities(self, images, batch_size: int = 500) -> torch.Tensor:
        """Softmax class probabilities ``[N, num_classes]`` (float32, CPU) of float images
        ``[N, C, H, W]`` (or ``[N, H, W]`` for one channel) in the training set's range."""
        return self._run(images, lambda b: torch.softmax(self(b), 1), batch_size)

    def features(self, images, batch_size: int = 500) -> torch.Tensor:
        """Global-pool features ``[N, feature_dim]`` (float32, CPU) of float images, as above."""
        return self._run(images, self.embed, batch_size)

    def accuracy(self, images, labels, batch_size: int = 500) -> float:
        """Fraction of ``images`` whose arg-max class equals ``labels [N]``."""
        pred = self._run(images, self, batch_size).argmax(1)
        return float((pred == torch.as_tensor(labels).long()).float().mean())


def _as_images(images) -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"images must be float [N, C, H, W]; got {x.dtype} of shape {tuple(x.shape)}")
    return x.float()


def train_domain_classifier(images, labels, num_classes: int, epochs: int | None = None,
                            seed: int = 0, batch_size: int = 64, lr: float = 2e-3, width: int = 32,
                            device: str | torch.device = "cpu") -> DomainClassifier:
    """Train a :class:`DomainClassifier` on ``images`` (float ``[N, C, H, W]``, any fixed range)
    and ``labels`` (``[N]`` ints in ``[0, num_classes)``): Adam with a one-cycle schedule peaking
    at ``lr``, random 1-pixel shifts, base ``width``, ``epochs`` passes (default
    :func:`default_epochs`). Deterministic for a ``seed`` on CPU; does not touch the global RNG.
    Returns the model in eval mode on ``device``.
    """
    x, y = _as_images(images), torch.as_tensor(labels).long().reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}); got range [{int(y.min())}, {int(y.max())}]")
    epochs = default_epochs(len(x)) if epochs is None else int(epochs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainClassifier(x.shape[1], tuple(x.shape[2:]), num_classes, width=width)
        model.mean.copy_(x.mean((0, 2, 3)))
        model.std.copy_(x.std((0, 2, 3)).clamp_min(1e-6))
        model.to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps = epochs * -(-len(x) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), batch_size):
                idx = order[start:start + batch_size]
                xb = _random_shift(x[idx], gen).to(device)
                loss = F.cross_entropy(model(xb), y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


def _random_shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by -1, 0 or +1 pixel per axis (edge-replicated)."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    dy, dx = torch.randint(0, 3, (2, len(x)), generator=gen)
    h, w = x.shape[2:]
    rows = (torch.arange(h)[None, :] + dy[:, None])[:, None, :, None].expand(-1, x.shape[1], -1, w + 2)
    out = padded.gather(2, rows)
    cols = (torch.arange(w)[None, :] + dx[:, None])[:, None, None, :].expand(-1, x.shape[1], h, -1)
    return out.gather(3, cols)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$IGAN_CACHE``, else ``~/.cache/igan``."""
    return Path(cache_dir or os.environ.get("IGAN_CACHE") or Path.home() / ".cache" / "igan").expanduser()


def cache_path(key: str, images, labels, num_classes: int, cache_dir=None, **train_kwargs) -> Path:
    """Where :func:`load_or_train_domain_classifier` keeps the weights for this data and recipe:
    ``<root>/domain_classifier/<key>-<sha256 of images, labels, classes, kwargs>[:16].pt``."""
    x, y = _as_images(images).cpu().contiguous(), torch.as_tensor(labels).long().reshape(-1).cpu()
    h = hashlib.sha256()
    h.update(repr((CACHE_VERSION, tuple(x.shape), int(num_classes), sorted(train_kwargs.items()))).encode())
    h.update(x.numpy().tobytes())
    h.update(y.numpy().astype(np.int64).tobytes())
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key) or "classifier"
    return cache_root(cache_dir) / "domain_classifier" / f"{safe}-{h.hexdigest()[:16]}.pt"


def load_or_train_domain_classifier(key: str, images, labels, num_classes: int, cache_dir=None,
                                    device: str | torch.device = "cpu", **train_kwargs) -> DomainClassifier:
    """The classifier for this data, loaded from the cache or trained and cached.

    ``key``: a readable name (e.g. ``"digits-train"``); ``images`` float ``[N, C, H, W]``,
    ``labels [N]``, ``num_classes``: as in :func:`train_domain_classifier`, which also receives
    ``train_kwargs`` (``epochs``, ``seed``, ...). The file (:func:`cache_path`) is written
    atomically; an unreadable file is replaced (with a warning). Returns the model in eval mode on
    ``device``.
    """
    path = cache_path(key, images, labels, num_classes, cache_dir, **train_kwargs)
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model = DomainClassifier(**blob["config"])
            model.load_state_dict(blob["state_dict"])
            return model.to(device).eval()
        except Exception as err:  # unreadable or stale file: train again and overwrite it
            warnings.warn(f"ignoring unreadable domain-classifier cache {path}: {err}", RuntimeWarning,
                          stacklevel=2)
    model = train_domain_classifier(images, labels, num_classes, device=device, **train_kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"config": model.config, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, tmp)
    os.replace(tmp, path)
    return model
