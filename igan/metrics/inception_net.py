"""Inception-v3 scorer: class probabilities (Inception score) and 2048-d pool features (FID).

Two networks, both built locally; weights come from a file the user provides (a local path, or a
URI of the user's own store, fetched once), never from a download igan starts on its own:

* ``kind="torchvision"``: torchvision's Inception-v3 (1000 classes), file
  ``inception_v3_google-0cc3c7bd.pth`` (torchvision's state dict; its ``AuxLogits`` entries are
  ignored).
* ``kind="tf2015"``: the 2015-12-05 TensorFlow graph the paper's scores use (1008 classes), as
  ported to PyTorch for FID (file ``pt_inception-2015-12-05-6726825d.pth``). Its blocks differ from
  torchvision's: the average pools of the A, C and first E block exclude padding, and the last E
  block max-pools. Probabilities use the final layer without its bias, as the authors' score did.

The weight files are found, fetched and read by :mod:`igan.metrics.inception_weights` (its names are
importable from here too).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

from igan.metrics.inception_weights import (ENV_CACHE, ENV_WEIGHTS, NUM_CLASSES, WEIGHT_FILES, InceptionWeightsInvalid,
                                            InceptionWeightsNotFound, _find, _Located, _named, _read_state, fetch,
                                            fetched_path, local_cache_dir, resolve_weights)

#: The ``eval.scorer`` value that loads each kind's network.
SCORER_OF_KIND = {"torchvision": "inception", "tf2015": "inception_tf2015"}
INPUT_SIZE = 299
FEATURE_DIM = 2048


# -- the 2015-12-05 graph's block variants ---------------------------------------------------
class FIDInceptionA(InceptionA):
    """InceptionA whose pool branch averages over valid pixels only (``count_include_pad=False``)."""

    def _forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return [b1, b5, b3, bp]


class FIDInceptionC(InceptionC):
    """InceptionC whose pool branch averages over valid pixels only."""

    def _forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return [b1, b7, bd, bp]


class FIDInceptionE(InceptionE):
    """InceptionE with the 2015 graph's pool branch: ``pool="avg"`` averages over valid pixels
    only (block ``Mixed_7b``), ``pool="max"`` max-pools (block ``Mixed_7c``)."""

    def __init__(self, in_channels: int, pool: str = "avg"):
        super().__init__(in_channels)
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be avg or max; got {pool!r}")
        self.pool = pool

    def _forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "avg":
            pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        else:
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        return [b1, b3, bd, self.branch_pool(pooled)]


def build_inception(kind: str) -> Inception3:
    """An untrained Inception-v3 of ``kind`` (``torchvision`` or ``tf2015``) without the auxiliary
    head and without input transform (it expects inputs in [-1, 1], ``[N, 3, 299, 299]``)."""
    if kind not in NUM_CLASSES:
        raise ValueError(f"kind must be one of {', '.join(NUM_CLASSES)}; got {kind!r}")
    net = Inception3(num_classes=NUM_CLASSES[kind], aux_logits=False, transform_input=False,
                     init_weights=False)
    if kind == "tf2015":
        net.Mixed_5b, net.Mixed_5c = FIDInceptionA(192, 32), FIDInceptionA(256, 64)
        net.Mixed_5d = FIDInceptionA(288, 64)
        net.Mixed_6b = FIDInceptionC(768, 128)
        net.Mixed_6c, net.Mixed_6d = FIDInceptionC(768, 160), FIDInceptionC(768, 160)
        net.Mixed_6e = FIDInceptionC(768, 192)
        net.Mixed_7b, net.Mixed_7c = FIDInceptionE(1280, "avg"), FIDInceptionE(2048, "max")
    return net.eval()


def _check_state(state: dict, net: Inception3, found: _Located, kind: str) -> None:
    """:class:`InceptionWeightsInvalid` (one line) unless ``state`` fits ``net`` key for key and
    shape for shape."""
    fc = state.get("fc.weight")
    if fc is not None and fc.ndim == 2 and fc.shape[0] != NUM_CLASSES[kind]:
        other = {v: k for k, v in NUM_CLASSES.items()}.get(fc.shape[0])
        hint = f"; that is kind='{other}' (eval.scorer={SCORER_OF_KIND[other]} or auto)" if other else ""
        raise InceptionWeightsInvalid(f"{_named(found)} holds a {fc.shape[0]}-class network, not an Inception-v3 "
                                      f"of kind '{kind}' ({NUM_CLASSES[kind]} classes){hint}")
    expected = net.state_dict()
    # files saved before BatchNorm counted its batches lack these; load_state_dict fills them in
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(keys)} {what} (e.g. '{keys[0]}')" for keys, what in
                 ((missing, "missing keys"), (unexpected, "unexpected keys"), (wrong, "wrong shapes")) if keys]
        raise InceptionWeightsInvalid(f"{_named(found)} is not a state dict of an Inception-v3 of kind '{kind}': "
                                      + ", ".join(parts))


def _load(found: _Located, kind: str) -> Inception3:
    """:func:`build_inception` with the state dict of ``found``; a wrong fetched copy is deleted,
    so the next try fetches the file again."""
    net = build_inception(kind)
    try:
        state = _read_state(found)
        _check_state(state, net, found, kind)
    except InceptionWeightsInvalid:
        if found.fetched:
            found.path.unlink(missing_ok=True)
        raise
    net.load_state_dict(state)
    return net


def load_inception(weights: str | os.PathLike | None = None, kind: str = "torchvision") -> Inception3:
    """:func:`build_inception` with the state dict from the resolved file (:func:`resolve_weights`).
    Raises :class:`InceptionWeightsNotFound` or :class:`InceptionWeightsInvalid`, one line each."""
    return _load(_find(weights, kind), kind)


def check_weights(weights: str | os.PathLike | None = None, kind: str = "torchvision") -> Path:
    """The local weight file of ``kind``, after loading it into the network once: a missing or
    wrong file raises here (:class:`InceptionWeightsNotFound`, :class:`InceptionWeightsInvalid`)
    rather than in a worker after the job started."""
    found = _find(weights, kind)
    _load(found, kind)
    return found.path


def resize_bilinear_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``x [N, C, H, W]`` to ``[N, C, size, size]`` as TensorFlow 1's
    ``ResizeBilinear`` (``align_corners=False``, no half-pixel centers), the op inside the 2015
    graph: output pixel ``i`` samples input coordinate ``i * H / size``, clamped at the last row."""
    for dim in (2, 3):
        n_in = x.shape[dim]
        src = torch.arange(size, device=x.device, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        w = (src - lo).to(x.dtype)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        w = w.view(shape)
        x = x.index_select(dim, lo) * (1 - w) + x.index_select(dim, hi) * w
    return x


class InceptionScorer:
    """Inception-v3 class probabilities and pool features for images, computed in batches.

    ``images``: ``uint8 [N, C, H, W]`` (0..255; scaled ``(x-128)/128`` for ``tf2015``,
    ``x/127.5-1`` for ``torchvision``) or float ``[N, C, H, W]`` already in ``[-1, 1]`` (the
    ``symmetric`` range; convert other ranges first). ``C`` is 3, or 1 (repeated to RGB). Images are
    resized bilinearly to 299x299: TensorFlow-1 style (:func:`resize_bilinear_tf1`) for ``tf2015``,
    ``F.interpolate(..., align_corners=False)`` for ``torchvision``. numpy arrays are accepted.
    Outputs are float32 CPU tensors.
    """

    def __init__(self, weights: str | os.PathLike | None = None, kind: str = "torchvision",
                 device: str | torch.device | None = None, batch_size: int = 50):
        self.kind = kind
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = int(batch_size)
        self.net = load_inception(weights, kind).to(self.device)

    @property
    def num_classes(self) -> int:
        """1000 (torchvision) or 1008 (tf2015)."""
        return NUM_CLASSES[self.kind]

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim != 4 or batch.shape[1] not in (1, 3):
            raise ValueError(f"images must be [N, 1 or 3, H, W]; got shape {tuple(batch.shape)}")
        if batch.dtype == torch.uint8:
            x = batch.to(self.device, torch.float32)
            x = (x - 128.0) / 128.0 if self.kind == "tf2015" else x / 127.5 - 1.0
        else:
            x = batch.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] == (INPUT_SIZE, INPUT_SIZE):
            return x
        if self.kind == "tf2015":
            return resize_bilinear_tf1(x, INPUT_SIZE)
        return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                     "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(net, name)(x)
        return torch.flatten(net.avgpool(x), 1)

    def _logits(self, pool: torch.Tensor) -> torch.Tensor:
        if self.kind == "tf2015":  # the authors' score: pool_3 times the softmax weights, no bias
            return pool @ self.net.fc.weight.t()
        return self.net.fc(pool)

    def _run(self, images, head: bool) -> torch.Tensor:
        x = torch.as_tensor(images)
        out = []
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                pool = self._pool(self._prepare(x[start:start + self.batch_size]))
                out.append((torch.softmax(self._logits(pool).double(), 1).float() if head else pool).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.num_classes if head else FEATURE_DIM)

    def probabilities(self, images) -> torch.Tensor:
        """Softmax class probabilities ``[N, 1000]`` (torchvision) or ``[N, 1008]`` (tf2015)."""
        return self._run(images, head=True)

    def features(self, images) -> torch.Tensor:
        """Global-average-pool features ``[N, 2048]`` (the FID features)."""
        return self._run(images, head=False)

    def probabilities_and_features(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs from one pass: ``([N, K], [N, 2048])``."""
        feats = self.features(images)
        with torch.no_grad():
            logits = self._logits(feats.to(self.device))
        return torch.softmax(logits.double(), 1).float().cpu(), feats


__all__ = ["ENV_CACHE", "ENV_WEIGHTS", "WEIGHT_FILES", "NUM_CLASSES", "INPUT_SIZE", "FEATURE_DIM",
           "InceptionWeightsNotFound", "InceptionWeightsInvalid", "FIDInceptionA", "FIDInceptionC", "FIDInceptionE",
           "build_inception", "local_cache_dir", "fetched_path", "fetch", "resolve_weights", "load_inception",
           "check_weights", "resize_bilinear_tf1", "InceptionScorer"]
