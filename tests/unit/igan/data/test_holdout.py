"""Split roles inside train (igan.data.holdout): the validation hold-out and the labeled subset,
chosen per class by seeded key ranks, in memory and in one bounded streaming pass."""
from __future__ import annotations

import collections
import hashlib

import numpy as np
import pytest

from igan.data.holdout import HoldOutPicker, HoldOutSpec, choose, key_rank


def _data(n: int = 600, classes: int = 5, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    return [f"img-{i:05d}" for i in range(n)], rng.integers(0, classes, size=n)


def _picked(keys, labels, spec, order) -> tuple[list[str], list[str]]:
    picker = HoldOutPicker(spec)
    for i in order:
        picker.offer(keys[i], int(labels[i]), payload=i)
    val, lab = picker.result()
    return [p.key for p in val], [p.key for p in lab]


def test_key_rank_is_a_keyed_blake2b_hash():
    want = int.from_bytes(hashlib.blake2b(b"n01440764_10026", digest_size=8, key=(3).to_bytes(8, "little"),
                                          person=b"igan-val").digest(), "little")
    assert key_rank(3, "n01440764_10026") == want
    assert key_rank(4, "n01440764_10026") != want


@pytest.mark.parametrize("labels_per_class", [0, 7, -1])
def test_choose_takes_the_smallest_ranks_per_class_disjointly(labels_per_class):
    keys, labels = _data()
    spec = HoldOutSpec(val_per_class=10, val_seed=1, labels_per_class=labels_per_class, label_seed=2, num_classes=5)
    val, lab = choose(keys, labels, spec)
    assert not set(val) & set(lab)
    assert collections.Counter(labels[val].tolist()) == {k: 10 for k in range(5)}
    for k in range(5):  # direct computation: the 10 smallest validation ranks of the class
        idx = np.flatnonzero(labels == k)
        ranked = sorted(idx, key=lambda i: key_rank(1, keys[i]))
        assert set(val[labels[val] == k]) == set(ranked[:10])
        rest = ranked[10:]
        if labels_per_class == -1:
            assert set(lab[labels[lab] == k]) == set(rest)
        elif labels_per_class:
            by_label = sorted(rest, key=lambda i: key_rank(2, keys[i], b"igan-lab"))
            assert set(lab[labels[lab] == k]) == set(by_label[:labels_per_class])
    if labels_per_class == 0:
        assert len(lab) == 0


def test_one_streaming_pass_equals_choose_in_any_order():
    keys, labels = _data()
    spec = HoldOutSpec(val_per_class=8, val_seed=0, labels_per_class=5, label_seed=3, num_classes=5)
    val, lab = choose(keys, labels, spec)
    want = (sorted(keys[i] for i in val), sorted(keys[i] for i in lab))
    for order in (range(len(keys)), np.random.default_rng(1).permutation(len(keys))):
        assert _picked(keys, labels, spec, order) == want


def test_the_choice_depends_on_seeds_not_on_the_other_selection():
    keys, labels = _data()
    base = HoldOutSpec(10, 0, 5, 0, 5)
    val0, lab0 = choose(keys, labels, base)
    val1, _ = choose(keys, labels, HoldOutSpec(10, 1, 5, 0, 5))
    val2, lab2 = choose(keys, labels, HoldOutSpec(10, 0, 5, 9, 5))
    assert not np.array_equal(val0, val1)
    assert np.array_equal(val0, val2) and not np.array_equal(lab0, lab2)  # varying labels keeps validation
    bigger, _ = choose(keys, labels, HoldOutSpec(20, 0, 5, 0, 5))
    assert set(val0) <= set(bigger)  # a larger hold-out keeps the smaller one


def test_picker_keeps_only_bounded_candidates():
    keys, labels = _data(n=5000)
    picker = HoldOutPicker(HoldOutSpec(4, 0, 3, 0, 5))
    for k, y in zip(keys, labels):
        picker.offer(k, int(y), payload=b"x" * 10)
    assert sum(map(len, picker._val)) == 5 * 4 and sum(map(len, picker._lab)) == 5 * (4 + 3)


def test_small_classes_and_bad_labels_are_errors():
    keys, labels = ["a", "b", "c"], np.array([0, 0, 1])
    with pytest.raises(ValueError, match="class 1 has 1 train examples, fewer than data.val_per_class=1 "
                                         r"\+ data.labels_per_class=1"):
        choose(keys, labels, HoldOutSpec(1, 0, 1, 0, 2))
    assert len(choose(keys, labels, HoldOutSpec(1, 0, 5, 0, 2, at_most=True))[1]) == 1  # caps, not requirements
    picker = HoldOutPicker(HoldOutSpec(1, 0, 0, 0, 2))
    with pytest.raises(ValueError, match="label 7 is outside 0..1"):
        picker.offer("x", 7)
