"""MNIST, semi-supervised: 2, 5, 10 or 20 labels per class (the paper's 20, 50, 100, 200 labels)."""
from ray import tune

from tune_spaces._common import feature_matching, mbd, smoothing

PRESET = "mnist"
METRIC, MODE = "val_ssl_error", "min"
TIED = {"optim.lr_g": "optim.lr_d"}  # G's learning rate follows D's
PBT_MUTABLE = ("optim.lr_d", "techniques.real_label")


def space() -> dict:
    return {
        "techniques.real_label": smoothing(),
        **mbd(kernels=(50, 300), dim=(3, 50)),
        "data.labels_per_class": tune.choice([2, 5, 10, 20]),
        "optim.lr_d": tune.loguniform(1e-3, 1e-2),
        **feature_matching(layers=(-1, -2, -3)),
    }
