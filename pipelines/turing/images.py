"""Building the image set of a Turing test: ``n`` real images drawn at random from a shard split and
``n`` samples of the generator, as PNG at the model's own size, interleaved in a seeded order."""
from __future__ import annotations

import io

import numpy as np
import torch

from pipelines.turing.store import ImageItem

#: Offset of the noise seed, so the test's samples are not the ones a run's evaluation drew (seed 0...).
NOISE_SEED_OFFSET = 7919


def to_png(image: torch.Tensor) -> bytes:
    """PNG bytes of one ``uint8 [C, H, W]`` image (C = 1: grey, C = 3: RGB)."""
    from PIL import Image

    array = image.numpy()
    array = array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def real_images(root: str, split: str, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` images of ``split`` under the shard root ``root`` drawn without replacement by a
    generator seeded with ``seed``: ``(uint8 [n, C, H, W], their shard keys)``. ValueError when the
    split has fewer than ``n`` images."""
    from igan.data.shards import read_encoded, read_labels

    keys, _ = read_labels(root, split)  # only the labels are read to choose; images of the chosen only
    if len(keys) < n:
        raise ValueError(f"split '{split}' has {len(keys)} images, fewer than --n {n}")
    chosen = np.random.default_rng(seed).choice(len(keys), size=n, replace=False)
    encoded = read_encoded(root, split, None, keys={keys[i] for i in chosen})
    images, _ = encoded.decode_all()
    return images, list(encoded.keys)


def generated_images(generator, cfg, n: int, seed: int) -> torch.Tensor:
    """``n`` samples of ``generator`` as ``uint8 [n, C, H, W]`` (noise seed ``seed`` + offset)."""
    from igan.data.pixels import to_uint8
    from pipelines.registry import generate_samples

    with torch.no_grad():
        samples = generate_samples(generator, cfg, n, seed=seed + NOISE_SEED_OFFSET)
    return to_uint8(samples, cfg.data.pixel_range)


def interleave(real: torch.Tensor, real_keys: list[str], fake: torch.Tensor, seed: int) -> list[ImageItem]:
    """All images as :class:`ImageItem` in one order shuffled by ``seed``. ValueError when real and
    generated images differ in shape (the data is not what the model was trained on)."""
    if tuple(real.shape[1:]) != tuple(fake.shape[1:]):
        raise ValueError(f"real images are {tuple(real.shape[1:])} (C, H, W) but the generator makes "
                         f"{tuple(fake.shape[1:])}: is --data the data set the model was trained on?")
    items = [ImageItem("real", key, to_png(img)) for img, key in zip(real, real_keys)]
    items += [ImageItem("generated", f"sample-{i}", to_png(img)) for i, img in enumerate(fake)]
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order]
