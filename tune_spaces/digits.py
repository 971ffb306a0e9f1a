"""sklearn digits (8x8), semi-supervised: 2, 5 or 10 labels per class (20, 50, 100 labels)."""
from ray import tune

from tune_spaces._common import feature_matching, mbd, smoothing

PRESET = "digits"
METRIC, MODE = "ssl_test_error", "min"
TIED = {"optim.lr_g": "optim.lr_d"}  # G's learning rate follows D's
PBT_MUTABLE = ("optim.lr_d", "techniques.real_label")


def space() -> dict:
    return {
        "techniques.real_label": smoothing(),
        **mbd(kernels=(50, 300), dim=(3, 50)),
        "data.labels_per_class": tune.choice([2, 5, 10]),
        "optim.lr_d": tune.loguniform(3e-4, 3e-3),
        **feature_matching(layers=(-1, -2, -3)),
    }
