"""Streaming reader of the shards that ``igan shard`` writes (local folders or URIs).

A shard root ``ROOT`` holds ``ROOT/<split>/manifest.json`` and the split's WebDataset tars. The
reader yields ``(image, label)``: ``image`` a ``uint8 [C, H, W]`` tensor (0..255), or ``float32
[C, H, W]`` in the model's range when ``pixel_range`` is given (see :mod:`igan.data.pixels`), and
``label`` an ``int64`` scalar tensor.

* :mod:`igan.data.shard_tar`: one tar shard read whole and verified against its manifest entry
  (:func:`iter_tar`, :class:`ShardSpec`, :func:`forget_verified`);
* :mod:`igan.data.shard_stream`: an epoch of a split for one consumer of many, exactly once per
  epoch, shuffled, in samples or decoded batches (:class:`ShardDataset`, :func:`make_loader`);
* here: whole splits read at once (:func:`iter_split`, :func:`read_split`, :func:`read_encoded`,
  :func:`read_labels`), which also check that no key is in two shards (:class:`KeyLedger`).

Everything is importable from here. This module is plain PyTorch: the caller passes its Ray Train
rank and world size.
"""
from __future__ import annotations

from array import array
from typing import Callable, Iterator

import numpy as np
import torch

from igan.data.carve import EncodedSplit, image_bytes
from igan.data.decoding import decode_image
from igan.data.holdout import Picked
from igan.data.manifest import ShardDataError, split_manifest
from igan.data.shard_stream import SPLIT_MODES, ShardDataset, make_loader, shard_order, shuffle_buffer
from igan.data.shard_tar import _VERIFIED, ShardSpec, forget_verified, iter_tar, shard_specs


class KeyLedger:
    """Finds a key that is in two shards of a split in one pass, keeping 16 bytes per sample (a
    64-bit hash of the key, its shard and position) rather than the keys: a split of millions of
    samples stays small in every worker. :meth:`check` confirms a hash match on the real keys."""

    def __init__(self):
        self._hashes, self._where = array("q"), array("q")

    def add(self, key: str, shard: int, position: int) -> None:
        """Record sample ``position`` of shard ``shard`` (both 0-based) with its ``key``."""
        self._hashes.append(hash(key))
        self._where.append((shard << 32) | position)

    def check(self, keys_of: Callable[[int], list[str]], url_of: Callable[[int], str]) -> None:
        """ShardDataError naming the key and both shards when a key was added twice. ``keys_of(i)``
        returns shard ``i``'s keys in file order (reread only for hash matches)."""
        if len(self._hashes) < 2:
            return
        h = np.frombuffer(self._hashes, dtype=np.int64)
        order = np.argsort(h, kind="stable")
        for d in np.flatnonzero(h[order[1:]] == h[order[:-1]]):
            (sa, pa), (sb, pb) = (divmod(self._where[int(order[j])], 1 << 32) for j in (d, d + 1))
            key = keys_of(sa)[pa]
            if keys_of(sb)[pb] == key:
                raise ShardDataError(f"key {key!r} is in two shards: {url_of(sa)} and {url_of(sb)}"[:400])


def iter_split(folder, manifest: dict, verify: bool = True, select: str | None = None) -> Iterator[tuple[int, dict]]:
    """Every sample of a split folder as ``(shard index, sample)``, shards in manifest order, each
    checked against its manifest entry (:func:`iter_tar`); after the last one, ShardDataError when
    a key is in two shards."""
    specs = shard_specs(folder, manifest, verify)
    ledger = KeyLedger()
    for index, spec in enumerate(specs):
        for position, sample in enumerate(iter_tar(spec.url, select, expect=spec)):
            ledger.add(sample["__key__"], index, position)
            yield index, sample
    cache: dict[int, list[str]] = {}

    def keys_of(i: int) -> list[str]:
        if i not in cache:
            cache[i] = [s["__key__"] for s in iter_tar(specs[i].url, select="cls")]
        return cache[i]

    ledger.check(keys_of, lambda i: specs[i].url)


def read_encoded(root: str, split: str, pixel_range: str | None = None,
                 keys: set[str] | None = None, verify: bool = True) -> EncodedSplit:
    """The whole split (or only the samples whose key is in ``keys``) as encoded images sorted by
    key, decoded on demand to ``pixel_range`` (None: ``uint8``). Every shard is checked
    (:func:`iter_split`; ``verify``: sha256 too)."""
    folder, manifest = split_manifest(root, split)
    found = [Picked(sample["__key__"], int(sample["cls"]), image_bytes(sample))
             for _, sample in iter_split(folder, manifest, verify)
             if keys is None or sample["__key__"] in keys]
    found.sort(key=lambda p: p.key)
    h, w = manifest["image_size"]
    return EncodedSplit(found, int(manifest["channels"]), h, w, pixel_range)


def read_split(root: str, split: str, pixel_range: str | None = None,
               keys: set[str] | None = None, verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split (or only the samples whose key is in ``keys``) in memory, sorted by key:
    images ``uint8 [N, C, H, W]`` (or float in ``pixel_range``) and labels ``int64 [N]``.
    For small sets (digits, test splits)."""
    return read_encoded(root, split, pixel_range, keys, verify).decode_all()


def read_labels(root: str, split: str, verify: bool = True) -> tuple[list[str], np.ndarray]:
    """Keys (sorted) and their labels ``int64 [N]`` of a split, keeping only the ``.cls`` members
    (every shard is still read and checked whole)."""
    folder, manifest = split_manifest(root, split)
    pairs = [(sample["__key__"], int(sample["cls"]))
             for _, sample in iter_split(folder, manifest, verify, select="cls")]
    pairs.sort()
    return [k for k, _ in pairs], np.array([y for _, y in pairs], dtype=np.int64)


__all__ = ["ShardDataset", "ShardSpec", "KeyLedger", "make_loader", "read_split", "read_encoded", "read_labels",
           "iter_tar", "iter_split", "shard_specs", "forget_verified", "decode_image", "shard_order",
           "shuffle_buffer", "SPLIT_MODES"]
# the verified-shard memo, the same dict as igan.data.shard_tar's (tests inspect it here)
__all__ += ["_VERIFIED"]
