"""SVHN, semi-supervised: 50, 100 or 200 labels per class (the paper's 500, 1,000, 2,000 labels)."""
from ray import tune

from tune_spaces._common import feature_matching, mbd, smoothing

PRESET = "svhn"
METRIC, MODE = "val_ssl_error", "min"
TIED = {"optim.lr_g": "optim.lr_d"}  # G's learning rate follows D's
PBT_MUTABLE = ("optim.lr_d", "techniques.real_label")


def space() -> dict:
    return {
        "techniques.real_label": smoothing(),
        **mbd(kernels=(50, 300), dim=(3, 50)),
        "data.labels_per_class": tune.choice([50, 100, 200]),
        "optim.lr_d": tune.loguniform(1e-4, 1e-3),
        **feature_matching(layers=(-1, -2), norms=("l1", "l2")),
    }
