"""Split roles inside the train split: the validation hold-out and the labeled subset.

Both are chosen per class by a seeded rank of each sample's key: a keyed BLAKE2b hash of the key,
so the choice depends only on the keys, labels and seeds — not on shard order, shard count, the
number of workers or the rerun. Validation takes, in every class, the ``val_per_class`` keys of
smallest validation rank (``val_seed``); the labeled subset takes, among the remaining keys of the
class, the ``labels_per_class`` of smallest label rank (``label_seed``; ``-1``: all of them). The
two are disjoint by construction and every other train example stays unlabeled training data.

:func:`choose` does this over keys in memory; :class:`HoldOutPicker` does the same in one pass over
a stream, keeping only ``O(classes x (2 * val_per_class + labels_per_class))`` candidates, so a
streamed split is never held whole (the ``labels_per_class`` smallest non-validation ranks are
always among the ``val_per_class + labels_per_class`` smallest ranks of the class).
"""
from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np

_VAL, _LAB = b"igan-val", b"igan-lab"


def key_rank(seed: int, key: str, purpose: bytes = _VAL) -> int:
    """The seeded rank of ``key``: an unsigned 64-bit integer, uniform over keys for a seed."""
    h = hashlib.blake2b(key.encode(), digest_size=8, key=int(seed).to_bytes(8, "little"), person=purpose)
    return int.from_bytes(h.digest(), "little")


@dataclass(frozen=True)
class HoldOutSpec:
    """How many examples per class go to validation and to the labeled subset, and their seeds.
    ``labels_per_class``: 0 none, -1 every non-validation example. ``at_most``: the counts are caps
    (a smaller class gives what it has) instead of requirements."""
    val_per_class: int
    val_seed: int
    labels_per_class: int
    label_seed: int
    num_classes: int
    at_most: bool = False

    @classmethod
    def of(cls, cfg) -> "HoldOutSpec":
        """The spec of an :class:`igan.config.Config` (no labeled subset unless semi-supervised)."""
        d = cfg.data
        labels = d.labels_per_class if cfg.techniques.semi_supervised else 0
        return cls(d.val_per_class, d.val_seed, labels, d.label_seed, d.num_classes)

    def check_class_size(self, k: int, n: int) -> None:
        """ValueError when class ``k`` with ``n`` examples cannot give what the spec asks."""
        need = self.val_per_class + max(self.labels_per_class, 0)
        if n < need and not self.at_most:
            raise ValueError(f"class {k} has {n} train examples, fewer than data.val_per_class="
                             f"{self.val_per_class} + data.labels_per_class={max(self.labels_per_class, 0)}")


def choose(keys: list[str], labels: np.ndarray, spec: HoldOutSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(validation indices, labeled indices)`` into ``keys``/``labels``, each sorted ``int64``."""
    labels = np.asarray(labels)
    val, lab = [], []
    for k in range(spec.num_classes):
        idx = np.flatnonzero(labels == k)
        spec.check_class_size(k, len(idx))
        by_val = sorted(idx, key=lambda i: key_rank(spec.val_seed, keys[i], _VAL))
        held, rest = by_val[:spec.val_per_class], by_val[spec.val_per_class:]
        val.extend(held)
        if spec.labels_per_class == -1:
            lab.extend(rest)
        elif spec.labels_per_class > 0:
            lab.extend(sorted(rest, key=lambda i: key_rank(spec.label_seed, keys[i], _LAB))[:spec.labels_per_class])
    return np.sort(np.array(val, dtype=np.int64)), np.sort(np.array(lab, dtype=np.int64))


@dataclass
class Picked:
    """One chosen sample: its key, label and whatever the stream carried with it (e.g. image bytes)."""
    key: str
    label: int
    payload: Any = None


class HoldOutPicker:
    """:func:`choose` in one pass: :meth:`offer` every sample of the split, then :meth:`result`.
    With ``labels_per_class == -1`` no labeled candidates are kept (the stream carries the labels)."""

    def __init__(self, spec: HoldOutSpec):
        self.spec = spec
        self.counts = np.zeros(spec.num_classes, dtype=np.int64)
        # max-heaps of (-rank, key, label, payload) bounded to the candidates each selection can need
        self._val: list[list] = [[] for _ in range(spec.num_classes)]
        self._lab: list[list] = [[] for _ in range(spec.num_classes)]
        self._lab_keep = spec.val_per_class + spec.labels_per_class if spec.labels_per_class > 0 else 0

    def offer(self, key: str, label: int, payload: Any = None) -> None:
        """Consider one sample; ValueError when its label is outside ``0..num_classes-1``."""
        if not 0 <= label < self.spec.num_classes:
            raise ValueError(f"sample {key}: label {label} is outside 0..{self.spec.num_classes - 1}")
        self.counts[label] += 1
        item = (key, label, payload)
        if self.spec.val_per_class:
            _push(self._val[label], key_rank(self.spec.val_seed, key, _VAL), item, self.spec.val_per_class)
        if self._lab_keep:
            _push(self._lab[label], key_rank(self.spec.label_seed, key, _LAB), item, self._lab_keep)

    def result(self) -> tuple[list[Picked], list[Picked]]:
        """``(validation, labeled)`` samples, each sorted by key. ValueError when a class is too small."""
        for k, n in enumerate(self.counts):
            self.spec.check_class_size(k, int(n))
        val = [Picked(*entry[2]) for heap in self._val for entry in heap]
        held = {p.key for p in val}
        lab: list[Picked] = []
        for heap in self._lab:
            by_rank = [entry[2] for entry in sorted(heap, reverse=True) if entry[2][0] not in held]
            lab.extend(Picked(*item) for item in by_rank[:self.spec.labels_per_class])
        return sorted(val, key=lambda p: p.key), sorted(lab, key=lambda p: p.key)


def _push(heap: list, rank: int, item: tuple, keep: int) -> None:
    # (-rank, key): the heap's root is the largest rank kept, so a smaller one replaces it
    entry = (-rank, item[0], item)
    if len(heap) < keep:
        heapq.heappush(heap, entry)
    elif entry > heap[0]:
        heapq.heapreplace(heap, entry)


__all__ = ["HoldOutSpec", "HoldOutPicker", "Picked", "choose", "key_rank"]
