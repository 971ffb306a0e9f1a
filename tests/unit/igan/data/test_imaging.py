"""Decoding, resizing and encoding of shard images (igan.data.imaging)."""
import io

import numpy as np
import pytest
from PIL import Image

from igan.data import imaging


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("shape", [(8, 8), (28, 28), (32, 32, 3)])
def test_png_round_trip_is_pixel_exact(shape):
    arr = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    data, hw = imaging.process_array(arr, size=None, fmt="png")
    assert hw == shape[:2]
    back = imaging.decode_to_array(data, 3 if len(shape) == 3 else 1)
    assert np.array_equal(back.reshape(shape), arr)


def test_center_crop_keeps_the_middle_of_the_longer_side():
    arr = np.zeros((200, 400, 3), dtype=np.uint8)
    arr[:, :100] = (255, 0, 0)
    arr[:, 300:] = (0, 0, 255)
    arr[:, 100:300] = (0, 255, 0)
    out = np.asarray(imaging.resize_crop(Image.fromarray(arr), 128, "center"))
    assert out.shape == (128, 128, 3)
    inner = out[:, 2:-2]  # the filter blends the outermost columns with their neighbours, as resize-then-crop does
    assert inner[:, :, 1].min() == 255 and inner[:, :, 0].max() == 0 and inner[:, :, 2].max() == 0
    assert out[:, :, 0].max() < 40 and out[:, :, 2].max() < 40
    squashed = np.asarray(imaging.resize_crop(Image.fromarray(arr), 64, "squash"))
    assert squashed.shape == (64, 64, 3)
    assert squashed[:, 2, 0].min() > 200 and squashed[:, -3, 2].min() > 200  # the side bands survive


def test_downsampling_is_antialiased():
    checker = ((np.indices((350, 400)).sum(0) % 2) * 255).astype(np.uint8)
    out = np.asarray(imaging.resize_crop(Image.fromarray(checker).convert("RGB"), 128), dtype=np.float64)
    nearest = np.asarray(Image.fromarray(checker).resize((128, 128), Image.Resampling.NEAREST), dtype=np.float64)
    assert abs(out.mean() - 127.5) < 3 and out.std() < 8   # a fine checkerboard becomes flat grey
    assert nearest.std() > 100                             # without a filter it aliases


def test_cmyk_greyscale_and_png_named_jpeg_become_rgb():
    rgb = np.random.default_rng(1).integers(0, 256, size=(300, 380, 3), dtype=np.uint8)
    cmyk = _bytes(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    grey = _bytes(Image.fromarray(rgb).convert("L"), "JPEG", quality=95)
    png = _bytes(Image.fromarray(rgb), "PNG")
    for data in (cmyk, grey, png):
        enc, hw = imaging.process_bytes(data, size=128, channels=3, fmt="jpg")
        img = Image.open(io.BytesIO(enc))
        assert img.format == "JPEG" and img.mode == "RGB" and hw == (128, 128) and img.size == (128, 128)
    g = np.asarray(Image.open(io.BytesIO(imaging.process_bytes(grey, size=64, channels=3, fmt="png")[0])))
    assert g.shape == (64, 64, 3) and np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
    # the PNG's pixels (no JPEG loss on the input side) survive a size-preserving pass exactly
    same, _ = imaging.process_bytes(png, size=None, channels=3, fmt="png")
    assert np.array_equal(imaging.decode_to_array(same, 3), rgb)


def test_jpeg_output_uses_quality_95():
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
    enc = imaging.encode(img, "jpg")
    assert Image.open(io.BytesIO(enc)).quantization == Image.open(io.BytesIO(_bytes(img, "JPEG", quality=95))).quantization
    assert imaging.JPEG_QUALITY == 95


@pytest.mark.parametrize("bad", [b"", b"not an image at all", "truncated"])
def test_unreadable_or_truncated_data_raises(bad):
    if bad == "truncated":
        whole = _bytes(Image.fromarray(np.full((350, 400, 3), 128, np.uint8)), "JPEG")
        bad = whole[: len(whole) // 2]
    with pytest.raises(Exception):
        imaging.process_bytes(bad, size=128, channels=3, fmt="jpg")
