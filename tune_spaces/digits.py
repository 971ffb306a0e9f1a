"""sklearn digits (8x8), semi-supervised: 2, 5 or 10 labels per class (20, 50, 100 labels)."""
from ray import tune

from tune_spaces._common import feature_matching, mbd, smoothing

PRESET = "digits"
METRIC, MODE = "val_ssl_error", "min"
TIED = {"optim.lr_g": "optim.lr_d"}  # G's learning rate follows D's
PBT_MUTABLE = ("optim.lr_d", "techniques.real_label")


def space() -> dict:
    # Narrower than MNIST's ranges: the ranges that trained well on digits; MBD (which does not help
    # semi-supervised learning, Salimans et al. 2016, sec. 6) in a quarter of the trials, with small
    # B and C since large ones are slow on a CPU. Measurements: benchmarks/RESULTS.md (2026-11-26, digits).
    return {
        "techniques.real_label": smoothing((1.0, 0.95, 0.9)),
        **mbd(kernels=(25, 100), dim=(3, 10), off_share=3),
        "data.labels_per_class": tune.choice([2, 5, 10]),
        "optim.lr_d": tune.loguniform(7e-4, 1.5e-3),
        "model.d_input_noise": tune.choice([0.1, 0.2]),
        **feature_matching(layers=(-1, -2, -3)),
    }
