"""Encoded image bytes (PNG, JPEG) to ``uint8`` tensors: one image, or whole batches on a thread pool.

Batches are what the shard reader hands to training. Decoding dominates reading cost, and
torchvision's decoders release the GIL, so a few threads in the consuming process decode a batch
in parallel with no worker processes, no shared-memory hand-over and no pickling: on a small
machine, threads deliver more images per second than the same reader in DataLoader worker
processes (benchmarks/read_throughput.py; figures in benchmarks/RESULTS.md).
Each thread decodes a contiguous slice of the batch through torchvision's list API and copies it
into the batch tensor.

Batches are ``[B, C, H, W]`` in ``channels_last`` memory. The decoders produce each image in
``H, W, C`` order (what torchvision returns is a ``[C, H, W]`` view of it), so stacking them in that
order is a plain copy, while a ``[C, H, W]``-contiguous batch would cost a strided transpose of every
pixel, a noticeable share of the per-image cost. Consumers that need contiguous memory convert once,
on the device (the trainer does).
"""
from __future__ import annotations

import io
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch


def _read_mode(channels: int):
    from torchvision.io import ImageReadMode

    return ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB


def _as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_image(data: bytes, channels: int) -> torch.Tensor:
    """``uint8 [channels, H, W]`` tensor of PNG or JPEG bytes (torchvision's decoders, PIL fallback)."""
    try:
        from torchvision.io import decode_image as tv_decode

        return tv_decode(_as_tensor(data), mode=_read_mode(channels))
    except (ImportError, RuntimeError):
        from PIL import Image

        img = Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB")
        arr = np.asarray(img)
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


JPEG_MAGIC = b"\xff\xd8\xff"


class BatchDecoder:
    """Decodes lists of encoded images into ``uint8 [B, channels, H, W]`` batches (``channels_last``
    memory, module doc) on ``threads`` threads (``threads=1``: in the calling thread, no pool).
    ``submit`` starts a batch and returns at once, so a reader can keep the next batches decoding
    while the current one trains; ``result`` waits for it. Every image must be ``H x W`` (a shard
    split's fixed size)."""

    def __init__(self, channels: int, height: int, width: int, threads: int = 1):
        if threads < 1:
            raise ValueError(f"threads must be >= 1; got {threads}")
        self.shape = (int(channels), int(height), int(width))
        self.threads = threads
        self._mode = _read_mode(channels)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="igan-decode") if threads > 1 else None

    def submit(self, datas: Sequence[bytes], keys: Sequence[str] | None = None) -> tuple[torch.Tensor, list[Future]]:
        """Start decoding ``datas`` (with ``keys`` for error messages); returns a handle for :meth:`result`."""
        c, h, w = self.shape
        out = torch.empty((len(datas), h, w, c), dtype=torch.uint8)  # filled as [B, H, W, C]
        keys = keys if keys is not None else [str(i) for i in range(len(datas))]
        if self._pool is None or not datas:
            self._decode_into(out, 0, datas, keys)
            return out, []
        step = -(-len(datas) // self.threads)
        futures = [self._pool.submit(self._decode_into, out, s, datas[s:s + step], keys[s:s + step])
                   for s in range(0, len(datas), step)]
        return out, futures

    @staticmethod
    def result(handle: tuple[torch.Tensor, list[Future]]) -> torch.Tensor:
        """The decoded batch ``uint8 [B, C, H, W]`` (``channels_last``) of a :meth:`submit` handle
        (raises its error)."""
        out, futures = handle
        for f in futures:
            f.result()
        return out.permute(0, 3, 1, 2)

    def decode(self, datas: Sequence[bytes], keys: Sequence[str] | None = None) -> torch.Tensor:
        """``uint8 [B, C, H, W]`` (``channels_last``) of ``datas``, decoded now."""
        return self.result(self.submit(datas, keys))

    def _decode_into(self, out: torch.Tensor, start: int, datas: Sequence[bytes], keys: Sequence[str]) -> None:
        from torchvision.io import decode_jpeg

        if not datas:
            return
        if all(d[:3] == JPEG_MAGIC for d in datas):
            # one call for the slice: torchvision's per-call Python overhead is paid once
            images = decode_jpeg([_as_tensor(d) for d in datas], mode=self._mode)
        else:
            images = [decode_image(d, self.shape[0]) for d in datas]
        misfit = next(((k, im) for im, k in zip(images, keys) if tuple(im.shape) != self.shape), None)
        if misfit is not None:
            raise ValueError(f"image {misfit[0]} decodes to {list(misfit[1].shape)}, not the split's {list(self.shape)}")
        torch.stack([im.permute(1, 2, 0) for im in images], out=out[start:start + len(images)])

    def close(self) -> None:
        """Stop the threads (pending batches finish first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self):
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)


__all__ = ["BatchDecoder", "decode_image"]
