"""Shared building blocks of the search spaces (imports ray.tune lazily through the callers)."""
from __future__ import annotations

from ray import tune

#: Smoothing: off (1.0) or a one-sided real target between 0.95 and 0.7.
SMOOTHING = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def smoothing(values=SMOOTHING):
    """``techniques.real_label``: off (1.0) or a smoothed target."""
    return tune.choice(list(values))


def same_as(key: str):
    """A value copied from another key of the same trial (e.g. ``optim.lr_g`` = ``optim.lr_d``)."""
    return tune.sample_from(lambda spec: spec.config[key])


def mbd(kernels=(50, 300), dim=(3, 50), off_share: int = 1) -> dict:
    """Minibatch discrimination on/off with kernels B and dimension C drawn independently; off in
    ``off_share`` of every ``off_share + 1`` trials (1: half)."""
    return {
        "techniques.minibatch_discrimination": tune.choice([False] * off_share + [True]),
        "techniques.mbd_kernels": tune.qrandint(kernels[0], kernels[1], 25 if kernels[0] % 25 == 0 else 1),
        "techniques.mbd_dim": tune.randint(dim[0], dim[1] + 1),
    }


def feature_matching(layers=(-1, -2), norms=("l2", "l1")) -> dict:
    """The feature-matching layer and distance."""
    return {"techniques.fm_layer": tune.choice(list(layers)), "techniques.fm_norm": tune.choice(list(norms))}
