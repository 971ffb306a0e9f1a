"""Image decoding, resizing and encoding for shards (Pillow only, no torch).

Everything works on ``numpy`` arrays ``uint8 [H, W]`` (greyscale) or ``uint8 [H, W, 3]`` (RGB) and
on encoded bytes. Decoding always returns the requested mode, so CMYK, greyscale, palette and
PNG-named-JPEG files all come out as RGB.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

CROPS = ("center", "squash")
RESAMPLE = Image.Resampling.BICUBIC  # antialiased when downsampling (Pillow scales the kernel support)
JPEG_QUALITY = 95


def decode(data: bytes, mode: str = "RGB", *, draft_size: int | None = None) -> Image.Image:
    """Decode encoded image bytes (any format Pillow sniffs, whatever the file name says) fully,
    converted to ``mode`` (``"RGB"`` or ``"L"``). ``draft_size``: let the JPEG decoder downscale by a
    power of two while the shorter side stays >= ``draft_size`` (faster, same result to the eye).

    Raises ``OSError``/``ValueError``/``Image.DecompressionBombError`` for unreadable or truncated
    data; callers that must not crash catch ``Exception``.
    """
    img = Image.open(io.BytesIO(data))
    if draft_size and img.format == "JPEG":
        w, h = img.size
        scale = draft_size / min(w, h)
        img.draft(img.mode if img.mode in ("RGB", "L") else None, (int(w * scale + 0.999), int(h * scale + 0.999)))
    img.load()  # truncated data raises here ("image file is truncated")
    return to_mode(img, mode)


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """``img`` converted to ``mode``; transparent palette/alpha images are flattened onto black."""
    if img.mode == mode:
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") and mode in ("RGB", "L"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8))
    return img.convert(mode)


def resize_crop(img: Image.Image, size: int, crop: str = "center", resample=RESAMPLE) -> Image.Image:
    """Square ``size``x``size`` image. ``center``: shorter side resized to ``size`` with an
    antialiasing filter, then the central ``size``x``size`` crop; ``squash``: the whole image
    resized to ``size``x``size`` (aspect not kept). An image already of that size is returned as is."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}; got {crop!r}")
    w, h = img.size
    if (w, h) == (size, size):
        return img
    if crop == "squash":
        return img.resize((size, size), resample=resample, reducing_gap=None)
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) / 2.0, (nh - size) / 2.0
    # resize straight into the crop window: one resampling pass over the source box only
    box = (left / scale, top / scale, (left + size) / scale, (top + size) / scale)
    return img.resize((size, size), resample=resample, box=box)


def encode(img: Image.Image | np.ndarray, fmt: str, quality: int = JPEG_QUALITY) -> bytes:
    """Encoded bytes of ``img`` (a PIL image or ``uint8 [H, W]``/``[H, W, 3]`` array):
    ``fmt="png"`` lossless, ``fmt="jpg"`` baseline JPEG at ``quality`` (4:2:0 subsampling)."""
    if isinstance(img, np.ndarray):
        img = array_to_image(img)
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=1)
    elif fmt in ("jpg", "jpeg"):
        img.save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"fmt must be png or jpg; got {fmt!r}")
    return buf.getvalue()


def array_to_image(arr: np.ndarray) -> Image.Image:
    """PIL image of ``uint8 [H, W]`` (mode L), ``[H, W, 1]`` (mode L) or ``[H, W, 3]`` (RGB)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return Image.fromarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return Image.fromarray(arr)
    raise ValueError(f"expected uint8 [H, W] or [H, W, 3], got shape {arr.shape}")


def decode_to_array(data: bytes, channels: int) -> np.ndarray:
    """Decoded pixels ``uint8 [H, W, channels]`` (``channels`` 1 or 3) of encoded image bytes."""
    arr = np.asarray(decode(data, "L" if channels == 1 else "RGB"))
    return arr[:, :, None] if arr.ndim == 2 else arr


def process_bytes(data: bytes, *, size: int | None, channels: int, fmt: str, crop: str = "center",
                  quality: int = JPEG_QUALITY) -> tuple[bytes, tuple[int, int]]:
    """The shard pipeline's per-file work: decode ``data`` to RGB (``channels=3``) or L (``1``),
    resize/crop to ``size`` (None: keep), encode as ``fmt``. Returns ``(encoded, (H, W))``."""
    img = decode(data, "L" if channels == 1 else "RGB", draft_size=size)
    if size is not None:
        img = resize_crop(img, size, crop)
    return encode(img, fmt, quality), (img.size[1], img.size[0])


def process_array(arr: np.ndarray, *, size: int | None, fmt: str = "png", crop: str = "center",
                  quality: int = JPEG_QUALITY) -> tuple[bytes, tuple[int, int]]:
    """Same as :func:`process_bytes` for raw pixels ``uint8 [H, W]`` or ``[H, W, 3]``."""
    img = array_to_image(arr)
    if size is not None:
        img = resize_crop(img, size, crop)
    return encode(img, fmt, quality), (img.size[1], img.size[0])
